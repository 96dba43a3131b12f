"""DVC stages `prune_weight@<seed>` and `prune_unit@<seed>`: prune fresh copies of one seed's
trained net with every listed criterion, test each.

METHOD is the granularity: `weight` or `unit`; SEED one of train.seeds.
"""

import _repo  # noqa: F401  (this checkout's src/ first: see stages/_repo.py)
import click

from prunelab import paths
from prunelab.config import METHODS
from prunelab.pruning.families import prune_curves
from prunelab.pruning.sweep import curve_rows, metric_series, summarise
from prunelab.runtime.files import Outputs
from prunelab.runtime.stage import stage_help
from prunelab.studies.oneshot import STUDY
from prunelab.studies.opening import open_stage
from prunelab.tracking.runs import seed_prefix

DETAILS = ("METHOD is `weight` (single weights) or `unit` (whole units: rows of a linear layer, "
           "output channels of a conv, a residual stage's channels, an LSTM's hidden units); "
           "the criteria that rank them are prune.weight_criteria / "
           "prune.unit_criteria in params.yaml. Criteria that need calibration draw "
           "prune.calibration_size TRAINING images with the net's seed.")


@click.command(help=stage_help(*(STUDY.stage(f"prune_{m}") for m in METHODS), details=DETAILS))
@click.argument("method", type=click.Choice(METHODS))
@click.argument("seed", type=click.IntRange(0, 2**32 - 1))
def main(method: str, seed: int) -> None:
    with open_stage(STUDY.stage(f"prune_{method}"), seed) as stage:
        cfg, net, (x, y) = stage.cfg, stage.model, stage.test
        curves, dense_acc = prune_curves(
            net, method, cfg, x, y, paths.DATA_DIR, stage.device,
            lambda line: click.echo(f"prune_{method}@{seed}: {line}", err=True))
        summary = {name: summarise(points, dense_acc) for name, points in curves.items()}
        out = Outputs()
        out.add_csv(paths.prune_curve(method, seed), [
            row for name, points in curves.items()
            for row in curve_rows(points, method, cfg.prune.scope, name)])
        out.add_json(paths.prune_metrics(method, seed), summary)
        out.commit()
        # DVC may skip training; this link names the run that produced the pruned model (on
        # the parent too for the first seed: one tag name there, one seed's value).
        if train_run := stage.train_run_id():
            stage.run.set_tags({"train_run_id": train_run}, on_parent=seed == cfg.first_seed)
        prefix = f"{seed_prefix(cfg)}prune_{method}."
        for name, points in curves.items():
            stage.run.log_series(metric_series(points, f"{name}."), parent_prefix=prefix)
            stage.run.log_metrics({f"{name}.{k}": v for k, v in summary[name].items()},
                                  parent_prefix=prefix)
        stage.run.log_metrics({"dense_accuracy": dense_acc}, parent_prefix=prefix)
        stage.run.log_artifacts(out.paths)
    for name, points in curves.items():
        line = ", ".join(f"{p.sparsity:g}: {p.accuracy:.2f}" for p in points)
        click.echo(f"prune_{method}@{seed} {name} ({cfg.prune.scope}): {line}", err=True)


if __name__ == "__main__":
    main()
