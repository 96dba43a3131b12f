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
from repo_helpers import SessionBaseline

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = ROOT / ".venv" / "bin" if (ROOT / ".venv" / "bin").is_dir() else Path(
    sys.executable).parent
MNIST_FILES = {"train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
               "t10k-labels-idx1-ubyte"}
CORE_STAGES = {"download", "train", "prune_weight", "prune_unit", "plot"}
GRID = [0.0, 0.5, 0.9]

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

    def repro(self) -> str:
        """`dvc repro`, asserting success."""
        return self.run("dvc", "repro")

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
    """Names of the stages `dvc repro` says it ran."""
    return set(re.findall(r"Running stage '([\w-]+)'", output))


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
    stages = set(yaml.safe_load((repo.root / "dvc.yaml").read_text(encoding="utf-8"))["stages"])
    assert stages >= CORE_STAGES
    assert ran(repo.first) == stages, repo.first
    root = repo.root
    assert {p.name for p in (root / "data" / "mnist").iterdir()} == MNIST_FILES
    for rel in ("models/model.pt", "models/init.pt", "models/train_run.json",
                "metrics/train_timing.json", "dvc.lock"):
        assert (root / rel).is_file(), rel

    train = repo.read_json("metrics/train.json")
    assert {"test_accuracy", "final_loss", "history"} <= set(train)
    assert len(train["history"]) == 1
    assert {"train_seconds", "samples_per_second", "device"} <= set(
        repo.read_json("metrics/train_timing.json"))
    history = repo.read_csv("plots/train_history.csv")
    assert len(history) == 1 and {"epoch", "loss", "test_accuracy"} <= set(history[0])

    for method in ("weight", "unit"):
        metrics = repo.read_json(f"metrics/prune_{method}.json")
        assert metrics["method"] == method and metrics["scope"] == "layer"
        assert list(metrics["accuracy"]) == ["0.0", "0.5", "0.9"]
        assert metrics["accuracy"]["0.0"] > 50
        assert metrics["dense_accuracy"] == metrics["accuracy"]["0.0"]
        assert metrics["accuracy"]["0.0"] == pytest.approx(train["test_accuracy"], abs=0.1)

        rows = repo.read_csv(f"plots/prune_{method}.csv")
        assert {"sparsity", "accuracy", "effective_sparsity"} <= set(rows[0])
        assert len(rows) == 3
        assert [float(r["sparsity"]) for r in rows] == GRID
        effective = [float(r["effective_sparsity"]) for r in rows]
        assert effective[0] == 0.0 and effective == sorted(effective)
        assert all(0 <= float(r["accuracy"]) <= 100 for r in rows)

    assert (root / "plots" / "accuracy_vs_sparsity.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_second_repro_runs_nothing(repo: Repo) -> None:
    """With nothing changed, `dvc repro` reports the pipeline up to date and runs no stage."""
    out = repo.repro()
    assert "Running stage" not in out, out
    assert "Data and pipelines are up to date" in out or "didn't change" in out, out


def test_scope_change_reruns_only_pruning_and_plot(repo: Repo) -> None:
    """prune.scope reruns prune_weight, prune_unit and plot, not train or download."""
    repo.set_param("prune", "scope", "global")
    out = repo.repro()
    stages = ran(out)
    assert {"prune_weight", "prune_unit", "plot"} <= stages, out
    assert not stages & {"train", "download"}, out
    for method in ("weight", "unit"):
        assert repo.read_json(f"metrics/prune_{method}.json")["scope"] == "global"


def test_epochs_change_reruns_training_but_not_download(repo: Repo) -> None:
    """train.epochs reruns train (and what depends on it), never download."""
    repo.set_param("train", "epochs", 2)
    out = repo.repro()
    stages = ran(out)
    assert "train" in stages and "download" not in stages, out
    assert len(repo.read_json("metrics/train.json")["history"]) == 2
    assert "Running stage" not in repo.repro()
