"""DVC stages `prune_weight` and `prune_unit`: prune fresh copies of the trained net, test each.

METHOD is `weight` (smallest |w|) or `unit` (smallest-L2 rows).
"""

import click

from prunelab import paths
from prunelab.cli import stage_errors, stage_help
from prunelab.config import METHODS, load_params
from prunelab.data import load_split
from prunelab.files import Outputs, read_json
from prunelab.model import load_weights, resolve_device, to_inputs, to_targets
from prunelab.prune import curve_rows, dense_accuracy, metric_series, summarise, sweep
from prunelab.tracking import track

DETAILS = "METHOD is `weight` (smallest |w| per layer) or `unit` (smallest-L2 rows per layer)."


@click.command(help=stage_help("prune_weight", "prune_unit", details=DETAILS))
@click.argument("method", type=click.Choice(METHODS))
def main(method: str) -> None:
    with stage_errors():
        cfg = load_params(paths.PARAMS)
        with track(f"prune_{method}", cfg) as run:
            device = resolve_device(cfg.train.device)
            weights = load_weights(paths.MODEL, device)
            train_run = read_json(paths.TRAIN_RUN).get("mlflow_run_id")
            images, labels = load_split(paths.DATA_DIR, "t10k", cfg.data.test_size)
            x, y = to_inputs(images, device), to_targets(labels, device)
            points = sweep(weights, method, cfg.prune.scope, cfg.prune.sparsities, x, y)
            dense = dense_accuracy(weights, points, x, y)
            summary = summarise(points, dense)
            out = Outputs()
            out.add_csv(paths.prune_curve(method), curve_rows(points, method, cfg.prune.scope))
            out.add_json(paths.prune_metrics(method), summary)
            out.commit()
            # DVC may skip training; this link names the run that produced the pruned model.
            if train_run:
                run.set_tags({"train_run_id": str(train_run)}, on_parent=True)
            run.log_series(metric_series(points), parent_prefix=f"prune_{method}.")
            run.log_metrics({"dense_accuracy": dense, **summary}, parent_prefix=f"prune_{method}.")
            run.log_artifacts(out.paths)
    line = ", ".join(f"{p.sparsity:g}: {p.accuracy:.2f}" for p in points)
    click.echo(f"prune_{method} ({cfg.prune.scope}): {line}", err=True)


if __name__ == "__main__":
    main()
