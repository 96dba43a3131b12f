"""A fresh clone just works, with or without make: runs left RUNNING by a killed stage are closed
before the MLflow UI opens, the `dvc plots` page exists in every clone, and a study that never ran
here does not break applying an experiment or drawing plots."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import psutil
from repo_helpers import MAIN, env_for, run, sqlite_uri

from prunelab.tracking import store
from prunelab.tracking.runs import EXPERIMENT

# --- runs left RUNNING by a process killed with -9 -------------------------------------------


def dead_owner() -> dict[str, str]:
    """Owner tags (host, pid, start time) of a process that has been killed and reaped."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    tags = store.owner_tags(psutil.Process(proc.pid))
    proc.kill()
    proc.wait(timeout=30)
    return tags


def test_make_ui_closes_runs_of_a_killed_process_before_the_ui_starts(tmp_path: Path) -> None:
    """A stage run and its parent whose owner died (kill -9, then `dvc repro` restored the
    stage from the run-cache: nothing ran) are KILLED by `make ui`'s first command, with no
    stage running; a run whose owner lives stays RUNNING."""
    import mlflow

    client = mlflow.MlflowClient(sqlite_uri(tmp_path))
    experiment = store.experiment_id(client, (tmp_path / store.ARTIFACTS_DIR).as_uri())
    owner = dead_owner()
    parent = client.create_run(experiment, run_name="workspace",
                               tags={**owner, "prunelab_role": "pipeline"}).info.run_id
    killed = client.create_run(experiment, run_name="train@0",
                               tags={**owner, "prunelab_role": "stage",
                                     "mlflow.parentRunId": parent}).info.run_id
    live = client.create_run(experiment, run_name="prune_weight@0",
                             tags=store.owner_tags(psutil.Process())).info.run_id

    ui = run(["make", "-n", "ui", f"CURDIR={tmp_path}"], MAIN).stdout.splitlines()
    sweep = next(i for i, line in enumerate(ui) if "tracking close-stale" in line)
    assert sweep < next(i for i, line in enumerate(ui) if line.startswith("mlflow ui")), ui
    done = run(ui[sweep].split(), tmp_path, env=env_for(tmp_path, PYTHONPATH=str(MAIN / "src")))

    for run_id in (parent, killed):
        closed = client.get_run(run_id)
        assert closed.info.status == "KILLED", run_id
        assert f"process {owner[store.PID_TAG]} " in closed.data.tags[store.CLOSED_TAG]
    assert client.get_run(live).info.status == "RUNNING"
    assert "closed 2 run(s) left RUNNING" in done.stderr
    assert client.get_experiment_by_name(EXPERIMENT) is not None


def test_the_sweep_leaves_a_missing_store_uncreated(tmp_path: Path) -> None:
    """`make ui` before any stage ran: nothing to sweep, and no mlflow.db is made for it."""
    run([sys.executable, "-m", "prunelab", "tracking", "close-stale"], tmp_path,
        env=env_for(tmp_path, PYTHONPATH=str(MAIN / "src")))
    assert not (tmp_path / "mlflow.db").exists()
