"""A fresh clone just works, with or without make: runs left RUNNING by a killed stage are closed
before the MLflow UI opens, the `dvc plots` page exists in every clone, and a study that never ran
here does not break applying an experiment or drawing plots."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import psutil
import yaml
from repo_helpers import MAIN, dvc, env_for, git, run, sqlite_uri

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


# --- a clone where `make setup` never ran -------------------------------------------------------


def tracked_copy(dest: Path, *pathspecs: str) -> Path:
    """What a clone of this checkout would hold under ``pathspecs``: the files git tracks
    (their working-tree content), nothing built or ignored; committed in a new repository."""
    listed = git(MAIN, "ls-files", "-z", "--", *pathspecs).stdout.split("\0")
    for name in filter(None, listed):
        if (MAIN / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(MAIN / name, dest / name)
    git(dest, "init", "-q", "-b", "main")
    git(dest, "config", "user.name", "prunelab tests")
    git(dest, "config", "user.email", "tests@prunelab.invalid")
    git(dest, "config", "commit.gpgsign", "false")
    git(dest, "add", "-A")
    git(dest, "commit", "-q", "-m", "clone")
    return dest


def test_dvc_plots_work_in_a_clone_without_make_setup(tmp_path: Path) -> None:
    """`pip install -e .`, no `make setup`: the page .dvc/config names is in git, so `dvc plots
    show` and `dvc plots diff` write their page instead of failing on a missing template."""
    clone = tracked_copy(tmp_path / "clone", ".dvc", "dvc.yaml", "params.yaml",
                         "stages/retrain/dvc.yaml")
    assert not (clone / ".dvc" / "config.local").exists()
    for command in (["show"], ["diff", "HEAD"]):
        out = tmp_path / command[0]
        done = dvc(clone, "plots", *command, "-o", str(out))
        assert "unexpected error" not in done.stderr, done.stderr
        page = (out / "index.html").read_text(encoding="utf-8")
        assert "{plot_divs}" not in page and "<script" in page, command


# --- a study that never ran in this clone --------------------------------------------------------


def test_nothing_of_the_retraining_pipeline_is_in_the_dvc_cache() -> None:
    """A clone has no DVC remote and seldom runs the retraining pipeline. A cached output in its
    committed lock made `dvc exp apply` of any main-study experiment exit 255 there ("missing
    cache files": models/imp, plots/finetune_*.csv, plots/imp.csv) and `dvc plots` fail to load
    its curves. So every output is `cache: false`: the curves in git beside the metrics and
    figures, the round checkpoints (models/imp) ignored by git, the clone's own working state."""
    retrain = yaml.safe_load((MAIN / "stages/retrain/dvc.yaml").read_text(encoding="utf-8"))
    for name, stage in retrain["stages"].items():
        for kind in ("outs", "metrics", "plots"):
            for item in stage.get(kind, []):
                path, options = (item, {}) if isinstance(item, str) else next(iter(item.items()))
                assert (options or {}).get("cache") is False, f"{name}: {path} is DVC-cached"
    for curve in ("plots/finetune_weight.csv", "plots/finetune_unit.csv", "plots/imp.csv"):
        assert git(MAIN, "check-ignore", "-q", curve, check=False).returncode == 1, curve
    assert git(MAIN, "check-ignore", "-q", "models/imp/round_01.pt", check=False).returncode == 0
