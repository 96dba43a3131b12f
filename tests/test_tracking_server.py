"""The pipeline against a real MLflow tracking server: REST read-back, failures, UI, PostgreSQL.

Every server runs on a free loopback port and is stopped in teardown. The module's one server
stores runs in PostgreSQL (the team set-up) when it is installed, else in SQLite; the
PostgreSQL and Chromium checks skip without those programs (.ci/run installs both).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from repo_helpers import (
    SMALL_STEPS,
    VENV_BIN,
    env_for,
    error_lines,
    free_port,
    make_repo,
    mlflow_server,
    pipeline_stages,
    read_json,
    repro,
    rest_history,
    rest_params,
    rest_runs,
    rest_tags,
    run,
    stop_process,
)

pytestmark = [pytest.mark.server, pytest.mark.timeout(600)]

CHROMIUM = Path("/usr/bin/chromium")
PG_BINDIRS = sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)


@dataclass(frozen=True)
class TrackedRepo:
    """A temp repo whose pipeline logged to the MLflow server at ``url``."""

    repo: Path
    url: str
    exp_id: str
    runs: list[dict[str, Any]]

    def parent_of_train(self) -> dict[str, Any]:
        train = self.stage_run("train")
        parent_id = rest_tags(train)["mlflow.parentRunId"]
        return next(r for r in self.runs if r["info"]["run_id"] == parent_id)

    def children(self, parent_id: str) -> dict[str, dict[str, Any]]:
        return {rest_tags(r)["stage"]: r for r in self.runs
                if rest_tags(r).get("mlflow.parentRunId") == parent_id}

    def stage_run(self, stage: str) -> dict[str, Any]:
        found = [r for r in self.runs if rest_tags(r).get("stage") == stage]
        assert len(found) == 1, f"{len(found)} runs of stage {stage}"
        return found[0]


def run_pipeline_against(url: str, repo: Path) -> TrackedRepo:
    env = env_for(repo, MLFLOW_TRACKING_URI=url)
    repro(repo, env=env)
    exp_id, runs = rest_runs(url)
    return TrackedRepo(repo, url, exp_id, runs)


@dataclass(frozen=True)
class Backend:
    """What the module's MLflow server stores runs in."""

    store_uri: str  # --backend-store-uri
    artifact_root: Path  # --default-artifact-root
    libpq_uri: str | None  # the PostgreSQL database, or None for SQLite


@pytest.fixture(scope="module")
def backend(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Backend]:
    """The team set-up's database when this machine can run one (CI installs PostgreSQL), else
    a SQLite file: every test of this module talks to the one server in front of it, so the
    pipeline runs against a server once."""
    work = tmp_path_factory.mktemp("mlflow-backend")
    if postgres_missing() is not None:
        yield Backend(f"sqlite:///{work / 'mlflow.db'}", work / "artifacts", None)
        return
    with postgres_cluster() as libpq_uri:
        # an explicit driver: a bare postgresql:// means psycopg 3 to SQLAlchemy 2.1
        store_uri = libpq_uri.replace("postgresql://", f"postgresql+{pg_driver()}://", 1)
        yield Backend(store_uri, work / "artifacts", libpq_uri)


@pytest.fixture(scope="module")
def server(backend: Backend, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`mlflow server` on the module's backend, loopback, free port."""
    work = tmp_path_factory.mktemp("mlflow-server")
    with mlflow_server(backend.store_uri, work, artifact_root=backend.artifact_root,
                       timeout=180) as url:
        yield url


@pytest.fixture(scope="module")
def tracked(server: str, tmp_path_factory: pytest.TempPathFactory, dvc_cache: Path
            ) -> TrackedRepo:
    repo = make_repo(tmp_path_factory.mktemp("server-repo") / "repo", cache_dir=dvc_cache)
    return run_pipeline_against(server, repo)


def assert_pipeline_arrived(tracked: TrackedRepo) -> None:
    """One parent 'workspace' run with a FINISHED child per stage; the grid as history."""
    parent = tracked.parent_of_train()
    assert parent["info"]["run_name"] == "workspace"
    assert parent["info"]["status"] == "FINISHED"
    assert rest_tags(parent)["prunelab_role"] == "pipeline"
    stages = tracked.children(parent["info"]["run_id"])
    assert set(stages) == pipeline_stages(tracked.repo) - {"download"}
    for name, child in stages.items():
        assert child["info"]["run_name"] == name
        assert child["info"]["status"] == "FINISHED", name
        assert rest_params(child)["prune.sparsities"] == "[0.0, 0.5, 0.9]"
    for method in ("weight", "unit"):
        child = stages[f"prune_{method}"]
        history = rest_history(tracked.url, child["info"]["run_id"], "accuracy")
        assert sorted(int(m["step"]) for m in history) == SMALL_STEPS
        expected = read_json(tracked.repo / "metrics" / f"prune_{method}.json")["accuracy"]
        assert {int(m["step"]): m["value"] for m in history} == {
            round(float(k) * 1000): v for k, v in expected.items()}
        parent_history = rest_history(tracked.url, parent["info"]["run_id"],
                                      f"prune_{method}.accuracy")
        assert sorted(int(m["step"]) for m in parent_history) == SMALL_STEPS
        assert rest_tags(child)["train_run_id"] == stages["train"]["info"]["run_id"]
    train_run = read_json(tracked.repo / "models" / "train_run.json")
    assert train_run == {"mlflow_run_id": stages["train"]["info"]["run_id"],
                         "tracking_uri": tracked.url}


# --- the pipeline on a server ------------------------------------------------------------------


def test_pipeline_runs_read_back_through_rest(tracked: TrackedRepo) -> None:
    """Runs, params, tags and the accuracy histories come back through MLflow's REST API."""
    import requests

    assert_pipeline_arrived(tracked)
    # the artifacts went through the server too
    prune_run = tracked.stage_run("prune_weight")["info"]["run_id"]
    answer = requests.get(f"{tracked.url}/api/2.0/mlflow/artifacts/list",
                          params={"run_id": prune_run}, timeout=30)
    answer.raise_for_status()
    names = {Path(f["path"]).name for f in answer.json().get("files", [])}
    assert {"prune_weight.csv", "prune_weight.json"} <= names
    assert not (tracked.repo / "mlflow.db").exists()  # nothing fell back to the local store


# --- an unreachable server ---------------------------------------------------------------------


def closed_port() -> int:
    """A loopback port nothing listens on."""
    port = free_port()
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", port)) != 0
    return port


def run_stage(repo: Path, script: str, **env: str) -> tuple[subprocess.CompletedProcess[str],
                                                             float]:
    started = time.monotonic()
    done = run([str(VENV_BIN / "python"), f"stages/{script}"], repo,
               env=env_for(repo, **env), timeout=120, check=False)
    return done, time.monotonic() - started


@pytest.mark.parametrize("script", ["plot.py", "train.py"])
def test_unreachable_server_fails_fast_with_one_error_line(tracked: TrackedRepo,
                                                           script: str) -> None:
    """A closed port: the stage stops within seconds, before any work, naming the URI."""
    uri = f"http://127.0.0.1:{closed_port()}"
    model = (tracked.repo / "models" / "model.pt").read_bytes()
    done, seconds = run_stage(tracked.repo, script, MLFLOW_TRACKING_URI=uri)
    assert done.returncode == 1, done.stderr
    assert seconds < 30, f"took {seconds:.1f} s"
    lines = error_lines(done.stderr)
    assert len(lines) == 1, done.stderr
    assert uri in lines[0] and "PRUNELAB_TRACKING=off" in lines[0], lines[0]
    assert "Traceback" not in done.stderr
    assert (tracked.repo / "models" / "model.pt").read_bytes() == model  # no work was done


def test_unreachable_server_error_does_not_leak_credentials(tracked: TrackedRepo) -> None:
    """user:password in MLFLOW_TRACKING_URI never reaches the error line."""
    port = closed_port()
    uri = f"http://alice:s3cret-pw@127.0.0.1:{port}"
    done, seconds = run_stage(tracked.repo, "plot.py", MLFLOW_TRACKING_URI=uri)
    assert done.returncode == 1 and seconds < 30, done.stderr
    lines = error_lines(done.stderr)
    assert len(lines) == 1, done.stderr
    assert f"http://***@127.0.0.1:{port}" in lines[0]  # the URI is named, redacted
    assert "s3cret-pw" not in done.stderr + done.stdout


def test_tracking_off_runs_without_the_server(tracked: TrackedRepo) -> None:
    """PRUNELAB_TRACKING=off: the same stage works with the server unreachable."""
    uri = f"http://127.0.0.1:{closed_port()}"
    before = len(rest_runs(tracked.url)[1])
    done, _ = run_stage(tracked.repo, "plot.py", MLFLOW_TRACKING_URI=uri, PRUNELAB_TRACKING="off")
    assert done.returncode == 0, done.stderr
    assert error_lines(done.stderr) == []
    assert (tracked.repo / "plots" / "accuracy_vs_sparsity.png").is_file()
    assert not (tracked.repo / "mlflow.db").exists()
    assert len(rest_runs(tracked.url)[1]) == before


def test_silent_server_fails_within_a_minute(tracked: TrackedRepo) -> None:
    """A server that accepts connections and never answers: an error within a minute."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)  # connections queue up in the backlog; nothing ever answers
        uri = f"http://127.0.0.1:{listener.getsockname()[1]}"
        done, seconds = run_stage(tracked.repo, "plot.py", MLFLOW_TRACKING_URI=uri)
    assert done.returncode == 1, done.stderr
    assert seconds < 60, f"took {seconds:.1f} s"
    lines = error_lines(done.stderr)
    assert len(lines) == 1 and uri in lines[0], done.stderr


# --- the UI in headless Chromium -----------------------------------------------------------------


def chromium(args: list[str], profile: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    cmd = [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
           "--no-first-run", "--disable-background-networking", "--disable-component-update",
           "--disable-sync", f"--user-data-dir={profile}", "--virtual-time-budget=15000", *args]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        stop_process(proc)
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def test_compare_page_renders_both_runs(tracked: TrackedRepo, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    """The UI's compare-runs page, rendered by headless Chromium, shows both runs."""
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium)")
    runs = [tracked.stage_run(s)["info"] for s in ("prune_weight", "prune_unit")]
    ids = [r["run_id"] for r in runs]
    # MLflow 3's hash route: #/compare-runs?runs=[...]&experiments=[...] (JSON lists)
    query = (f"runs={quote(json.dumps(ids, separators=(',', ':')))}"
             f"&experiments={quote(json.dumps([tracked.exp_id], separators=(',', ':')))}")
    url = f"{tracked.url}/#/compare-runs?{query}"

    dom = chromium(["--dump-dom", url], tmp_path / "profile-dom")
    assert dom.returncode == 0, dom.stderr[-3000:]
    for run_id in ids:
        assert run_id in dom.stdout, f"{run_id} not in the rendered compare page"
    for name in ("prune_weight", "prune_unit"):
        assert name in dom.stdout
    assert "Comparing 2 Runs" in dom.stdout

    png = tmp_path / "compare.png"
    shot = chromium(["--window-size=1400,1000", f"--screenshot={png}", url],
                    tmp_path / "profile-shot")
    assert shot.returncode == 0, shot.stderr[-3000:]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    with capsys.disabled():
        print(f"\nMLflow compare page screenshot: {png}")


# --- PostgreSQL behind the server ----------------------------------------------------------------


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


def test_postgres_backed_server_receives_the_pipeline(backend: Backend,
                                                      tracked: TrackedRepo) -> None:
    """PostgreSQL -> mlflow server -> the pipeline: the runs are rows of the database, the
    artifacts are files under the server's artifact root."""
    if backend.libpq_uri is None:
        pytest.skip(f"the server ran on SQLite: {postgres_missing()}")
    assert_pipeline_arrived(tracked)
    driver = __import__(pg_driver())  # type: ignore[arg-type]
    with contextlib.closing(driver.connect(backend.libpq_uri)) as conn, conn.cursor() as cur:
        cur.execute("SELECT name, status FROM runs")
        rows = cur.fetchall()
    stages = pipeline_stages(tracked.repo) - {"download"}
    assert {name for name, _ in rows} >= stages | {"workspace"}
    assert {status for _, status in rows} == {"FINISHED"}
    assert len(rows) == len(tracked.runs)
    assert any(backend.artifact_root.rglob("prune_weight.csv"))
