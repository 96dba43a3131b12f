"""DVC stage `download`: MNIST's four IDX files, verified against the official MD5s."""

import _repo  # noqa: F401  (this checkout's src/ first: see stages/_repo.py)
import click

from prunelab import paths
from prunelab.data.mnist import default_sources, download
from prunelab.runtime.stage import stage_help
from prunelab.studies.dense import STUDY
from prunelab.tracking.stage import open_run


@click.command(help=stage_help(STUDY.stage("download")))
def main() -> None:
    # A broken params.yaml stops the pipeline before any work.
    with open_run(STUDY.stage("download")) as (_, run):
        source = download(paths.DATA_DIR, default_sources())
        run.set_tags({"mnist_source": source})
    click.echo(f"download: {paths.DATA_DIR} from {source}, all four MD5s match", err=True)


if __name__ == "__main__":
    main()
