"""bench/archs.py's ResNet screen: options paired with the recipe seed by seed."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def bench() -> Any:
    spec = importlib.util.spec_from_file_location("bench_archs", ROOT / "bench" / "archs.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def results(bench: Any, accuracies: dict[str, list[float]]) -> dict[str, Any]:
    rows = [{"option": label, "seed": seed, "widths": [16, 32, 64], "blocks": 1, "lr": 0.006,
             "epochs": 3, "shift": 2, "seconds": 20.0 + i, "validation_accuracy": acc}
            for i, (label, accs) in enumerate(accuracies.items())
            for seed, acc in enumerate(accs)]
    return {"mlp_seconds": 10.0, "mlp_epochs": 3, "seeds": [0, 1, 2], "rows": rows}


def test_a_gain_beyond_the_seed_noise_is_called_better(bench: Any) -> None:
    recipe, wider = bench.RESNET_OPTIONS[0][0], bench.RESNET_OPTIONS[2][0]
    text = bench.resnet_md(results(bench, {recipe: [99.0, 99.1, 98.9],
                                           wider: [99.4, 99.5, 99.3]}))
    line = next(x for x in text.splitlines() if x.startswith(f"| {wider} |"))
    assert "+0.40 [+0.40, +0.40] | better |" in line, line
    assert "| 99.40 |" in line and "2.1x the MLP" in line
    assert f"Best mean: {wider}." in text


def test_a_gain_within_the_seed_noise_shows_no_difference(bench: Any) -> None:
    recipe, longer = bench.RESNET_OPTIONS[0][0], bench.RESNET_OPTIONS[-1][0]
    text = bench.resnet_md(results(bench, {recipe: [99.0, 99.1, 98.9],
                                           longer: [99.3, 98.9, 99.0]}))
    line = next(x for x in text.splitlines() if x.startswith(f"| {longer} |"))
    assert "| no difference shown |" in line, line
    assert next(x for x in text.splitlines() if x.startswith(f"| {recipe} |")).count("—") == 2


def test_seeds_parse_or_fail_in_one_line(bench: Any) -> None:
    import click

    assert bench.parse_seeds("0,1,2,1") == (0, 1, 2)
    with pytest.raises(click.BadParameter, match="comma-separated integers"):
        bench.parse_seeds("0,a")
