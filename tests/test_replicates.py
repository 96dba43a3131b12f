"""Seeds are a dimension: adding a seed to train.seeds runs only that seed's stages and what
reads every seed (aggregate, plot, report), on the real pipeline in a temporary repository."""

from __future__ import annotations

import csv
import hashlib
import json
import math
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from repo_helpers import (
    SessionBaseline,
    dvc,
    env_for,
    exp_show,
    experiment_entries,
    git,
    pipeline_stages,
    ran_experiments,
    read_json,
    reset_workspace,
    stages_run,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

PER_SEED = ("train", "prune_weight", "prune_unit")  # dvc.yaml: foreach ${train.seeds}
ALL_SEEDS = ("aggregate", "plot", "report")  # read every seed's files
FIRST_SEED_ONLY = ("sensitivity", "speed")  # read the first seed's net only
STATS = ("n", "mean", "std", "ci_low", "ci_high")
# A k (a grid value) has no interval: the seeds' range instead.
GRID_STATS = (*STATS, "min", "max")


def set_seeds(repo: Path, seeds: list[int]) -> None:
    path = repo / "params.yaml"
    params = yaml.safe_load(path.read_text(encoding="utf-8"))
    params["train"]["seeds"] = seeds
    path.write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")


def seed_files(repo: Path, seed: int) -> dict[str, str]:
    """Every file of one seed's folders (models, metrics, plots) with its SHA-256."""
    return {p.relative_to(repo).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for top in ("models", "metrics", "plots")
            for p in sorted((repo / top / "seeds" / str(seed)).rglob("*"))
            if p.is_file() and p.name != ".gitignore"}


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def stat_blocks(metrics: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """Every (headline, its stats across the seeds) of metrics/aggregate.json's per-criterion
    part."""
    return [(key, stat) for method in ("weight", "unit")
            for criterion in metrics[method].values() for key, stat in criterion.items()]


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory, session_baseline: SessionBaseline) -> Path:
    """A copy of the session's baseline: SMALL_PARAMS with train.seeds [0], after one full
    `dvc repro`, committed. (Each test runs with tracking off: what DVC reruns is the question
    here, not MLflow, and MLflow's start-up would cost seconds per stage.)"""
    root = session_baseline.copy_to(tmp_path_factory.mktemp("replicates") / "repo")
    assert yaml.safe_load((root / "params.yaml").read_text())["train"]["seeds"] == [0]
    return root


def test_a_new_seed_runs_only_its_own_stages_and_the_aggregate(repo: Path) -> None:
    """train.seeds [0] -> [0, 1]: `dvc repro` runs train@1, prune_weight@1, prune_unit@1 and
    what reads every seed (aggregate, plot, report; validate checks the edited params.yaml),
    not seed 0's stages, sensitivity or speed. Seed 0's files keep their bytes; afterwards
    nothing is stale; the aggregate is over both seeds, with their spread."""
    env = env_for(repo, PRUNELAB_TRACKING="off")
    seed0 = seed_files(repo, 0)
    assert seed0 and not (repo / "models" / "seeds" / "1").exists()
    set_seeds(repo, [0, 1])
    assert {"train@0", "train@1", "prune_unit@1"} <= pipeline_stages(repo)
    # --no-run-cache: the session's repositories share one DVC cache, and seed 1's stages must
    # really run here (not be checked out from another module's run of the same inputs).
    done = dvc(repo, "repro", "--no-run-cache", env=env)
    out = done.stdout + done.stderr
    assert stages_run(out) == {"validate", *(f"{s}@1" for s in PER_SEED), *ALL_SEEDS}, out
    for name in (*(f"{s}@0" for s in PER_SEED), *FIRST_SEED_ONLY, "download"):
        assert name not in stages_run(out), (name, out)
    assert seed_files(repo, 0) == seed0  # seed 0's net, curves and metrics untouched
    assert {Path(rel).name for rel in seed_files(repo, 1)} == {
        "model.pt", "init.pt", "train_run.json", "train.json", "train_timing.json",
        "train_loss.csv", "prune_weight.json", "prune_unit.json", "prune_weight.csv",
        "prune_unit.csv"}

    status = dvc(repo, "status", "--json", "dvc.yaml", env=env).stdout
    assert json.loads(status or "{}") == {}, status
    again = dvc(repo, "repro", env=env)
    assert stages_run(again.stdout + again.stderr) == set()

    metrics = read_json(repo / "metrics" / "aggregate.json")
    assert metrics["seeds"] == [0, 1] and metrics["n"] == 2
    blocks = stat_blocks(metrics)
    assert {key for key, _ in blocks} == {"max_sparsity_within_1pt", "accuracy_at_max_sparsity",
                                          "dense_accuracy"}
    for key, stat in blocks:
        # k = 0 is always within 1 point of dense: every headline has both seeds' values
        assert stat["n"] == 2 and stat["mean"] is not None, (key, stat)
        assert stat["std"] is not None and math.isfinite(stat["std"]) and stat["std"] >= 0
        if key == "max_sparsity_within_1pt":  # a grid value: the seeds' range, no interval
            assert set(stat) == set(GRID_STATS), stat
            assert stat["ci_low"] is None and stat["ci_high"] is None, stat
            assert stat["min"] <= stat["mean"] <= stat["max"], stat
        else:
            assert set(stat) == set(STATS), stat
            assert stat["ci_low"] <= stat["mean"] <= stat["ci_high"], stat
    for method in ("weight", "unit"):
        rows = read_csv(repo / "plots" / f"aggregate_{method}.csv")
        curves = [read_csv(repo / "plots" / "seeds" / str(s) / f"prune_{method}.csv")
                  for s in (0, 1)]
        assert rows and len(rows) == len(curves[0]) == len(curves[1])
        assert {r["seeds"] for r in rows} == {"2"}
        for mean, *per_seed in zip(rows, *curves, strict=True):
            assert {(r["criterion"], float(r["sparsity"])) for r in per_seed} == {
                (mean["criterion"], float(mean["sparsity"]))}
            accuracies = [float(r["accuracy"]) for r in per_seed]
            assert float(mean["accuracy"]) == pytest.approx(sum(accuracies) / 2, abs=1e-3)
            assert float(mean["accuracy_std"]) == pytest.approx(
                abs(accuracies[0] - accuracies[1]) / math.sqrt(2), abs=1e-3)
            assert float(mean["accuracy_ci_low"]) <= float(mean["accuracy"]) <= float(
                mean["accuracy_ci_high"])
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "two seeds")


def test_seeds_as_one_experiment(repo: Path) -> None:
    """`dvc exp run -S 'train.seeds=[0,1]'` from the one-seed commit is one experiment: seed
    0's stages are skipped (unchanged), the experiment's aggregate is over both seeds, and
    `dvc exp show` has its seeds and n = 2."""
    env = env_for(repo, PRUNELAB_TRACKING="off")
    one_seed = git(repo, "rev-list", "--max-count=1", "--grep=baseline results", "HEAD"
                   ).stdout.strip()
    assert one_seed, "the baseline commit"
    git(repo, "checkout", "-q", "-f", "-B", "one-seed", one_seed)
    reset_workspace(repo)
    for top in ("models", "metrics", "plots"):  # seed 1's files, untracked at that commit
        shutil.rmtree(repo / top / "seeds" / "1", ignore_errors=True)
    assert read_json(repo / "metrics" / "aggregate.json")["n"] == 1
    done = dvc(repo, "exp", "run", "-S", "train.seeds=[0,1]", env=env)
    out = done.stdout + done.stderr
    names = ran_experiments(out)
    assert len(names) == 1, out
    ran = stages_run(out)
    assert not {f"{s}@0" for s in PER_SEED} & ran, out
    assert not set(FIRST_SEED_ONLY) & ran, out
    for stage in PER_SEED:  # seed 0 skipped; seed 1 run, or restored from the run-cache
        assert f"Stage '{stage}@0' didn't change, skipping" in out, (stage, out)
        assert f"{stage}@1" in ran or f"Stage '{stage}@1' is cached" in out, (stage, out)
    metrics = read_json(repo / "metrics" / "aggregate.json")
    assert metrics["seeds"] == [0, 1] and metrics["n"] == 2
    shown = experiment_entries(exp_show(repo, env=env))
    assert names[0] in shown, sorted(shown)
    data = shown[names[0]]["data"]
    assert data["params"]["params.yaml"]["data"]["train"]["seeds"] == [0, 1]
    assert data["metrics"]["metrics/headline.json"]["data"]["seeds"] == 2
