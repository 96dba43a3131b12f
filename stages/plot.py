"""DVC stage `plot`: plots/accuracy_vs_sparsity.png, the mean curves across the seeds with
their 95% bands (CI of the mean; the range of one run) and, for the notebook's own set-up, the
notebook's points, from both aggregate curves."""

import _repo  # noqa: F401  (this checkout's src/ first: see stages/_repo.py)
import click

from prunelab import paths
from prunelab.config import METHODS
from prunelab.errors import DataError
from prunelab.reporting.figures import band_figure
from prunelab.reporting.notebook import notebook_applies
from prunelab.runtime.files import read_rows, write_bytes
from prunelab.runtime.stage import stage_help
from prunelab.studies.oneshot import STUDY
from prunelab.tracking.stage import open_run


def method_rows(method: str) -> list[dict[str, str]]:
    """One granularity's aggregate rows; a file without rows, or with rows of another
    granularity, is one line naming it (the figure must not silently lose a panel)."""
    path = paths.aggregate_curve(method)
    rows = read_rows(path)
    if not rows or any(row.get("method") != method for row in rows):
        raise DataError(f"{path}: damaged (no rows, or rows that are not {method} pruning); "
                        "rerun: dvc repro -f")
    return rows


@click.command(help=stage_help(STUDY.stage("plot")))
def main() -> None:
    with open_run(STUDY.stage("plot")) as (cfg, run):
        rows = [row for m in METHODS for row in method_rows(m)]
        write_bytes(paths.FIGURE, band_figure(rows, cfg.prune.scope, cfg.train.epochs,
                                              cfg.model.arch, notebook=notebook_applies(cfg)))
        run.log_artifacts([paths.FIGURE])
    click.echo(f"plot: {paths.FIGURE}", err=True)


if __name__ == "__main__":
    main()
