"""What every stage command shares: one clean error line instead of a traceback."""

from __future__ import annotations

import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import click

from prunelab.errors import PrunelabError, StageInterrupted


def _interrupt(signum: int, frame: object) -> None:
    raise StageInterrupted(signum)


@contextmanager
def stage_errors() -> Iterator[None]:
    """One line and a non-zero exit for a PrunelabError (status 1) or SIGTERM (128 + 15).

    SIGTERM is turned into an exception so that atomic writes discard their temporary files
    and the MLflow run is marked KILLED, exactly as for Ctrl-C.
    """
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        yield
    except PrunelabError as exc:
        raise click.ClickException(str(exc)) from None
    except StageInterrupted as exc:
        click.echo(f"Error: {exc}; nothing of this stage was kept", err=True)
        sys.exit(128 + exc.signum)
    finally:
        signal.signal(signal.SIGTERM, previous)
