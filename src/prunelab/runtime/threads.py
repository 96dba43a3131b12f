"""How many math threads a stage's process uses: a fair share of the cores it runs beside.

PyTorch gives every process as many threads as there are cores. Two trainings at once on 2
cores then ran 3.3x slower together than one after the other; with one thread each they ran
slightly faster than sequentially (issue 12). So a process takes ``max(1, cores // jobs)``
threads, where ``jobs`` is how many processes run at once:

1. ``OMP_NUM_THREADS``, when set, is the thread count; torch reads it itself (at import, and
   never above the cores), so it is left to torch;
2. else ``PRUNELAB_JOBS`` says how many jobs run at once;
3. else, under ``dvc queue start -j N``, the number of this repository's queue workers alive;
4. else one job, and torch keeps its own default (it knows physical from logical cores).

The thread count changes float results (the order of the sums), so every run records it
(``machine.threads``). Deciding imports no torch; ``apply`` sets it on torch if loaded.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from prunelab.errors import PrunelabError
from prunelab.runtime.machine import stage_process, usable_cores

THREADS_VAR = "OMP_NUM_THREADS"
JOBS_VAR = "PRUNELAB_JOBS"
MAX_COUNT = 1024  # anything larger is a typo, and torch takes a 32-bit int
# `dvc queue start -j N` spawns N processes `dvc exp queue-worker dvc-exp-<hash>-<n>@localhost`
# (<hash>: the repository's celery folder, <n>: 1..N); each runs one experiment at a time, as a
# child `dvc exp exec-run` whose children are the stages (dvc/repo/experiments/queue/celery.py).
WORKER_NODE = re.compile(r"dvc-exp-(?P<repo>[0-9a-f]+)-(?P<num>\d+)@\S+")


class ThreadsError(PrunelabError):
    """OMP_NUM_THREADS or PRUNELAB_JOBS is not a whole number in range."""


@dataclass(frozen=True)
class Threads:
    """A process's math-thread count and why it is that."""

    count: int
    why: str  # "OMP_NUM_THREADS", "PRUNELAB_JOBS=2", "dvc queue: 2 workers" or "default"


def thread_count(cores: int, jobs: int) -> int:
    """One of ``jobs`` processes running at once gets ⌊cores / jobs⌋ threads, at least 1."""
    return max(1, cores // jobs)


def positive(env: Mapping[str, str], name: str) -> int | None:
    """``env[name]`` as a whole number from 1 to MAX_COUNT; None when unset or empty."""
    raw = env.get(name)
    if raw is None or not raw.strip():
        return None
    text = raw.strip()
    # isascii: int() would accept other scripts' digits; len: and 5,000-digit strings raise
    if text.isascii() and text.isdigit() and len(text) <= 4 and 1 <= int(text) <= MAX_COUNT:
        return int(text)
    raise ThreadsError(f"{name}={raw[:40]!r}: must be a whole number from 1 to {MAX_COUNT}, "
                       "or unset")


def worker_node(cmdline: Sequence[str]) -> tuple[str, str] | None:
    """(repository hash, node name) when ``cmdline`` is a `dvc exp queue-worker` process."""
    for i, arg in enumerate(cmdline[1:-1], 1):
        if arg == "queue-worker" and cmdline[i - 1] == "exp":
            found = WORKER_NODE.fullmatch(cmdline[i + 1])
            return (found["repo"], found[0]) if found else None
    return None


def count_workers(ancestors: Iterable[Sequence[str]],
                  processes: Iterable[Sequence[str]]) -> int | None:
    """How many queue workers of the repository whose worker runs this process are alive;
    None when no ancestor is a queue worker (a plain `dvc repro` or `dvc exp run`).

    Both arguments are command lines: this process's ancestors, and every process."""
    mine = next((node[0] for c in ancestors if (node := worker_node(c)) is not None), None)
    if mine is None:
        return None
    nodes = {node[1] for c in processes if (node := worker_node(c)) is not None and node[0] == mine}
    return max(1, len(nodes))  # its own worker is alive, even if it was not listed


def queue_workers() -> int | None:
    """This repository's live `dvc queue` workers when this process runs under one, else None.

    A few /proc reads up the process tree; the full process list only under a worker."""
    import psutil

    def cmdline(p: psutil.Process) -> list[str]:
        try:
            return p.cmdline()
        except psutil.Error:  # gone, or another user's
            return []

    try:
        ancestors = [cmdline(p) for p in stage_process().parents()]
    except psutil.Error:
        return None
    if not any(worker_node(c) for c in ancestors):
        return None
    return count_workers(ancestors, (cmdline(p) for p in psutil.process_iter()))


def decide(env: Mapping[str, str], cores: int,
           workers: Callable[[], int | None] = queue_workers) -> Threads:
    """The thread count for a process on ``cores`` cores (rules in the module docstring).
    Both variables are checked even when the first one decides: a typo fails loudly."""
    threads, jobs = positive(env, THREADS_VAR), positive(env, JOBS_VAR)
    if threads is not None:
        return Threads(threads, THREADS_VAR)
    if jobs is not None:
        return Threads(thread_count(cores, jobs), f"{JOBS_VAR}={jobs}")
    found = workers()
    if found is not None and found > 1:
        return Threads(thread_count(cores, found), f"dvc queue: {found} workers")
    return Threads(cores, "default")


def apply(env: Mapping[str, str] | None = None) -> Threads:
    """Decide this process's thread count and use it: on torch if already imported, else
    through OMP_NUM_THREADS, which a later ``import torch`` reads. OMP_NUM_THREADS and the
    default leave torch's own count; what torch uses is returned when torch is loaded (and
    recorded with every run: machine.threads)."""
    decided = decide(os.environ if env is None else env, usable_cores())
    torch = sys.modules.get("torch")
    if decided.why in ("default", THREADS_VAR):  # torch read OMP_NUM_THREADS, or will
        return Threads(torch.get_num_threads(), decided.why) if torch else decided
    if torch is None:
        os.environ[THREADS_VAR] = str(decided.count)
        return decided
    torch.set_num_threads(decided.count)
    # the inter-op pool is fixed once parallel work started (or it was set): then keep it
    with contextlib.suppress(RuntimeError):
        torch.set_num_interop_threads(decided.count)
    return decided
