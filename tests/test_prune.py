"""The sweep's bookkeeping: points, summaries and curve rows (prunelab.pruning.sweep)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from prunelab.models.layers import mlp_layers
from prunelab.models.networks import accuracy, to_inputs
from prunelab.pruning import sweep as sweep_module
from prunelab.pruning.criteria.base import Context
from prunelab.pruning.criteria.registry import criterion
from prunelab.pruning.sweep import (
    CURVE_COLUMNS,
    DenseCopies,
    SweepPoint,
    criteria_context,
    curve_rows,
    dense_accuracy,
    summarise,
    sweep,
)

ROOT = Path(__file__).resolve().parents[1]

# prunelab silences this notice at import; pytest restores the warning filters per test.
pytestmark = pytest.mark.filterwarnings("ignore:Sparse CSR tensor support is in beta state")


def point(k: float, acc: float) -> SweepPoint:
    """A sweep point with only the grid value and accuracy of interest."""
    return SweepPoint(sparsity=k, accuracy=acc, nominal_sparsity=k, effective_sparsity=k,
                      nonzero_params=0, live_params=0)


def test_sweep_prunes_fresh_copies_in_grid_order() -> None:
    """Each point starts from the dense net; k=0 is the dense accuracy; weights untouched."""
    g = torch.Generator().manual_seed(0)
    weights = [torch.randn(16, 12, generator=g), torch.randn(8, 16, generator=g),
               torch.randn(3, 8, generator=g)]
    net = mlp_layers(weights)
    before = [w.clone() for w in weights]
    x, y = torch.randn(50, 12, generator=g), torch.randint(0, 3, (50,), generator=g)
    grid = (0.0, 0.5, 0.9)
    points = sweep(net, "weight", "layer", grid, x, y)
    assert [p.sparsity for p in points] == list(grid)
    assert points[0].accuracy == round(accuracy(net, x, y), 4)
    assert points[0].nominal_sparsity == 0.0 and points[0].effective_sparsity == 0.0
    total = sum(w.numel() for w in weights)
    # floor(k * n) per prunable layer (192 and 128 weights); the output layer stays dense
    assert [p.nonzero_params for p in points] == [total, total - 96 - 64, total - 172 - 115]
    assert all(torch.equal(w, b) for w, b in zip(weights, before, strict=True))
    assert dense_accuracy(net, points, x, y) == points[0].accuracy
    assert dense_accuracy(net, points[1:], x, y) == points[0].accuracy  # measured


@pytest.mark.parametrize("granularity", ["weight", "unit"])
def test_sweeps_sharing_dense_copies_test_the_dense_net_once_and_agree_exactly(
        granularity: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Several criteria's sweeps with one DenseCopies: the k = 0 copy (the dense net, also
    after a reconstructing criterion) is tested once, and every curve is exactly the curve the
    sweep gives alone; a copy whose weights differ by one value is tested as itself."""
    g = torch.Generator().manual_seed(3)
    net = mlp_layers([torch.randn(24, 12, generator=g), torch.randn(16, 24, generator=g),
                      torch.randn(3, 16, generator=g)])
    x, y = torch.randn(80, 12, generator=g), torch.randint(0, 3, (80,), generator=g)
    names = {"weight": ("magnitude", "random", "obs"), "unit": ("l2", "random", "l2_refit")}
    grid = (0.0, 0.5, 0.9)

    def curves(dense: DenseCopies | None) -> list[list[SweepPoint]]:
        context = Context(tuple(net), x[:40], y[:40], seed=0)
        return [sweep(net, granularity, "layer", grid, x, y, criterion(granularity, name),
                      context, dense) for name in names[granularity]]

    alone = curves(None)
    tests: list[int] = []
    real = sweep_module.tested
    monkeypatch.setattr(sweep_module, "tested", lambda *a: tests.append(1) or real(*a))
    shared = curves(DenseCopies(net, x, y))
    assert shared == alone
    assert len(tests) == len(names[granularity]) * len(grid) - (len(names[granularity]) - 1)
    dense = DenseCopies(net, x, y)
    nudged = [net[0].with_weight(net[0].weight.clone()), *net[1:]]
    nudged[0].weight[0, 0] += 1e-6
    assert dense.is_dense(net) and not dense.is_dense(nudged)
    signed = mlp_layers([torch.zeros(4, 3), torch.ones(2, 4)])
    flipped = [signed[0].with_weight(-signed[0].weight), signed[1]]  # -0.0: equal, not same
    assert not DenseCopies(signed, x, y).is_dense(flipped)


def test_summarise_picks_the_sparsest_point_within_one_point() -> None:
    """max_sparsity_within_1pt is the largest k whose accuracy is >= dense - 1."""
    points = [point(0.0, 97.0), point(0.5, 96.5), point(0.8, 96.0), point(0.9, 95.99)]
    s = summarise(points, 97.0)
    assert s["max_sparsity_within_1pt"] == 0.8
    assert s["accuracy_at_max_sparsity"] == 96.0
    assert summarise([point(0.5, 10.0)], 97.0)["max_sparsity_within_1pt"] is None


def test_summary_is_a_few_headline_numbers() -> None:
    """The metrics file holds the headline only (no per-k table, no strings), whatever the grid
    size: `dvc exp show` stays readable; the curve CSV holds every k."""
    grid = [point(i / 100, 97.0 - i / 10) for i in range(100)]
    s = summarise(grid, 97.0)
    assert set(s) == {"max_sparsity_within_1pt", "accuracy_at_max_sparsity"}
    assert all(isinstance(v, float) for v in s.values())


def test_curve_rows_follow_curve_columns() -> None:
    """One row per point: method and scope first (the plots colour by them), then
    CURVE_COLUMNS in order."""
    rows = curve_rows([point(0.0, 90.0), point(0.5, 80.0)], "unit", "global")
    assert [list(r) for r in rows] == [["method", "scope", *CURVE_COLUMNS]] * 2
    assert [(r["method"], r["scope"]) for r in rows] == [("unit", "global")] * 2
    assert [r["sparsity"] for r in rows] == [0.0, 0.5]


@pytest.mark.e2e
def test_calibration_never_opens_a_test_image(tmp_path: Path, mnist_dir: Path) -> None:
    """The criteria's calibration images are training images, drawn with the seed: with the
    test files absent it works, with the training files absent it fails; the images are rows
    of the training split at the drawn indices; another seed draws others."""
    from prunelab.config import parse_params
    from prunelab.data.mnist import calibration_indices, load_split
    from prunelab.errors import DataError
    from prunelab.pruning.criteria.base import Context, Criterion

    train_only, test_only = tmp_path / "train", tmp_path / "test"
    for folder, prefix in ((train_only, "train"), (test_only, "t10k")):
        folder.mkdir()
        for f in mnist_dir.glob(f"{prefix}-*"):
            (folder / f.name).symlink_to(f)
    raw = yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))
    raw["prune"]["calibration_size"] = 64
    cfg = parse_params(raw)
    needs = Criterion("probe", "weight", lambda c, i: c.weights[i], needs_calibration=True)
    weights = mlp_layers([torch.zeros(4, 784), torch.zeros(10, 4)])
    context = criteria_context(weights, [needs], cfg, train_only, torch.device("cpu"))
    assert isinstance(context, Context) and context.calibration is not None
    images, labels = load_split(mnist_dir, "train")
    idx = calibration_indices(len(images), 64, cfg.train.seed)
    assert torch.equal(context.calibration, to_inputs(images[idx], torch.device("cpu")))
    assert torch.equal(context.labels, torch.from_numpy(labels[idx]).long())
    with pytest.raises(DataError, match="train-images"):
        criteria_context(weights, [needs], cfg, test_only, torch.device("cpu"))
    assert not np.array_equal(idx, calibration_indices(len(images), 64, cfg.train.seed + 1))
    # Criteria that need no calibration never open the data at all.
    assert criteria_context(weights, [], cfg, tmp_path / "nowhere",
                            torch.device("cpu")).calibration is None


@pytest.mark.parametrize("granularity", ["weight", "unit"])
def test_study_criteria_give_the_notebook_definitions_exactly(granularity: str) -> None:
    """magnitude and l2 through the criteria registry give exactly the points of the study's
    own definitions (smallest |w| per layer; smallest-L2 rows), at every k: the numbers of the
    study's curves did not move when ranking became a named part."""
    from prunelab.pruning.criteria.base import Context
    from prunelab.pruning.criteria.registry import criterion
    from prunelab.pruning.masks import apply_masks, unit_mask, weight_mask
    from prunelab.pruning.sweep import prune_point

    g = torch.Generator().manual_seed(11)
    weights = [torch.randn(40, 30, generator=g), torch.randn(20, 40, generator=g),
               torch.randn(5, 20, generator=g)]
    x, y = torch.randn(200, 30, generator=g), torch.randint(0, 5, (200,), generator=g)
    grid = (0.0, 0.25, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.97, 0.99)
    name = "magnitude" if granularity == "weight" else "l2"
    net = mlp_layers(weights)
    points = sweep(net, granularity, "layer", grid, x, y, criterion(granularity, name),  # type: ignore[arg-type]
                   Context(net))
    own = weight_mask if granularity == "weight" else unit_mask
    for k, p in zip(grid, points, strict=True):
        masks = [own(w, k) for w in weights[:-1]] + [torch.ones_like(weights[-1], dtype=torch.bool)]
        assert p == prune_point(apply_masks(net, masks), k, x, y), k
