"""bench/pipeline.py's arithmetic floor: what a seed of the study cannot cost less than on the
machine, printed beside the measured figure and its target."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def bench() -> object:
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        return importlib.import_module("pipeline")
    finally:
        sys.path.remove(str(ROOT / "bench"))


PARAMS = {"data": {"train_size": 2000, "test_size": 500},
          "model": {"mlp": {"hidden": [64, 32]}},
          "train": {"epochs": 2, "batch_size": 300, "seeds": [0]},
          "prune": {"weight_criteria": ["magnitude", "obs"], "unit_criteria": ["l2"],
                    "sparsities": [0.0, 0.5, 0.9]}}


def test_floor_is_the_trainings_gemms_plus_one_test_pass_per_weight_point(bench: object) -> None:
    floor = bench.arithmetic_floor(PARAMS)  # type: ignore[attr-defined]
    assert floor["train_steps"] == 2 * 7  # ceil(2000 / 300) steps per epoch
    # two criteria at 0.5 and 0.9, the dense net (k = 0) once; unit sweeps test compacted
    # nets: left out
    assert floor["weight_test_passes"] == 2 * 2 + 1
    assert floor["train_floor_seconds"] > 0 and floor["test_pass_seconds"] > 0
    expected = floor["train_floor_seconds"] + 5 * floor["test_pass_seconds"]
    assert floor["per_seed_seconds"] == pytest.approx(expected, abs=0.1)


def test_the_table_puts_the_floor_beside_the_target(bench: object) -> None:
    floor = {"train_steps": 1800, "train_floor_seconds": 23.0, "test_pass_seconds": 0.2,
             "weight_test_passes": 60, "per_seed_seconds": 35.0}
    machine = {"date": "today", "cores": 2, "cpu": "a CPU"}
    study = {"seeds": 5, "floor": floor, "total_seconds": 300.0, "per_seed_seconds": 60.0,
             "report_repeats": 5, "report_stage_seconds": 5.0}
    default = {"seeds": 1, "repro_seconds": 150.0, "noop_seconds": 1.0, "floor": floor}
    table = bench.markdown({"machine": machine, "study": study,  # type: ignore[attr-defined]
                            "default": default})
    rows = [line for line in table.splitlines() if "arithmetic floor" in line]
    assert len(rows) == 2
    assert "| 175 s = 97% of the target | leaves 5 s for everything else |" in rows[0]
    assert "| 35 s = 58% of the target |" in rows[1]
