"""Share a machine's work through a DVC remote: `dvc push --run-cache`, and what it leaves out.

A run-cache entry records "this stage, with these deps, wrote these outputs"; another machine
that fetches it (`dvc fetch --run-cache`, `dvc repro --pull`) restores the stage instead of
running it, by pulling the entry's output objects. DVC 3's push sends the entries and the
objects of the workspace's *cached* outputs only: an output declared `cache: false` (the
curves `dvc plots` draws, which live in git) has its object in the local cache (DVC saves
it there for the run-cache) but never in the remote, so the other machine finds the entry
incomplete and reruns the stage (DVC: "Some of the cache files do not exist neither locally
nor on remote"). `push` sends those objects too, through DVC's own API.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from prunelab.errors import PrunelabError


@dataclass(frozen=True)
class Pushed:
    """What one push sent: run-cache entries, and the objects its entries name beyond the
    workspace's (missing: named by an entry, in no local cache, e.g. after `dvc gc`)."""

    entries: int
    objects: int
    missing: int


def push(remote: str | None = None, jobs: int | None = None, root: Path | None = None
         ) -> Pushed:
    """`dvc push --run-cache` of the repository at ``root`` (default: the one holding the
    working directory) to ``remote`` (default: the default remote), then every object the
    local run-cache entries name that DVC's push leaves out (the uncached outputs')."""
    from dvc.exceptions import DvcException
    from dvc.repo import Repo
    from dvc.stage.cache import RunCacheNotSupported

    try:
        with Repo(None if root is None else os.fspath(root)) as repo:
            try:  # the entries, as `dvc push --run-cache` sends them (it returns no list)
                entries = repo.stage_cache.push(remote)
            except RunCacheNotSupported:  # e.g. an HTTP remote: DVC's push skips it too
                entries = []
            repo.push(remote=remote, jobs=jobs)
            sent = missing = 0
            for odb, objs in repo.stage_cache.get_used_objs(entries).items():
                result = repo.cloud.push(objs, jobs=jobs, remote=remote, odb=odb)
                sent, missing = sent + len(result.transferred), missing + len(result.failed)
    except DvcException as exc:
        raise PrunelabError(f"push: {' '.join(str(exc).split())}") from None
    return Pushed(len(entries), sent, missing)
