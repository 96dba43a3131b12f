"""The sweep's bookkeeping: points, summaries and curve rows (prunelab.prune)."""

from __future__ import annotations

import torch

from prunelab.model import accuracy
from prunelab.prune import CURVE_COLUMNS, SweepPoint, curve_rows, dense_accuracy, summarise, sweep


def point(k: float, acc: float) -> SweepPoint:
    """A sweep point with only the grid value and accuracy of interest."""
    return SweepPoint(sparsity=k, accuracy=acc, nominal_sparsity=k, effective_sparsity=k,
                      nonzero_params=0, live_params=0)


def test_sweep_prunes_fresh_copies_in_grid_order() -> None:
    """Each point starts from the dense net; k=0 is the dense accuracy; weights untouched."""
    g = torch.Generator().manual_seed(0)
    weights = [torch.randn(16, 12, generator=g), torch.randn(8, 16, generator=g),
               torch.randn(3, 8, generator=g)]
    before = [w.clone() for w in weights]
    x, y = torch.randn(50, 12, generator=g), torch.randint(0, 3, (50,), generator=g)
    grid = (0.0, 0.5, 0.9)
    points = sweep(weights, "weight", "layer", grid, x, y)
    assert [p.sparsity for p in points] == list(grid)
    assert points[0].accuracy == round(accuracy(weights, x, y), 4)
    assert points[0].nominal_sparsity == 0.0 and points[0].effective_sparsity == 0.0
    total = sum(w.numel() for w in weights)
    # floor(k * n) per prunable layer (192 and 128 weights); the output layer stays dense
    assert [p.nonzero_params for p in points] == [total, total - 96 - 64, total - 172 - 115]
    assert all(torch.equal(w, b) for w, b in zip(weights, before, strict=True))
    assert dense_accuracy(weights, points, x, y) == points[0].accuracy
    assert dense_accuracy(weights, points[1:], x, y) == points[0].accuracy  # measured


def test_summarise_picks_the_sparsest_point_within_one_point() -> None:
    """max_sparsity_within_1pt is the largest k whose accuracy is >= dense - 1."""
    points = [point(0.0, 97.0), point(0.5, 96.5), point(0.8, 96.0), point(0.9, 95.99)]
    s = summarise(points, 97.0)
    assert s["max_sparsity_within_1pt"] == 0.8
    assert s["accuracy_at_max_sparsity"] == 96.0
    assert s["effective_sparsity_at_max_sparsity"] == 0.8
    assert summarise([point(0.5, 10.0)], 97.0)["max_sparsity_within_1pt"] is None


def test_summary_is_a_few_headline_numbers() -> None:
    """The metrics file holds the headline only (no per-k table, no strings), whatever the grid
    size: `dvc exp show` stays readable; the curve CSV holds every k."""
    grid = [point(i / 100, 97.0 - i / 10) for i in range(100)]
    s = summarise(grid, 97.0)
    assert len(s) == 3
    assert all(isinstance(v, float) for v in s.values())


def test_curve_rows_follow_curve_columns() -> None:
    """One row per point: method and scope first (the plots colour by them), then
    CURVE_COLUMNS in order."""
    rows = curve_rows([point(0.0, 90.0), point(0.5, 80.0)], "unit", "global")
    assert [list(r) for r in rows] == [["method", "scope", *CURVE_COLUMNS]] * 2
    assert [(r["method"], r["scope"]) for r in rows] == [("unit", "global")] * 2
    assert [r["sparsity"] for r in rows] == [0.0, 0.5]
