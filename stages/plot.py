"""DVC stage `plot`: plots/accuracy_vs_sparsity.png from both pruning curves."""

import click

from prunelab import paths
from prunelab.cli import stage_errors
from prunelab.config import METHODS, load_params
from prunelab.files import read_csv
from prunelab.plot import draw
from prunelab.tracking import track


@click.command(help=__doc__)
def main() -> None:
    with stage_errors():
        cfg = load_params(paths.PARAMS)
        with track("plot", cfg) as run:
            curves = {m: read_csv(paths.prune_curve(m), ("sparsity", "accuracy",
                                                         "effective_sparsity")) for m in METHODS}
            draw(curves, cfg.prune.scope, cfg.train.epochs, paths.FIGURE)
            run.log_artifacts([paths.FIGURE])
    click.echo(f"plot: {paths.FIGURE}", err=True)


if __name__ == "__main__":
    main()
