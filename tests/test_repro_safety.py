"""What a researcher meets in the first hour, on the real pipeline: a typo in params.yaml costs
nothing, a reverted param is restored instead of recomputed, a failed write leaves no half
result, and the output of a non-interactive `dvc repro` is clean."""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from reliability_helpers import read_only_dir
from repo_helpers import SessionBaseline, dvc, env_for, error_lines, stages_run

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

# Never compared: git's own files, DVC's scratch space and locks, MLflow's store (a failed
# `validate` writes no run, but the store's lock file may be touched).
VOLATILE = (".git/", ".dvc/tmp/", "mlflow.db", "mlartifacts/")


def snapshot(repo: Path) -> dict[str, str]:
    """Every file of the workspace (tracked, DVC outputs, ignored) with its SHA-256."""
    found = {}
    for path in sorted(repo.rglob("*")):
        rel = path.relative_to(repo).as_posix()
        if path.is_file() and not rel.startswith(VOLATILE) and rel != "params.yaml":
            found[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def set_param(repo: Path, dotted: str, value: Any) -> None:
    """Set ``section.key`` (or ``section.sub.key``) in the repository's params.yaml (the key
    may be new: a typo)."""
    path = repo / "params.yaml"
    params = yaml.safe_load(path.read_text(encoding="utf-8"))
    *parents, key = dotted.split(".")
    where = params
    for name in parents:
        where = where[name]
    where[key] = value
    path.write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")


@pytest.fixture
def repo(session_baseline: SessionBaseline, tmp_path: Path) -> Path:
    """A copy of the session's committed baseline pipeline (every output present)."""
    return session_baseline.copy_to(tmp_path / "repo")


# One bad value per stage's params (data, model, train, prune), plus a typo'd key.
BAD_VALUES = [
    ("train.lr", -1, "train.lr = -1"),
    ("train.epochs", 0, "train.epochs = 0"),
    ("data.test_size", 0, "data.test_size = 0"),
    ("model.mlp.hidden", [64, 0], "model.mlp.hidden[1] = 0"),
    ("model.arch", "vgg", "model.arch = 'vgg'"),
    ("prune.scope", "globl", "prune.scope = 'globl'"),
    ("prune.sparsities", [0.0, 0.5, 1.2], "prune.sparsities[2] = 1.2"),
    ("prune.sparsities", [0.0, 0.9, 0.9004], "prune.sparsities[2] = 0.9004"),
    ("train.lrr", 0.01, "unknown key 'train.lrr'"),
]


def test_bad_params_leave_every_file_byte_identical(repo: Path) -> None:
    """For a bad value in any section, `dvc repro` stops with one Error line naming it, and
    every file -- tracked, DVC outputs, models, dvc.lock -- is byte-identical afterwards."""
    env = env_for(repo, PRUNELAB_TRACKING="off")
    before = snapshot(repo)
    original = (repo / "params.yaml").read_text(encoding="utf-8")
    assert {"models/seeds/0/model.pt", "metrics/seeds/0/train.json",
            "plots/seeds/0/prune_weight.csv", "plots/aggregate_weight.csv",
            "metrics/aggregate.json", "plots/accuracy_vs_sparsity.png", "reports/study.md",
            "dvc.lock"} <= set(before)
    for key, value, named in BAD_VALUES:
        set_param(repo, key, value)
        done = dvc(repo, "repro", env=env, check=False)
        out = done.stdout + done.stderr
        assert done.returncode != 0, f"{key}={value!r} was accepted"
        assert stages_run(out) == {"validate"}, (key, out)
        errors = error_lines(out)
        assert len(errors) == 1 and named in errors[0], (key, errors)
        assert snapshot(repo) == before, f"{key}={value!r} changed the workspace"
        (repo / "params.yaml").write_text(original, encoding="utf-8")
    # Put back, nothing is stale: DVC has nothing to do.
    done = dvc(repo, "repro", env=env)
    assert stages_run(done.stdout + done.stderr) == set()


def test_reverted_param_is_restored_from_the_run_cache(repo: Path) -> None:
    """Change train.lr, repro (trains), put it back, repro: DVC restores every stage from its
    run-cache -- it runs no training command -- and the outputs are the original bytes.

    The session's repositories share one DVC cache, so another module may have rerun the same
    inputs (tracking on, or timing again) and left a newer run-cache entry for them: the MLflow
    run link and the timings (and dvc.lock, which hashes them) may then come from that run.
    Everything computed from the inputs must be the original bytes."""
    env = env_for(repo, PRUNELAB_TRACKING="off")
    before = snapshot(repo)
    original = (repo / "params.yaml").read_text(encoding="utf-8")
    set_param(repo, "train.lr", 0.0023)  # a value no other test of the session runs
    changed = dvc(repo, "repro", env=env)
    assert {"train@0", "prune_weight@0", "prune_unit@0"} <= stages_run(
        changed.stdout + changed.stderr)
    assert snapshot(repo) != before
    (repo / "params.yaml").write_text(original, encoding="utf-8")
    back = dvc(repo, "repro", env=env)
    out = back.stdout + back.stderr
    assert "train@0" not in stages_run(out), out
    assert re.search(r"Stage 'train@0' is cached - skipping run", out), out
    # The report (not in the run-cache: it reruns) quotes the measured speed-ups.
    per_run = {"dvc.lock", "models/seeds/0/train_run.json", "metrics/seeds/0/train_timing.json",
               "metrics/speed.json", "plots/speed.csv", "plots/tradeoff.png",
               "reports/study.md", "reports/study.html"}
    after = snapshot(repo)
    assert set(after) == set(before)
    assert {k: v for k, v in after.items() if k not in per_run} == \
        {k: v for k, v in before.items() if k not in per_run}


def test_unwritable_output_folder_is_one_line_and_no_half_result(repo: Path) -> None:
    """prune_weight@0 with metrics/seeds/0/ read-only: one Error line naming
    metrics/seeds/0/prune_weight.json, exit 1, and its partner plots/seeds/0/prune_weight.csv
    is not rewritten either."""
    env = env_for(repo, PRUNELAB_TRACKING="off")
    curve = repo / "plots" / "seeds" / "0" / "prune_weight.csv"
    (repo / "params.yaml").write_text((repo / "params.yaml").read_text().replace(
        "scope: layer", "scope: global"))  # so the new curve would differ from the old one
    old = curve.read_bytes()
    with read_only_dir(repo / "metrics" / "seeds" / "0"):
        done = subprocess.run([sys.executable, "stages/prune.py", "weight", "0"], cwd=repo,
                              env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(
        "Error: metrics/seeds/0/prune_weight.json: cannot be written"), done.stderr
    assert curve.read_bytes() == old
    assert not list(repo.rglob("*.tmp"))


def test_non_interactive_repro_output_is_clean(session_baseline: SessionBaseline) -> None:
    """The baseline's first `dvc repro` (download, MLflow tracking on, output piped): no
    progress-bar frames, no warnings, no pip chatter, plural-correct summaries."""
    out = session_baseline.first_repro
    assert "Running stage 'train@0'" in out  # the control: this is the full pipeline's output
    assert "\r" not in out, "a progress bar redrew a line"
    assert not re.search(r"\d+/\d+ \[|it/s\]|batch/s\]", out), "progress bar in the log"
    assert not re.search(r"warn", out, re.IGNORECASE), [
        line for line in out.splitlines() if "warn" in line.lower()]
    assert "Looking in indexes" not in out
    assert "1 epochs" not in out


def test_report_with_a_missing_file_is_one_error_line(tmp_path: Path) -> None:
    """`python -m prunelab report` (and `python -m prunelab.studies.report`, the module that owns
    that command) outside a pipeline: one Error line naming the missing file, exit 1, no
    traceback."""
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    for argv in (["-m", "prunelab", "report"], ["-m", "prunelab.studies.report"]):
        done = subprocess.run([sys.executable, *argv], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 1
        assert done.stderr.strip().splitlines() == [
            "Error: plots/aggregate_weight.csv: missing (run the stage that writes it: dvc "
            "repro)"]
