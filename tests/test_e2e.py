"""The real DVC pipeline on a small configuration, in a temporary git repository."""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from repo_helpers import SMALL_PARAMS, SessionBaseline, pipeline_stages

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = ROOT / ".venv" / "bin" if (ROOT / ".venv" / "bin").is_dir() else Path(
    sys.executable).parent
MNIST_FILES = {"train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
               "t10k-labels-idx1-ubyte"}
# validate checks params.yaml first; every other stage is downstream of it. The per-seed stages
# are DVC foreach stages over train.seeds: with SMALL_PARAMS' one seed, train@0 and so on.
CORE_STAGES = {"validate", "download", "train@0", "prune_weight@0", "prune_unit@0", "aggregate",
               "plot", "sensitivity", "speed", "report"}
SEED = "seeds/0"  # the one seed's folder under models/, metrics/ and plots/
GRID = [0.0, 0.5, 0.9]
TRAIN_STEPS = 20  # 2,000 training images in batches of 100, one epoch
HEADLINE = {"max_sparsity_within_1pt", "accuracy_at_max_sparsity"}  # per criterion
CURVE_COLUMNS = ["method", "criterion", "scope", "sparsity", "accuracy", "nominal_sparsity",
                 "effective_sparsity", "nonzero_params", "live_params"]
# plots/aggregate_<m>.csv: per (criterion, k) the mean over the seeds, its std and 95% CI.
AGGREGATE_COLUMNS = ["method", "criterion", "scope", "sparsity", "seeds",
                     "accuracy", "accuracy_std", "accuracy_ci_low", "accuracy_ci_high",
                     "effective_sparsity", "effective_sparsity_std", "effective_sparsity_ci_low",
                     "effective_sparsity_ci_high"]
STUDY = {"weight": "magnitude", "unit": "l2"}  # the study's criterion per granularity
# Every criterion the session baseline sweeps, per granularity (in params.yaml's order).
CRITERIA = {m: list(SMALL_PARAMS["prune"][f"{m}_criteria"]) for m in ("weight", "unit")}
# The speed stage times the study's criteria in both scopes and the criteria that rewrite the
# weights they keep (obs, l2_refit) in layer scope.
SPEED_KEYS = {"weight_magnitude_layer", "weight_magnitude_global", "unit_l2_layer",
              "unit_l2_global", "weight_obs_layer", "unit_l2_refit_layer"}

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]


@dataclass
class Repo:
    """The temporary pipeline repository and the output of its first `dvc repro`."""

    root: Path
    env: dict[str, str]
    first: str

    def run(self, *argv: str, check: bool = True) -> str:
        """Run a command in the repository; return stdout and stderr together."""
        done = subprocess.run(argv, cwd=self.root, env=self.env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, timeout=500)
        if check:
            assert done.returncode == 0, f"{' '.join(argv)} failed:\n{done.stdout}"
        return done.stdout

    def repro(self, *args: str) -> str:
        """`dvc repro ARGS`, asserting success."""
        return self.run("dvc", "repro", *args)

    def rerun(self) -> str:
        """`dvc repro --no-run-cache`: changed stages really run.

        Every stage's outputs are restorable from DVC's run-cache, and the session shares one
        cache: another module may already have run these params on the same baseline model
        (test_experiments runs prune.scope=global), and plain `dvc repro` would then check its
        outputs out ("is cached - skipping run") instead of running the stage asked about.
        """
        return self.repro("--no-run-cache")

    def set_param(self, section: str, key: str, value: Any) -> None:
        """Change one value of the repository's params.yaml."""
        path = self.root / "params.yaml"
        params = yaml.safe_load(path.read_text(encoding="utf-8"))
        params[section][key] = value
        path.write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")

    def read_json(self, rel: str) -> dict[str, Any]:
        """A JSON output of the pipeline."""
        return json.loads((self.root / rel).read_text(encoding="utf-8"))

    def read_csv(self, rel: str) -> list[dict[str, str]]:
        """A CSV output of the pipeline."""
        with (self.root / rel).open(newline="", encoding="utf-8") as fh:
            return list(csv.DictReader(fh))


def ran(output: str) -> set[str]:
    """Names of the stages `dvc repro` says it ran (train@0: a per-seed stage)."""
    return set(re.findall(r"Running stage '([^']+)'", output))


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory, session_baseline: SessionBaseline) -> Repo:
    """A copy of the session's baseline: the project with small params, committed, after one
    full `dvc repro` (whose output is ``first``)."""
    root = session_baseline.copy_to(tmp_path_factory.mktemp("pipeline") / "repo")
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("DVC_", "MLFLOW_", "GIT_", "PRUNELAB_")) and k != "PYTHONPATH"}
    # What DVC reruns is the question here; tracking has its own tests (test_experiments,
    # test_tracking_server), and switching it off saves MLflow's start-up in every stage.
    env.update(PATH=f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
               PYTHONPATH=str(root / "src"), DVC_NO_ANALYTICS="1", PYTHONDONTWRITEBYTECODE="1",
               PRUNELAB_TRACKING="off")
    return Repo(root, env, session_baseline.first_repro)


def test_first_repro_runs_every_stage_and_writes_every_output(repo: Repo) -> None:
    """Every stage runs and every declared output exists with the expected content."""
    stages = pipeline_stages(repo.root)  # DVC's names: train@0, ... for the one seed
    assert stages >= CORE_STAGES
    assert ran(repo.first) == stages, repo.first
    root = repo.root
    assert {p.name for p in (root / "data" / "mnist").iterdir()} == MNIST_FILES
    for rel in (f"models/{SEED}/model.pt", f"models/{SEED}/init.pt",
                f"models/{SEED}/train_run.json", f"metrics/{SEED}/train_timing.json",
                "data/params.checked", "dvc.lock"):
        assert (root / rel).is_file(), rel
    # the per-seed outputs live in the seed's folders only
    for old in ("models/model.pt", "metrics/train.json", "plots/prune_weight.csv"):
        assert not (root / old).exists(), old

    train = repo.read_json(f"metrics/{SEED}/train.json")
    assert {"test_accuracy", "final_loss", "history"} <= set(train)
    assert len(train["history"]) == 1  # per-epoch history: one epoch
    assert set(repo.read_json(f"metrics/{SEED}/train_timing.json")) == {"train_seconds",
                                                                        "samples_per_second"}
    assert not (root / "plots" / "train_history.csv").exists()
    assert_loss_curve(repo.read_csv(f"plots/{SEED}/train_loss.csv"), TRAIN_STEPS)

    for method in ("weight", "unit"):
        # Per-k numbers are in the curve (one row per criterion and k); the metrics file holds
        # the headline per criterion only.
        rows = repo.read_csv(f"plots/{SEED}/prune_{method}.csv")
        assert list(rows[0]) == CURVE_COLUMNS
        assert len(rows) == len(CRITERIA[method]) * len(GRID)
        assert {(r["method"], r["scope"]) for r in rows} == {(method, "layer")}
        assert list(dict.fromkeys(r["criterion"] for r in rows)) == CRITERIA[method]
        dense = float(curve_of(rows, STUDY[method])[0]["accuracy"])
        assert dense > 50
        assert dense == pytest.approx(train["test_accuracy"], abs=0.1)
        for criterion in CRITERIA[method]:
            mine = curve_of(rows, criterion)
            assert [float(r["sparsity"]) for r in mine] == GRID, criterion
            effective = [float(r["effective_sparsity"]) for r in mine]
            assert effective[0] == 0.0 and effective == sorted(effective), criterion
            accuracy = [float(r["accuracy"]) for r in mine]
            assert all(0 <= a <= 100 for a in accuracy), criterion
            # k = 0 prunes nothing, whatever the ranking (a reconstruction is then the identity)
            assert accuracy[0] == dense, criterion
        assert_headline(repo.read_json(f"metrics/{SEED}/prune_{method}.json"), rows, method)
        # One seed: the aggregate is that seed's curve, with no spread to measure.
        assert_single_seed_aggregate(repo.read_csv(f"plots/aggregate_{method}.csv"), rows)

    aggregate = repo.read_json("metrics/aggregate.json")
    assert aggregate["seeds"] == [0] and aggregate["n"] == 1
    for method in ("weight", "unit"):
        headline = repo.read_json(f"metrics/{SEED}/prune_{method}.json")
        for criterion in CRITERIA[method]:
            for key in HEADLINE:
                stat = aggregate[method][criterion][key]
                assert stat["n"] == 1 and stat["std"] is None, (method, criterion, key)
                assert stat["mean"] == pytest.approx(headline[criterion][key]), (criterion, key)

    speed = repo.read_json("metrics/speed.json")
    assert set(speed) == SPEED_KEYS
    for headline in speed.values():
        assert set(headline) == {"speedup_b100_at_max"}
        assert headline["speedup_b100_at_max"] > 0  # k = 0 is always within 1 point
    timed = {(r["method"], r["criterion"], r["scope"]) for r in repo.read_csv("plots/speed.csv")}
    assert {f"{m}_{c}_{s}" for m, c, s in timed} == SPEED_KEYS

    for figure in ("accuracy_vs_sparsity.png", "tradeoff.png", "sensitivity.png"):
        assert (root / "plots" / figure).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", figure
    for rel in ("plots/sensitivity.csv", "metrics/sensitivity.json"):
        assert (root / rel).is_file(), rel
    assert (root / "reports" / "study.md").read_text(encoding="utf-8").strip()
    assert (root / "reports" / "study.html").read_text(encoding="utf-8").strip()


def test_headline_metrics_and_figures_are_in_git_the_rest_in_the_dvc_cache(repo: Repo) -> None:
    """The committed baseline tracks the headline metrics, the PNG figures and the curves
    `dvc plots` draws (the timing curve, the study's and every criterion's mean curves, the
    loss: `dvc plots diff HEAD` needs HEAD's copy in every clone, whatever CPU wrote it) in
    git; the per-seed and per-k JSON, the per-seed accuracy curves and the models are
    DVC-cached outputs that git ignores."""
    in_git = set(repo.run("git", "ls-files").split())
    assert {"metrics/headline.json", "plots/accuracy_vs_sparsity.png", "plots/sensitivity.png",
            "plots/tradeoff.png", "plots/speed.csv", "plots/study.csv",
            "plots/aggregate_weight.csv", "plots/aggregate_unit.csv",
            f"plots/{SEED}/train_loss.csv", "reports/study.md", "reports/study.html",
            "data/params.checked"} <= in_git
    cached = (f"metrics/{SEED}/train.json", f"metrics/{SEED}/train_timing.json",
              f"metrics/{SEED}/prune_weight.json", f"metrics/{SEED}/prune_unit.json",
              "metrics/aggregate.json", "metrics/sensitivity.json", "metrics/speed.json",
              f"plots/{SEED}/prune_weight.csv", f"plots/{SEED}/prune_unit.csv",
              "plots/sensitivity.csv", f"models/{SEED}/model.pt", f"models/{SEED}/init.pt")
    assert not in_git & set(cached), in_git & set(cached)
    for rel in cached:
        assert (repo.root / rel).is_file(), rel
        repo.run("git", "check-ignore", "-q", rel)  # exit 0: ignored


def assert_loss_curve(rows: list[dict[str, str]], steps: int) -> None:
    """plots/train_loss.csv: (step, loss) rows, steps increasing to the last optimiser step,
    at most 300 rows (windowed means)."""
    assert rows and list(rows[0]) == ["step", "loss"]
    assert len(rows) == min(steps, 300)
    at = [int(r["step"]) for r in rows]
    assert at == sorted(set(at)) and at[-1] == steps, at
    assert all(float(r["loss"]) > 0 for r in rows)


def assert_single_seed_aggregate(aggregate: list[dict[str, str]],
                                 rows: list[dict[str, str]]) -> None:
    """plots/aggregate_<m>.csv of one seed: a row per row of the seed's curve, its mean that
    row's accuracy and effective sparsity, seeds = 1, and no std or CI (empty cells)."""
    assert aggregate and list(aggregate[0]) == AGGREGATE_COLUMNS
    assert len(aggregate) == len(rows)
    for mean, row in zip(aggregate, rows, strict=True):
        assert [mean[c] for c in ("method", "criterion", "scope")] == [
            row[c] for c in ("method", "criterion", "scope")]
        assert float(mean["sparsity"]) == float(row["sparsity"])
        assert mean["seeds"] == "1"
        for column in ("accuracy", "effective_sparsity"):
            assert float(mean[column]) == pytest.approx(float(row[column]), abs=1e-4), column
            assert [mean[f"{column}_{s}"] for s in ("std", "ci_low", "ci_high")] == [""] * 3


def curve_of(rows: list[dict[str, str]], criterion: str) -> list[dict[str, str]]:
    """The rows of one criterion of a prune curve, in file order (non-empty)."""
    mine = [r for r in rows if r["criterion"] == criterion]
    assert mine, f"no rows of criterion {criterion!r}"
    return mine


def assert_headline(metrics: dict[str, Any], rows: list[dict[str, str]], method: str) -> None:
    """metrics/seeds/<s>/prune_<m>.json: exactly the headline of every swept criterion, each
    agreeing with its curve: the highest k whose accuracy is within 1 point of the dense
    accuracy (the study's k = 0 point), and that row's accuracy."""
    assert list(metrics) == CRITERIA[method], metrics
    dense = float(curve_of(rows, STUDY[method])[0]["accuracy"])
    for criterion, headline in metrics.items():
        assert set(headline) == HEADLINE, (criterion, headline)
        mine = curve_of(rows, criterion)
        ok = [r for r in mine if float(r["accuracy"]) >= dense - 1.0]
        best = max(ok, key=lambda r: float(r["sparsity"]))
        assert headline["max_sparsity_within_1pt"] == float(best["sparsity"]), criterion
        assert headline["accuracy_at_max_sparsity"] == pytest.approx(
            float(best["accuracy"])), criterion


def test_second_repro_runs_nothing(repo: Repo) -> None:
    """With nothing changed, `dvc repro` reports the pipeline up to date and runs no stage."""
    out = repo.repro()
    assert "Running stage" not in out, out
    assert "Data and pipelines are up to date" in out or "didn't change" in out, out


def test_scope_change_reruns_only_pruning_and_what_reads_it(repo: Repo) -> None:
    """prune.scope reruns prune_weight@0, prune_unit@0 and what reads their curves (aggregate,
    plot, report; and validate, which reruns on any params change), not train, download,
    sensitivity (one layer at a time: no scope) or speed (which measures both scopes anyway)."""
    repo.set_param("prune", "scope", "global")
    out = repo.rerun()
    assert ran(out) == {"validate", "prune_weight@0", "prune_unit@0", "aggregate", "plot",
                        "report"}, out
    for method in ("weight", "unit"):
        rows = repo.read_csv(f"plots/{SEED}/prune_{method}.csv")
        assert {r["scope"] for r in rows} == {"global"}
        assert len(rows) == len(CRITERIA[method]) * len(GRID)
        assert_headline(repo.read_json(f"metrics/{SEED}/prune_{method}.json"), rows, method)
        assert_single_seed_aggregate(repo.read_csv(f"plots/aggregate_{method}.csv"), rows)


def test_epochs_change_reruns_training_but_not_download(repo: Repo) -> None:
    """train.epochs reruns train@0 (and what depends on it), never download."""
    repo.set_param("train", "epochs", 2)
    out = repo.rerun()
    stages = ran(out)
    assert {"validate", "train@0"} <= stages and "download" not in stages, out
    assert len(repo.read_json(f"metrics/{SEED}/train.json")["history"]) == 2
    assert_loss_curve(repo.read_csv(f"plots/{SEED}/train_loss.csv"), 2 * TRAIN_STEPS)
    assert "Running stage" not in repo.repro()
