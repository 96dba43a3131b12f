"""DVC stages `prune_weight@<seed>` and `prune_unit@<seed>`: prune fresh copies of one seed's
trained net with every listed criterion, test each.

METHOD is the granularity: `weight` or `unit`; SEED one of train.seeds.
"""

import _repo  # noqa: F401  (this checkout's src/ first: see stages/_repo.py)
import click

from prunelab import paths
from prunelab.config import METHODS, load_params
from prunelab.data.mnist import load_split
from prunelab.models.networks import load_net, resolve_device, to_inputs, to_targets
from prunelab.pruning.criteria.registry import criterion
from prunelab.pruning.masks import check_support
from prunelab.pruning.sweep import (
    criteria_context,
    curve_rows,
    dense_accuracy,
    metric_series,
    summarise,
    sweep,
)
from prunelab.runtime.files import Outputs, read_json
from prunelab.runtime.stage import stage_errors, stage_help
from prunelab.tracking.runs import seed_prefix, track

DETAILS = ("METHOD is `weight` (single weights) or `unit` (whole units: rows of a linear layer, "
           "output channels of a conv); the criteria that "
           "rank them are prune.weight_criteria / prune.unit_criteria in params.yaml. Criteria "
           "that need calibration draw prune.calibration_size TRAINING images with the net's seed.")


@click.command(help=stage_help("prune_weight", "prune_unit", details=DETAILS))
@click.argument("method", type=click.Choice(METHODS))
@click.argument("seed", type=click.IntRange(0, 2**32 - 1))
def main(method: str, seed: int) -> None:
    with stage_errors():
        cfg = load_params(paths.PARAMS).for_seed(seed)
        with track(f"prune_{method}@{seed}", cfg) as run:
            device = resolve_device(cfg.train.device)
            net = load_net(paths.model(seed), device)
            train_run = read_json(paths.train_run(seed)).get("mlflow_run_id")
            images, labels = load_split(paths.DATA_DIR, "t10k", cfg.data.test_size)
            x, y = to_inputs(images, device), to_targets(labels, device)
            chosen = [criterion(method, name) for name in cfg.prune.criteria(method)]  # type: ignore[arg-type]
            for c in chosen:  # before any work: one line naming the criterion and the arch
                check_support(c, net, cfg.model.arch)
            context = criteria_context(net, chosen, cfg, paths.DATA_DIR, device)
            curves = {c.name: sweep(net, method, cfg.prune.scope, cfg.prune.sparsities, x, y,
                                    c, context) for c in chosen}
            dense = dense_accuracy(net, next(iter(curves.values())), x, y)
            summary = {name: summarise(points, dense) for name, points in curves.items()}
            out = Outputs()
            out.add_csv(paths.prune_curve(method, seed), [
                row for name, points in curves.items()
                for row in curve_rows(points, method, cfg.prune.scope, name)])
            out.add_json(paths.prune_metrics(method, seed), summary)
            out.commit()
            # DVC may skip training; this link names the run that produced the pruned model
            # (on the parent too for the first seed: one tag name there, one seed's value).
            if train_run:
                run.set_tags({"train_run_id": str(train_run)},
                             on_parent=seed == cfg.train.seeds[0])
            prefix = f"{seed_prefix(cfg)}prune_{method}."
            for name, points in curves.items():
                run.log_series(metric_series(points, f"{name}."), parent_prefix=prefix)
                run.log_metrics({f"{name}.{k}": v for k, v in summary[name].items()},
                                parent_prefix=prefix)
            run.log_metrics({"dense_accuracy": dense}, parent_prefix=prefix)
            run.log_artifacts(out.paths)
    for name, points in curves.items():
        line = ", ".join(f"{p.sparsity:g}: {p.accuracy:.2f}" for p in points)
        click.echo(f"prune_{method}@{seed} {name} ({cfg.prune.scope}): {line}", err=True)


if __name__ == "__main__":
    main()
