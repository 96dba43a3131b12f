"""DVC stage `plot`: plots/accuracy_vs_sparsity.png from both pruning curves."""

import click

from prunelab import paths
from prunelab.cli import stage_errors, stage_help
from prunelab.config import METHODS, load_params
from prunelab.files import read_csv, write_bytes
from prunelab.plot import accuracy_figure
from prunelab.tracking import track


@click.command(help=stage_help("plot"))
def main() -> None:
    with stage_errors():
        cfg = load_params(paths.PARAMS)
        with track("plot", cfg) as run:
            curves = {m: read_csv(paths.prune_curve(m), ("sparsity", "accuracy",
                                                         "effective_sparsity")) for m in METHODS}
            write_bytes(paths.FIGURE, accuracy_figure(curves, cfg.prune.scope, cfg.train.epochs))
            run.log_artifacts([paths.FIGURE])
    click.echo(f"plot: {paths.FIGURE}", err=True)


if __name__ == "__main__":
    main()
