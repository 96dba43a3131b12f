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
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from typing import Any, TypeVar

import torch

T = TypeVar("T")
R = TypeVar("R")

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


class Tasks:
    """Where a stage's tasks run: ``workers`` spawned processes of ``threads`` threads each, or,
    with one worker, this process (at ``threads`` threads until the block ends). ``submit``
    returns a future either way; in this process the task has run when it returns. Leaving
    the block on an error (a worker's, or an interrupt) stops every worker."""

    def __init__(self, workers: int, threads: int, setup: Callable[..., None],
                 shared: tuple[Any, ...] = ()) -> None:
        self.workers, self.threads, self.setup, self.shared = workers, threads, setup, shared
        self._pool: ProcessPoolExecutor | None = None
        self._before = 0

    def __enter__(self) -> Tasks:
        if self.workers > 1:
            import torch.multiprocessing as mp

            self._pool = ProcessPoolExecutor(self.workers, mp.get_context("spawn"), _start,
                                             (self.threads, self.setup, self.shared))
        else:
            self._before = torch.get_num_threads()
            _start(self.threads, self.setup, self.shared)
        return self

    @property
    def in_process(self) -> bool:
        return self._pool is None

    def submit(self, work: Callable[[T], R], task: T) -> Future[R]:
        if self._pool is not None:
            return self._pool.submit(work, task)
        done: Future[R] = Future()
        try:
            done.set_result(work(task))
        except Exception as err:  # raised where the caller asks for the result, as a pool does
            done.set_exception(err)
        return done

    def __exit__(self, kind: type[BaseException] | None, *_: Any) -> None:
        if self._pool is None:
            torch.set_num_threads(self._before)
            return
        if kind is not None:  # stop now: kill the workers rather than finish their tasks
            for process in list(getattr(self._pool, "_processes", {}).values()):
                process.terminate()
        self._pool.shutdown(wait=True, cancel_futures=kind is not None)


def run_tasks(work: Callable[[T], R], tasks: Sequence[T], *, workers: int,
              setup: Callable[..., None], shared: tuple[Any, ...] = (),
              threads: int = THREADS_PER_TASK) -> Iterator[tuple[int, R]]:
    """``(i, work(tasks[i]))`` for every task, each as soon as it finishes (in order with one
    worker). ``work`` and ``setup`` must be module-level functions (a spawned worker imports
    them). A worker's exception, or an interrupt here, stops every worker."""
    if not tasks:
        return
    with Tasks(min(workers, len(tasks)), threads, setup, shared) as pool:
        if pool.in_process:  # each runs as it is submitted: hand it over before the next
            for i, task in enumerate(tasks):
                yield i, pool.submit(work, task).result()
            return
        futures = {pool.submit(work, task): i for i, task in enumerate(tasks)}
        for future in as_completed(futures):
            yield futures[future], future.result()
