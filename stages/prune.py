"""DVC stages `prune_weight` and `prune_unit`: prune fresh copies of the trained net, test each."""

import click

from prunelab import paths
from prunelab.cli import stage_errors
from prunelab.config import METHODS, load_params
from prunelab.data import load_split
from prunelab.files import write_csv, write_json
from prunelab.model import load_weights, resolve_device, to_inputs, to_targets
from prunelab.prune import curve_rows, dense_accuracy, summarise, sweep


@click.command(help=__doc__)
@click.argument("method", type=click.Choice(METHODS))
def main(method: str) -> None:
    """METHOD is `weight` (smallest |w|) or `unit` (smallest-L2 rows)."""
    with stage_errors():
        cfg = load_params(paths.PARAMS)
        device = resolve_device(cfg.train.device)
        weights = load_weights(paths.MODEL, device)
        images, labels = load_split(paths.DATA_DIR, "t10k", cfg.data.test_size)
        x, y = to_inputs(images, device), to_targets(labels, device)
        points = sweep(weights, method, cfg.prune.scope, cfg.prune.sparsities, x, y)
        dense = dense_accuracy(weights, points, x, y)
        write_csv(paths.prune_curve(method), curve_rows(points))
        write_json(paths.prune_metrics(method), summarise(points, dense, method, cfg.prune.scope))
    line = ", ".join(f"{p.sparsity:g}: {p.accuracy:.2f}" for p in points)
    click.echo(f"prune_{method} ({cfg.prune.scope}): {line}", err=True)


if __name__ == "__main__":
    main()
