"""DVC stage `download`: MNIST's four IDX files, verified against the official MD5s."""

import _repo  # noqa: F401  (this checkout's src/ first: see stages/_repo.py)
import click

from prunelab import paths
from prunelab.config import load_params
from prunelab.data.mnist import default_sources, download
from prunelab.runtime.stage import stage_errors, stage_help
from prunelab.tracking.runs import track


@click.command(help=stage_help("download"))
def main() -> None:
    with stage_errors():
        cfg = load_params(paths.PARAMS)  # a broken params.yaml stops the pipeline before any work
        with track("download", cfg) as run:
            source = download(paths.DATA_DIR, default_sources())
            run.set_tags({"mnist_source": source})
    click.echo(f"download: {paths.DATA_DIR} from {source}, all four MD5s match", err=True)


if __name__ == "__main__":
    main()
