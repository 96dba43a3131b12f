"""Property tests for the pruning masks in pruning.masks (on MLPs: lists of (out, in) matrices
wrapped as linear layers with ``mlp_layers``; conv nets are in tests/test_layers.py)."""

from __future__ import annotations

import itertools

import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor

from prunelab.models.layers import mlp_layers
from prunelab.models.layers import weights as weights_of
from prunelab.pruning.masks import (
    Pruner,
    apply_masks,
    n_pruned,
    prune_masks,
    unit_mask,
    unit_scores,
    weight_mask,
)

METHODS = ("weight", "unit")
SCOPES = ("layer", "global")
TIES = (-2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0)  # few distinct values: many equal |w| and norms
DENOM = 10000  # sparsities are drawn as p / DENOM, so floor(k * n) is (p * n) // DENOM exactly

settings.register_profile("prunelab", max_examples=40, deadline=None)
settings.load_profile("prunelab")


@st.composite
def matrices(draw: st.DrawFn, rows: int | None = None, cols: int | None = None,
             max_side: int = 30) -> Tensor:
    """A float32 (rows, cols) tensor, sometimes drawn from a small set of values (ties)."""
    r = rows if rows is not None else draw(st.integers(1, max_side))
    c = cols if cols is not None else draw(st.integers(1, max_side))
    if draw(st.booleans()):
        elements = st.sampled_from(TIES)
    else:
        elements = st.floats(-10, 10, width=32, allow_subnormal=False)
    return torch.from_numpy(draw(hnp.arrays(np.float32, (r, c), elements=elements)))


@st.composite
def nets(draw: st.DrawFn, min_layers: int = 2, max_layers: int = 4,
         max_width: int = 12) -> list[Tensor]:
    """Chained (out, in) weight matrices: at least one prunable layer plus the output layer."""
    sizes = draw(st.lists(st.integers(1, max_width), min_size=min_layers + 1,
                          max_size=max_layers + 1))
    return [draw(matrices(rows=o, cols=i)) for i, o in zip(sizes, sizes[1:])]


per_mille = st.integers(0, DENOM - 1)


def dropped_rows(mask: Tensor) -> Tensor:
    """Rows of a keep-mask that are entirely dropped."""
    return ~mask.any(dim=1)


@pytest.mark.parametrize(
    ("k", "n", "expected"),
    [(0.29, 100, 29), (0.7, 1000, 700), (0.57, 100, 57), (0.58, 100, 58), (0.0, 7, 0),
     (0.99, 10, 9), (0.5, 3, 1), (0.999, 1000, 999)],
)
def test_n_pruned_reads_the_decimal(k: float, n: int, expected: int) -> None:
    """n_pruned floors k*n with k read as written (0.29 * 100 is 29, not 28)."""
    assert n_pruned(k, n) == expected


@given(p=per_mille, n=st.integers(0, 100000))
def test_n_pruned_is_exact_floor(p: int, n: int) -> None:
    """n_pruned(p/10000, n) is exactly floor(p * n / 10000)."""
    assert n_pruned(p / DENOM, n) == p * n // DENOM


@given(w=matrices(), p=per_mille)
def test_weight_mask_drops_exactly_the_smallest(w: Tensor, p: int) -> None:
    """weight_mask drops floor(k*n) weights, none larger in |w| than any kept weight."""
    mask = weight_mask(w, p / DENOM)
    assert mask.dtype == torch.bool and mask.shape == w.shape
    assert int((~mask).sum()) == p * w.numel() // DENOM
    if (~mask).any() and mask.any():
        assert w[~mask].abs().max() <= w[mask].abs().min()


@given(w=matrices(), p=per_mille)
def test_unit_mask_drops_exactly_the_smallest_whole_rows(w: Tensor, p: int) -> None:
    """unit_mask drops floor(k*rows) whole rows, none with a larger L2 norm than a kept row."""
    mask = unit_mask(w, p / DENOM)
    assert mask.dtype == torch.bool and mask.shape == w.shape
    assert bool((mask.all(dim=1) | (~mask).all(dim=1)).all()), "rows are all-or-nothing"
    gone = dropped_rows(mask)
    assert int(gone.sum()) == p * w.shape[0] // DENOM
    # In the weights' own precision, as the criterion ranks them: a float32 row of norm
    # ~1e-23 squares below float32's range and ranks as 0 (hypothesis found one).
    norms = torch.linalg.vector_norm(w, dim=1).double()
    if gone.any() and (~gone).any():
        assert norms[gone].max() <= norms[~gone].min() * (1 + 1e-6)


@given(weights=nets(), p=per_mille, method=st.sampled_from(METHODS),
       scope=st.sampled_from(SCOPES))
def test_output_layer_is_never_pruned(weights: list[Tensor], p: int, method: str,
                                      scope: str) -> None:
    """The last matrix's mask is all True for every method, scope and sparsity."""
    masks = prune_masks(mlp_layers(weights), method, scope, p / DENOM)
    assert len(masks) == len(weights)
    assert [m.shape for m in masks] == [w.shape for w in weights]
    assert all(m.dtype == torch.bool for m in masks)
    assert bool(masks[-1].all())


@given(weights=nets(), method=st.sampled_from(METHODS), scope=st.sampled_from(SCOPES))
def test_zero_sparsity_is_the_identity(weights: list[Tensor], method: str, scope: str) -> None:
    """At k=0 every mask is all True and apply_masks returns equal tensors."""
    net = mlp_layers(weights)
    masks = prune_masks(net, method, scope, 0.0)
    assert all(bool(m.all()) for m in masks)
    for pruned, w in zip(weights_of(apply_masks(net, masks)), weights, strict=True):
        assert torch.equal(pruned, w)
    assert bool(weight_mask(weights[0], 0.0).all())
    assert bool(unit_mask(weights[0], 0.0).all())


@given(weights=nets(), p=per_mille, method=st.sampled_from(METHODS),
       scope=st.sampled_from(SCOPES))
def test_masks_do_not_touch_the_weights(weights: list[Tensor], p: int, method: str,
                                        scope: str) -> None:
    """Computing and applying masks leaves the input weights unchanged."""
    before = [w.clone() for w in weights]
    k = p / DENOM
    weight_mask(weights[0], k)
    unit_mask(weights[0], k)
    pruner = Pruner(mlp_layers(weights), method, scope)
    masks = pruner.masks(k)
    pruner.masks(min(k * 2, 0.99))
    weights_of(apply_masks(mlp_layers(weights), masks))
    for w, b in zip(weights, before, strict=True):
        assert torch.equal(w, b)


@given(weights=nets(), a=per_mille, b=per_mille, method=st.sampled_from(METHODS),
       scope=st.sampled_from(SCOPES))
def test_masks_are_nested(weights: list[Tensor], a: int, b: int, method: str,
                          scope: str) -> None:
    """What is pruned at k1 stays pruned at any k2 >= k1 (one ranking, ties by position)."""
    k1, k2 = min(a, b) / DENOM, max(a, b) / DENOM
    pruner = Pruner(mlp_layers(weights), method, scope)
    for low, high in zip(pruner.masks(k1), pruner.masks(k2), strict=True):
        assert not bool((~low & high).any()), "a weight pruned at k1 came back at k2"
    # the single-matrix functions nest too
    for fn in (weight_mask, unit_mask):
        assert not bool((~fn(weights[0], k1) & fn(weights[0], k2)).any())


@given(weights=nets(), p=per_mille)
def test_layer_scope_is_the_per_layer_functions(weights: list[Tensor], p: int) -> None:
    """Layer scope gives weight_mask / unit_mask on each prunable matrix."""
    k = p / DENOM
    for method, fn in (("weight", weight_mask), ("unit", unit_mask)):
        masks = prune_masks(mlp_layers(weights), method, "layer", k)
        for m, w in zip(masks[:-1], weights[:-1], strict=True):
            assert torch.equal(m, fn(w, k))


@given(weights=nets(), p=per_mille)
def test_global_weight_drops_floor_kN_smallest_in_total(weights: list[Tensor], p: int) -> None:
    """Global weight scope drops floor(k*N) of the N prunable weights, the smallest |w| first."""
    masks = prune_masks(mlp_layers(weights), "weight", "global", p / DENOM)
    n_total = sum(w.numel() for w in weights[:-1])
    assert sum(int((~m).sum()) for m in masks[:-1]) == p * n_total // DENOM
    dropped = torch.cat([w[~m].abs() for w, m in zip(weights[:-1], masks[:-1], strict=True)])
    kept = torch.cat([w[m].abs() for w, m in zip(weights[:-1], masks[:-1], strict=True)])
    if dropped.numel() and kept.numel():
        assert dropped.max() <= kept.min()


def test_global_differs_from_layer_when_layer_scales_differ() -> None:
    """With one large and one small layer, global ranking prunes only the small one."""
    big = torch.arange(1, 17, dtype=torch.float32).view(4, 4) * 10  # |w| in 10..160
    small = torch.arange(1, 17, dtype=torch.float32).view(4, 4) / 100  # |w| in 0.01..0.16
    out = torch.ones(2, 4)
    weights = [big, small, out]

    def per_layer(scope: str) -> list[int]:
        return [int((~m).sum()) for m in prune_masks(mlp_layers(weights), "weight", scope, 0.5)]

    assert per_layer("layer") == [8, 8, 0]
    assert per_layer("global") == [0, 16, 0]


@given(weights=nets(), p=per_mille)
def test_global_unit_count_and_guard(weights: list[Tensor], p: int) -> None:
    """Global unit scope drops whole rows, floor(k*units) capped so each layer keeps a unit."""
    masks = prune_masks(mlp_layers(weights), "unit", "global", p / DENOM)
    units = sum(w.shape[0] for w in weights[:-1])
    droppable = units - (len(weights) - 1)
    gone = [int(dropped_rows(m).sum()) for m in masks[:-1]]
    assert sum(gone) == min(p * units // DENOM, droppable)
    for m, w in zip(masks[:-1], weights[:-1], strict=True):
        assert bool((m.all(dim=1) | (~m).all(dim=1)).all())
        assert int(m.all(dim=1).sum()) >= 1, f"all units of a {tuple(w.shape)} layer removed"


@given(weights=nets(), k=st.sampled_from([0.9, 0.95, 0.97, 0.99]))
def test_global_unit_never_empties_a_layer_at_high_sparsity(weights: list[Tensor],
                                                            k: float) -> None:
    """Even at k=0.99, global unit pruning leaves every prunable layer at least one unit."""
    masks = prune_masks(mlp_layers(weights), "unit", "global", k)
    assert all(bool(m.any()) for m in masks)


def test_global_unit_guard_on_a_constructed_example() -> None:
    """A layer of tiny rows keeps its best unit at k=0.99 while the pool is emptied."""
    big = torch.full((5, 4), 3.0) * torch.arange(1, 6, dtype=torch.float32)[:, None]
    tiny = torch.full((5, 5), 1e-3) * torch.arange(1, 6, dtype=torch.float32)[:, None]
    weights = [big, tiny, torch.ones(2, 5)]
    masks = prune_masks(mlp_layers(weights), "unit", "global", 0.99)
    # n_pruned(0.99, 10) = 9, capped at 10 - 2 protected = 8: one unit left per layer
    assert [int(m.all(dim=1).sum()) for m in masks[:-1]] == [1, 1]
    assert bool(masks[0][4].all()) and bool(masks[1][4].all()), "the best unit is protected"


def test_global_unit_ranks_by_rms_not_raw_norm() -> None:
    """Rows are compared by ||row|| / sqrt(fan_in), so wide layers are not favoured."""
    scale = torch.tensor([1.0, 1.1, 1.2])[:, None]
    wide = torch.full((3, 100), 0.1) * scale  # norms 1.0..1.2, RMS 0.10..0.12
    narrow = torch.full((3, 3), 0.2) * scale  # norms 0.35..0.42, RMS 0.20..0.24
    weights = [wide, narrow, torch.ones(2, 3)]
    # By raw L2 norm every narrow row is smaller than every wide row ...
    assert unit_scores(narrow).max() < unit_scores(wide).min()
    # ... yet global unit pruning of 2 of the 6 units removes the two lowest-RMS wide rows.
    masks = prune_masks(mlp_layers(weights), "unit", "global", 0.34)  # floor(0.34 * 6) = 2
    assert dropped_rows(masks[0]).tolist() == [True, True, False]
    assert dropped_rows(masks[1]).tolist() == [False, False, False]


@given(weights=nets(), p=per_mille, method=st.sampled_from(METHODS),
       scope=st.sampled_from(SCOPES))
def test_apply_masks_zeroes_exactly_the_masked_entries(weights: list[Tensor], p: int,
                                                       method: str, scope: str) -> None:
    """apply_masks keeps masked-in entries as they are and sets the rest to zero."""
    net = mlp_layers(weights)
    masks = prune_masks(net, method, scope, p / DENOM)
    for pruned, w, m in zip(weights_of(apply_masks(net, masks)), weights, masks, strict=True):
        assert pruned.shape == w.shape and pruned.dtype == w.dtype
        assert torch.equal(pruned[m], w[m])
        assert bool((pruned[~m] == 0).all())


def test_pruner_sweep_matches_single_calls() -> None:
    """One Pruner ranked once gives the same masks as prune_masks for each sparsity."""
    g = torch.Generator().manual_seed(1)
    weights = [torch.randn(8, 6, generator=g), torch.randn(5, 8, generator=g),
               torch.randn(3, 5, generator=g)]
    for method, scope in itertools.product(METHODS, SCOPES):
        net = mlp_layers(weights)
        pruner = Pruner(net, method, scope)
        for k in (0.0, 0.25, 0.5, 0.9, 0.99):
            for a, b in zip(pruner.masks(k), prune_masks(net, method, scope, k), strict=True):
                assert torch.equal(a, b)


@pytest.mark.parametrize(("method", "scope"), [("magnitude", "layer"), ("weight", "local")])
def test_unknown_method_or_scope_is_rejected(method: str, scope: str) -> None:
    """Pruner refuses an unknown method or scope, naming it."""
    weights = [torch.ones(3, 2), torch.ones(2, 3)]
    with pytest.raises(ValueError, match="magnitude|local"):
        Pruner(mlp_layers(weights), method, scope)


@settings(max_examples=200, deadline=None)
@given(hnp.arrays(np.float32, st.integers(0, 300),
                  elements=st.one_of(st.floats(allow_nan=False, width=32),
                                     st.sampled_from([0.0, -0.0, 1.0, -1.0, 2.5, float("inf"),
                                                      float("-inf"), 1e-45, -1e-45]))))
def test_stable_order_is_stable_argsort(values: np.ndarray) -> None:
    """The fast ranking order equals torch's stable argsort on any float32 scores: negative,
    tied, signed zeros, subnormal and infinite ones included (ties keep index order)."""
    from prunelab.pruning.masks import stable_order

    t = torch.from_numpy(values)
    assert torch.equal(stable_order(t), t.argsort(stable=True))
