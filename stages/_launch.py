"""Start a stage in a warm process: a fork of a server that has already imported torch and MLflow.

DVC runs every stage as its own process, `python stages/<stage>.py ARGS`, and each used to spend
~2.5 s importing torch and ~2 s importing MLflow before any work: most of a small stage's time,
and most of the test suite's. So a stage process that finds no server starts one (this file,
`serve`), which imports those third-party modules once and waits on a Unix socket. Every stage
process, first thing (stages/_repo.py), hands the server its arguments, working directory,
environment, umask and standard streams; the server forks a child that runs the stage script as
`__main__`, exactly as `python stages/<stage>.py` would, while the stage process waits, forwards
SIGINT/SIGTERM/SIGHUP to the child and exits with the child's status. prunelab itself is never
imported by the server: each child imports it fresh, from its own checkout's src/, so edits and
`dvc exp run --temp` copies run their own code.

Same results: the server's key is the interpreter and everything that steers start-up or the
math libraries before a stage runs (PYTHON*, OMP_*, MKL_*, ..., locale variables, the installed
packages' folders); a stage whose key differs gets its own server. Thread counts are set by the
stage itself (prunelab.runtime.threads), which reads `PRUNELAB_LAUNCHED_BY` to look for `dvc
queue` workers above the stage process rather than above the server. tests/test_launcher.py runs
stages both ways and compares the bytes they write.

Only a plain `python stages/<stage>.py ...` is handed over (no interpreter options, a script file
and not `python -` reading stdin, not a multiprocessing worker, not a process started by a served
stage). `PRUNELAB_LAUNCHER=0` turns it off. The server exits by itself after
`PRUNELAB_LAUNCHER_IDLE` seconds (default 600) with no stage running; `python stages/_launch.py
stop` stops the current environment's server now, `start` starts one (and waits until it listens),
`status` says whether one runs. Its socket and log: /tmp/prunelab-<uid>/<key>.sock and .log
(PRUNELAB_LAUNCHER_DIR moves them).
"""

from __future__ import annotations

import contextlib
import os
import socket
import stat
import struct
import sys

SWITCH = "PRUNELAB_LAUNCHER"  # "0": every stage runs in its own process, as DVC started it
IDLE = "PRUNELAB_LAUNCHER_IDLE"  # seconds the server waits for a stage before it exits
FOLDER = "PRUNELAB_LAUNCHER_DIR"  # where the sockets and logs live (servers there only)
CLIENT = "PRUNELAB_LAUNCHED_BY"  # in a served stage: the pid of the process DVC started
# never prunelab (see the docstring); what the stages import that costs time: torch, its
# dynamo (the optimizers import it on first use, ~1.3 s), MLflow and its SQLite and REST stores,
# pyplot (~0.5 s per stage that draws; its backend is chosen on first use, by the stage: Agg)
PRELOAD = ("torch", "torch._dynamo", "mlflow", "mlflow.store.tracking.sqlalchemy_store",
           "sqlalchemy.dialects.sqlite", "alembic.config", "mlflow.store.tracking.rest_store",
           "mlflow.pytorch", "matplotlib", "matplotlib.pyplot", "click", "yaml", "psutil")
SHADOWS = (*PRELOAD, "numpy", "pandas", "pyarrow", "sqlalchemy")  # what preloading imports
# environment variables read while the interpreter and the math libraries start, by prefix
STARTUP_VARS = ("PYTHON", "OMP_", "MKL_", "KMP_", "OPENBLAS_", "GOTO", "LD_", "MALLOC",
                "TORCH", "PYTORCH", "CUDA", "ARROW", "MPL", "LANG", "LC_", "TZ", "HOME",
                "XDG_")
UNKEYED = ("PYTHONPATH", "TORCHINDUCTOR_")  # see key(); inductor's: torch sets it on import
START_S = 60  # how long the first stage waits for the server it started
LOG = ""  # the server's log file, set when it starts
HEADER = struct.Struct("!Q")  # request length
PID = struct.Struct("!q")  # the child's pid, sent once it is forked
STATUS = struct.Struct("!i")  # the child's exit code; -N when signal N ended it
FORWARDED = ("SIGINT", "SIGTERM", "SIGHUP")  # passed on to the stage


def runtime_dir() -> str:
    """This user's private folder for sockets and logs (created 0700; refused if not ours):
    PRUNELAB_LAUNCHER_DIR, else /tmp/prunelab-<uid>."""
    path = os.environ.get(FOLDER) or f"/tmp/prunelab-{os.getuid()}"
    with contextlib.suppress(FileExistsError):
        os.mkdir(path, 0o700)
    info = os.lstat(path)
    if info.st_uid != os.getuid() or info.st_mode & 0o077 or not stat.S_ISDIR(info.st_mode):
        raise PermissionError(f"{path} is not a private folder of this user")
    return path


def key() -> str:
    """What a server must share with a stage process to run it as that process would run."""
    import hashlib
    import site

    parts = [sys.executable, sys.version, repr(sys.flags)]
    parts += sorted(f"{k}={v}" for k, v in os.environ.items()
                    if k.startswith(STARTUP_VARS) and not k.startswith(UNKEYED))
    # PYTHONPATH only adds import folders, and a child takes its stage's import path; a folder
    # on it keys the server only when it holds its own copy of a preloaded package
    parts += [folder for folder in os.environ.get("PYTHONPATH", "").split(os.pathsep)
              if any(os.path.exists(os.path.join(folder, name)) for name in SHADOWS)]
    for folder in (*site.getsitepackages(), site.getusersitepackages()):
        if os.path.isdir(folder):  # a pip install or uninstall changes its folder's mtime
            parts.append(f"{folder}@{os.stat(folder).st_mtime_ns}")
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:16]


def socket_path() -> str:
    return os.path.join(runtime_dir(), key() + ".sock")


def beside(path: str, suffix: str) -> str:
    """The server's other files, named after its socket: .lock, .log, .off."""
    return path[:-len(".sock")] + suffix


def handed_over() -> bool:
    """Whether this process may hand its stage to a server (the module docstring's rules)."""
    return (os.environ.get(SWITCH, "1") != "0" and CLIENT not in os.environ
            and getattr(sys, "orig_argv", [None])[1:] == sys.argv and bool(sys.argv[0])
            and os.path.isfile(sys.argv[0]))  # a script on disk: not `python -` (stdin)


# --- the stage process (client) ---------------------------------------------------------------

def delegate() -> None:
    """Run this stage in a server's child and exit with its status. Returns (the stage then runs
    here) when handing over is off or not allowed, when no server starts, or when the server
    did not take the stage (it was stopping)."""
    if not handed_over():
        return
    try:
        path = socket_path()
        if os.path.exists(beside(path, ".off")):  # a server refused: see refuse()
            return
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    except OSError:
        return
    try:
        conn.connect(path)
    except (FileNotFoundError, ConnectionRefusedError):
        conn.close()
        conn = start_server(path)  # and wait for it: importing torch twice at once is slower
        if conn is None:
            return
    except OSError:
        conn.close()
        return
    with conn:
        code = run_served(conn)
    if code is None:
        return
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    if code < 0:  # the child died of a signal: so does this process, as DVC would have seen it
        import signal

        signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
    os._exit(code)


def open_fds() -> list[int]:
    """fds 0, 1 and 2, each replaced by /dev/null when closed."""
    fds = []
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
            fds.append(fd)
        except OSError:
            fds.append(os.open(os.devnull, os.O_RDWR))
    return fds


def run_served(conn: socket.socket) -> int | None:
    """Hand the stage over, wait for its status; None when the server closed the connection
    before it forked the stage (an idle server stopping as this process connected)."""
    import json
    import signal

    mask = os.umask(0o22)
    os.umask(mask)
    request = json.dumps({"argv": sys.argv, "cwd": os.getcwd(), "env": dict(os.environ),
                          "path": sys.path, "umask": mask}).encode()
    try:
        socket.send_fds(conn, [HEADER.pack(len(request))], open_fds())
        conn.sendall(request)
        (pid,) = PID.unpack(receive(conn, PID.size))
    except (OSError, EOFError):  # the server forks before it sends the pid: nothing ran
        return None

    def forward(signum: int, _frame: object) -> None:
        with contextlib.suppress(OSError):
            os.kill(pid, signum)

    for name in FORWARDED:
        signal.signal(getattr(signal, name), forward)
    try:
        (code,) = STATUS.unpack(receive(conn, STATUS.size))
    except (OSError, EOFError):
        print("Error: launcher: the stage server stopped before the stage ended "
              f"(rerun, or set {SWITCH}=0)", file=sys.stderr)
        return 1
    return code


def receive(conn: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = conn.recv(size - len(data))
        if not chunk:
            raise EOFError
        data += chunk
    return data


def start_server(path: str) -> socket.socket | None:
    """Start this environment's server in its own session, detached from the stage's streams,
    and connect to it once it listens; None if it does not within START_S (the stage then runs
    in this process)."""
    import subprocess
    import time

    try:
        server = subprocess.Popen([sys.executable, os.path.abspath(__file__), "serve"],
                                  stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL, cwd="/", start_new_session=True)
    except OSError:
        return None
    deadline = time.monotonic() + START_S
    while time.monotonic() < deadline:
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            conn.connect(path)
            return conn
        except OSError:
            conn.close()
        # exited: another stage's server won the race (it listens soon), or it failed
        if server.poll() is not None:
            deadline = min(deadline, time.monotonic() + 2)
        time.sleep(0.02)
    return None


# --- the server -------------------------------------------------------------------------------

def warm_caches() -> None:
    """Fill, once in the server, what the preloaded modules compute on first use and keep for
    the process, so that every fork starts with it: MLflow's map from importable modules to
    installed packages, which `mlflow.pytorch.log_model` builds to check the model's
    requirements (~1 s: it lists every installed file). The map only feeds MLflow's warning
    that the model's requirements (torch, MLflow) differ from what is installed; those two are
    imported by the server already. Best effort: a private name of MLflow's."""
    with contextlib.suppress(Exception):
        from mlflow.utils.requirements_utils import _init_modules_to_packages_map

        _init_modules_to_packages_map()


def serve() -> dict | None:
    """Import PRELOAD, then fork a child per stage until idle. Returns in a child only: its
    request (the stage to run); in the server, None once it stops."""
    import fcntl
    import select
    import signal
    import time

    global LOG
    path = socket_path()
    LOG = beside(path, ".log")
    with open(beside(path, ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(path)
            return None  # another server already listens here
        except OSError:
            pass
        finally:
            probe.close()
        # CUDA must not be initialised before a fork (each child opens its own context): a
        # CUDA check while importing asks NVML, which is fork-safe, instead of the runtime
        os.environ["PYTORCH_NVML_BASED_CUDA_CHECK"] = "1"
        for module in PRELOAD:  # best effort: a stage that needs a missing one says so itself
            with contextlib.suppress(ImportError):
                __import__(module)
        warm_caches()
        torch = sys.modules.get("torch")
        if torch is not None and torch.cuda.is_initialized():
            refuse(path, "CUDA was initialised while importing: children could not use it")
            return None
        if os.path.exists(path):
            os.unlink(path)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(path)
        listener.listen(64)
    inode, me = os.stat(path).st_ino, os.getpid()
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(True))
    idle = float(os.environ.get(IDLE, "600"))
    children: dict[int, socket.socket] = {}
    log(f"serving {path} (pid {me})")
    watched = [listener, wake_r]

    def close_listener() -> None:  # no new stages: they find no socket and run where they are
        listener.close()
        with contextlib.suppress(OSError):
            if os.stat(path).st_ino == inode:
                os.unlink(path)

    try:
        while not (stop and not children):
            if stop and listener in watched:  # told to stop while stages run: they finish,
                watched.remove(listener)  # and a waiting connection is not selected forever
                close_listener()
            ready, _, _ = select.select(watched, [], [], None if children else idle)
            if not ready and not children:
                break
            if wake_r in ready:
                os.read(wake_r, 512)
                reap(children)
            if listener in ready and not stop:
                conn, _ = listener.accept()
                request = accept(conn)
                if request is None:
                    continue
                pid = os.fork()
                if pid == 0:  # the child: leave the server's loop, keep only this stage's fds
                    signal.set_wakeup_fd(-1)
                    for fd in (wake_r, wake_w):
                        os.close(fd)
                    for other in children.values():
                        other.close()
                    listener.close()
                    for name in ("SIGCHLD", "SIGTERM"):
                        signal.signal(getattr(signal, name), signal.SIG_DFL)
                    request["conn"] = conn
                    return request
                for fd in request["fds"]:
                    os.close(fd)
                with contextlib.suppress(OSError):
                    conn.sendall(PID.pack(pid))
                children[pid] = conn
                log(f"{time.strftime('%H:%M:%S')} pid {pid}: {' '.join(request['argv'])}")
    finally:
        if os.getpid() == me:
            close_listener()
            log("stopped")
    return None


def refuse(path: str, why: str) -> None:
    """Serve nothing in this environment: stages find the marker and run in their own
    processes (delete it to try again)."""
    with open(beside(path, ".off"), "w") as marker:
        print(why, file=marker)
    log(f"not serving: {why}")


def log(message: str) -> None:
    """A line in the server's log (its key's .log file, fixed when it started)."""
    global LOG
    LOG = LOG or beside(socket_path(), ".log")
    with open(LOG, "a") as file:
        print(message, file=file)


def accept(conn: socket.socket) -> dict | None:
    """The stage a connecting process asks for (its fds included), or None: not this user's, or
    a broken request."""
    import json

    conn.settimeout(30)
    try:
        pid, uid, _ = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                                          struct.calcsize("3i")))
        if uid != os.getuid():
            raise PermissionError(f"uid {uid}")
        head, fds, _, _ = socket.recv_fds(conn, HEADER.size, 3)
        if not head and not fds:  # a probe (status, stop, a starting server): nothing to run
            conn.close()
            return None
        if len(head) != HEADER.size or len(fds) != 3:
            for fd in fds:
                os.close(fd)
            raise ValueError("short header")
        request = json.loads(receive(conn, HEADER.unpack(head)[0]))
    except (OSError, ValueError, EOFError) as error:
        log(f"refused a request: {error}")
        conn.close()
        return None
    conn.settimeout(None)
    return {**request, "fds": fds, "client": pid}


def reap(children: dict[int, socket.socket]) -> None:
    """Send every ended child's exit code to the process waiting for it."""
    while children:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        conn = children.pop(pid, None)
        if conn is not None:
            with contextlib.suppress(OSError):
                conn.sendall(STATUS.pack(os.waitstatus_to_exitcode(status)))
            conn.close()


def become(request: dict) -> None:
    """In a forked child: take on the stage process's streams, directory, environment, argv and
    import path, then run its script as __main__ (its exceptions and exit reach this process's
    top level, as in `python stages/<stage>.py`)."""
    import io
    import signal
    import tempfile
    import threading

    for fd, target in zip(request["fds"], (0, 1, 2)):
        os.dup2(fd, target)
        os.close(fd)
    sys.stdin = sys.__stdin__ = io.TextIOWrapper(io.FileIO(0, "r", closefd=False))
    unbuffered = bool(request["env"].get("PYTHONUNBUFFERED"))  # as python -u
    sys.stdout = sys.__stdout__ = io.TextIOWrapper(
        io.BufferedWriter(io.FileIO(1, "w", closefd=False)), line_buffering=os.isatty(1),
        write_through=unbuffered)
    sys.stderr = sys.__stderr__ = io.TextIOWrapper(
        io.BufferedWriter(io.FileIO(2, "w", closefd=False)), errors="backslashreplace",
        line_buffering=True, write_through=unbuffered)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    os.environ[CLIENT] = str(request["client"])
    os.umask(request["umask"])
    tempfile.tempdir = None  # chosen again from this environment
    mp = sys.modules.get("multiprocessing.process")
    if mp is not None:
        mp.ORIGINAL_DIR = request["cwd"]  # type: ignore[attr-defined]
    signal.signal(signal.SIGINT, signal.default_int_handler)
    conn = request["conn"]

    def watch() -> None:  # the stage process was killed: so is its stage
        try:
            while conn.recv(64):
                pass
        except OSError:
            pass
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=watch, daemon=True, name="launcher-watch").start()
    sys.argv = list(request["argv"])
    sys.path[:] = request["path"]
    try:
        run_script(os.path.abspath(sys.argv[0]))
        code = 0
    except SystemExit as done:  # as the interpreter reads it
        code = done.code if isinstance(done.code, int) else 0 if done.code is None else 1
        if not isinstance(done.code, int | None):
            print(done.code, file=sys.stderr)
    except BaseException as error:
        sys.excepthook(type(error), error, error.__traceback__)
        code = -signal.SIGINT if isinstance(error, KeyboardInterrupt) else 1
    finish(code)


def run_script(path: str) -> None:
    """Run ``path`` as `python path` runs it: a fresh __main__ module whose __file__ is the
    absolute path, sys.argv[0] left as given (runpy.run_path would change it)."""
    import importlib.machinery
    import types

    main = types.ModuleType("__main__")
    main.__file__ = path
    main.__cached__ = None
    main.__loader__ = importlib.machinery.SourceFileLoader("__main__", path)
    sys.modules["__main__"] = main
    with open(path, "rb") as source:
        code = compile(source.read(), path, "exec", dont_inherit=True)
    exec(code, main.__dict__)


def finish(code: int) -> None:
    """End a served stage as the interpreter ends a process (wait for its threads, run its exit
    functions, flush), then exit at once: tearing down the server's modules object by object
    would copy most of its memory and cost ~1 s, for nothing."""
    import atexit
    import signal
    import threading

    threading._shutdown()  # type: ignore[attr-defined]
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    if code < 0:  # KeyboardInterrupt: die of SIGINT, as Python does
        signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
    os._exit(code & 0xFF)


def server_pid(path: str) -> int | None:
    """The pid of the server listening at ``path``, or None."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
        pid, _, _ = struct.unpack("3i", probe.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                                         struct.calcsize("3i")))
        return pid
    except OSError:
        return None
    finally:
        probe.close()


def command(args: list[str]) -> int:
    """serve | start | status | stop [--all]: stop waits for nothing (running stages finish)."""
    import json
    import signal

    if args == ["serve"]:
        try:
            request = serve()
        except Exception:
            import traceback

            log(traceback.format_exc())
            raise
        if request is not None:
            become(request)
        return 0
    if args == ["start"]:  # start one if none runs, and wait until it listens
        path = socket_path()
        if server_pid(path) is None and (conn := start_server(path)) is not None:
            conn.close()
        pid = server_pid(path)
        print(json.dumps({"socket": path, "pid": pid}))
        return 0 if pid is not None else 1
    if args in (["status"], ["stop"], ["stop", "--all"]):
        folder = runtime_dir()
        paths = ([os.path.join(folder, name) for name in sorted(os.listdir(folder))
                  if name.endswith(".sock")] if args[1:] else [socket_path()])
        found = {path: pid for path in paths if (pid := server_pid(path)) is not None}
        if args == ["status"]:
            print(json.dumps({"socket": paths[0], "pid": found.get(paths[0])}))
            return 0
        for path, pid in found.items():
            os.kill(pid, signal.SIGTERM)
            print(f"stopped the stage server {pid} ({path})")
        if not found:
            print(f"no stage server running in {folder}")
        return 0
    print("usage: python stages/_launch.py serve | start | status | stop [--all]",
          file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(command(sys.argv[1:]))
