"""Math threads sized to the jobs running at once (issue 12): ⌊cores / jobs⌋ ≥ 1 per process,
OMP_NUM_THREADS honoured, bad values one clear line, `dvc queue start -j N` detected."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import click
import pytest
from hypothesis import given
from hypothesis import strategies as st
from repo_helpers import MAIN, dvc, env_for, git, queued_experiments, run_queue

from prunelab.runtime import stage as cli
from prunelab.runtime.machine import seconds_since_start, usable_cores
from prunelab.runtime.threads import (
    JOBS_VAR,
    MAX_COUNT,
    THREADS_VAR,
    Threads,
    ThreadsError,
    count_workers,
    decide,
    queue_workers,
    thread_count,
    worker_node,
)

SRC = MAIN / "src"


def no_queue() -> int | None:
    return None


def must_not_look() -> int | None:
    raise AssertionError("the process tree was searched although a variable decides")


# --- the rule ------------------------------------------------------------------------------


@given(cores=st.integers(1, 4096), jobs=st.integers(1, MAX_COUNT))
def test_each_of_n_jobs_gets_its_share_of_the_cores(cores: int, jobs: int) -> None:
    """⌊C / N⌋ threads, at least 1: N jobs never oversubscribe C cores (unless N > C, when
    each still needs one), and fewer than N cores stay idle."""
    n = thread_count(cores, jobs)
    assert n == max(1, cores // jobs) >= 1
    if jobs <= cores:
        assert jobs * n <= cores < jobs * (n + 1)
    else:
        assert n == 1
    assert decide({JOBS_VAR: str(jobs)}, cores, must_not_look) == Threads(n, f"{JOBS_VAR}={jobs}")


@given(cores=st.integers(1, 512), threads=st.integers(1, MAX_COUNT),
       jobs=st.one_of(st.none(), st.integers(1, 64)))
def test_omp_num_threads_is_honoured_as_it_stands(cores: int, threads: int,
                                                  jobs: int | None) -> None:
    """OMP_NUM_THREADS is the count, whatever the cores, PRUNELAB_JOBS or the queue say (a
    stage then leaves it to torch, which reads the variable itself)."""
    env = {THREADS_VAR: str(threads)} | ({JOBS_VAR: str(jobs)} if jobs else {})
    assert decide(env, cores, must_not_look) == Threads(threads, THREADS_VAR)


def test_queue_workers_size_threads_when_no_variable_is_set() -> None:
    """Under a queue of N > 1 workers: ⌊C / N⌋; one worker or none: the default (all cores,
    torch keeps its own count); empty variables count as unset."""
    assert decide({}, 8, lambda: 3) == Threads(2, "dvc queue: 3 workers")
    assert decide({}, 2, lambda: 2) == Threads(1, "dvc queue: 2 workers")
    assert decide({}, 8, lambda: 1) == Threads(8, "default")
    assert decide({THREADS_VAR: "", JOBS_VAR: "  "}, 4, no_queue) == Threads(4, "default")
    assert decide({JOBS_VAR: " 2 "}, 4, must_not_look).count == 2


BAD = ["0", "-1", "2.0", "two", "1,2", "0x2", "+2", "２", str(MAX_COUNT + 1), "9" * 5000]


@pytest.mark.parametrize("name", [JOBS_VAR, THREADS_VAR])
@pytest.mark.parametrize("value", BAD, ids=lambda v: v[:8])
def test_a_bad_value_is_one_line_naming_variable_value_and_range(name: str, value: str) -> None:
    """A value that is not a whole number in 1..1024 stops with one line: the variable, the
    value (cut short) and what is allowed; checked even when the other variable decides."""
    other = {THREADS_VAR: "1"} if name == JOBS_VAR else {}
    with pytest.raises(ThreadsError) as caught:
        decide({name: value, **other}, 4, no_queue)
    message = str(caught.value)
    assert "\n" not in message and len(message) < 150
    assert message.startswith(f"{name}='") and value[:10] in message
    assert f"whole number from 1 to {MAX_COUNT}" in message


def test_a_bad_value_stops_a_stage_with_one_error_line(monkeypatch: pytest.MonkeyPatch) -> None:
    """Through cli.stage_errors (what every stage runs in): a click error, the stage body
    never runs."""
    monkeypatch.setenv(JOBS_VAR, "many")
    ran = False
    with pytest.raises(click.ClickException) as caught, cli.stage_errors():
        ran = True
    assert not ran
    assert caught.value.message == (f"{JOBS_VAR}='many': must be a whole number from 1 to "
                                    f"{MAX_COUNT}, or unset")


# --- `dvc queue start -j N` ----------------------------------------------------------------

PY, EXE = "/repo/.venv/bin/python", "/repo/.venv/bin/dvc"


def worker(repo: str, num: int, *extra: str) -> list[str]:
    """A queue worker's command line as DVC 3 spawns it (dvc/repo/experiments/queue/celery.py)."""
    return [PY, EXE, "exp", "queue-worker", f"dvc-exp-{repo}-{num}@localhost", *extra]


EXEC_RUN = [PY, EXE, "exp", "exec-run", "--infofile", "/repo/.dvc/tmp/exps/run/ab/ab.run"]
QUEUE_START = [PY, EXE, "queue", "start", "-j", "2"]  # the forked parent of a worker
INIT = ["/sbin/init"]


def test_worker_node_reads_only_queue_worker_command_lines() -> None:
    assert worker_node(worker("9c367b", 1, "--clean")) == ("9c367b", "dvc-exp-9c367b-1@localhost")
    for cmdline in (EXEC_RUN, QUEUE_START, INIT, [], ["grep", "queue-worker"],
                    [PY, EXE, "exp", "queue-worker"], [PY, EXE, "queue-worker", "dvc-exp-a-1@x"],
                    [PY, EXE, "exp", "queue-worker", "my-node@localhost"]):
        assert worker_node(cmdline) is None, cmdline


def test_count_workers_counts_this_repositorys_live_workers() -> None:
    """The ancestor worker names the repository; its workers are counted once each, other
    repositories' workers and everything else not at all."""
    ancestors = [EXEC_RUN, worker("9c367b", 1, "--clean"), QUEUE_START, INIT]
    processes = [INIT, QUEUE_START, worker("9c367b", 1, "--clean"), worker("9c367b", 2),
                 worker("9c367b", 2),  # listed twice (a thread, or a pid reused mid-listing)
                 worker("0ddba1", 1), worker("0ddba1", 2), worker("0ddba1", 3),  # another repo
                 EXEC_RUN, [], ["python", "stages/train.py", "0"]]
    assert count_workers(ancestors, processes) == 2
    assert count_workers(ancestors, [worker("9c367b", n) for n in range(1, 5)]) == 4
    # its own worker vanished from the listing (exited meanwhile): still one job, itself
    assert count_workers(ancestors, [worker("0ddba1", 1)]) == 1
    # a plain `dvc repro` / `dvc exp run`: no worker above, whatever runs elsewhere
    assert count_workers([["dvc", "repro"], INIT], processes) is None


def test_queue_workers_outside_a_queue_is_none() -> None:
    """This test process runs under no queue worker: the real process-tree search says so."""
    assert queue_workers() is None


# --- a real process ------------------------------------------------------------------------

PROBE = """
import json, sys
import click
if sys.argv[1] == "torch first":
    import torch
from prunelab.runtime import stage as cli
from prunelab.runtime.machine import describe

@click.command()
@click.argument("order")
def main(order):
    with cli.stage_errors():
        import torch  # loaded only now if not before: then OMP_NUM_THREADS carries the count
        click.echo(json.dumps({"threads": torch.get_num_threads(),
                               "machine": describe().threads}))

main()
"""


def probe(order: str, **env: str) -> subprocess.CompletedProcess[str]:
    """A stage-like process: enters cli.stage_errors and reports torch's thread count."""
    clean = {k: v for k, v in os.environ.items() if k not in (JOBS_VAR, THREADS_VAR)}
    return subprocess.run([sys.executable, "-c", PROBE, order], capture_output=True, text=True,
                          timeout=120, env={**clean, "PYTHONPATH": str(SRC), **env})


@pytest.mark.parametrize("order", ["torch first", "torch inside"])
def test_a_stage_process_uses_its_share_or_what_omp_says(order: str) -> None:
    """PRUNELAB_JOBS=2: torch runs ⌊cores / 2⌋ ≥ 1 threads, and the machine record says so;
    OMP_NUM_THREADS=1 beside PRUNELAB_JOBS=1 (which alone would mean every core): 1."""
    share = max(1, usable_cores() // 2)
    for env, expected in (({JOBS_VAR: "2"}, share), ({JOBS_VAR: "1", THREADS_VAR: "1"}, 1),
                          ({JOBS_VAR: "1"}, usable_cores())):
        done = probe(order, **env)
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout) == {"threads": expected, "machine": expected}, env


def test_a_stage_process_with_a_bad_value_exits_with_one_error_line() -> None:
    done = probe("torch inside", **{THREADS_VAR: "all"})
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.strip() == (f"Error: {THREADS_VAR}='all': must be a whole number from 1 "
                                   f"to {MAX_COUNT}, or unset")


# --- under DVC's queue ---------------------------------------------------------------------

QUEUE_PROBE = """
import json, os, sys
import torch
from prunelab.runtime import stage as cli
from prunelab.runtime import threads
from prunelab.runtime.machine import usable_cores
with cli.stage_errors():
    why = threads.decide(os.environ, usable_cores()).why
    json.dump({"threads": torch.get_num_threads(), "why": why}, open("probe.json", "w"))
"""


@pytest.mark.e2e
def test_dvc_queue_with_two_workers_gives_each_stage_its_share(tmp_path: Path) -> None:
    """`dvc queue start -j 2` with two experiments: each stage finds the 2 workers of its
    repository and runs ⌊cores / 2⌋ threads. Pins what the detection reads of DVC's process
    tree (queue-worker -> exec-run -> stage), so a DVC upgrade that changes it fails here."""
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "probe.py").write_text(QUEUE_PROBE, encoding="utf-8")
    (repo / "params.yaml").write_text("x: 0\n", encoding="utf-8")
    (repo / "dvc.yaml").write_text(
        "stages:\n  probe:\n    cmd: python probe.py ${x}\n    deps: [probe.py]\n"
        "    params: [x]\n    outs: [probe.json]\n", encoding="utf-8")
    env = env_for(repo, PYTHONPATH=str(SRC), **{JOBS_VAR: None, THREADS_VAR: None})
    git(repo, "init", "-q", "-b", "main")
    git(repo, "config", "user.name", "prunelab tests")
    git(repo, "config", "user.email", "tests@prunelab.invalid")
    dvc(repo, "init", "-q", env=env)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "probe")
    out = dvc(repo, "exp", "run", "--queue", "-S", "x=1,2", env=env)
    names = queued_experiments(out.stdout + out.stderr)
    assert len(names) == 2, out.stdout + out.stderr
    status = run_queue(repo, names, jobs=2, timeout=240, env=env, poll=1)
    share = max(1, usable_cores() // 2)
    for name in names:
        assert any(name in line and "Success" in line for line in status.splitlines()), status
        dvc(repo, "exp", "apply", name, env=env)
        probed = json.loads((repo / "probe.json").read_text(encoding="utf-8"))
        assert probed == {"threads": share, "why": "dvc queue: 2 workers"}, name


def test_seconds_since_start_brackets_the_real_start() -> None:
    """A child started between t0 and t1 (monotonic clock): its age read later lies within
    [now - t1, now - t0], give or take a clock tick (10 ms) at each end. (psutil's
    create_time carries the boot time's lost fraction, up to 1 s; the start-up bench reads
    this instead.)"""
    import time

    import psutil

    t0 = time.monotonic()
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    t1 = time.monotonic()
    try:
        time.sleep(0.5)
        now_before = time.monotonic()
        age = seconds_since_start(psutil.Process(child.pid))
        now_after = time.monotonic()
    finally:
        child.kill()
        child.wait()
    assert now_before - t1 - 0.025 <= age <= now_after - t0 + 0.025, (age, t1 - t0)
