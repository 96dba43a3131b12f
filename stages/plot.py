"""DVC stage `plot`: plots/accuracy_vs_sparsity.png from both pruning curves."""

import click

from prunelab import paths
from prunelab.cli import stage_errors, stage_help
from prunelab.config import METHODS, load_params
from prunelab.files import read_rows, write_bytes
from prunelab.plot import accuracy_figure, by_criterion
from prunelab.tracking import track


@click.command(help=stage_help("plot"))
def main() -> None:
    with stage_errors():
        cfg = load_params(paths.PARAMS)
        with track("plot", cfg) as run:
            curves = {m: by_criterion(read_rows(paths.prune_curve(m)), m,
                                      str(paths.prune_curve(m))) for m in METHODS}
            write_bytes(paths.FIGURE, accuracy_figure(curves, cfg.prune.scope, cfg.train.epochs,
                                                        cfg.model.arch))
            run.log_artifacts([paths.FIGURE])
    click.echo(f"plot: {paths.FIGURE}", err=True)


if __name__ == "__main__":
    main()
