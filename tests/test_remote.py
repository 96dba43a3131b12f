"""A DVC remote round trip: push from a repo that ran the pipeline, clone, pull, nothing to rerun.

The remote is a local directory; the clone has its own (empty) cache, so everything it gets
comes through the remote.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import pytest
from repo_helpers import (
    SessionBaseline,
    commit_all,
    dvc,
    git,
    read_json,
    run,
    stages_run,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

# In the DVC cache, so they reach a clone through the remote: the models, the curves and the
# per-seed and per-k numbers (the one seed's, in its folders, and the ones computed from it).
DVC_OUTPUTS = ("models/seeds/0/model.pt", "models/seeds/0/init.pt",
               "models/seeds/0/train_run.json",
               "plots/seeds/0/prune_weight.csv", "plots/seeds/0/prune_unit.csv",
               "plots/sensitivity.csv",
               "metrics/seeds/0/train.json", "metrics/seeds/0/train_timing.json",
               "metrics/seeds/0/prune_weight.json", "metrics/seeds/0/prune_unit.json",
               "metrics/aggregate.json", "metrics/sensitivity.json", "metrics/speed.json")
# In git (headline metrics, figures, the curves `dvc plots` draws, the report: cache: false),
# so they arrive with `git clone`.
GIT_OUTPUTS = ("metrics/headline.json", "plots/speed.csv", "plots/study.csv",
               "plots/aggregate_weight.csv", "plots/aggregate_unit.csv",
               "plots/seeds/0/train_loss.csv", "plots/accuracy_vs_sparsity.png",
               "plots/sensitivity.png", "plots/tradeoff.png",
               "reports/study.md", "reports/study.html", "data/params.checked")
MNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
               "t10k-labels-idx1-ubyte")


@dataclass(frozen=True)
class RoundTrip:
    origin: Path
    clone: Path
    remote: Path
    pull_output: str


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def round_trip(tmp_path_factory: pytest.TempPathFactory,
               session_baseline: SessionBaseline) -> RoundTrip:
    base = tmp_path_factory.mktemp("remote")
    origin = session_baseline.copy_to(base / "origin")  # the pipeline ran there, committed
    remote = base / "remote"
    dvc(origin, "remote", "add", "-d", "local", str(remote))
    dvc(origin, "push")
    commit_all(origin, "results, and the remote they were pushed to")
    assert git(origin, "status", "--porcelain", "--untracked-files=no").stdout == ""

    clone = base / "clone"
    run(["git", "clone", "-q", str(origin), str(clone)], base)
    for rel in DVC_OUTPUTS:  # DVC data is not in git
        assert not (clone / rel).exists(), rel
    for rel in GIT_OUTPUTS:  # metrics and figures are
        assert digest(clone / rel) == digest(origin / rel), rel
    assert not (clone / ".dvc" / "config.local").exists()  # no shared cache: a cache of its own
    # --allow-missing: the origin never ran the retraining pipeline, so its outputs have no
    # hashes to fetch (the README's command for a clone)
    pulled = dvc(clone, "pull", "--allow-missing")
    return RoundTrip(origin, clone, remote, pulled.stdout + pulled.stderr)


def test_remote_is_committed_config(round_trip: RoundTrip) -> None:
    """The clone knows the remote from the committed .dvc/config."""
    listed = dvc(round_trip.clone, "remote", "list").stdout
    assert "local" in listed and str(round_trip.remote) in listed
    assert any(round_trip.remote.rglob("*")), "the remote is empty"


def test_pull_restores_every_dvc_output(round_trip: RoundTrip) -> None:
    """models/seeds/0/*, the curves and data/mnist arrive in the clone, byte for byte as in the
    origin."""
    for rel in DVC_OUTPUTS:
        assert (round_trip.clone / rel).is_file(), rel
        assert digest(round_trip.clone / rel) == digest(round_trip.origin / rel), rel
    for name in MNIST_FILES:
        path = round_trip.clone / "data" / "mnist" / name
        assert path.is_file(), path
        assert digest(path) == digest(round_trip.origin / "data" / "mnist" / name)
    # the clone's own cache was filled from the remote
    assert (round_trip.clone / ".dvc" / "cache").is_dir()
    assert read_json(round_trip.clone / "models" / "seeds" / "0" / "train_run.json")[
        "mlflow_run_id"]


def test_clone_is_up_to_date(round_trip: RoundTrip) -> None:
    """`dvc status` of the study's pipeline has nothing to report, locally or against the
    remote (the retraining pipeline, never run in the origin, is reported as not run)."""
    status = dvc(round_trip.clone, "status", "dvc.yaml").stdout
    assert "Data and pipelines are up to date." in status, status
    everything = dvc(round_trip.clone, "status").stdout
    assert "stages/retrain/dvc.yaml:imp" in everything, everything
    cloud = dvc(round_trip.clone, "status", "--cloud", "dvc.yaml").stdout
    assert "Cache and remote 'local' are in sync." in cloud, cloud


def test_repro_in_clone_runs_nothing(round_trip: RoundTrip) -> None:
    """`dvc repro` in the clone finds every stage unchanged: no stage runs."""
    out = dvc(round_trip.clone, "repro")
    text = out.stdout + out.stderr
    assert "Running stage" not in text, text
    assert stages_run(text) == set()
    assert git(round_trip.clone, "status", "--porcelain", "--untracked-files=no").stdout == ""
    # nothing ran, so nothing was tracked either
    assert not (round_trip.clone / "mlflow.db").exists()
