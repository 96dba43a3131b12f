"""The tracking code against a SQLite store, no server: experiment kind, run names, machine
tags, a copied repository, runs orphaned by `kill -9`, MLflow's own output."""

from __future__ import annotations

import importlib.util
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from repo_helpers import SMALL_PARAMS, VENV_BIN, env_for, sqlite_uri, tree_snapshot, write_params

from prunelab.config import Params, load_params
from prunelab.runtime.machine import blas_of, cpu_model, describe, simd_of
from prunelab.tracking.runs import StageRun, params_hash, run_name, seed_prefix, store

SRC = Path(__file__).resolve().parents[1] / "src"


@pytest.fixture(autouse=True)
def same_environment_after() -> Iterator[None]:
    """StageRun sets MLflow's environment variables (retries, quiet output) for its process;
    here that process is the test worker, and later tests' subprocesses would inherit them."""
    before = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(before)


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A directory with params.yaml, taken as the repository root (DVC_ROOT) of StageRuns."""
    root = tmp_path / "repo-a"
    root.mkdir()
    write_params(root, SMALL_PARAMS)
    for name in ("MLFLOW_TRACKING_URI", "PRUNELAB_TRACKING", "DVC_EXP_NAME",
                 "DVC_EXP_BASELINE_REV"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DVC_ROOT", str(root))
    yield root


def params(root: Path) -> Params:
    return load_params(root / "params.yaml")


def client(root: Path):  # noqa: ANN201  (an MlflowClient)
    import mlflow

    return mlflow.MlflowClient(sqlite_uri(root))


def log_one_artifact(root: Path, stage: str = "train@0") -> StageRun:
    note = root / f"{stage}-note.txt"
    note.write_text(stage, encoding="utf-8")
    with StageRun(stage, params(root)) as run:
        run.log_artifacts([note])
    return run


# --- what the UI shows -----------------------------------------------------------------------


def test_new_experiment_opens_on_training_runs(repo: Path) -> None:
    """A fresh store's experiment carries the kind that makes the UI open on its runs."""
    log_one_artifact(repo)
    experiment = client(repo).get_experiment_by_name(store.EXPERIMENT)
    assert experiment.tags[store.KIND_TAG] == "custom_model_development"


def test_existing_experiment_gets_the_kind_and_keeps_a_users_choice(repo: Path) -> None:
    """An experiment created without the tag gets it; one a user set otherwise keeps theirs."""
    mlflow = client(repo)
    exp = mlflow.create_experiment(store.EXPERIMENT,
                                   artifact_location=(repo / "mlartifacts").as_uri())
    assert store.KIND_TAG not in mlflow.get_experiment(exp).tags
    log_one_artifact(repo)
    assert mlflow.get_experiment(exp).tags[store.KIND_TAG] == store.KIND
    mlflow.set_experiment_tag(exp, store.KIND_TAG, "genai_development")
    log_one_artifact(repo)
    assert mlflow.get_experiment(exp).tags[store.KIND_TAG] == "genai_development"


def test_workspace_runs_are_named_apart(repo: Path) -> None:
    """`dvc repro` parents: 'workspace HH:MM <params hash>'; experiments keep their name."""
    digest = "0123456789ab"
    noon = time.mktime((2026, 3, 7, 12, 5, 0, 0, 0, -1))
    assert run_name("", digest, noon) == "workspace 12:05 012345"
    assert run_name("tame-owl", digest, noon) == "tame-owl"
    run = log_one_artifact(repo)
    parent = client(repo).get_run(run.parent_id)
    pattern = rf"workspace \d\d:\d\d {params_hash(params(repo))[:6]}"
    assert re.fullmatch(pattern, parent.info.run_name), parent.info.run_name


def test_every_seed_logs_under_the_one_parent(repo: Path) -> None:
    """train.seeds [0, 1], one execution: train@0 and train@1 are children of one parent run;
    on the parent the first seed's numbers keep their names from before replicates
    (train.<key>), the other seed's are seed1.train.<key>; each child records its own seed and
    carries the parent's params hash (the params.yaml both read)."""
    write_params(repo, {**SMALL_PARAMS, "train": {**SMALL_PARAMS["train"], "seeds": [0, 1]}})
    cfg = params(repo)
    runs = {}
    for seed in cfg.train.seeds:
        mine = cfg.for_seed(seed)
        with StageRun(f"train@{seed}", mine) as run:
            run.log_metrics({"train_seconds": 10.0 + seed},
                            parent_prefix=seed_prefix(mine) + "train.")
        runs[seed] = run
    assert len({run.parent_id for run in runs.values()}) == 1
    mlflow = client(repo)
    parent = mlflow.get_run(runs[0].parent_id)
    assert parent.data.metrics == {"train.train_seconds": 10.0,
                                   "seed1.train.train_seconds": 11.0}
    for seed, run in runs.items():
        child = mlflow.get_run(run.run_id)
        assert child.info.run_name == child.data.tags["stage"] == f"train@{seed}"
        assert child.data.metrics == {"train_seconds": 10.0 + seed}
        assert child.data.params["train.seed"] == str(seed)
        assert child.data.params["train.seeds"] == "[0, 1]"
        assert child.data.tags["params_hash"] == parent.data.tags["params_hash"], seed


def test_runs_carry_source_user_and_machine(repo: Path) -> None:
    """Stage and parent name their source, user and machine (what the UI's columns show)."""
    import torch  # noqa: F401  (as a stage would have: the torch fields are then known)

    describe.cache_clear()
    run = log_one_artifact(repo)
    mlflow = client(repo)
    for run_id in (run.run_id, run.parent_id):
        tags = mlflow.get_run(run_id).data.tags
        assert tags["mlflow.source.type"] == "LOCAL"
        assert tags["mlflow.source.name"]
        assert tags["mlflow.user"]
        assert tags["machine.cpu"] == cpu_model()
        assert int(tags["machine.cores"]) >= 1
        assert tags["machine.torch"].startswith(str(torch.__version__).split("+")[0])
        assert tags["machine.gpu"]  # "none" on a CPU-only machine
        assert tags[store.PID_TAG] and tags[store.HOST_TAG]


def test_machine_reads_cpu_blas_and_simd(tmp_path: Path) -> None:
    """The CPU model from /proc/cpuinfo, the BLAS and SIMD level from torch's build info."""
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nmodel name\t: Example CPU @ 3.00GHz\n", encoding="utf-8")
    assert cpu_model(cpuinfo) == "Example CPU @ 3.00GHz"
    assert cpu_model(tmp_path / "missing")  # falls back to platform, never empty
    mkl = ("  - Intel(R) oneAPI Math Kernel Library Version 2024.2-Product Build 20240605\n"
           "  - CPU capability usage: AVX2\n  - Build settings: BLAS_INFO=mkl, LAPACK_INFO=mkl,")
    assert blas_of(mkl) == "MKL 2024.2" and simd_of(mkl) == "AVX2"
    assert blas_of("Build settings: BLAS_INFO=open, LAPACK_INFO=open") == "open"
    assert blas_of("nothing known") is None


def test_machine_without_torch_does_not_import_it() -> None:
    """In a process that never imported torch, describing the machine leaves torch unloaded."""
    code = ("import sys; from prunelab.runtime.machine import describe; m = describe(); "
            "assert 'torch' not in sys.modules, 'torch imported'; "
            "assert m.torch is None and m.cpu and m.cores >= 1; print(sorted(m.tags()))")
    done = subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": str(SRC)},
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "['machine.cores', 'machine.cpu']"


# --- a copied repository -----------------------------------------------------------------------


def test_copied_repository_writes_artifacts_into_itself(
        repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """`cp -a A B`, a run in B: its artifacts land under B/mlartifacts, A is untouched, one
    line says so, and B's copies of A's old runs are found through B."""
    first = log_one_artifact(repo, "train@0")
    copy = tmp_path / "repo-b"
    shutil.copytree(repo, copy, symlinks=True)
    before = tree_snapshot(repo)
    monkeypatch.setenv("DVC_ROOT", str(copy))
    capsys.readouterr()
    second = log_one_artifact(copy, "plot")
    said = [line for line in capsys.readouterr().err.splitlines() if "moved or copied" in line]
    assert len(said) == 1 and str(copy / "mlartifacts") in said[0], said

    mlflow = client(copy)
    run = mlflow.get_run(second.run_id)
    assert run.info.artifact_uri.startswith((copy / "mlartifacts").as_uri() + "/")
    assert list((copy / "mlartifacts").rglob("plot-note.txt"))
    assert tree_snapshot(repo) == before  # nothing written into A, its store included
    old = mlflow.get_run(first.run_id)  # A's run, as copied: now read from B's folder
    assert old.info.artifact_uri.startswith((copy / "mlartifacts").as_uri() + "/")
    assert [f.path for f in mlflow.list_artifacts(first.run_id)] == ["train@0-note.txt"]
    experiment = mlflow.get_experiment_by_name(store.EXPERIMENT)
    assert experiment.artifact_location == (copy / "mlartifacts").as_uri()
    log_one_artifact(copy, "plot")  # repointed once: the next run says nothing
    assert "moved or copied" not in capsys.readouterr().err


def test_explicit_store_elsewhere_is_never_repointed(repo: Path, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """MLFLOW_TRACKING_URI naming a store (here another repo's SQLite file) is left as it is."""
    log_one_artifact(repo)
    other = tmp_path / "elsewhere"
    other.mkdir()
    write_params(other, SMALL_PARAMS)
    monkeypatch.setenv("DVC_ROOT", str(other))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", sqlite_uri(repo))
    run = log_one_artifact(other)
    uri = client(repo).get_run(run.run_id).info.artifact_uri
    assert uri.startswith((repo / "mlartifacts").as_uri() + "/"), uri


# --- a stage killed with SIGKILL ---------------------------------------------------------------

HOLD_RUN = """
import sys, time
from pathlib import Path
from prunelab.config import load_params
from prunelab.tracking.runs import StageRun
with StageRun(sys.argv[1], load_params(Path("params.yaml"))) as run:
    print(run.run_id, run.parent_id, flush=True)
    time.sleep(600)
"""


def hold_run(root: Path, stage: str) -> tuple[subprocess.Popen[str], str, str]:
    """A process holding a RUNNING stage run (and its parent); returns it and the two ids."""
    script = root / "hold_run.py"
    script.write_text(HOLD_RUN, encoding="utf-8")
    proc = subprocess.Popen([str(VENV_BIN / "python"), str(script), stage], cwd=root,
                            env=env_for(root, DVC_ROOT=str(root), PYTHONPATH=str(SRC)),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    line = proc.stdout.readline() if proc.stdout else ""
    if not line:
        proc.kill()
        raise AssertionError(f"the run did not start: {proc.communicate(timeout=30)[1]}")
    run_id, parent_id = line.split()
    return proc, run_id, parent_id


def test_killed_stage_run_is_closed_by_the_next_run(repo: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    """SIGKILL a stage while its run is RUNNING: the next run closes it and its parent as
    KILLED with a tag saying why; a run whose process still lives is left RUNNING."""
    killed, run_id, parent_id = hold_run(repo, "train@0")
    alive, live_id, live_parent = hold_run(repo, "prune_weight@0")
    try:
        os.killpg(killed.pid, signal.SIGKILL)
        killed.wait(timeout=30)
        mlflow = client(repo)
        assert mlflow.get_run(run_id).info.status == "RUNNING"  # what kill -9 leaves behind
        capsys.readouterr()
        log_one_artifact(repo, "plot")
        for orphan in (run_id, parent_id):
            run = mlflow.get_run(orphan)
            assert run.info.status == "KILLED"
            why = run.data.tags[store.CLOSED_TAG]
            assert f"process {killed.pid} " in why and "plot" in why, why
            assert run.info.end_time is not None
        assert "closed 2 run(s) left RUNNING" in capsys.readouterr().err
        for live in (live_id, live_parent):
            assert mlflow.get_run(live).info.status == "RUNNING"
            assert store.CLOSED_TAG not in mlflow.get_run(live).data.tags
    finally:
        for proc in (killed, alive):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=30)


def test_pid_reused_by_another_process_counts_as_gone() -> None:
    """The owner's start time is compared too: a recycled pid does not keep a run open."""
    import psutil

    me = store.owner_tags(psutil.Process())
    assert store.owner_alive(me)
    assert not store.owner_alive({**me, store.STARTED_TAG: "12345.000"})
    assert not store.owner_alive({**me, store.PID_TAG: str(2**22 + 7)})  # above pid_max
    assert not store.owner_alive({**me, store.STARTED_TAG: "boot elsewhere tick 1"})


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux's /proc")
def test_a_wall_clock_step_moves_no_owner_and_no_execution(monkeypatch: pytest.MonkeyPatch
                                                           ) -> None:
    """A step of the wall clock moves psutil's create_time of every process (boot time read
    from the clock, plus the offset since boot): a pipeline's execution key and a run owner's
    liveness must not move with it (a 5 s step once split one `dvc exp run` into two parent
    runs, and would have closed live runs as KILLED)."""
    import psutil

    from prunelab.tracking import runs

    me = psutil.Process()
    tags, key = store.owner_tags(me), runs.execution_key(me)
    assert tags[store.STARTED_TAG].startswith("boot ")
    real = psutil.Process.create_time
    monkeypatch.setattr(psutil.Process, "create_time", lambda self: real(self) + 5.0)
    assert store.owner_tags(me) == tags
    assert runs.execution_key(me) == key
    assert store.owner_alive(tags)
    # a run tagged by older code (epoch seconds) is still judged, within a second
    assert store.owner_alive({**tags, store.STARTED_TAG: f"{real(me):.3f}"}) is False
    assert store.owner_alive({**tags, store.STARTED_TAG: f"{real(me) + 5.0:.3f}"})


# --- MLflow's own output -------------------------------------------------------------------------


def test_model_logging_prints_no_pickle_warning_or_url(
        repo: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]) -> None:
    """log_model: no pickle warning, no "View run" line, no progress bar on a non-terminal;
    the model loads back, and the process's environment is as it was."""
    import mlflow.pytorch
    import torch

    capfd.readouterr()
    with StageRun("train@0", params(repo)) as run:
        run.log_model(torch.nn.Linear(3, 2))
        assert client(repo).get_run(run.run_id).info.status == "RUNNING"  # until the stage ends
    out, err = capfd.readouterr()
    assert "Pickle" not in err and "View run" not in out + err, err
    assert "%|" not in err, err  # tqdm's bar
    assert "MLFLOW_TRACKING_URI" not in os.environ  # MLflow's set_tracking_uri was undone
    monkeypatch.setenv("MLFLOW_TRACKING_URI", sqlite_uri(repo))
    model = mlflow.pytorch.load_model(f"runs:/{run.run_id}/model")
    assert tuple(model(torch.zeros(4, 3)).shape) == (4, 2)


def test_progress_bars_off_when_not_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    """Captured stderr (DVC, CI): MLflow's artifact progress bars are switched off."""
    from mlflow.utils.file_utils import ArtifactProgressBar

    monkeypatch.delenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", raising=False)
    monkeypatch.delenv("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", raising=False)
    assert not sys.stderr.isatty()
    store.quiet_mlflow()
    with ArtifactProgressBar.files("Uploading artifacts", total=3) as bar:
        assert bar.pbar is None


def test_mlflow_log_lines_are_redacted(capfd: pytest.CaptureFixture[str]) -> None:
    """Whatever MLflow logs passes the redacting filter: no password, no run links."""
    store.quiet_mlflow()
    capfd.readouterr()
    logger = logging.getLogger("mlflow.tracking.example")
    logger.warning("retrying %s", "http://alice:s3cret@127.0.0.1:5000/api/2.0/mlflow/runs/get")
    logger.warning("🏃 View run train at: http://alice:s3cret@127.0.0.1:5000/#/experiments/1")
    err = capfd.readouterr().err
    assert "retrying http://***@127.0.0.1:5000/api" in err
    assert "s3cret" not in err and "View run" not in err


# --- the run opened off the critical path ------------------------------------------------------


def test_writes_wait_for_the_run_opened_in_the_background(repo: Path) -> None:
    """Entering a StageRun returns while its run is still being opened (here: the store lock
    is held); a file the stage writes meanwhile waits for the run, then lands."""
    import threading

    from filelock import FileLock

    from prunelab.runtime.files import write_text

    held = FileLock(f"{store.sqlite_path(sqlite_uri(repo))}.lock")
    held.acquire()
    out = repo / "out.txt"
    try:
        with StageRun("train@0", params(repo)) as run:  # returns: the opening waits on the lock
            writer = threading.Thread(target=write_text, args=(out, "x"))
            writer.start()
            writer.join(timeout=3)
            assert writer.is_alive() and not out.exists()  # held until the run exists
            held.release()
            writer.join(timeout=300)
            assert out.read_text() == "x"
            assert run.run_id and run.parent_id
    finally:
        if held.is_locked:
            held.release()
    assert client(repo).get_run(run.run_id).info.status == "FINISHED"


def test_an_unreachable_store_fails_the_first_write_and_nothing_is_written(
        repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The opening fails in the background (a closed port): the stage's first write raises the
    one-line TrackingError and writes nothing."""
    from repo_helpers import free_port

    from prunelab.runtime.files import write_text
    from prunelab.tracking.runs import TrackingError

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{free_port()}")
    out = repo / "out.txt"
    with pytest.raises(TrackingError, match="cannot be reached.*PRUNELAB_TRACKING=off"), \
            StageRun("train@0", params(repo)):
        write_text(out, "x")
    assert not out.exists()


def test_the_startup_probe_stops_a_stage_before_its_work(repo: Path) -> None:
    """PRUNELAB_STARTUP_PROBE (bench/startup.py): the stage prints its start-up seconds and exits
    0 where its work would begin, writing nothing."""
    shutil.copytree(SRC.parent / "stages", repo / "stages")
    before = tree_snapshot(repo)
    done = subprocess.run([str(VENV_BIN / "python"), "stages/aggregate.py"], cwd=repo,
                          env=env_for(repo, PRUNELAB_STARTUP_PROBE="1",
                                      PRUNELAB_TRACKING="off"),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert re.search(r"^PRUNELAB_STARTUP_PROBE aggregate \d+\.\d+$", done.stderr, re.M)
    after = tree_snapshot(repo)
    assert {k: v for k, v in after.items() if not k.startswith("stages")} == \
        {k: v for k, v in before.items() if not k.startswith("stages")}


def test_opening_mlflow_never_prints_urllib3s_socks_warning() -> None:
    """Without PySocks, urllib3's SOCKS module warns when imported; requests imports it and
    silences that warning with a global filter. In a stage, requests is imported under MLflow
    in the opening thread, while the main thread may leave a `catch_warnings` block (torch has
    many), which restores the filter list it saved and so drops requests' filter: one stage's
    log in CI had the warning. Simulated here by a process where that filter never lands: the
    warning shows, unless quiet_mlflow ran first (the module is then never run, and requests
    keeps its fallback: SOCKS proxies unsupported, as they are without PySocks anyway)."""
    if importlib.util.find_spec("socks") is not None:
        pytest.skip("PySocks is installed: urllib3's SOCKS module imports without a warning")
    code = ("import warnings\n"
            "warnings.simplefilter = lambda *a, **k: None  # requests' filter dropped\n"
            "{setup}\n"
            "import requests.adapters\n"
            "try:\n"
            "    requests.adapters.SOCKSProxyManager('socks5://127.0.0.1:1')\n"
            "except requests.exceptions.InvalidSchema:\n"
            "    print('fallback')\n")
    runs = {name: subprocess.run([sys.executable, "-c", code.format(setup=setup)],
                                 capture_output=True, text=True, timeout=300)
            for name, setup in (("control", ""), ("quiet", "from prunelab.tracking.store "
                                                  "import quiet_mlflow; quiet_mlflow()"))}
    for done in runs.values():
        assert done.returncode == 0, done.stderr[-2000:]
        assert done.stdout.strip() == "fallback"
    assert "SOCKS support in urllib3" in runs["control"].stderr  # what this guards against
    assert "SOCKS" not in runs["quiet"].stderr
