"""The README's retraining block is computed from the retraining pipeline's files: its
sentences follow the numbers (no frozen text), and a checkout that never ran it says so."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from prunelab import paths
from prunelab.reporting import tables as report
from prunelab.runtime.files import write_csv, write_json

ROOT = Path(__file__).resolve().parents[1]
GRID = (0.0, 0.5, 0.9)


def finetune_files(weight_at_09: float) -> None:
    for method, name in (("weight", "magnitude"), ("unit", "l2")):
        rows = []
        for k in GRID:
            for training, acc in (("one-shot", 97.0 - 10 * k), ("fine-tuned", 97.2 - 0.2 * k)):
                if method == "weight" and training == "fine-tuned" and k == 0.9:
                    acc = weight_at_09
                rows.append({"method": method, "criterion": name, "scope": "layer",
                             "training": training, "sparsity": k, "accuracy": acc,
                             "nominal_sparsity": k, "effective_sparsity": k,
                             "nonzero_params": 1, "live_params": 1})
        write_csv(paths.finetune_curve(method), rows)
        tuned = {("one-shot" if t == "one-shot" else "fine-tuned", k): a for r in rows
                 for t, k, a in [(r["training"], r["sparsity"], r["accuracy"])]}

        def reach(training: str, tol: float, ref: float, tuned: dict = tuned) -> float | None:
            found = None
            for k in GRID:
                if tuned[(training, k)] < ref - tol:
                    break
                found = k
            return found

        summary: dict = {}
        for tol in (0.1, 0.5, 1.0):
            for training, ref, suffix in (("one-shot", 97.0, ""), ("fine-tuned", 97.0, ""),
                                          ("fine-tuned", 97.2, "_of_tuned_dense")):
                k = reach(training, tol, ref)
                summary[f"{training}.max_sparsity_within_{tol:g}pt{suffix}"] = k
                summary[f"{training}.nominal_sparsity_within_{tol:g}pt{suffix}"] = k
        write_json(paths.finetune_metrics(method), {"dense_accuracy": 97.0,
                                                    "dense_fine_tuned_accuracy": 97.2,
                                                    name: summary})
        write_json(paths.finetune_timing(method), {"wall_seconds": 1.0, "train_seconds": {},
                                                   "speedup_b100": {name: {"0.9": 12.5}}})


def imp_files(ticket_last: float) -> None:
    rows = [{"round": 0, "variant": "ticket", "weights_remaining": 100.0, "accuracy": 97.0,
             "best_step": 100}]
    accs = {1: (97.1, 96.9, 96.8), 2: (97.0, 96.0, 95.0), 3: (ticket_last, 95.0, 93.0)}
    for r, (t, re, rm) in accs.items():
        for v, a in (("ticket", t), ("reinit", re), ("random_mask", rm)):
            rows.append({"round": r, "variant": v, "weights_remaining": round(100 * 0.3 ** r, 4),
                         "accuracy": a, "best_step": 100})
    write_csv(paths.IMP_CURVE, rows)
    below = [r for r, (t, _, _) in accs.items() if t < 96.9]
    write_json(paths.IMP_TIMING, {"wall_seconds": 90.0, "resumed_rounds": 0,
                                  "dense_seconds": 20.0, "masked_median_seconds": 22.0,
                                  "masked_over_dense": 1.1,
                                  "rounds": {str(r): {} for r in range(4)}})
    write_json(paths.IMP_METRICS, {
        "dense_accuracy": 97.0,
        "within_0.1pt_down_to_percent": {"ticket": 2.7 if not below else 9.0,
                                         "reinit": None, "random_mask": None},
        "lowest_within_0.1pt_percent": {"ticket": 2.7 if not below else 9.0,
                                        "reinit": None, "random_mask": 40.0},
        "rounds_below_0.1pt": {"ticket": below, "reinit": [1, 2, 3], "random_mask": [2, 3]},
    })


@pytest.fixture
def in_repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    for folder in ("metrics", "plots"):
        (tmp_path / folder).mkdir()
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_without_the_retraining_files_the_block_names_the_command(in_repo: Path) -> None:
    assert "make retrain" in report.retraining()


def test_sentences_follow_the_numbers(in_repo: Path) -> None:
    finetune_files(weight_at_09=96.95)
    imp_files(ticket_last=97.3)
    good = report.retraining()
    assert "stays within 0.1 point of dense (97.00%) up to k = 0.9" in good
    assert "the fine-tuned net at k = 0.9 is 12.5x faster than dense" in good
    assert "**Tickets**: within 0.1 point of dense or above it at every round" in good
    assert "**met at every round**" in good
    assert "IMP 1.5 min for 3 rounds" in good and "1.10x the dense round's" in good
    finetune_files(weight_at_09=96.0)
    imp_files(ticket_last=96.5)
    bad = report.retraining()
    assert "stays within 0.1 point of dense (97.00%) up to k = 0.5" in bad
    assert "more than 0.1 point below dense at 1 of 3 rounds: round 3" in bad
    assert good != bad
