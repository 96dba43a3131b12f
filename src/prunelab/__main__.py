"""`python -m prunelab` (or `prunelab`): the study's stages and tools in one place.

The pipeline itself runs with `dvc repro`; this entry point lists its stages and offers the
tools around it. Imports stay lazy so that `--help` answers at once.
"""

from __future__ import annotations

from pathlib import Path

import click

from prunelab import paths
from prunelab.cli import ENVIRONMENT, stage_errors

EPILOG = "\b\nAlso:\n" + "\n".join([
    "  dvc repro                 run the whole study (only what changed)",
    "  dvc exp run -S KEY=VALUE  an experiment with one param changed",
    "  python stages/NAME.py     one stage by hand (--help: what it reads and writes)",
    "  make bench                the speed benchmark (bench/run.py)",
    "  make ui                   the MLflow UI on the project's store",
])


@click.group(epilog=EPILOG)
def cli() -> None:
    """prunelab: how much of a trained network can be deleted, and what it costs and buys."""


@cli.command()
def stages() -> None:
    """List the DVC stages in pipeline order, with what each reads and writes."""
    for name, files in paths.STAGES.items():
        click.echo(f"{name:13} {files.summary}")
        click.echo(f"{'':13}   reads:  {', '.join(map(str, files.reads))}")
        click.echo(f"{'':13}   writes: {', '.join(map(str, files.writes))}")
    click.echo("\nEnvironment variables the stages honour:")
    for name, meaning in ENVIRONMENT.items():
        click.echo(f"  {name}: {meaning}")


@cli.command()
@click.argument("params_file", default=str(paths.PARAMS),
                type=click.Path(dir_okay=False, path_type=Path))
def check(params_file: Path) -> None:
    """Validate PARAMS_FILE (default params.yaml) as the pipeline's first stage does."""
    from prunelab.config import check_device, load_params

    with stage_errors():
        cfg = load_params(params_file)
        check_device(cfg.train.device)
    click.echo(f"{params_file}: valid")


@cli.command()
@click.option("--readme", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Write the tables into this README's blocks instead of printing them.")
def report(readme: Path | None) -> None:
    """The README's results and savings tables, from the metrics and curve files."""
    from prunelab.report import main

    main.callback(readme)  # type: ignore[misc]


if __name__ == "__main__":
    cli()
