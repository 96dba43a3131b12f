"""Helpers for the reliability tests (test_reliability*.py): temporary repositories, processes,
fault-injecting HTTP servers and direct reads of an MLflow SQLite store.

A plain module (``from reliability_helpers import ...``). Everything here works in temporary
directories; the project checkout is only read (its code, and data/mnist when present, are
copied). Subprocesses get PYTHONDONTWRITEBYTECODE=1 so no __pycache__ lands anywhere.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.server
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

# Shared with the other end-to-end tests; re-exported for the reliability test modules.
import pytest
from repo_helpers import error_lines, free_port, sqlite_uri, write_params  # noqa: F401
from repo_helpers import stop_process as stop_group  # noqa: F401

MAIN = Path(__file__).resolve().parents[1]
VENV_BIN = MAIN / ".venv" / "bin" if (MAIN / ".venv" / "bin").is_dir() else Path(
    sys.executable).parent
PYTHON = str(VENV_BIN / "python")
DVC = str(VENV_BIN / "dvc")

MNIST_MD5 = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}

# Small enough for a shared 2-core machine: 20 optimiser steps, 3 pruning points.
SMALL_PARAMS: dict[str, Any] = {
    "data": {"train_size": 2000, "test_size": 500},
    "model": {"arch": "mlp", "mlp": {"hidden": [64, 32]},
              "lenet5": {"channels": [6, 16], "fc": [120, 84]},
              "resnet": {"widths": [16, 32, 64], "blocks": 1}, "lstm": {"hidden": 128}},
    "train": {"epochs": 1, "lr": 0.001, "batch_size": 100, "seeds": [0], "device": "cpu"},
    "prune": {"sparsities": [0.0, 0.5, 0.9], "scope": "layer",
              "weight_criteria": ["magnitude"], "unit_criteria": ["l2"], "calibration_size": 256},
    "finetune": {"epochs": 1, "lr": None, "weight_criteria": ["magnitude"],
                 "unit_criteria": ["l2"]},
    "imp": {"rounds": 2, "rate": 0.2, "output_rate": 0.1, "rewind": "init",
            "controls": ["reinit", "random_mask"], "eval_every": 5},
    "atinit": {"seeds": [0], "methods": ["random"], "rounds": [1], "control_rounds": [],
               "controls": [],
               "batches": 2, "eval_every": 5, "supermask_inits": [], "supermask_keep": [],
               "supermask_epochs": 1, "supermask_lr": 0.001},
    "during": {"method_seeds": [], "schedule_seeds": [0], "shapes": ["decreasing"],
               "final_sparsity": 0.9, "sparsities": [], "start": 0.1, "end": 0.7, "every": 5,
               "dst_methods": [], "dst_sparsities": [], "drop_fraction": 0.3,
               "earlybird": False, "earlybird_sparsity": 0.9, "earlybird_every": 5,
               "earlybird_threshold": 0.1, "earlybird_window": 2, "noise": [0.3],
               "delete": [0.3], "eval_every": 100},
    "l0": {"lambdas": []},
    "archs": {"archs": ["mlp"], "datasets": ["mnist1d"], "seeds": [0], "mnist_epochs": 1,
              "mnist1d_epochs": 1, "resnet_mnist_epochs": 1,
              "resnet_shift": 2, "resnet_widths": [4, 8, 8], "resnet_blocks": 1,
              "lstm_hidden": 8, "resnet_lr": 0.003, "lstm_lr": 0.003, "schedule": "onecycle",
              "compact_sparsity": 0.5,
              "weight_criteria": ["magnitude"], "unit_criteria": ["l2"]},
}
# A few seconds to tens of seconds of training (600 steps), depending on the machine's load.
SLOW_PARAMS: dict[str, Any] = {
    **SMALL_PARAMS,
    "data": {"train_size": 20000, "test_size": 500},
    "model": {"arch": "mlp", "mlp": {"hidden": [256, 128]},
              "lenet5": {"channels": [6, 16], "fc": [120, 84]},
              "resnet": {"widths": [16, 32, 64], "blocks": 1}, "lstm": {"hidden": 128}},
    "train": {**SMALL_PARAMS["train"], "epochs": 3},
}
# Far too long to finish (200,000 steps, minutes even on an idle machine: 30 epochs took 12 s
# once training got fast): for runs that are always interrupted in epoch 1.
ENDLESS_PARAMS: dict[str, Any] = {
    **SLOW_PARAMS, "train": {**SLOW_PARAMS["train"], "epochs": 1000},
}
# tqdm's progress label once ENDLESS_PARAMS training is under way. The bar is drawn on a
# terminal only: start the stage with start_on_terminal to see it.
FIRST_EPOCH = "epoch 1/1000"

_SCRUB_PREFIXES = ("MLFLOW_", "DVC_", "PRUNELAB_", "GIT_")
_SCRUB = ("PYTHONPATH", "VIRTUAL_ENV")


class CommandFailed(AssertionError):
    """A command that should have worked did not; the message carries its output."""


# --- processes ------------------------------------------------------------------------------


def env_for(root: Path, **extra: str | None) -> dict[str, str]:
    """Environment for a command in ``root``: venv first on PATH, ``root/src`` importable.

    ``extra`` sets variables (None removes one).
    """
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(_SCRUB_PREFIXES) and k not in _SCRUB}
    env.update(PATH=f"{VENV_BIN}{os.pathsep}{env.get('PATH', '/usr/bin:/bin')}",
               PYTHONPATH=str(Path(root) / "src"), PYTHONUNBUFFERED="1",
               PYTHONDONTWRITEBYTECODE="1", DVC_NO_ANALYTICS="1", GIT_TERMINAL_PROMPT="0")
    for key, value in extra.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


def run(cmd: Sequence[str], cwd: Path, env: Mapping[str, str] | None = None,
        timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run ``cmd``; raise CommandFailed (with its output) when ``check`` and it fails."""
    done = subprocess.run(list(cmd), cwd=cwd, env=dict(env) if env else env_for(cwd),
                          capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)
    if check and done.returncode != 0:
        raise CommandFailed(
            f"{' '.join(cmd)} (in {cwd}) exited {done.returncode}\n"
            f"--- stdout ---\n{done.stdout[-5000:]}\n--- stderr ---\n{done.stderr[-5000:]}")
    return done


def stage(root: Path, name: str, *args: str, env: Mapping[str, str] | None = None,
          timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess[str]:
    """``python stages/<name>.py ARGS`` in ``root`` (as DVC runs it)."""
    return run([PYTHON, f"stages/{name}.py", *args], root, env=env, timeout=timeout,
               check=check)


def start_stage(root: Path, name: str, *args: str, env: Mapping[str, str],
                log: Path) -> tuple[subprocess.Popen[bytes], Any]:
    """Start a stage in the background, stdout+stderr to ``log``; returns (process, log file)."""
    out = log.open("wb")
    proc = subprocess.Popen([PYTHON, f"stages/{name}.py", *args], cwd=root, env=dict(env),
                            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    return proc, out


def start_on_terminal(cmd: Sequence[str], cwd: Path, env: Mapping[str, str],
                      log: Path) -> subprocess.Popen[bytes]:
    """Start ``cmd`` in a new session with stdout and stderr on a pseudo-terminal, as a user at
    a terminal runs it (progress bars are drawn only there), copying what it prints to ``log``.

    Read the log with :func:`terminal_output` once the process has ended: it waits until the
    last bytes are copied.
    """
    import fcntl
    import pty
    import struct
    import termios

    master, slave = pty.openpty()
    # 24 x 120: a new pseudo-terminal is 0 columns wide, and tqdm draws nothing in 0 columns.
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))
    log.write_bytes(b"")
    try:
        proc = subprocess.Popen(list(cmd), cwd=cwd, env=dict(env), stdout=slave, stderr=slave,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    except BaseException:
        os.close(master)
        raise
    finally:
        os.close(slave)

    def copy() -> None:
        with log.open("ab", buffering=0) as out:
            while True:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # EIO: every process holding the terminal has exited
                    break
                if not chunk:
                    break
                out.write(chunk)
        os.close(master)

    copier = threading.Thread(target=copy, daemon=True)
    copier.start()
    proc.copier = copier  # type: ignore[attr-defined]
    return proc


def terminal_output(proc: subprocess.Popen[bytes], log: Path, timeout: float = 30) -> str:
    """Everything a :func:`start_on_terminal` process printed (after it has ended)."""
    proc.copier.join(timeout)  # type: ignore[attr-defined]
    return log.read_text(errors="replace")


def dvc(repo: Path, *args: str, env: Mapping[str, str] | None = None, timeout: float = 600,
        check: bool = True) -> subprocess.CompletedProcess[str]:
    return run([DVC, *args], repo, env=env, timeout=timeout, check=check)


def git(repo: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return run(["git", *args], repo, env=env_for(repo), timeout=120, check=check)




def assert_clean_error(stderr: str, *must_contain: str) -> str:
    """Exactly one 'Error:' line, containing every ``must_contain``, and no traceback."""
    assert "Traceback" not in stderr, stderr[-4000:]
    lines = error_lines(stderr)
    assert len(lines) == 1, f"expected one 'Error:' line, got {lines}\n{stderr[-4000:]}"
    for text in must_contain:
        assert text in lines[0], f"{text!r} not in {lines[0]!r}"
    return lines[0]




def wait_until(predicate: Callable[[], Any], timeout: float, what: str,
               proc: subprocess.Popen[Any] | None = None, log: Path | None = None,
               poll: float = 0.2) -> Any:
    """Poll ``predicate`` until truthy (returned); fail if ``proc`` exits first or on timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            tail = log.read_text(errors="replace")[-4000:] if log and log.exists() else ""
            raise AssertionError(f"process exited {proc.returncode} before {what}\n{tail}")
        time.sleep(poll)
    tail = log.read_text(errors="replace")[-4000:] if log and log.exists() else ""
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}\n{tail}")


# --- files and repositories -------------------------------------------------------------------




def copy_code(dest: Path) -> Path:
    """The project's stages/, src/ and pipeline files (no caches) into ``dest``."""
    dest.mkdir(parents=True, exist_ok=True)
    # no dvc.lock: stages/retrain/dvc.lock names outputs this repo's cache has never seen
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "dvc.lock")
    for name in ("stages", "src"):
        shutil.copytree(MAIN / name, dest / name, ignore=ignore)
    # data/params.checked: the validate stage's output, in git and a dep of `download`
    # (make_repo's `dvc commit download` needs it to exist).
    for name in ("dvc.yaml", ".gitignore", ".dvcignore", "data/params.checked"):
        if (MAIN / name).exists():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(MAIN / name, dest / name)
    return dest


def md5_file(path: Path) -> str:
    return hashlib.md5(Path(path).read_bytes(), usedforsecurity=False).hexdigest()


def seed_mnist(root: Path, source: Path, names: Sequence[str] = tuple(MNIST_MD5)) -> None:
    """Copy (never hard-link: tests damage them) MNIST files into ``root/data/mnist``."""
    target = Path(root) / "data" / "mnist"
    target.mkdir(parents=True, exist_ok=True)
    for name in names:
        shutil.copyfile(source / name, target / name)


def make_repo(dest: Path, mnist: Path, params: Mapping[str, Any] = SMALL_PARAMS,
              cache_dir: Path | None = None) -> Path:
    """A git + DVC repository with the pipeline, ``params``, and MNIST recorded as the output of
    a done `download` stage (`dvc commit`, no network), all committed."""
    copy_code(dest)
    write_params(dest, params)
    git(dest, "init", "-q", "-b", "main")
    git(dest, "config", "user.name", "prunelab reliability tests")
    git(dest, "config", "user.email", "tests@prunelab.invalid")
    git(dest, "config", "commit.gpgsign", "false")
    dvc(dest, "init", "-q")
    shutil.copy2(MAIN / ".dvc" / "config", dest / ".dvc" / "config")
    if cache_dir is not None:
        dvc(dest, "cache", "dir", "--local", str(cache_dir))
    seed_mnist(dest, mnist)
    dvc(dest, "commit", "-f", "-q", "download")
    git(dest, "add", "-A")
    git(dest, "commit", "-q", "-m", "pipeline, small params, MNIST")
    return dest


def temp_files(root: Path, dirs: Sequence[str] = ("models", "metrics", "plots")) -> list[str]:
    """Leftover atomic-write temporaries ('.<name>.*.tmp') anywhere under ``dirs`` (a seed's
    outputs are in its own folder, models/seeds/<seed>/ and so on)."""
    found = []
    for d in dirs:
        base = Path(root) / d
        if base.is_dir():
            found += [str(p) for p in base.rglob(".*.tmp") if p.is_file()]
    return found


# --- MLflow SQLite store, read directly (cheap to poll) ----------------------------------------




def stage_runs(db: Path, stage_name: str) -> list[tuple[str, str]]:
    """(run id, status) of every child run of ``stage_name`` in the SQLite store ``db``.

    Read under the project's own store lock, so a poll never collides with a writer.
    """
    from filelock import FileLock

    if not Path(db).exists():
        return []
    with FileLock(str(db) + ".lock", timeout=120):
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
        try:
            rows = con.execute(
                "SELECT r.run_uuid, r.status FROM runs r JOIN tags t ON t.run_uuid = r.run_uuid"
                " WHERE t.key = 'stage' AND t.value = ?", (stage_name,)).fetchall()
        except sqlite3.OperationalError:  # tables not created yet
            rows = []
        finally:
            con.close()
    return [(str(a), str(b)) for a, b in rows]


# --- network --------------------------------------------------------------------------------




@contextlib.contextmanager
def closed_port() -> Iterator[int]:
    """A loopback port bound but never listening: connections are refused at once."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield int(sock.getsockname()[1])


class _QuietServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:  # clients hang up: fine
        pass


@contextlib.contextmanager
def http_server(handler: type[http.server.BaseHTTPRequestHandler]) -> Iterator[str]:
    """Serve ``handler`` on 127.0.0.1 (random port) in a thread; yields 'http://127.0.0.1:N/'."""
    server = _QuietServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1},
                              daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


class QuietHandler(http.server.BaseHTTPRequestHandler):
    """Base request handler without access logs on stderr."""

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass


@contextlib.contextmanager
def read_only_dir(path: Path) -> Iterator[None]:
    """Make ``path`` refuse new files for the block, as a read-only folder does.

    As root, permission bits do not stop a write, so the folder is made immutable
    (`chattr +i`) instead; where neither works the calling test is skipped.
    """
    if os.geteuid() != 0:
        mode = path.stat().st_mode
        path.chmod(0o555)
        try:
            yield
        finally:
            path.chmod(mode)
        return
    if subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode != 0:
        pytest.skip("cannot make a folder read-only here (no chattr +i as root)")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(path)], check=True)
