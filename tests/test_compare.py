"""`python -m prunelab compare`: architectures side by side, read from revisions through DVC."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from repo_helpers import VENV_BIN, SessionBaseline

from prunelab.errors import DataError
from prunelab.reporting.compare import (
    Run,
    arch_of,
    comparison_table,
    curve_text,
    differences,
    trained_arch,
)


def curve(accs: list[float], ks: tuple[float, ...] = (0.0, 0.5, 0.9)) -> list[dict[str, float]]:
    return [{"sparsity": k, "accuracy": a, "effective_sparsity": k, "nominal_sparsity": k}
            for k, a in zip(ks, accs, strict=True)]


RUNS = [Run("workspace", "mlp", {"weight": {"magnitude": curve([97.0, 96.5, 80.0])},
                                 "unit": {"l2": curve([97.0, 95.0, 20.0])}}),
        Run("lenet5", "lenet5", {"weight": {"magnitude": curve([98.5, 98.0, 50.0])},
                                 "unit": {"l2": curve([98.5, 60.0, 18.0])}})]


def test_sentences_and_table_are_computed_from_the_curves() -> None:
    """Within 1 point: the MLP's weight curve to k = 0.5, LeNet-5's unit curve at no k > 0."""
    text = differences(RUNS)
    assert "MLP (workspace) up to k = 0.5" in text
    assert "LeNet-5 (lenet5) at no k > 0" in text
    table = comparison_table(RUNS)
    assert "| LeNet-5 (lenet5) | unit | **l2** | 98.50 | 0 | 0.000 | 60.00 |" in table
    assert "| LeNet-5 (lenet5) | weight | **magnitude** | 98.50 | 0.5 | 0.500 | 98.00 |" in table
    changed = [Run("lenet5", "lenet5", {"weight": {"magnitude": curve([98.5, 97.0, 50.0])},
                                        "unit": {"l2": curve([98.5, 98.0, 18.0])}})]
    assert differences(changed) != differences(RUNS[1:])  # no frozen text


def test_architecture_comes_from_the_lock_then_params() -> None:
    """dvc.lock says what trained the curves (train@<seed> since replicates, train before);
    params.yaml is the fallback (old revisions that predate model.arch are the MLP)."""
    for train in ("train@0", "train@3", "train"):
        lock = (f"stages:\n  validate:\n    cmd: x\n  {train}:\n    params:\n"
                "      params.yaml:\n        model.arch: lenet5\n")
        assert trained_arch(lock, "HEAD") == "lenet5", train
    assert trained_arch("stages:\n  trainer:\n    params: {}\n", "HEAD") is None
    assert trained_arch("stages: {}\n", "HEAD") is None
    assert arch_of("model:\n  arch: lenet5\n", "HEAD") == "lenet5"
    assert arch_of("model:\n  hidden: [10]\n", "old") == "mlp"


@pytest.mark.e2e
def test_compare_draws_two_revisions_and_refuses_a_bad_one(
        session_baseline: SessionBaseline, tmp_path: Path) -> None:
    """On a pipeline repository: `compare workspace HEAD` writes the figure and the table;
    an unknown revision is one `Error:` line and no traceback."""
    root = session_baseline.copy_to(tmp_path / "repo")
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("DVC_", "MLFLOW_", "GIT_", "PRUNELAB_")) and k != "PYTHONPATH"}
    env.update(PATH=f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
               PYTHONPATH=str(root / "src"), DVC_NO_ANALYTICS="1")
    figure = tmp_path / "compare.png"
    done = subprocess.run([sys.executable, "-m", "prunelab", "compare", "workspace", "HEAD",
                           "--figure", str(figure)], cwd=root, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "MLP (workspace)" in done.stdout and "MLP (HEAD)" in done.stdout
    bad = subprocess.run([sys.executable, "-m", "prunelab", "compare", "no-such-rev",
                          "--figure", str(tmp_path / "x.png")], cwd=root, env=env,
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode != 0 and "Traceback" not in bad.stderr
    assert bad.stderr.strip().startswith("Error:") and "no-such-rev" in bad.stderr
    assert not (tmp_path / "x.png").exists()


def test_curves_are_the_aggregate_or_an_old_revisions_single_curve(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A revision's curve is plots/aggregate_<m>.csv (the mean over its seeds); a revision from
    before replicates has plots/prune_<m>.csv instead; with neither, one DataError naming the
    aggregate."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "plots").mkdir()
    (tmp_path / "plots" / "prune_weight.csv").write_text("old", encoding="utf-8")
    assert curve_text("weight", "workspace") == (Path("plots/prune_weight.csv"), "old")
    (tmp_path / "plots" / "aggregate_weight.csv").write_text("mean", encoding="utf-8")
    assert curve_text("weight", "workspace") == (Path("plots/aggregate_weight.csv"), "mean")
    with pytest.raises(DataError, match="plots/aggregate_unit.csv"):
        curve_text("unit", "workspace")


def test_unreadable_workspace_file_is_one_line(tmp_path: Path) -> None:
    """A curve file that is not UTF-8 is a DataError naming it, not a UnicodeDecodeError."""
    from prunelab.reporting.compare import read_text

    bad = tmp_path / "x.csv"
    bad.write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(DataError, match="x.csv"):
        read_text(bad, "workspace")
