"""A throwaway PostgreSQL cluster behind the tests' MLflow servers (the team set-up), shared by
the modules that start a server: test_tracking_server (the pipeline against a server) and
test_machines (three clones, one server)."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from repo_helpers import env_for, free_port, run

PG_BINDIRS = sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)


@dataclass(frozen=True)
class Backend:
    """What the module's MLflow server stores runs in."""

    store_uri: str  # --backend-store-uri
    artifact_root: Path  # --default-artifact-root
    libpq_uri: str | None  # the PostgreSQL database, or None for SQLite


@contextlib.contextmanager
def server_backend(work: Path) -> Iterator[Backend]:
    """PostgreSQL when this machine can run it (.ci/run installs it), else a SQLite file in
    ``work``; the server's artifacts under ``work`` either way."""
    if postgres_missing() is not None:
        yield Backend(f"sqlite:///{work / 'mlflow.db'}", work / "artifacts", None)
        return
    with postgres_cluster() as libpq_uri:
        # an explicit driver: a bare postgresql:// means psycopg 3 to SQLAlchemy 2.1
        store_uri = libpq_uri.replace("postgresql://", f"postgresql+{pg_driver()}://", 1)
        yield Backend(store_uri, work / "artifacts", libpq_uri)


def pg_driver() -> str | None:
    """The DB-API driver SQLAlchemy should use; SQLAlchemy 2.1 defaults to psycopg 3."""
    for module in ("psycopg2", "psycopg"):
        try:
            __import__(module)
        except ImportError:
            continue
        return module
    return None


def postgres_missing() -> str | None:
    """Why no throwaway PostgreSQL cluster can be started here, or None when one can."""
    if not PG_BINDIRS:
        return "PostgreSQL is not installed (apt-get install postgresql)"
    if pg_driver() is None:
        return "no PostgreSQL driver: add psycopg2-binary (or psycopg[binary]) to the dev extras"
    if os.geteuid() == 0:  # initdb and postgres refuse to run as root
        if shutil.which("runuser") is None:
            return "running as root without runuser"
        try:
            import pwd

            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root and there is no 'postgres' user"
    return None


@contextlib.contextmanager
def postgres_cluster() -> Iterator[str]:
    """A throwaway PostgreSQL cluster on a free loopback port; yields its libpq URI
    (postgresql://user@host:port/db). Call only when :func:`postgres_missing` is None."""
    bindir = PG_BINDIRS[0]
    as_user: list[str] = []
    if os.geteuid() == 0:
        import pwd

        owner = pwd.getpwnam("postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    # not under pytest's tmp dir: its parents are private to root
    base = Path(tempfile.mkdtemp(prefix="prunelab-pg-"))
    (base / "sock").mkdir()
    if as_user:
        for path in (base, base / "sock"):
            os.chown(path, owner.pw_uid, owner.pw_gid)
    port = free_port()
    data, log = base / "data", base / "postgres.log"

    def pg(*argv: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return run([*as_user, *argv], base, env=env_for(base), timeout=timeout)

    started = False
    try:
        pg(str(bindir / "initdb"), "-D", str(data), "-U", "prunelab", "--auth=trust",
           "-E", "UTF8", "--no-sync")
        options = f"-h 127.0.0.1 -p {port} -k {base / 'sock'} -c fsync=off"
        pg(str(bindir / "pg_ctl"), "-D", str(data), "-l", str(log), "-o", options, "-w",
           "-t", "60", "start")
        started = True
        pg(str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "prunelab",
           "mlflow")
        yield f"postgresql://prunelab@127.0.0.1:{port}/mlflow"
    finally:
        if started:
            run([*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"],
                base, env=env_for(base), timeout=120, check=False)
        shutil.rmtree(base, ignore_errors=True)
