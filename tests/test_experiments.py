"""DVC experiments and their MLflow records: `dvc exp run -S`, the queue, exp show, plots diff.

One baseline repository per module (small params, one full `dvc repro`, committed); every
experiment runs on top of it and the workspace is reset to the baseline around each test.
The MLflow store is the repository's SQLite file, read back with MlflowClient.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from repo_helpers import (
    SMALL_PARAMS,
    SMALL_STEPS,
    VENV_BIN,
    SessionBaseline,
    children,
    dvc,
    env_for,
    error_lines,
    exp_show,
    experiment_entries,
    git,
    metric_steps,
    mlflow_runs,
    parents,
    pipeline_stages,
    queued_experiments,
    ran_experiments,
    read_json,
    reset_workspace,
    run_command,
    run_queue,
    sqlite_uri,
    stages_run,
    write_params,
)

from prunelab import paths
from prunelab.studies.atinit import study as atinit
from prunelab.studies.during import study as during

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

# The baseline's one seed (SMALL_PARAMS: train.seeds [0]): DVC's foreach stages train@0, ...
SEED = SMALL_PARAMS["train"]["seeds"][0]
TRAIN = f"train@{SEED}"
PRUNE_STAGES = (f"prune_weight@{SEED}", f"prune_unit@{SEED}")
METHOD = dict(zip(PRUNE_STAGES, ("weight", "unit"), strict=True))
# The study's criterion per prune stage: its MLflow series are `<criterion>.accuracy`, ... on
# the stage run and `prune_<method>.<criterion>.accuracy`, ... on the parent (the first seed's
# keep the prefix they had before replicates).
STUDY = dict(zip(PRUNE_STAGES, ("magnitude", "l2"), strict=True))
# One experiment changes the pruning's scope and grid (each test below checks its own part);
# another retrains: `dvc exp run` costs the stages it reruns, so two cover what three did.
PRUNE_EXPERIMENT = ("prune.scope=global", "prune.sparsities=[0.0,0.25,0.75]")
PRUNE_GRID = [0.0, 0.25, 0.75]
PRUNE_STEPS = [0, 250, 750]
TRAIN_EXPERIMENT = ("train.epochs=2", "train.lr=0.0005")
UNTRACKED_STAGES = {"validate"}  # checks params.yaml only: no MLflow run


@dataclass(frozen=True)
class Baseline:
    repo: Path
    uri: str
    commit: str
    train_run_id: str  # the MLflow run of the baseline's train stage


@dataclass(frozen=True)
class Experiment:
    """One `dvc exp run` and what it left behind."""

    name: str
    output: str
    new_runs: list[Any]  # MLflow runs created by this experiment
    train_run: dict[str, Any]  # models/seeds/0/train_run.json right after the run
    prune_metrics: dict[str, Any]  # metrics/seeds/0/prune_weight.json (headline per criterion)
    prune_curve: list[dict[str, str]]  # plots/seeds/0/prune_weight.csv (a row per criterion, k)

    @property
    def parent(self) -> Any:
        found = parents(self.new_runs)
        assert len(found) == 1, f"expected one parent run, got {[r.info.run_name for r in found]}"
        return found[0]

    @property
    def stages(self) -> dict[str, Any]:
        return children(self.new_runs, self.parent.info.run_id)

    @property
    def parts(self) -> list[Any]:
        """Runs nested under a stage run (the aggregate's one per seed)."""
        return [r for r in self.new_runs if r.data.tags.get("prunelab_role") == "part"]


def read_curve(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def curve_of(rows: list[dict[str, str]], criterion: str) -> list[dict[str, str]]:
    """The rows of one criterion of a prune curve (non-empty)."""
    mine = [r for r in rows if r["criterion"] == criterion]
    assert mine, f"no rows of criterion {criterion!r}"
    return mine


def study_steps(uri: str, run_id: str, stage: str) -> list[int]:
    """The steps of a prune stage run's accuracy history for the study's criterion."""
    return metric_steps(uri, run_id, f"{STUDY[stage]}.accuracy")


def own_run_cache(repo: Path, shared: Path, private: Path) -> None:
    """Point ``repo`` at a cache holding the shared cache's objects (hard links: nothing is
    downloaded or copied) but not its run-cache.

    Every stage is restorable from DVC's run-cache, and `dvc exp run` has no --no-run-cache:
    an experiment whose params another module already ran on the same baseline model (test_e2e
    runs prune.scope=global) would check that module's outputs out instead of running, and
    log nothing to MLflow -- the very thing these tests look at.
    """
    shutil.copytree(shared / "files", private / "files", copy_function=os.link)
    dvc(repo, "cache", "dir", "--local", str(private))


@pytest.fixture(scope="module")
def baseline(tmp_path_factory: pytest.TempPathFactory,
             session_baseline: SessionBaseline) -> Baseline:
    """A copy of the session's baseline repository (its pipeline ran once, tracked, committed),
    with a run-cache of its own."""
    base = tmp_path_factory.mktemp("exp-repo")
    repo = session_baseline.copy_to(base / "repo")
    own_run_cache(repo, session_baseline.cache, base / "dvc-cache")
    commit = git(repo, "rev-parse", "HEAD").stdout.strip()
    return Baseline(repo, sqlite_uri(repo), commit, session_baseline.train_run_id)


@pytest.fixture(scope="module")
def run_experiment(baseline: Baseline) -> Callable[..., Experiment]:
    """``run_experiment("prune.scope=global")``: `dvc exp run -S ...` once per set of values."""
    done: dict[tuple[str, ...], Experiment] = {}

    def run(*sets: str) -> Experiment:
        if sets not in done:
            repo = baseline.repo
            reset_workspace(repo)
            before = {r.info.run_id for r in mlflow_runs(baseline.uri)}
            args = [arg for value in sets for arg in ("-S", value)]
            out = dvc(repo, "exp", "run", *args)
            text = out.stdout + out.stderr
            names = ran_experiments(text)
            assert len(names) == 1, text
            new = [r for r in mlflow_runs(baseline.uri) if r.info.run_id not in before]
            done[sets] = Experiment(names[0], text, new,
                                    read_json(repo / paths.train_run(SEED)),
                                    read_json(repo / paths.prune_metrics("weight", SEED)),
                                    read_curve(repo / paths.prune_curve("weight", SEED)))
            reset_workspace(repo)
        return done[sets]

    return run


@pytest.fixture
def workspace(baseline: Baseline) -> Iterator[Path]:
    """The baseline repository, reset to its commit before and after the test."""
    reset_workspace(baseline.repo)
    yield baseline.repo
    reset_workspace(baseline.repo)


def test_scope_experiment_is_tracked_under_its_own_parent(
        baseline: Baseline, run_experiment: Callable[..., Experiment]) -> None:
    """-S prune.scope=global (beside a new grid, one experiment): a parent named after the
    experiment, prune children with the grid as their accuracy history, and a link to the
    (skipped) baseline train run."""
    import mlflow

    exp = run_experiment(*PRUNE_EXPERIMENT)
    assert f"Stage '{TRAIN}' didn't change, skipping" in exp.output
    parent, stages = exp.parent, exp.stages

    assert parent.info.run_name == exp.name
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["dvc_exp_name"] == exp.name
    assert parent.data.params["prune.scope"] == "global"
    # Exactly the stages DVC ran have runs (validate has none): train was skipped (only prune
    # params changed).
    assert "validate" in stages_run(exp.output)
    assert set(stages) == stages_run(exp.output) - UNTRACKED_STAGES
    assert {*PRUNE_STAGES, "aggregate", "plot", "report"} <= set(stages)
    assert TRAIN not in stages and "download" not in stages
    # and the aggregate's one run per seed, nested under the aggregate stage's run
    assert [(r.data.tags["seed"], r.data.tags["mlflow.parentRunId"]) for r in exp.parts] == [
        (str(SEED), stages["aggregate"].info.run_id)]
    assert {r.info.run_id for r in exp.new_runs} == {parent.info.run_id} | {
        r.info.run_id for r in [*stages.values(), *exp.parts]}

    for run in [parent, *stages.values()]:
        assert run.data.params["prune.scope"] == "global", run.info.run_name
        assert run.data.tags["dvc_exp_name"] == exp.name, run.info.run_name
        assert run.data.tags["mlflow.source.git.commit"] == baseline.commit, run.info.run_name

    client = mlflow.MlflowClient(baseline.uri)
    for stage in PRUNE_STAGES:
        run = stages[stage]
        assert run.info.run_name == stage and run.info.status == "FINISHED"
        assert run.data.tags["stage"] == stage
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
        # exactly one point per grid value and criterion: no duplicates, no missing step
        for criterion in SMALL_PARAMS["prune"][f"{METHOD[stage]}_criteria"]:
            assert metric_steps(baseline.uri, run.info.run_id,
                                f"{criterion}.accuracy") == PRUNE_STEPS, criterion
            assert metric_steps(baseline.uri, parent.info.run_id,
                                f"prune_{METHOD[stage]}.{criterion}.accuracy"
                                ) == PRUNE_STEPS, criterion
        # the pruned model came from the baseline's train run, which exists in the store
        assert run.data.tags["train_run_id"] == baseline.train_run_id
        train_run = client.get_run(baseline.train_run_id)
        assert train_run.data.tags["stage"] == TRAIN
        assert train_run.info.status == "FINISHED"
    assert parent.data.tags["train_run_id"] == baseline.train_run_id

    # MLflow's history is the curve DVC keeps (plots/seeds/0/prune_weight.csv), point for
    # point, per criterion.
    for criterion in SMALL_PARAMS["prune"]["weight_criteria"]:
        history = client.get_metric_history(stages[PRUNE_STAGES[0]].info.run_id,
                                            f"{criterion}.accuracy")
        by_step = {m.step: m.value for m in history}
        assert by_step == {round(float(r["sparsity"]) * 1000): float(r["accuracy"])
                           for r in curve_of(exp.prune_curve, criterion)}, criterion
    assert {(r["method"], r["scope"]) for r in exp.prune_curve} == {("weight", "global")}


def test_train_experiment_logs_the_new_hyper_parameters(
        baseline: Baseline, run_experiment: Callable[..., Experiment]) -> None:
    """-S train.epochs=2 -S train.lr=0.0005 retrains; the train run has the new params."""
    import mlflow

    exp = run_experiment(*TRAIN_EXPERIMENT)
    stages = exp.stages
    assert stages_run(exp.output) == pipeline_stages(baseline.repo) - {"download"}
    assert set(stages) == stages_run(exp.output) - UNTRACKED_STAGES
    train = stages[TRAIN]
    assert train.data.params["train.epochs"] == "2"
    assert float(train.data.params["train.lr"]) == 0.0005
    assert exp.parent.data.params["train.epochs"] == "2"
    assert exp.parent.info.run_name == exp.name
    assert metric_steps(baseline.uri, train.info.run_id, "epoch_loss") == [1, 2]
    # the new model names its own run, and the prune runs point at it (not the baseline's)
    assert exp.train_run["mlflow_run_id"] == train.info.run_id != baseline.train_run_id
    for stage in PRUNE_STAGES:
        assert stages[stage].data.tags["train_run_id"] == train.info.run_id
    assert mlflow.MlflowClient(baseline.uri).get_run(train.info.run_id).info.status == "FINISHED"


def test_train_run_test_accuracy_history_is_one_point_per_epoch(
        baseline: Baseline, run_experiment: Callable[..., Experiment]) -> None:
    """The train run's 'test_accuracy' history has exactly the epochs 1..N as steps."""
    exp = run_experiment(*TRAIN_EXPERIMENT)
    train = exp.stages[TRAIN]
    assert metric_steps(baseline.uri, train.info.run_id, "test_accuracy") == [1, 2]


def test_grid_experiment_has_one_point_per_new_sparsity(
        baseline: Baseline, run_experiment: Callable[..., Experiment]) -> None:
    """-S prune.sparsities=[0.0,0.25,0.75] (beside the scope, one experiment): the curve and
    MLflow both have the 3 new points; exp show has the new grid and the experiment's headline
    metrics."""
    exp = run_experiment(*PRUNE_EXPERIMENT)
    for criterion in SMALL_PARAMS["prune"]["weight_criteria"]:
        assert [float(r["sparsity"]) for r in curve_of(exp.prune_curve, criterion)] == \
            PRUNE_GRID, criterion
    shown = experiment_entries(exp_show(baseline.repo))
    assert exp.name in shown, sorted(shown)
    # exp show has the headline (per-k and per-criterion numbers are files, not columns)
    headline = shown[exp.name]["data"]["metrics"][paths.HEADLINE.as_posix()]["data"]
    headlines = {paths.HEADLINE, paths.IMP_HEADLINE, atinit.HEADLINE, during.HEADLINE,
                 *(paths.finetune_headline(m) for m in ("weight", "unit"))}
    assert paths.HEADLINE.as_posix() in shown[exp.name]["data"]["metrics"]
    assert set(shown[exp.name]["data"]["metrics"]) <= {p.as_posix() for p in headlines}
    assert list(exp.prune_metrics) == SMALL_PARAMS["prune"]["weight_criteria"]
    within = exp.prune_metrics["magnitude"]["max_sparsity_within_1pt"]
    assert within in PRUNE_GRID
    assert headline["weight.magnitude.k_within_1pt"] == within  # one seed: its own value
    params = shown[exp.name]["data"]["params"]["params.yaml"]["data"]
    assert params["prune"]["sparsities"] == PRUNE_GRID

    for stage in PRUNE_STAGES:
        run = exp.stages[stage]
        assert json.loads(run.data.params["prune.sparsities"]) == PRUNE_GRID
        assert study_steps(baseline.uri, run.info.run_id, stage) == PRUNE_STEPS


def test_queued_experiments_run_in_parallel_into_one_store(baseline: Baseline) -> None:
    """A queued pair run by two workers: both succeed and land in the parent repo's store,
    each under its own parent with its own learning rate."""
    repo = baseline.repo
    reset_workspace(repo)
    before = {r.info.run_id for r in mlflow_runs(baseline.uri)}
    # (0.001 is the baseline's value: that experiment would skip every stage and log nothing)
    out = dvc(repo, "exp", "run", "--queue", "-S", "train.lr=0.002,0.003")
    names = queued_experiments(out.stdout + out.stderr)
    assert len(names) == 2, out.stdout + out.stderr
    status = run_queue(repo, names, jobs=2, timeout=480)
    for name in names:
        assert any(name in line and "Success" in line for line in status.splitlines()), status
    shown = experiment_entries(exp_show(repo))
    for name in names:
        assert shown[name]["state"] == "success", shown[name]
        assert shown[name]["error"] is None

    new = [r for r in mlflow_runs(baseline.uri) if r.info.run_id not in before]
    by_name = {}
    for parent in parents(new):
        by_name.setdefault(parent.data.tags["dvc_exp_name"], []).append(parent)
    assert sorted(by_name) == sorted(names)
    # all but download rerun; validate has no MLflow run
    expected_stages = pipeline_stages(repo) - {"download"} - UNTRACKED_STAGES
    lrs = set()
    for name, found in by_name.items():
        assert len(found) == 1, f"{name}: {len(found)} parent runs"
        parent = found[0]
        assert parent.info.run_name == name and parent.info.status == "FINISHED"
        stages = children(new, parent.info.run_id)
        assert set(stages) == expected_stages, name
        lr = parent.data.params["train.lr"]
        for stage, run in stages.items():  # no run strayed under the other worker's parent
            assert run.data.params["train.lr"] == lr, (name, stage)
            assert run.data.tags["dvc_exp_name"] == name, (name, stage)
            assert run.info.status == "FINISHED", (name, stage)
        for stage in PRUNE_STAGES:
            assert stages[stage].data.tags["train_run_id"] == stages[TRAIN].info.run_id
            assert study_steps(baseline.uri, stages[stage].info.run_id, stage) == SMALL_STEPS
        parts = [r for r in new if r.data.tags.get("prunelab_role") == "part"
                 and r.data.tags["mlflow.parentRunId"] == stages["aggregate"].info.run_id]
        assert [r.data.tags["seed"] for r in parts] == [str(SEED)], name
        lrs.add(float(lr))
    assert lrs == {0.002, 0.003}
    # every run belongs to one of the two parents (or, for the aggregate's run per seed, to
    # one of their aggregate runs): nothing was logged elsewhere
    assert len(new) == 2 * (1 + len(expected_stages) + 1)


def test_exp_show_lists_metrics(baseline: Baseline, workspace: Path,
                                run_experiment: Callable[..., Experiment]) -> None:
    """`dvc exp show` has the metrics of the baseline and of the experiments."""
    exp = run_experiment(*PRUNE_EXPERIMENT)
    table = dvc(workspace, "exp", "show", "--no-pager", "--md").stdout
    header = table.splitlines()[0]
    # The headline numbers only (metrics/headline.json): the dense accuracy and the study's
    # criteria's reach; every criterion's per-k numbers are files, not columns.
    for column in ("dense_accuracy", "weight.magnitude.k_within_1pt", "unit.l2.k_within_1pt",
                   "prune.scope", "prune.weight_criteria", "prune.calibration_size"):
        assert f" {column} " in header, column
    for column in ("test_accuracy", "obs.max_sparsity_within_1pt",
                   "l2_refit.accuracy_at_max_sparsity", "random.max_sparsity_within_1pt",
                   "weight_magnitude_global.speedup_b100_at_max"):
        assert column not in header, column
    rows = {line.split("|")[1].strip(): line for line in table.splitlines()[2:]
            if line.startswith("|")}
    assert "main" in rows and "workspace" in rows
    exp_rows = [line for line in table.splitlines() if f"[{exp.name}]" in line]
    assert len(exp_rows) == 1, table
    assert "global" in exp_rows[0]
    csv = dvc(workspace, "exp", "show", "--no-pager", "--csv").stdout
    assert "dense_accuracy" in csv.splitlines()[0].split(",")


def test_plots_diff_of_two_experiments(tmp_path: Path, baseline: Baseline, workspace: Path,
                                       run_experiment: Callable[..., Experiment]) -> None:
    """`dvc plots diff A B -o dir`: one HTML page naming both, with both methods' data."""
    first = run_experiment(*PRUNE_EXPERIMENT)
    second = run_experiment(*TRAIN_EXPERIMENT)
    out_dir = tmp_path / "plots"
    dvc(workspace, "plots", "diff", first.name, second.name, "-o", str(out_dir))
    page = out_dir / "index.html"
    assert page.is_file(), sorted(p.name for p in out_dir.iterdir())
    html = page.read_text(encoding="utf-8")
    # the first plot draws the study's own criteria (mean over the seeds), the next one every
    # criterion
    for needle in (first.name, second.name, "study.csv", "aggregate_weight.csv",
                   "aggregate_unit.csv"):
        assert needle in html, needle
    assert "accuracy against sparsity" in html and "Every criterion" in html


@pytest.mark.parametrize(("value", "key", "shown"), [
    ("prune.scope=foo", "prune.scope", "'foo'"),
    ("prune.sparsities=[0.5,1.5]", "prune.sparsities", "1.5"),
    ("train.epochs=0", "train.epochs", "0"),
])
def test_malformed_set_value_fails_naming_key_and_value(
        baseline: Baseline, workspace: Path, value: str, key: str, shown: str) -> None:
    """A bad -S value stops the experiment with one 'Error:' line naming key and value."""
    before = {r.info.run_id for r in mlflow_runs(baseline.uri)}
    out = dvc(workspace, "exp", "run", "-S", value, check=False)
    text = out.stdout + out.stderr
    assert out.returncode != 0, text
    lines = error_lines(text)
    assert len(lines) == 1, text
    assert lines[0].startswith(f"Error: params.yaml: {key}")
    assert f" = {shown} is not allowed: " in lines[0], lines[0]
    if value == "prune.scope=foo":
        assert lines[0] == ("Error: params.yaml: prune.scope = 'foo' is not allowed: "
                            "one of layer, global")
    assert "Traceback" not in text
    # the params are checked before any tracking: nothing was logged
    assert {r.info.run_id for r in mlflow_runs(baseline.uri)} == before


def test_prune_after_untracked_training_has_no_dangling_train_link(
        baseline: Baseline, workspace: Path) -> None:
    """Train without tracking, prune with it: the prune run carries no bogus train_run_id."""
    import mlflow

    # A failed `dvc exp run -S` (the test before) can leave its value in params.yaml.
    write_params(workspace, SMALL_PARAMS)
    run_command([str(VENV_BIN / "python"), "stages/train.py", str(SEED)], workspace,
        env=env_for(workspace, PRUNELAB_TRACKING="off"))
    assert read_json(workspace / paths.train_run(SEED))["mlflow_run_id"] is None
    before = {r.info.run_id for r in mlflow_runs(baseline.uri)}
    run_command([str(VENV_BIN / "python"), "stages/prune.py", "weight", str(SEED)], workspace)
    new = [r for r in mlflow_runs(baseline.uri) if r.info.run_id not in before]
    # the parent is named `workspace HH:MM <params hash>` (no DVC experiment here)
    assert {r.info.run_name.split()[0] for r in new} == {PRUNE_STAGES[0], "workspace"}
    assert len(parents(new)) == 1, [r.info.run_name for r in new]
    for r in parents(new):
        digest = r.data.tags["params_hash"]
        assert re.fullmatch(rf"workspace \d\d:\d\d {digest[:6]}", r.info.run_name), r.info.run_name
    client = mlflow.MlflowClient(baseline.uri)
    for r in new:
        link = r.data.tags.get("train_run_id")
        if link is not None:  # either no link, or one to a run that exists
            assert link != "None", f"{r.info.run_name}: train_run_id = 'None'"
            assert client.get_run(link).data.tags.get("stage") == TRAIN, link
