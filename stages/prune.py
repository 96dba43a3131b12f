"""DVC stages `prune_weight` and `prune_unit`: prune fresh copies of the trained net, test each.

METHOD is `weight` (smallest |w|) or `unit` (smallest-L2 rows).
"""

import click

from prunelab import paths
from prunelab.cli import stage_errors
from prunelab.config import METHODS, load_params
from prunelab.data import load_split
from prunelab.files import read_json, write_csv, write_json
from prunelab.model import load_weights, resolve_device, to_inputs, to_targets
from prunelab.prune import curve_rows, dense_accuracy, metric_series, summarise, sweep
from prunelab.tracking import track


@click.command(help=__doc__)
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
            summary = summarise(points, dense_accuracy(weights, points, x, y), method,
                                cfg.prune.scope)
            write_csv(paths.prune_curve(method), curve_rows(points))
            write_json(paths.prune_metrics(method), summary)
            # DVC may skip training; this link names the run that produced the pruned model.
            if train_run:
                run.set_tags({"train_run_id": str(train_run)}, on_parent=True)
            run.log_series(metric_series(points), parent_prefix=f"prune_{method}.")
            run.log_metrics({k: summary[k] for k in ("dense_accuracy", "max_sparsity_within_1pt",
                                                     "accuracy_at_max_sparsity")},
                            parent_prefix=f"prune_{method}.")
            run.log_artifacts([paths.prune_curve(method), paths.prune_metrics(method)])
    line = ", ".join(f"{p.sparsity:g}: {p.accuracy:.2f}" for p in points)
    click.echo(f"prune_{method} ({cfg.prune.scope}): {line}", err=True)


if __name__ == "__main__":
    main()
