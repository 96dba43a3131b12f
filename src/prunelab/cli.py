"""What every stage command shares: one clean error line instead of a traceback."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import click

from prunelab.errors import PrunelabError


@contextmanager
def stage_errors() -> Iterator[None]:
    """Turn a PrunelabError into click's one-line ``Error: ...`` and exit status 1."""
    try:
        yield
    except PrunelabError as exc:
        raise click.ClickException(str(exc)) from None
