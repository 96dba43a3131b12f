"""Effective sparsity (live_masks) and the exact fast evaluation (compact, fast_equivalent)."""

from __future__ import annotations

import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor

from prunelab.models.layers import Net, forward, mlp_layers
from prunelab.models.layers import weights as weights_of
from prunelab.pruning.compaction import compact, fast_equivalent, sparsify
from prunelab.pruning.masks import apply_masks, live_masks, prune_masks
from prunelab.pruning.sweep import prune_point

T, F = True, False
STUDY_SIZES = (784, 1000, 1000, 500, 200, 10)

# prunelab silences this notice at import; pytest restores the warning filters per test.
pytestmark = pytest.mark.filterwarnings("ignore:Sparse CSR tensor support is in beta state")


def tensors(*rows: list[float]) -> Tensor:
    """A float32 matrix from literal rows."""
    return torch.tensor(rows, dtype=torch.float32)


def reference_live(weights: list[Tensor]) -> tuple[list[set[int]], list[set[int]]]:
    """Brute force: which units at each boundary are fed from the input / reach the output."""
    nz = [(w != 0).tolist() for w in weights]
    fed = [set(range(weights[0].shape[1]))]
    for m in nz:
        fed.append({o for o, row in enumerate(m) if any(row[i] for i in fed[-1])})
    reach = [set(range(weights[-1].shape[0]))]
    for m in reversed(nz):
        reach.insert(0, {i for i in range(len(m[0])) if any(m[o][i] for o in reach[0])})
    return fed, reach


def random_net(sizes: tuple[int, ...], seed: int) -> Net:
    """An MLP of random (out, in) matrices scaled like PyTorch's init (activations O(1))."""
    g = torch.Generator().manual_seed(seed)
    return mlp_layers([torch.randn(o, i, generator=g) / i**0.5 for i, o in zip(sizes, sizes[1:])])


def test_live_masks_zero_row_and_dead_end_unit() -> None:
    """A zeroed row kills the next column; a unit with no way out kills its incoming row."""
    weights = [
        tensors([1, 2, 3, 0], [0, 0, 0, 0], [5, 6, 7, 8]),  # hidden a1 zeroed; one zero weight
        tensors([1, 2, 0], [3, 4, 0]),  # a2 has no outgoing weights; b1 ...
        tensors([1, 0], [2, 0]),  # ... has no outgoing weights either
    ]
    live = live_masks(mlp_layers(weights))
    assert [m.dtype for m in live] == [torch.bool] * 3
    assert live[0].tolist() == [[T, T, T, F], [F, F, F, F], [F, F, F, F]]
    assert live[1].tolist() == [[T, F, F], [F, F, F]]
    assert live[2].tolist() == [[T, F], [T, F]]


def test_live_masks_unit_fed_only_by_a_dead_unit() -> None:
    """A unit whose only input is a zeroed unit is dead, and so is its outgoing column."""
    weights = [
        tensors([1, 2, 3, 4], [0, 0, 0, 0], [5, 6, 7, 8]),
        tensors([1, 0, 2], [0, 3, 0]),  # b1 is fed only by the zeroed a1
        tensors([1, 1], [1, 1]),
    ]
    live = live_masks(mlp_layers(weights))
    assert live[0].tolist() == [[T, T, T, T], [F, F, F, F], [T, T, T, T]]
    assert live[1].tolist() == [[T, F, T], [F, F, F]]
    assert live[2].tolist() == [[T, F], [T, F]]


def test_live_masks_of_a_dense_net_are_all_true() -> None:
    """Without zeros every weight is live."""
    net = random_net((6, 5, 4, 3), seed=0)
    assert all(bool(m.all()) for m in live_masks(net))


@st.composite
def sparse_nets(draw: st.DrawFn) -> list[Tensor]:
    """Small nets with many exact zeros, so units die in every way."""
    sizes = draw(st.lists(st.integers(1, 6), min_size=3, max_size=5))
    elements = st.sampled_from([0.0, 0.0, 0.0, 1.0, -1.0, 0.5])
    return [torch.from_numpy(draw(hnp.arrays(np.float32, (o, i), elements=elements)))
            for i, o in zip(sizes, sizes[1:])]


@settings(max_examples=60, deadline=None)
@given(weights=sparse_nets())
def test_live_masks_match_brute_force(weights: list[Tensor]) -> None:
    """live = nonzero, fed at its input unit, and its output unit reaches the output."""
    fed, reach = reference_live(weights)
    for layer, (w, m) in enumerate(zip(weights, live_masks(mlp_layers(weights)), strict=True)):
        for o in range(w.shape[0]):
            for i in range(w.shape[1]):
                expected = bool(w[o, i] != 0) and i in fed[layer] and o in reach[layer + 1]
                assert bool(m[o, i]) == expected, (layer, o, i)


@settings(max_examples=60, deadline=None)
@given(weights=sparse_nets())
def test_compact_removes_exactly_the_dead_units(weights: list[Tensor]) -> None:
    """compact keeps exactly the hidden units fed and reaching, and computes the same logits."""
    fed, reach = reference_live(weights)
    alive = [sorted(fed[b] & reach[b]) for b in range(len(weights) + 1)]
    alive[0] = list(range(weights[0].shape[1]))  # inputs and outputs are never removed
    alive[-1] = list(range(weights[-1].shape[0]))
    net = mlp_layers(weights)
    small = compact(net)
    for layer, (w, c) in enumerate(zip(weights, small, strict=True)):
        rows, cols = alive[layer + 1], alive[layer]
        assert tuple(c.weight.shape) == (len(rows), len(cols))
        assert torch.equal(c.weight, w[rows][:, cols])
    x = torch.randn(7, weights[0].shape[1])
    assert torch.allclose(forward(small, x), forward(net, x), atol=1e-5)


def test_compact_on_the_hand_example() -> None:
    """Dead a1, a2 and b1 go: shapes (1,4), (1,1), (2,1), and the logits are unchanged."""
    weights = [
        tensors([1, 2, 3, 0], [0, 0, 0, 0], [5, 6, 7, 8]),
        tensors([1, 2, 0], [3, 4, 0]),
        tensors([1, 0], [2, 0]),
    ]
    net = mlp_layers(weights)
    small = compact(net)
    assert [tuple(w.shape) for w in weights_of(small)] == [(1, 4), (1, 1), (2, 1)]
    assert small[0].weight.tolist() == [[1, 2, 3, 0]]
    x = torch.randn(5, 4)
    assert torch.allclose(forward(small, x), forward(net, x))


def test_reference_figure_live_share_of_layerwise_unit_pruning() -> None:
    """784-1000-1000-500-200-10, unit pruning at k=0.5 per layer: 793,000 of 2,386,000 live."""
    # Seeded, and no exact zeros: float32 randn draws an exact 0.0 about once in 10^8, which
    # over 2.4M weights made this count flaky (792,999 once in CI).
    g = torch.Generator().manual_seed(0)
    ws = [torch.randn(o, i, generator=g) for i, o in zip(STUDY_SIZES, STUDY_SIZES[1:])]
    net = mlp_layers([torch.where(w == 0, torch.ones_like(w), w) for w in ws])
    masks = prune_masks(net, "unit", "layer", 0.5)
    pruned = apply_masks(net, masks)
    total = sum(w.numel() for w in weights_of(net))
    live = sum(int(m.sum()) for m in live_masks(pruned))
    assert total == 2_386_000
    assert live == 793_000
    assert round(100 * live / total, 1) == 33.2

    x, y = torch.randn(20, 784), torch.randint(0, 10, (20,))
    point = prune_point(apply_masks(net, masks), 0.5, x, y)
    assert point.live_params == 793_000
    assert point.nonzero_params == 500 * 784 + 500 * 1000 + 250 * 1000 + 100 * 500 + 10 * 200
    assert point.effective_sparsity == round(1 - 793_000 / 2_386_000, 6)
    assert point.nominal_sparsity == round(1 - point.nonzero_params / total, 6)
    assert 0.0 <= point.accuracy <= 100.0


def test_compact_shapes_after_layerwise_unit_pruning() -> None:
    """Unit pruning at k=0.5 per layer leaves exactly the kept rows: 24->12, 16->8, 12->6."""
    net = random_net((30, 24, 16, 12, 6), seed=3)
    pruned = apply_masks(net, prune_masks(net, "unit", "layer", 0.5))
    assert [tuple(w.shape) for w in weights_of(compact(pruned))] == [(12, 30), (8, 12), (6, 8),
                                                                    (6, 6)]


@pytest.mark.parametrize(
    ("method", "scope", "k"),
    [("unit", "layer", 0.25), ("unit", "layer", 0.5), ("unit", "layer", 0.9),
     ("unit", "global", 0.5), ("unit", "global", 0.99),
     ("weight", "layer", 0.5), ("weight", "layer", 0.9), ("weight", "layer", 0.97),
     ("weight", "layer", 0.99), ("weight", "global", 0.95), ("weight", "global", 0.99)],
)
def test_fast_equivalent_computes_the_masked_net(method: str, scope: str, k: float) -> None:
    """forward(fast_equivalent(w), x) equals forward(masked w, x) to 1e-5."""
    net = random_net((200, 120, 80, 40, 10), seed=7)
    pruned = apply_masks(net, prune_masks(net, method, scope, k))
    x = torch.randn(64, 200)
    fast = fast_equivalent(pruned)
    assert torch.allclose(forward(fast, x), forward(pruned, x), atol=1e-5)


def test_fast_equivalent_uses_csr_for_very_sparse_layers() -> None:
    """At 97% weight sparsity the first layer is stored as CSR, and the logits still match."""
    net = random_net((200, 120, 80, 40, 10), seed=7)
    pruned = apply_masks(net, prune_masks(net, "weight", "layer", 0.97))
    fast = fast_equivalent(pruned)
    assert fast[0].weight.layout == torch.sparse_csr
    assert fast[-1].weight.layout == torch.strided  # the dense output layer stays dense
    x = torch.randn(64, 200)
    assert torch.allclose(forward(fast, x), forward(pruned, x), atol=1e-5)


def test_sparsify_threshold() -> None:
    """sparsify converts only layers with density <= max_density, keeping the values."""
    dense = torch.ones(10, 10)
    sparse = torch.zeros(10, 10)
    sparse[0, :5] = 2.0  # density 0.05
    out = weights_of(sparsify(mlp_layers([dense, sparse]), max_density=0.05))
    assert out[0].layout == torch.strided and out[1].layout == torch.sparse_csr
    assert torch.equal(out[1].to_dense(), sparse)
