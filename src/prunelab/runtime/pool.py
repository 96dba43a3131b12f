"""Independent trainings side by side: one single-threaded worker process per math thread.

A study's arms (the at-init study's masks, say) are small trainings that do not scale with
threads: on 2 cores one arm trained with 2 threads took as long as with 1 (issue 23). So a
stage runs its arms in as many worker processes as it has math threads, each worker with one
thread, and the study's throughput doubles on 2 cores. Every arm then runs with one thread
whatever the machine's core count (the thread count changes float results), in a worker or, with
one worker or on a GPU, in the stage's own process.

Workers are spawned (never forked: the parent's OpenMP pool does not survive a fork) with
torch's multiprocessing context, so the shared state (the data split, the init) reaches them
through shared memory once, not per task. ``setup(*shared)`` runs once in each worker (and in
the stage's process for one worker) and keeps what ``work(task)`` needs in its module.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

import torch

T = TypeVar("T")

THREADS_PER_TASK = 1


def plan(device: torch.device) -> tuple[int, int]:
    """(workers, threads per task) for a stage on ``device``: on the CPU one single-threaded
    worker per math thread the stage was given (:mod:`prunelab.runtime.threads`); on a GPU
    the stage itself, with its threads."""
    given = max(1, torch.get_num_threads())
    return (given, THREADS_PER_TASK) if device.type == "cpu" else (1, given)


def _start(threads: int, setup: Callable[..., None], shared: tuple[Any, ...]) -> None:
    torch.set_num_threads(threads)
    setup(*shared)


def run_tasks(work: Callable[[T], Any], tasks: Sequence[T], *, workers: int,
              setup: Callable[..., None], shared: tuple[Any, ...] = (),
              threads: int = THREADS_PER_TASK) -> Iterator[tuple[int, Any]]:
    """``(i, work(tasks[i]))`` for every task, each as soon as it finishes (in order with one
    worker). ``work`` and ``setup`` must be module-level functions (a spawned worker imports
    them). With one worker the tasks run here, with ``threads`` threads, then the stage's own
    count is restored. A worker's exception, or an interrupt here, stops every worker."""
    if not tasks:
        return
    if workers <= 1 or len(tasks) == 1:
        before = torch.get_num_threads()
        try:
            _start(threads, setup, shared)
            for i, task in enumerate(tasks):
                yield i, work(task)
        finally:
            torch.set_num_threads(before)
        return
    import torch.multiprocessing as mp

    pool = mp.get_context("spawn").Pool(min(workers, len(tasks)), _start,
                                        (threads, setup, shared))
    try:
        yield from pool.imap_unordered(_Indexed(work), list(enumerate(tasks)))
        pool.close()
    finally:
        pool.terminate()
        pool.join()


class _Indexed:
    """``(i, task) -> (i, work(task))``: picklable, so a spawned worker can run it."""

    def __init__(self, work: Callable[[Any], Any]) -> None:
        self.work = work

    def __call__(self, item: tuple[int, Any]) -> tuple[int, Any]:
        i, task = item
        return i, self.work(task)
