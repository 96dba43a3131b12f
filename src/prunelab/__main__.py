"""`python -m prunelab` (or `prunelab`): the study's stages and tools in one place.

The pipeline itself runs with `dvc repro`; this entry point lists its stages and offers the
tools around it. Imports stay lazy so that `--help` answers at once.
"""

from __future__ import annotations

from pathlib import Path

import click

from prunelab import paths
from prunelab.runtime.declare import MAIN
from prunelab.runtime.stage import ENVIRONMENT, stage_errors

EPILOG = "\b\nAlso:\n" + "\n".join([
    "  dvc repro                 run the whole study (only what changed)",
    "  make retrain              fine-tuning and lottery tickets (the second pipeline)",
    "  dvc exp run -S KEY=VALUE  an experiment with one param changed",
    "  python stages/NAME.py     one stage by hand (--help: what it reads and writes)",
    "  make bench                the speed benchmark (bench/run.py)",
    "  make compare              LeNet-5 as a DVC experiment, compared with the workspace",
    "  make ui                   the MLflow UI on the project's store",
    "  prunelab push             dvc push --run-cache, for another machine to restore from",
])


@click.group(epilog=EPILOG)
def cli() -> None:
    """prunelab: how much of a trained network can be deleted, and what it costs and buys."""


@cli.command()
def stages() -> None:
    """List the studies and their DVC stages in pipeline order, with what each reads and
    writes (from src/prunelab/studies/registry.py)."""
    from prunelab.studies.registry import STUDIES

    for study in STUDIES:
        run = "dvc repro" if study.pipeline == MAIN else f"dvc repro {study.pipeline}"
        click.echo(f"\n{study.name}: {study.description} ({run})")
        for stage in study.stages:
            shown = f"{stage.name}@<seed>" if stage.per_seed else stage.name
            click.echo(f"  {shown:18} {stage.summary}")
            click.echo(f"  {'':18}   reads:  {', '.join(map(str, stage.reads)) or '-'}")
            click.echo(f"  {'':18}   writes: {', '.join(map(str, stage.writes))}")
    click.echo(f"\n<seed>: every seed of train.seeds; {paths.ITEM} in a path is that seed, "
               f"{paths.FIRST_SEED} the first one.")
    click.echo("\nEnvironment variables the stages honour:")
    for name, meaning in ENVIRONMENT.items():
        click.echo(f"  {name}: {meaning}")


@cli.command()
@click.option("--write", is_flag=True, help="Rewrite the files instead of showing the diff.")
def pipeline(write: bool) -> None:
    """Render dvc.yaml and stages/retrain/dvc.yaml from the studies' declarations: show what
    differs (exit 1 if anything does), or --write them."""
    from prunelab.runtime.files import write_text
    from prunelab.studies.dvc_files import REPO, differences, pipeline_files
    from prunelab.studies.registry import STUDIES

    if write:
        for file, text in pipeline_files(STUDIES).items():
            write_text(REPO / file, text)
            click.echo(f"wrote {file}")
        return
    diff = differences(STUDIES)
    for line in diff:
        click.echo(line)
    if diff:
        raise SystemExit(1)
    click.echo("dvc.yaml and stages/retrain/dvc.yaml match the studies' declarations")


@cli.command()
@click.argument("params_file", default=str(paths.PARAMS),
                type=click.Path(dir_okay=False, path_type=Path))
def check(params_file: Path) -> None:
    """Validate PARAMS_FILE (default params.yaml) as the pipeline's first stage does."""
    from prunelab.config import check_device
    from prunelab.studies.registry import load_params

    with stage_errors():
        cfg = load_params(params_file)
        check_device(cfg.train.device)
    click.echo(f"{params_file}: valid")


# The options live once, on the command itself (prunelab.studies.report.main); importing it
# here would load torch for every `prunelab --help`, so this forwards the arguments to it.
@cli.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
             add_help_option=False)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def report(args: tuple[str, ...]) -> None:
    """The generated blocks (README, docs/*.md) from the metrics and curve files of a run, and
    a published copy of its study report (`prunelab report --help`: the options)."""
    from prunelab.studies.report import main

    main.main(list(args), prog_name="prunelab report")


@cli.command()
@click.argument("revs", nargs=-1, required=True)
@click.option("--figure", type=click.Path(dir_okay=False, path_type=Path),
              default=str(paths.ARCH_FIGURE), show_default=True,
              help="Where to write the side-by-side figure (PNG).")
@click.option("--readme", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Write the table into the `architectures` block of this README or of the "
                   "docs/*.md page beside it that holds it, instead of printing it.")
def compare(revs: tuple[str, ...], figure: Path, readme: Path | None) -> None:
    """Compare the pruning curves of REVS side by side (each a commit, branch, DVC experiment
    name or `workspace`; e.g. `workspace lenet5` after `dvc exp run -n lenet5 --temp -S
    model.arch=lenet5`): a figure against nominal and effective sparsity, and a table."""
    from prunelab.reporting.compare import comparison_table, differences, load_run, speed_table
    from prunelab.reporting.figures import arch_figure
    from prunelab.reporting.tables import fill_blocks
    from prunelab.runtime.files import write_bytes, write_text

    with stage_errors():
        runs = [load_run(rev) for rev in revs]
        write_bytes(figure, arch_figure([(r.label, r.curves) for r in runs]))
        text = "\n\n".join(part for part in (differences(runs), comparison_table(runs),
                                                speed_table(runs)) if part)
        if readme is None:
            click.echo(text)
        else:
            for page, page_text in fill_blocks(readme, {"architectures": text}).items():
                write_text(page, page_text)
    click.echo(f"compare: {figure} ({', '.join(r.label for r in runs)})", err=True)


@cli.command()
@click.option("-r", "--remote", help="The DVC remote (default: the default remote).")
@click.option("-j", "--jobs", type=int, help="Parallel transfers (DVC's default if unset).")
def push(remote: str | None, jobs: int | None) -> None:
    """`dvc push --run-cache`, plus the objects of the run-cache entries' uncached outputs
    (the curves kept in git), which DVC 3 leaves out: what another machine needs to restore
    this machine's stages with `dvc fetch --run-cache && dvc repro --pull`."""
    from prunelab.studies.share import push as share

    with stage_errors():
        pushed = share(remote, jobs)
    click.echo(f"pushed: outputs, {pushed.entries} run-cache entries and {pushed.objects} "
               f"objects of their uncached outputs"
               + (f" ({pushed.missing} named but in no local cache)" if pushed.missing else ""))


@cli.group()
def tracking() -> None:
    """The MLflow store the stages write (MLFLOW_TRACKING_URI, else <repo>/mlflow.db)."""


@tracking.command("close-stale")
@click.option("--uri", help="The store to sweep (default: MLFLOW_TRACKING_URI, else "
                            "<repo>/mlflow.db).")
def close_stale(uri: str | None) -> None:
    """Mark KILLED every run left RUNNING by a process that is gone (kill -9, power loss); `make
    ui` runs this first. Runs of live processes and of other hosts are left alone."""
    from prunelab.tracking.runs import close_stale as sweep  # lazy: MLflow takes seconds

    with stage_errors():
        sweep(uri)


if __name__ == "__main__":
    cli()
