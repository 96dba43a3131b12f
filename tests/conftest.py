"""Session-wide fixtures: one DVC cache, one baseline pipeline repository and one verified MNIST
copy per test run, shared by every module (and every pytest-xdist worker) that needs them.

Why: each small pipeline costs ~40 s on two cores, almost all of it process start-up (torch,
MLflow), and MNIST comes from the network on a fresh machine. Building the baseline once and
copying it keeps the whole suite within its ten-minute budget. Under xdist the workers share
the session's temporary root, and a file lock makes exactly one of them build each thing.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from filelock import FileLock
from reliability_helpers import MNIST_MD5, md5_file
from repo_helpers import MAIN, SessionBaseline, commit_all, dvc, make_repo, read_json

from prunelab import paths

# Stage scripts loaded in-process (their click commands) import stages/_repo.py first.
STAGES_DIR = str(MAIN / "stages")
if STAGES_DIR not in sys.path:
    sys.path.append(STAGES_DIR)


def _shared_root(factory: pytest.TempPathFactory) -> Path:
    """The session's temp root: common to all xdist workers of this run, unique to the run."""
    base = factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


def _once(root: Path, name: str, build: Callable[[Path], None]) -> Path:
    """``root/name``, built by exactly one process of this run; the others wait, then reuse it."""
    target, done = root / name, root / f"{name}.done"
    with FileLock(str(root / f"{name}.lock")):
        if not done.exists():
            shutil.rmtree(target, ignore_errors=True)
            build(target)
            done.touch()
    return target


@pytest.fixture(scope="session")
def session_baseline(tmp_path_factory: pytest.TempPathFactory) -> SessionBaseline:
    """The first pipeline of the run: downloads MNIST (into the shared cache and its run-cache,
    so later repositories restore `download` instead of fetching again), trains, prunes, plots."""
    root = _shared_root(tmp_path_factory)
    # The baseline is the cache's first user: an earlier run of the same small params would
    # leave its outputs in the run-cache, and this `dvc repro` would restore them untracked.
    dvc_cache = root / "dvc-cache"
    dvc_cache.mkdir(exist_ok=True)

    def build(repo: Path) -> None:
        make_repo(repo, cache_dir=dvc_cache)
        done = dvc(repo, "repro")
        (root / "baseline-first-repro.txt").write_text(done.stdout + done.stderr,
                                                        encoding="utf-8")
        commit_all(repo, "baseline results")

    repo = _once(root, "baseline", build)
    return SessionBaseline(repo, dvc_cache,
                           (root / "baseline-first-repro.txt").read_text(encoding="utf-8"),
                           read_json(repo / paths.train_run(0))["mlflow_run_id"])


@pytest.fixture(scope="session")
def dvc_cache(session_baseline: SessionBaseline) -> Path:
    """The session's DVC cache, after the baseline filled it: MNIST and the `download` stage's
    run-cache entry are there, so `repo_helpers.repro` restores the data instead of fetching."""
    return session_baseline.cache


@pytest.fixture(scope="session")
def mnist_dir(request: pytest.FixtureRequest) -> Path:
    """The four verified MNIST files (read only; copy before damaging): the checkout's
    data/mnist when it passes the official MD5s, else the baseline's download (which its stage
    verified)."""
    checkout = MAIN / "data" / "mnist"
    if all((checkout / name).is_file() and md5_file(checkout / name) == md5
           for name, md5 in MNIST_MD5.items()):
        return checkout
    return request.getfixturevalue("session_baseline").repo / "data" / "mnist"


# The order the modules start in: longest first, the short ones last, where they fill the gaps
# at the end (module totals measured with --durations=0, 2026-12-05). `make test` runs `pytest
# -n 2 --dist loadfile --no-loadscope-reorder`: xdist hands whole modules to its two workers in
# this order, each worker taking the next one as it nears the end of its current one. The first
# builds the session baseline; the second needs no MNIST, so the other worker has work while
# the baseline is built and the modules after it wait for it.
LONGEST_FIRST = ("test_experiments", "test_reliability_params", "test_retrain_pipeline",
                 "test_tracking_server", "test_reliability_load", "test_reliability",
                 "test_launcher", "test_savings", "test_machines", "test_repro_safety",
                 "test_threads", "test_e2e", "test_registry", "test_replicates", "test_tracking",
                 "test_graph_pipeline", "test_reliability_network", "test_retrain",
                 "test_atinit", "test_structure", "test_share", "test_plots_offline",
                 "test_fresh_clone", "test_remote")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Modules in the order above, each kept whole; then any other module with an end-to-end
    or server test; then the rest (the short ones), in collection order."""
    slow = {item.module.__name__ for item in items  # type: ignore[attr-defined]
            if item.get_closest_marker("e2e") or item.get_closest_marker("server")}

    def rank(module: str) -> int:
        if module in LONGEST_FIRST:
            return LONGEST_FIRST.index(module)
        return len(LONGEST_FIRST) + (module not in slow)

    order = {item.nodeid: i for i, item in enumerate(items)}
    items.sort(key=lambda item: (rank(item.module.__name__),  # type: ignore[attr-defined]
                                 order[item.nodeid]))


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist the workers run side by side, so each one and the stages it starts
    take the fair share of the cores that the project gives any job running beside others
    (`PRUNELAB_JOBS`, src/prunelab/runtime/threads.py): with torch's default, two workers' math
    threads spin against each other on two cores. A thread count set by the caller
    (OMP_NUM_THREADS or PRUNELAB_JOBS) is left as it is. The tests of thread sizing set or clear
    both variables themselves."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT") or 1)
    if workers > 1 and not {"OMP_NUM_THREADS", "PRUNELAB_JOBS"} & os.environ.keys():
        import torch  # noqa: F401  (loaded first: the count goes on torch, not into the env)

        from prunelab.runtime import threads

        os.environ["PRUNELAB_JOBS"] = str(workers)
        threads.apply()


def pytest_unconfigure(config: pytest.Config) -> None:
    """The stage servers the run's stages started (stages/_launch.py) stop with the run, not
    after their idle time: once, from the main process (not from each xdist worker)."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        return
    import subprocess

    subprocess.run([sys.executable, str(MAIN / "stages" / "_launch.py"), "stop", "--all"],
                   capture_output=True, timeout=60, check=False)
