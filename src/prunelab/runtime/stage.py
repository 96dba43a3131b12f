"""What every stage command shares: one clean error line instead of a traceback, and a --help
that says what the stage reads, writes and which environment variables it honours."""

from __future__ import annotations

import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import click

from prunelab import paths
from prunelab.errors import PrunelabError, StageInterrupted
from prunelab.runtime import threads
from prunelab.runtime.declare import Stage

# Every environment variable a stage reads (names only: tracking.runs and data.mnist
# own their meaning). Kept here so that --help and the README list the same set.
ENVIRONMENT: dict[str, str] = {
    "PRUNELAB_TRACKING": "off = run without MLflow",
    "MLFLOW_TRACKING_URI": "a tracking server instead of <repo>/mlflow.db",
    "PRUNELAB_MNIST_MIRRORS": "comma-separated MNIST mirrors (download only)",
    "DVC_ROOT, DVC_EXP_NAME": "set by DVC: the repository and experiment a run belongs to",
    "PRUNELAB_JOBS": "how many stages run at once; each then uses cores // jobs math threads "
                     "(unset: the workers of `dvc queue start -j N`, else 1)",
    "OMP_NUM_THREADS": "math threads per stage, overriding PRUNELAB_JOBS",
}


def stage_help(*stages: Stage, details: str = "") -> str:
    """A stage command's --help: its summary, what it reads and writes, its environment."""
    lines: list[str] = []
    for stage in stages:
        # \b keeps click from re-wrapping the lists into one paragraph.
        lines += [f"DVC stage `{stage.name}`: {stage.summary}.", "", "\b",
                  "  reads:  " + ", ".join(map(str, (paths.PARAMS, *stage.reads))),
                  "  writes: " + ", ".join(map(str, stage.writes)), ""]
    if details:
        lines += [details, ""]
    lines += ["\b", "Environment:"]
    lines += [f"  {name}: {meaning}" for name, meaning in ENVIRONMENT.items()]
    lines += ["", "Run it through DVC (`dvc repro " + " ".join(s.name for s in stages) +
              "`) so that DVC records its outputs."]
    return "\n".join(lines)


def _interrupt(signum: int, frame: object) -> None:
    raise StageInterrupted(signum)


@contextmanager
def stage_errors(kept: str = "nothing of this stage was kept") -> Iterator[None]:
    """One line and a non-zero exit for a PrunelabError (status 1) or SIGTERM (128 + 15);
    the stage's math threads sized first (prunelab.runtime.threads: a fair share of the cores).

    SIGTERM is turned into an exception so that atomic writes discard their temporary files
    and the MLflow run is marked KILLED, exactly as for Ctrl-C. ``kept`` says what survives a
    kill (a stage that saves its work as it goes keeps some).
    """
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        threads.apply()  # before any tensor work: torch's inter-op pool is fixed after it
        yield
    except PrunelabError as exc:
        raise click.ClickException(str(exc)) from None
    except StageInterrupted as exc:
        click.echo(f"Error: {exc}; {kept}", err=True)
        sys.exit(128 + exc.signum)
    finally:
        signal.signal(signal.SIGTERM, previous)
