"""stages/_launch.py: a stage handed to the warm server runs as it would in its own process.

Each test that starts, refuses or stops a server has its own server folder
(PRUNELAB_LAUNCHER_DIR), so its server is its own, and stops it at the end; the tests that only
hand stages to a running server share one (`running`). A probe script stands for a stage: it
imports stages/_repo.py first, as every stage does, and reports what it sees.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from reliability_helpers import PYTHON, SMALL_PARAMS, copy_code, env_for, seed_mnist
from repo_helpers import write_params

from prunelab import paths

ROOT = Path(__file__).resolve().parents[1]
PROBE = """\
import sys
PRELOADED = sorted(m for m in ("torch", "mlflow", "prunelab") if m in sys.modules)
REQS = sys.modules.get("mlflow.utils.requirements_utils")  # MLflow's installed-package map
WARM = REQS is not None and REQS._MODULES_TO_PACKAGES is not None
import _repo  # noqa: F401  (hands the stage over, as every stage does)
import json, os, time
mode = sys.argv[1]
if mode == "report":
    import prunelab
    print(json.dumps({"prunelab": prunelab.__file__, "pid": os.getpid(),
                      "client": os.environ.get("PRUNELAB_LAUNCHED_BY"),
                      "argv": sys.argv, "cwd": os.getcwd(), "path0": sys.path[0],
                      "src_first": sys.path[0].endswith("src"), "extra": os.environ.get("EXTRA"),
                      "preloaded": PRELOADED, "warm": WARM, "main": __name__, "file": __file__,
                      "umask": os.umask(0)}))
    print("to stderr", file=sys.stderr)
    sys.exit(int(sys.argv[2]))
if mode == "sleep":
    open(sys.argv[2], "w").write(str(os.getpid()))
    time.sleep(120)
if mode == "raise":
    raise RuntimeError("boom")
if mode == "interrupt":
    raise KeyboardInterrupt
"""


def proc_stat(pid: int) -> list[str]:
    """/proc/<pid>/stat's fields after the command name: state first, then as proc(5) lists."""
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().rsplit(")", 1)[1].split()


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return proc_stat(pid)[0] != "Z"  # a zombie is dead


def wait_for(predicate, timeout: float = 60) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s")
        time.sleep(0.05)


class Launcher:
    """A folder of stage scripts (the real _launch.py and _repo.py, and the probe) and its own
    server folder."""

    def __init__(self, root: Path, folder: str) -> None:
        self.root, self.folder = root, folder
        self.env = env_for(root, PRUNELAB_LAUNCHER_DIR=folder, EXTRA="from the stage's env")

    def run(self, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([PYTHON, "stages/probe.py", *args], cwd=self.root,
                              env={**self.env, **extra}, capture_output=True, text=True,
                              timeout=120, stdin=subprocess.DEVNULL)

    def control(self, *args: str) -> str:
        return subprocess.run([PYTHON, "stages/_launch.py", *args], cwd=self.root, env=self.env,
                              capture_output=True, text=True, timeout=180, check=True).stdout

    def server(self) -> int | None:
        return json.loads(self.control("status"))["pid"]

    def start(self) -> int:
        """Start the server and wait until it listens (it imports torch and MLflow first)."""
        pid = json.loads(self.control("start"))["pid"]
        assert pid is not None and pid == self.server()
        return pid


@contextlib.contextmanager
def launcher_in(root: Path) -> Iterator[Launcher]:
    """A Launcher in ``root`` with a server folder of its own; its servers stop at the end."""
    (root / "stages").mkdir()
    for name in ("_launch.py", "_repo.py"):
        shutil.copy(ROOT / "stages" / name, root / "stages" / name)
    (root / "stages" / "probe.py").write_text(PROBE)
    (root / "src" / "prunelab").mkdir(parents=True)  # this checkout's own package
    (root / "src" / "prunelab" / "__init__.py").write_text("")
    folder = tempfile.mkdtemp(prefix="pl-launch-")  # short: a socket path has ~100 characters
    made = Launcher(root, folder)
    try:
        yield made
    finally:
        made.control("stop", "--all")
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def launcher(tmp_path: Path) -> Iterator[Launcher]:
    """Its own folder and server: for the tests that start, refuse or stop a server."""
    with launcher_in(tmp_path) as made:
        yield made


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Launcher]:
    """One started server for the tests that only hand stages to a running server and leave it
    running (a server start imports torch and MLflow: ~6 s of CPU each)."""
    with launcher_in(tmp_path_factory.mktemp("running")) as made:
        made.start()  # a failed start still gets launcher_in's clean-up
        yield made


def test_a_served_stage_sees_its_own_process_and_exits_with_its_code(launcher: Launcher) -> None:
    """With the switch off, a stage runs in its own process. On, the first stage starts the
    server and waits for it; served, the stage runs in another process, with the stage
    process's argv, directory, environment, import path (this checkout's src/ first: its own
    prunelab, not the installed one), umask, streams and exit code, torch and MLflow already
    imported (and MLflow's map of installed packages filled) and prunelab not."""
    first = launcher.run("report", "3", PRUNELAB_LAUNCHER="0")
    assert first.returncode == 3, first.stderr
    alone = json.loads(first.stdout)
    assert alone["client"] is None and alone["preloaded"] == []
    assert launcher.server() is None

    served_run = launcher.run("report", "5")  # starts the server, waits for it, hands over
    assert served_run.returncode == 5, served_run.stderr
    assert served_run.stderr == "to stderr\n"
    served = json.loads(served_run.stdout)
    assert served["client"] is not None and int(served["client"]) != served["pid"]
    assert served["preloaded"] == ["mlflow", "torch"]
    assert (alone["warm"], served["warm"]) == (False, True)  # log_model's ~1 s map: filled once
    assert alone["prunelab"] == str(launcher.root / "src" / "prunelab" / "__init__.py")
    for key in ("prunelab", "cwd", "path0", "src_first", "extra", "main", "file", "umask"):
        assert served[key] == alone[key], key
    assert served["argv"] == ["stages/probe.py", "report", "5"]
    assert alone["argv"] == ["stages/probe.py", "report", "3"]
    assert served["main"] == "__main__" and served["src_first"]
    assert launcher.server() is not None


def test_without_a_usable_server_folder_the_stage_runs_in_its_own_process(
        launcher: Launcher, tmp_path: Path) -> None:
    """A server folder others can write to is refused: no server, the stage runs as started."""
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o777)
    shared.chmod(0o777)
    done = launcher.run("report", "0", PRUNELAB_LAUNCHER_DIR=str(shared))
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["client"] is None
    assert list(shared.iterdir()) == []


def test_only_a_plain_python_script_run_is_handed_over(running: Launcher) -> None:
    """Interpreter options, or the switch off: the stage runs in the process DVC started; a
    script read from stdin (`python -`) is not a file a server could run, so it runs here."""
    launcher = running
    assert launcher.server() is not None
    piped = subprocess.run([PYTHON, "-", "report", "0"], input="import sys\n"
                           "sys.path.insert(0, 'stages')\n" + PROBE, cwd=launcher.root,
                           env=launcher.env, capture_output=True, text=True, timeout=120)
    assert piped.returncode == 0, piped.stderr
    assert json.loads(piped.stdout)["client"] is None
    for cmd, extra in (([PYTHON, "-X", "dev", "stages/probe.py", "report", "0"], {}),
                       ([PYTHON, "stages/probe.py", "report", "0"], {"PRUNELAB_LAUNCHER": "0"})):
        done = subprocess.run(cmd, cwd=launcher.root, env={**launcher.env, **extra},
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["client"] is None, cmd


def test_a_refusing_server_leaves_every_stage_to_its_own_process(launcher: Launcher) -> None:
    """A server that could not serve safely (CUDA initialised while importing) leaves a marker:
    stages then run in their own processes and start no server."""
    path = json.loads(launcher.control("status"))["socket"]
    Path(path[:-len(".sock")] + ".off").write_text("CUDA was initialised\n")
    done = launcher.run("report", "0")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["client"] is None
    assert launcher.server() is None


def test_a_server_that_closes_before_it_forks_leaves_the_stage_to_its_process(
        launcher: Launcher) -> None:
    """An idle server stopping just as a stage connects closes the connection unanswered: the
    stage runs in its own process, once, with no error."""
    import socket
    import threading

    path = json.loads(launcher.control("status"))["socket"]
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(1)

    def close_one() -> None:
        conn, _ = listener.accept()
        conn.close()

    closer = threading.Thread(target=close_one, daemon=True)
    closer.start()
    try:
        done = launcher.run("report", "0")
    finally:
        listener.close()
        os.unlink(path)
    closer.join(timeout=10)
    assert not closer.is_alive()  # the stage did connect
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["client"] is None and done.stderr == "to stderr\n"


def test_errors_end_a_served_stage_as_they_end_a_process(running: Launcher) -> None:
    """An exception: its traceback and exit 1; KeyboardInterrupt: death by SIGINT."""
    launcher = running
    server = launcher.server()
    assert server is not None
    raised = launcher.run("raise")
    assert raised.returncode == 1
    assert raised.stderr.rstrip().endswith("RuntimeError: boom"), raised.stderr
    assert "Traceback" in raised.stderr
    interrupted = launcher.run("interrupt")
    assert interrupted.returncode == -signal.SIGINT, interrupted.stderr
    assert launcher.server() == server  # served, and the server lives on


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL])
def test_killing_the_stage_process_kills_the_served_stage(running: Launcher, tmp_path: Path,
                                                          how: signal.Signals) -> None:
    """SIGTERM is passed on (the stage process then ends as its stage did); after SIGKILL,
    which cannot be passed on, the stage sees its process gone and ends itself."""
    launcher = running
    server = launcher.server()
    assert server is not None
    pid_file = tmp_path / "pid"
    proc = subprocess.Popen([PYTHON, "stages/probe.py", "sleep", str(pid_file)],
                            cwd=launcher.root, env=launcher.env, stdin=subprocess.DEVNULL)
    wait_for(lambda: pid_file.exists() and pid_file.read_text() != "", timeout=60)
    stage = int(pid_file.read_text())
    assert stage != proc.pid and alive(stage)
    proc.send_signal(how)
    assert proc.wait(timeout=30) == -how
    wait_for(lambda: not alive(stage), timeout=10)
    assert launcher.server() == server


def test_the_server_stops_when_idle_or_told(launcher: Launcher) -> None:
    """PRUNELAB_LAUNCHER_IDLE seconds with no stage: it exits and removes its socket; `stop`
    ends it at once."""
    launcher.env["PRUNELAB_LAUNCHER_IDLE"] = "1"
    pid = launcher.start()
    wait_for(lambda: not alive(pid), timeout=30)
    assert not any(name.endswith(".sock") for name in os.listdir(launcher.folder))
    launcher.env["PRUNELAB_LAUNCHER_IDLE"] = "600"
    pid = launcher.start()
    assert "stopped the stage server" in launcher.control("stop")
    wait_for(lambda: not alive(pid), timeout=30)
    assert launcher.server() is None


def cpu_ticks(pid: int) -> int:
    """User + system clock ticks the process has used."""
    fields = proc_stat(pid)
    return int(fields[11]) + int(fields[12])


def test_a_server_told_to_stop_lets_its_stage_finish_and_takes_no_new_one(
        launcher: Launcher, tmp_path: Path) -> None:
    """`stop` while a stage runs: its socket goes at once (a new stage starts a new server),
    the server waits without spinning, and exits when its stage has finished."""
    pid = launcher.start()
    pid_file = tmp_path / "pid"
    proc = subprocess.Popen([PYTHON, "stages/probe.py", "sleep", str(pid_file)],
                            cwd=launcher.root, env=launcher.env, stdin=subprocess.DEVNULL)
    wait_for(lambda: pid_file.exists() and pid_file.read_text() != "", timeout=60)
    launcher.control("stop")
    wait_for(lambda: not any(n.endswith(".sock") for n in os.listdir(launcher.folder)), 10)
    late = launcher.run("report", "0")
    assert late.returncode == 0, late.stderr
    assert launcher.server() not in (None, pid)
    before = cpu_ticks(pid)
    time.sleep(1.0)
    assert cpu_ticks(pid) - before <= 5, "the stopping server spins"  # ticks of 1/100 s
    assert alive(pid) and alive(int(pid_file.read_text()))
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == -signal.SIGTERM
    wait_for(lambda: not alive(pid), timeout=30)


@pytest.mark.e2e
def test_served_stages_write_the_same_bytes(tmp_path: Path, mnist_dir: Path) -> None:
    """The train stage, then the sensitivity stage (which draws with pyplot, preloaded by the
    server) on small params, in their own processes and then served: the same model, initial
    weights, accuracy and figure, bit for bit (same machine, same thread count)."""
    repo = copy_code(tmp_path / "repo")
    write_params(repo, SMALL_PARAMS)
    seed_mnist(repo, mnist_dir)
    folder = tempfile.mkdtemp(prefix="pl-launch-")
    env = env_for(repo, PRUNELAB_TRACKING="off", PRUNELAB_LAUNCHER_DIR=folder)
    results = []
    try:
        for switch in ("0", "1"):
            if switch == "1":  # a server, listening
                subprocess.run([PYTHON, "stages/_launch.py", "start"], cwd=repo, env=env,
                               capture_output=True, timeout=300, check=True)
            for stage in (["stages/train.py", "0"], ["stages/sensitivity.py"]):
                done = subprocess.run([PYTHON, *stage], cwd=repo,
                                      env={**env, "PRUNELAB_LAUNCHER": switch},
                                      capture_output=True, text=True, timeout=600)
                assert done.returncode == 0, done.stderr
                assert ("launcher" in done.stderr) is False
            seed = repo / "models" / "seeds" / "0"
            metrics = json.loads((repo / "metrics" / "seeds" / "0" / "train.json").read_text())
            results.append(((seed / "model.pt").read_bytes(), (seed / "init.pt").read_bytes(),
                            metrics, (repo / paths.SENSITIVITY_FIGURE).read_bytes()))
            for out in ("models", "metrics", "plots"):
                shutil.rmtree(repo / out)
        log = "".join(p.read_text() for p in Path(folder).glob("*.log"))
        assert "stages/train.py 0" in log and "stages/sensitivity.py" in log  # served
        assert results[0] == results[1]
    finally:
        subprocess.run([PYTHON, "stages/_launch.py", "stop", "--all"], cwd=repo, env=env,
                       capture_output=True, timeout=60)
        shutil.rmtree(folder, ignore_errors=True)


def test_the_launcher_imports_nothing_heavy() -> None:
    """A stage process that hands its stage over never imports torch, MLflow or prunelab."""
    code = ("import sys; sys.path.insert(0, 'stages'); import _launch; "
            "print(sorted(m for m in ('torch', 'mlflow', 'prunelab', 'numpy') "
            "if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=60, check=True)
    assert done.stdout.strip() == "[]"
