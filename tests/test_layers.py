"""A net as a sequence of layers (issue 10): the MLP's numbers did not move, and conv layers
(LeNet-5) get the same guarantees -- whole-channel unit masks, liveness and compaction through
a flatten, every criterion's counts, the save format, the model builder and the config.

Small random nets keep these fast (a few channels, a few dozen calibration images).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from repo_helpers import SMALL_PARAMS
from torch import Tensor, nn

from prunelab.config import LeNet5Config, MLPConfig, ModelConfig
from prunelab.errors import DataError, ParamsError, PrunelabError
from prunelab.models.layers import Layer, Net, forward, mlp_layers, weights, with_weights
from prunelab.models.networks import (
    EVAL_BATCH,
    GEOMETRY_FIELDS,
    accuracy,
    build_model,
    layer_sizes,
    lenet5_geometry,
    load_net,
    save_net,
    weights_blob,
)
from prunelab.pruning.compaction import compact, csr
from prunelab.pruning.criteria.base import Context, Criterion
from prunelab.pruning.criteria.registry import CRITERIA
from prunelab.pruning.masks import Pruner, apply_masks, check_support, live_masks, n_pruned
from prunelab.pruning.savings import Realised, flops_per_sample, realise
from prunelab.pruning.sweep import sweep
from prunelab.studies.registry import parse_params

pytestmark = pytest.mark.filterwarnings("ignore:Sparse CSR tensor support is in beta state")

GOLDEN = Path(__file__).resolve().parent / "golden" / "mlp_sweep.json"
ALL = [(g, c) for g, named in CRITERIA.items() for c in named.values()]
IDS = [f"{g}-{c.name}" for g, c in ALL]
UNIT = list(CRITERIA["unit"].values())
SCOPES = ("layer", "global")
FAST = settings(max_examples=10, deadline=None, database=None)


def lenet(channels: tuple[int, int] = (3, 4), fc: tuple[int, ...] = (6,), seed: int = 0) -> Net:
    """LeNet-5's geometry with random weights scaled like PyTorch's init (no exact zeros)."""
    g = torch.Generator().manual_seed(seed)
    net = []
    for layer, shape in lenet5_geometry(channels, fc):
        w = torch.randn(shape, generator=g) / math.sqrt(math.prod(shape[1:]))
        net.append(layer.with_weight(torch.where(w == 0, torch.ones_like(w), w)))
    return tuple(net)


def lenet_context(seed: int, channels: tuple[int, int] = (3, 4), fc: tuple[int, ...] = (6,),
                  n: int = 24) -> Context:
    """A random LeNet and ``n`` random calibration images with random labels."""
    g = torch.Generator().manual_seed(seed + 1)
    x = torch.randn(n, 784, generator=g)
    y = torch.randint(0, 10, (n,), generator=g)
    return Context(lenet(channels, fc, seed), x, y, seed=seed)


def pruned(criterion: Criterion, context: Context, scope: str, k: float) -> list[Tensor]:
    """What the sweep does at one k: masks, then reconstruct when the criterion does."""
    masks = Pruner(context.net, criterion.granularity, scope, criterion, context).masks(k)
    if criterion.reconstruct is not None:
        return criterion.reconstruct(context, masks)
    return weights(apply_masks(context.net, masks))


def dead_units(layer: Layer, w: Tensor) -> Tensor:
    """(out,) units of ``layer`` whose incoming weights in ``w`` are all zero."""
    return ~layer.matrix(w).any(dim=1)


def all_or_nothing(layer: Layer, mask: Tensor) -> bool:
    """Every unit's mask entries (a row, or a channel's (in, k, k) kernel stack) agree."""
    m = layer.matrix(mask)
    return bool((m.all(dim=1) | ~m.any(dim=1)).all())


# --- the MLP's numbers did not move ----------------------------------------------------------

GOLDEN_DATA = json.loads(GOLDEN.read_text(encoding="utf-8"))
# Criteria that read calibration images go through BLAS reductions whose summation order can
# differ between CPUs; their accuracy may move by one of the 512 test inputs (plus the 4-decimal
# rounding of both numbers). Every other figure, and every figure of the weight-only criteria,
# must be exact.
ONE_SAMPLE = 100 / 512 + 1e-4


@pytest.fixture(scope="module")
def golden_setup() -> tuple[Net, Tensor, Tensor, Tensor, Tensor]:
    """The seeded MLP and data the golden file was made with (pre-layers code, 3fdf07c)."""
    with torch.random.fork_rng():
        torch.manual_seed(1234)
        sizes = tuple(GOLDEN_DATA["sizes"])
        net = mlp_layers([torch.randn(o, i) / i**0.5 for i, o in zip(sizes, sizes[1:])])
    gen = torch.Generator().manual_seed(99)
    x = torch.randn(512, 784, generator=gen)
    y = forward(net, x).argmax(1)
    cal = torch.randn(256, 784, generator=gen)
    labels = forward(net, cal).argmax(1)
    return net, x, y, cal, labels


def test_golden_file_covers_registered_criteria() -> None:
    """Every golden curve names a registered criterion and a scope, and the golden file has a
    curve for each criterion it was made with (both scopes)."""
    expected = {f"{g}/{name}/{scope}" for g, named in CRITERIA.items() for name in named
                for scope in SCOPES}
    assert set(GOLDEN_DATA["curves"]) <= expected
    assert GOLDEN_DATA["sizes"] == [784, 96, 64, 32, 10]


# The random criterion draws from a new stream since prunelab.runtime.rng (its old seed repeated the
# draws of the initial weights at train.seed = 0), so its golden curves are of the old draws.
RESEEDED = {"random"}


@pytest.mark.parametrize("key", sorted(k for k in GOLDEN_DATA["curves"]
                                       if k.split("/")[1] not in RESEEDED))
def test_mlp_sweep_matches_the_pre_layers_golden_curves(
        key: str, golden_setup: tuple[Net, Tensor, Tensor, Tensor, Tensor]) -> None:
    """The refactored sweep reproduces the pre-refactor curves of the MLP: per point, the
    sparsity, accuracy, effective sparsity and live parameter count."""
    net, x, y, cal, labels = golden_setup
    granularity, name, scope = key.split("/")
    criterion = CRITERIA[granularity][name]  # type: ignore[index]
    context = Context(net, cal, labels, seed=3)
    points = sweep(net, granularity, scope, GOLDEN_DATA["grid"], x, y, criterion, context)
    got = [[p.sparsity, p.accuracy, p.effective_sparsity, p.live_params] for p in points]
    want = GOLDEN_DATA["curves"][key]
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert (g[0], g[2], g[3]) == (w[0], w[2], w[3]), (key, g, w)
        if criterion.needs_calibration:
            assert abs(g[1] - w[1]) <= ONE_SAMPLE, (key, g, w)
        else:
            assert g[1] == w[1], (key, g, w)


# --- geometry -----------------------------------------------------------------------------


@pytest.mark.parametrize(("channels", "fc"), [((6, 16), (120, 84)), ((2, 3), ()), ((1, 1), (5,))])
def test_lenet5_geometry_chains(channels: tuple[int, int], fc: tuple[int, ...]) -> None:
    """28x28 in: conv (pad 2) keeps 28, pool 14, conv 10, pool 5, flatten blocks of 25; every
    layer reads what the one before produces; 10 classes out."""
    net = lenet(channels, fc)
    assert [layer.kind for layer in net] == ["conv", "conv"] + ["linear"] * (len(fc) + 1)
    assert net[0].in_features == 784 and net[-1].units == 10
    assert (net[0].side, net[0].out_side, net[0].next_side) == (28, 28, 14)
    assert (net[1].side, net[1].out_side, net[1].next_side) == (14, 10, 5)
    assert net[2].block == 25 and all(layer.block == 1 for layer in net[3:])
    for a, b in zip(net, net[1:]):
        assert a.units == b.in_units
        assert b.in_features == a.units * a.next_side**2
    x = torch.randn(3, 784)
    assert forward(net, x).shape == (3, 10)


def out_of_place(net: Net, x: Tensor) -> Tensor:
    """The logits as ``forward`` computes them, layer by layer, without its in-place ReLU."""
    h = x
    for layer in net[:-1]:
        h = layer.activate(layer.pre_activation(h))
    return net[-1].pre_activation(h)


def forward_cases(kind: str) -> Net:
    """A net of every form ``forward`` runs: dense linear, conv, CSR-realised linear, and a
    compacted conv net with no units left (its convs are empty)."""
    torch.manual_seed(3)
    if kind == "lenet":
        return lenet()
    mlp = mlp_layers([torch.randn(16, 784), torch.randn(8, 16), torch.randn(10, 8)])
    if kind == "mlp":
        return mlp
    if kind == "csr":
        w = mlp[1].weight * (torch.rand(8, 16) < 0.1)
        return (mlp[0], mlp[1].with_weight(csr(w)), mlp[2])
    net = lenet((3, 4), (6,))  # "empty": fc1 lost every unit, so compaction empties the convs
    return compact(apply_masks(net, unit_masks(net, [[True] * 3, [True] * 4, [False] * 6])))


@pytest.mark.parametrize("kind", ["mlp", "lenet", "csr", "empty"])
def test_forward_keeps_its_input_and_computes_each_layer_out_of_place(kind: str) -> None:
    """forward's in-place ReLU only overwrites products it made: the input and the weights are
    untouched, and the logits equal the layers applied one by one without it."""
    net = forward_cases(kind)
    x = torch.randn(7, 784)
    x_before = x.clone()
    w_before = [w.to_dense().clone() for w in weights(net)]
    assert torch.equal(forward(net, x), out_of_place(net, x))
    assert torch.equal(x, x_before)
    assert all(torch.equal(w.to_dense(), b) for w, b in zip(weights(net), w_before, strict=True))


def test_forward_in_place_gives_the_same_gradients() -> None:
    """Under autograd the in-place ReLU changes no gradient: those of the weights and of the
    input equal the out-of-place computation's."""
    sizes = (784, 16, 8, 10)
    grads = []
    for logits in (forward, out_of_place):
        torch.manual_seed(4)
        ws = [torch.randn(o, i, requires_grad=True) for i, o in zip(sizes, sizes[1:])]
        x = torch.randn(5, 784, requires_grad=True)
        logits(mlp_layers(ws), x).square().sum().backward()
        grads.append([x.grad, *(w.grad for w in ws)])
    assert all(torch.equal(a, b) for a, b in zip(*grads, strict=True))


@pytest.mark.parametrize("n", [1, EVAL_BATCH - 1, EVAL_BATCH, EVAL_BATCH + 1,
                               2 * EVAL_BATCH + EVAL_BATCH // 4])
def test_accuracy_counts_every_image_across_eval_batches(n: int) -> None:
    """accuracy() tests in batches of EVAL_BATCH: every image is counted once whatever n, the
    same as one image at a time. Small integers throughout, so every sum is exact in any order
    and the two ways cannot differ by rounding."""
    gen = torch.Generator().manual_seed(n)
    net = mlp_layers([torch.randint(-2, 3, (12, 784), generator=gen).float(),
                      torch.randint(-2, 3, (10, 12), generator=gen).float()])
    x = torch.randint(-2, 3, (n, 784), generator=gen).float()
    y = torch.randint(0, 10, (n,), generator=gen)
    one_by_one = sum(int(forward(net, x[i : i + 1]).argmax(1) == y[i]) for i in range(n))
    assert accuracy(net, x, y) == 100.0 * one_by_one / n


@FAST
@given(a=st.integers(1, 4), b=st.integers(1, 4), seed=st.integers(0, 1000))
def test_patches_times_matrix_is_the_convolution(a: int, b: int, seed: int) -> None:
    """What criteria see of a conv (patches @ matrix^T, back through from_patches) is the
    layer's own pre-activation; a CSR-realised conv computes the same."""
    net = lenet((a, b), (), seed)
    x = torch.randn(4, 784, generator=torch.Generator().manual_seed(seed))
    h = x
    for layer in net[:-1]:
        z = layer.pre_activation(h)
        via = layer.from_patches(layer.patches(h) @ layer.matrix().T, len(h))
        torch.testing.assert_close(via, z, atol=1e-5, rtol=1e-5)
        sparse = layer.with_weight(csr(layer.weight))
        torch.testing.assert_close(sparse.pre_activation(h), z, atol=1e-5, rtol=1e-5)
        h = layer.activate(z)


# --- unit masks of a conv are whole channels --------------------------------------------------


@pytest.mark.parametrize("criterion", UNIT, ids=[c.name for c in UNIT])
@pytest.mark.parametrize("scope", SCOPES)
@settings(max_examples=10, deadline=None, database=None)
@given(a=st.integers(1, 6), b=st.integers(1, 6), c=st.integers(1, 6),
       ks=st.lists(st.floats(0.0, 0.99), min_size=1, max_size=4), seed=st.integers(0, 1000))
def test_unit_masks_are_whole_channels(criterion: Criterion, scope: str, a: int, b: int, c: int,
                                       ks: list[float], seed: int) -> None:
    """Unit masks drop whole output channels (every (in, kh, kw) entry) and whole rows; layer
    scope drops exactly floor(k * units) per layer, global scope floor(k * total) capped so each
    layer keeps a unit; the output layer stays whole."""
    context = lenet_context(seed, (a, b), (c,))
    net = context.net
    pruner = Pruner(net, "unit", scope, criterion, context)
    for k in ks:
        masks = pruner.masks(k)
        assert [m.shape for m in masks] == [layer.weight.shape for layer in net]
        assert bool(masks[-1].all())
        gone = []
        for layer, m in zip(net[:-1], masks[:-1], strict=True):
            assert all_or_nothing(layer, m), (layer.kind, k)
            gone.append(int((~layer.matrix(m).any(dim=1)).sum()))
        units = [layer.units for layer in net[:-1]]
        if scope == "layer":
            assert gone == [n_pruned(k, n) for n in units], (k, units)
        else:
            assert sum(gone) == min(n_pruned(k, sum(units)), sum(units) - len(units))
            assert all(g < n for g, n in zip(gone, units, strict=True))


# --- liveness through a flatten ---------------------------------------------------------------


def all_true_except(net: Net, dead: dict[int, Any]) -> list[Tensor]:
    """Weight-shaped all-True masks with ``dead[i]`` (an index) set False in layer i."""
    out = [torch.ones_like(layer.weight, dtype=torch.bool) for layer in net]
    for i, where in dead.items():
        out[i][where] = False
    return out


def assert_masks_equal(got: list[Tensor], want: list[Tensor]) -> None:
    for i, (g, w) in enumerate(zip(got, want, strict=True)):
        assert torch.equal(g, w), f"layer {i}: {int((g != w).sum())} entries differ"


@pytest.mark.parametrize("channel", [0, 2, 3])
def test_zeroed_conv_channel_kills_exactly_its_block_after_the_flatten(channel: int) -> None:
    """A conv2 channel with an all-zero kernel: its kernel and exactly the columns
    c*block .. (c+1)*block-1 of the linear layer after the flatten are dead, nothing else."""
    net = lenet((3, 4), (6,))
    net[1].weight[channel] = 0.0
    block = net[2].block
    assert block == 25
    cols = slice(channel * block, (channel + 1) * block)
    want = all_true_except(net, {1: channel, 2: (slice(None), cols)})
    assert_masks_equal(live_masks(net), want)


def test_block_read_by_nothing_kills_the_conv_channel() -> None:
    """A conv2 channel whose whole block of columns after the flatten is zero reaches nothing:
    its kernel is dead (and those zero columns)."""
    net = lenet((3, 4), (6,))
    net[2].weight[:, 25:50] = 0.0  # channel 1's block
    want = all_true_except(net, {1: 1, 2: (slice(None), slice(25, 50))})
    assert_masks_equal(live_masks(net), want)


def test_linear_unit_without_outgoing_weights_is_dead() -> None:
    """A hidden linear unit whose outgoing weights are all zero: its incoming row is dead."""
    net = lenet((3, 4), (6,))
    net[3].weight[:, 4] = 0.0
    want = all_true_except(net, {2: 4, 3: (slice(None), 4)})
    assert_masks_equal(live_masks(net), want)


def test_conv_channel_read_by_nothing_is_dead() -> None:
    """A conv1 channel that every kernel of conv2 reads with zero weights: its kernel is dead,
    and so are those zero reading weights."""
    net = lenet((3, 4), (6,))
    net[1].weight[:, 2] = 0.0
    want = all_true_except(net, {0: 2, 1: (slice(None), 2)})
    assert_masks_equal(live_masks(net), want)


def test_zeroed_first_conv_channel_kills_what_reads_it() -> None:
    """A conv1 channel with a zero kernel outputs 0 (no bias): conv2's weights on it are dead."""
    net = lenet((3, 4), (6,))
    net[0].weight[1] = 0.0
    want = all_true_except(net, {0: 1, 1: (slice(None), 1)})
    assert_masks_equal(live_masks(net), want)


# --- compaction -------------------------------------------------------------------------------


@st.composite
def masked_lenets(draw: st.DrawFn) -> tuple[Net, list[list[bool]]]:
    """conv -> conv -> flatten -> linear -> linear with random weights and random unit
    keep-lists for the three hidden layers (sometimes a layer keeps nothing)."""
    a, b, c = draw(st.integers(1, 4)), draw(st.integers(1, 4)), draw(st.integers(1, 5))
    net = lenet((a, b), (c,), draw(st.integers(0, 10_000)))
    keeps = []
    for n in (a, b, c):
        if draw(st.integers(0, 9)) == 0:
            keeps.append([False] * n)  # a dead layer: nothing connects input and output
        else:
            keeps.append(draw(st.lists(st.booleans(), min_size=n, max_size=n)))
    return net, keeps


def unit_masks(net: Net, keeps: list[list[bool]]) -> list[Tensor]:
    """Keep-masks from per-unit keep-lists of the hidden layers; the output layer whole."""
    out = [layer.unit_mask(torch.tensor(k)) for layer, k in zip(net, keeps)]
    return out + [torch.ones_like(net[-1].weight, dtype=torch.bool)]


@settings(max_examples=30, deadline=None, database=None)
@given(case=masked_lenets(), n=st.integers(1, 8))
def test_compact_conv_net_keeps_exactly_the_live_units(case: tuple[Net, list[list[bool]]],
                                                       n: int) -> None:
    """compact(apply_masks(net, masks)) keeps exactly the live units -- output channels,
    the next conv's input channels, the linear layer's blocks after the flatten -- and, when
    input and output are still connected, gives the masked net's logits (to 1e-4)."""
    net, keeps = case
    masked = apply_masks(net, unit_masks(net, keeps))
    small = compact(masked)
    connected = all(any(k) for k in keeps)
    kept = [sum(k) if connected else 0 for k in keeps]
    live = live_masks(masked)
    assert [int(layer.matrix(m).any(dim=1).sum()) for layer, m in
            zip(masked[:-1], live[:-1], strict=True)] == kept
    ins = [1, *kept]
    assert tuple(small[0].weight.shape) == (kept[0], 1, 5, 5)
    assert tuple(small[1].weight.shape) == (kept[1], kept[0], 5, 5)
    assert tuple(small[2].weight.shape) == (kept[2], kept[1] * 25)
    assert tuple(small[3].weight.shape) == (10, kept[2])
    assert [layer.in_units for layer in small] == ins[:4]
    # Geometry is unchanged; only units go.
    for a, b in zip(small, net, strict=True):
        assert all(getattr(a, f) == getattr(b, f) for f in GEOMETRY_FIELDS)
    # The kept weights are the masked net's, in order.
    if connected:
        rows = [torch.tensor(k) for k in keeps]
        assert torch.equal(small[0].weight, masked[0].weight[rows[0]])
        assert torch.equal(small[1].weight, masked[1].weight[rows[1]][:, rows[0]])
        cols = rows[1].repeat_interleave(25)
        assert torch.equal(small[2].weight, masked[2].weight[rows[2]][:, cols])
        assert torch.equal(small[3].weight, masked[3].weight[:, rows[2]])
        x = torch.randn(n, 784)
        diff = (forward(small, x) - forward(masked, x)).abs().max()
        assert float(diff) <= 1e-4


def test_compact_of_a_disconnected_conv_net_computes_zero_logits() -> None:
    """A net whose fc layer lost every unit computes logits 0; so must its compacted form
    (which has no hidden units at all). Reachable: weight pruning in global scope empties
    LeNet-5's fc1 at k = 0.97 (magnitude), and the sweep evaluates the compacted net."""
    net = lenet((3, 4), (6,))
    masked = apply_masks(net, unit_masks(net, [[True] * 3, [True] * 4, [False] * 6]))
    x = torch.randn(5, 784)
    assert bool((forward(masked, x) == 0).all())
    small = compact(masked)
    assert [layer.units for layer in small] == [0, 0, 0, 10]
    assert bool((forward(small, x) == 0).all())


def test_unit_pruned_lenet_is_realised_compacted_and_weight_pruned_one_matches() -> None:
    """realise: a unit-pruned LeNet loses whole channels (and blocks after the flatten); a
    weight-pruned one keeps its shapes (dense or CSR, timed); both give the masked logits."""
    net = lenet((4, 6), (8,))
    x = torch.randn(16, 784)
    masked = apply_masks(net, Pruner(net, "unit", "layer").masks(0.5))
    model = realise(masked, "unit")
    assert [tuple(layer.weight.shape) for layer in model.layers] == [
        (2, 1, 5, 5), (3, 2, 5, 5), (4, 75), (10, 4)]
    torch.testing.assert_close(forward(model.layers, x), forward(masked, x), atol=1e-4, rtol=0)
    masked = apply_masks(net, Pruner(net, "weight", "layer").masks(0.9))
    model = realise(masked, "weight")
    torch.testing.assert_close(forward(model.layers, x), forward(masked, x), atol=1e-4, rtol=0)


def test_flops_count_conv_weights_at_every_output_position() -> None:
    """LeNet-5 (6, 16; 120, 84), dense: 2 x (150*784 + 2400*100 + 48000 + 10080 + 840)."""
    net = lenet((6, 16), (120, 84))
    assert flops_per_sample(Realised(net)) == 2 * (150 * 784 + 2400 * 100 + 48000 + 10080 + 840)


# --- every criterion on conv layers -------------------------------------------------------------


@pytest.mark.parametrize(("granularity", "criterion"), ALL, ids=IDS)
@settings(max_examples=6, deadline=None, database=None)
@given(k=st.floats(0.0, 0.95), seed=st.integers(0, 10_000))
def test_layer_scope_prunes_exact_count_on_conv_layers(granularity: str, criterion: Criterion,
                                                       k: float, seed: int) -> None:
    """On LeNet, every criterion drops floor(k * n) weights (or channels / rows) per hidden
    layer, even after reconstructing; units go whole, kept units keep a weight, and a re-fit
    never reads a removed unit (its weights in the next layer stay zero)."""
    context = lenet_context(seed)
    net = pruned(criterion, context, "layer", k)
    layers = context.net
    for i, (layer, w) in enumerate(zip(layers[:-1], net[:-1], strict=True)):
        assert w.shape == layer.weight.shape
        if granularity == "weight":
            assert int((w == 0).sum()) == n_pruned(k, w.numel()), (criterion.name, i)
            continue
        dead = dead_units(layer, w)
        assert int(dead.sum()) == n_pruned(k, layer.units), (criterion.name, i)
        if criterion.reconstruct is None:  # masking only: kept units keep every weight
            assert all_or_nothing(layer, w != 0), (criterion.name, i)
        else:
            after = layers[i + 1].by_input_unit(net[i + 1])  # (out, in_units, per)
            assert bool((after[:, dead] == 0).all()), (criterion.name, i)
        assert bool(layer.matrix(w)[~dead].ne(0).any(dim=1).all()), (criterion.name, i)


@pytest.mark.parametrize(("granularity", "criterion"), ALL, ids=IDS)
@pytest.mark.parametrize("scope", SCOPES)
def test_masks_on_conv_layers_leave_output_whole_and_units_whole(
        granularity: str, criterion: Criterion, scope: str) -> None:
    """The output layer's mask is all True, something is pruned at k = 0.6, unit masks are
    whole channels / rows, masks nest over k (one ranking), and a criterion that does not
    reconstruct leaves the output layer's weights as they are."""
    context = lenet_context(3, (4, 6), (8,))
    pruner = Pruner(context.net, granularity, scope, criterion, context)
    masks = pruner.masks(0.6)
    assert bool(masks[-1].all())
    assert any(not bool(m.all()) for m in masks[:-1])
    if granularity == "unit":
        assert all(all_or_nothing(layer, m) for layer, m in zip(context.net, masks, strict=True))
    for low, high in zip(pruner.masks(0.3), pruner.masks(0.9), strict=True):
        assert not bool((~low & high).any()), "a weight pruned at 0.3 came back at 0.9"
    if criterion.reconstruct is None:
        assert torch.equal(pruned(criterion, context, scope, 0.6)[-1], context.weights[-1])


@pytest.mark.parametrize(("granularity", "criterion"), ALL, ids=IDS)
@pytest.mark.parametrize("scope", SCOPES)
def test_zero_sparsity_is_identity_on_conv_layers(granularity: str, criterion: Criterion,
                                                  scope: str) -> None:
    """k = 0 returns LeNet's dense weights exactly, reconstruction (obs, l2_refit) included."""
    context = lenet_context(4)
    net = pruned(criterion, context, scope, 0.0)
    assert all(torch.equal(a, b) for a, b in zip(net, context.weights, strict=True))


@pytest.mark.parametrize(("granularity", "criterion"), ALL, ids=IDS)
def test_reconstruction_keeps_the_masks_units_on_conv_layers(granularity: str,
                                                             criterion: Criterion) -> None:
    """A pruned LeNet (reconstructed or not) has the dense net's shapes and finite weights,
    and its logits on the calibration images are finite."""
    context = lenet_context(5)
    net = with_weights(context.net, pruned(criterion, context, "layer", 0.5))
    assert all(bool(torch.isfinite(layer.weight).all()) for layer in net)
    assert bool(torch.isfinite(forward(net, context.calibration)).all())


@pytest.mark.parametrize("granularity", ["weight", "unit"])
def test_random_is_reproducible_per_seed_on_conv_layers(granularity: str) -> None:
    """The random control on conv layers: same seed, same masks; another seed, others."""
    criterion = CRITERIA[granularity]["random"]  # type: ignore[index]
    net = lenet((6, 8), (10,))

    def masks(seed: int) -> list[Tensor]:
        return Pruner(net, granularity, "layer", criterion, Context(net, seed=seed)).masks(0.5)

    assert all(torch.equal(a, b) for a, b in zip(masks(1), masks(1), strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(masks(1), masks(2), strict=True))


@pytest.mark.parametrize(("granularity", "criterion"), ALL, ids=IDS)
def test_criterion_without_conv_support_is_refused_naming_it(granularity: str,
                                                             criterion: Criterion) -> None:
    """A criterion that ranks linear layers only: Pruner on LeNet raises one line naming the
    criterion and conv; check_support names the architecture; an MLP is still fine."""
    linear_only = dataclasses.replace(criterion, layer_kinds=("linear",))
    context = lenet_context(0)
    with pytest.raises(PrunelabError) as err:
        Pruner(context.net, granularity, "layer", linear_only, context)
    message = str(err.value)
    assert "\n" not in message
    assert criterion.name in message and "conv" in message, message
    with pytest.raises(PrunelabError) as err:
        check_support(linear_only, context.net, "lenet5")
    message = str(err.value)
    assert "\n" not in message
    assert "lenet5" in message and criterion.name in message and "conv" in message, message
    mlp = mlp_layers([torch.randn(6, 784), torch.randn(5, 6), torch.randn(10, 5)])
    check_support(linear_only, mlp, "mlp")
    mlp_context = Context(mlp, torch.randn(16, 784), torch.randint(0, 10, (16,)))
    Pruner(mlp, granularity, "layer", linear_only, mlp_context).masks(0.5)


def test_every_registered_criterion_supports_both_kinds() -> None:
    """Today every criterion ranks linear and conv layers (LeNet-5 sweeps all of them)."""
    assert all(set(c.layer_kinds) == {"linear", "conv"} for _, c in ALL)


# --- the model file ---------------------------------------------------------------------------


def test_save_and_load_a_lenet_round_trip(tmp_path: Path) -> None:
    """save_net / load_net: the same layers, geometry and weights bit for bit; the file says
    its format and architecture; equal nets give equal bytes."""
    model = build_model(ModelConfig(arch="lenet5", lenet5=LeNet5Config((3, 5), (7,))), 2, "cpu")
    net = model.layers()
    path = tmp_path / "model.pt"
    save_net(net, path, "lenet5")
    back = load_net(path)
    assert len(back) == len(net)
    for a, b in zip(back, net, strict=True):
        assert all(getattr(a, f) == getattr(b, f) for f in GEOMETRY_FIELDS)
        assert a.weight.dtype == b.weight.dtype and not a.weight.requires_grad
        assert torch.equal(a.weight, b.weight.detach())
    payload = torch.load(path, weights_only=True)
    assert payload["format"] == "prunelab-net-v2" and payload["arch"] == "lenet5"
    assert weights_blob(net, "lenet5") == weights_blob(back, "lenet5") == path.read_bytes()
    x = torch.randn(3, 784)
    assert torch.equal(forward(back, x), forward(net, x).detach())


def test_version_1_mlp_file_still_loads(tmp_path: Path) -> None:
    """A model file of the previous format ((out, in) matrices and the widths) loads as linear
    layers with the same weights."""
    g = torch.Generator().manual_seed(0)
    w1, w2 = torch.randn(8, 784, generator=g), torch.randn(10, 8, generator=g)
    path = tmp_path / "model.pt"
    torch.save({"format": "prunelab-mlp-v1", "sizes": [784, 8, 10], "weights": [w1, w2]}, path)
    net = load_net(path)
    assert [layer.kind for layer in net] == ["linear", "linear"]
    assert all(layer.block == 1 and layer.kernel == 1 for layer in net)
    assert torch.equal(net[0].weight, w1) and torch.equal(net[1].weight, w2)
    x = torch.randn(4, 784)
    assert torch.equal(forward(net, x), forward(mlp_layers([w1, w2]), x))


LINEAR = {"kind": "linear", "kernel": 1, "side": 1, "padding": 0, "pool": 1, "block": 1}


def v2(layers: list[dict[str, Any]], ws: list[Any]) -> dict[str, Any]:
    return {"format": "prunelab-net-v2", "arch": "mlp", "layers": layers, "weights": ws}


BAD_FILES: dict[str, Any] = {
    "garbage": b"this is not a model\n" * 50,
    "empty": b"",
    "unknown-format": {"format": "prunelab-cnn-v9", "weights": []},
    "no-format": {"weights": [torch.zeros(10, 784)]},
    "a-list": [torch.zeros(10, 784)],
    "a-tensor": torch.zeros(10, 784),
    "v1-wrong-shapes": {"format": "prunelab-mlp-v1", "sizes": [784, 64, 10],
                        "weights": [torch.zeros(64, 784), torch.zeros(10, 32)]},
    "v1-no-sizes": {"format": "prunelab-mlp-v1", "weights": [torch.zeros(10, 784)]},
    "v2-unchained": v2([LINEAR, LINEAR], [torch.zeros(64, 784), torch.zeros(10, 32)]),
    "v2-no-layers": v2([], []),
    "v2-count-mismatch": v2([LINEAR], [torch.zeros(8, 784), torch.zeros(10, 8)]),
    "v2-unknown-kind": v2([{**LINEAR, "kind": "pool"}, LINEAR],
                          [torch.zeros(8, 784), torch.zeros(10, 8)]),
    "v2-missing-field": v2([{k: v for k, v in LINEAR.items() if k != "block"}, LINEAR],
                           [torch.zeros(8, 784), torch.zeros(10, 8)]),
    "v2-extra-field": v2([{**LINEAR, "stride": 2}, LINEAR],
                         [torch.zeros(8, 784), torch.zeros(10, 8)]),
    "v2-conv-2d-weight": v2([{**LINEAR, "kind": "conv", "kernel": 5, "side": 28}, LINEAR],
                            [torch.zeros(8, 25), torch.zeros(10, 8)]),
    "v2-weight-not-tensor": v2([LINEAR, LINEAR], [[[0.0] * 784] * 8, torch.zeros(10, 8)]),
    "v2-layers-not-list": v2(5, 5),  # type: ignore[arg-type]
    "v2-linear-with-pool": v2([{**LINEAR, "pool": 2}, LINEAR],
                              [torch.zeros(8, 784), torch.zeros(10, 8)]),
    "v2-int-weights": v2([LINEAR, LINEAR], [torch.zeros(8, 784, dtype=torch.int64),
                                            torch.zeros(10, 8, dtype=torch.int64)]),
    "v2-first-conv-reads-4-channels": v2(
        [{**LINEAR, "kind": "conv", "kernel": 5, "side": 14, "pool": 2},
         {**LINEAR, "block": 25}], [torch.zeros(3, 4, 5, 5), torch.zeros(10, 75)]),
}


def write_bad(path: Path, content: Any) -> None:
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        torch.save(content, path)


@pytest.mark.parametrize("name", list(BAD_FILES))
def test_foreign_or_damaged_model_file_is_one_data_error_line(tmp_path: Path, name: str) -> None:
    """Unknown format, garbage, or layers that do not fit: one DataError line naming the file
    and saying `run: dvc repro -f train`."""
    path = tmp_path / "model.pt"
    write_bad(path, BAD_FILES[name])
    with pytest.raises(DataError) as err:
        load_net(path)
    message = str(err.value)
    assert "\n" not in message and str(path) in message, message
    assert message.endswith("run: dvc repro -f train"), message


def test_zero_block_in_a_model_file_is_a_data_error(tmp_path: Path) -> None:
    """A v2 file whose linear layer has block 0 is damaged content: one DataError line."""
    path = tmp_path / "model.pt"
    torch.save(v2([LINEAR, {**LINEAR, "block": 0}], [torch.zeros(8, 784), torch.zeros(10, 8)]),
               path)
    with pytest.raises(DataError, match="run: dvc repro -f train"):
        load_net(path)


def test_missing_model_file_says_what_to_run(tmp_path: Path) -> None:
    """No model file: one DataError line naming it and the stage to run."""
    with pytest.raises(DataError) as err:
        load_net(tmp_path / "model.pt")
    assert "\n" not in str(err.value) and "run: dvc repro train" in str(err.value)


# --- building the model -----------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 7])
@pytest.mark.parametrize("hidden", [(32, 16), (1000, 1000, 500, 200)])
def test_mlp_init_is_the_studys_linear_chain(seed: int, hidden: tuple[int, ...]) -> None:
    """build_model(mlp) draws exactly what the study's chain of bias-free nn.Linear draws
    after torch.manual_seed(seed)."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        sizes = layer_sizes(hidden)
        want = [nn.Linear(i, o, bias=False).weight.detach()
                for i, o in zip(sizes, sizes[1:])]
        model = build_model(ModelConfig(arch="mlp", mlp=MLPConfig(hidden=hidden)), seed,
                            torch.device("cpu"))
    got = model.weights()
    assert len(got) == len(want)
    assert all(torch.equal(a.detach(), b) for a, b in zip(got, want, strict=True))
    assert all(layer.kind == "linear" and layer.block == 1 for layer in model.layers())


def test_lenet5_model_forward_and_gradients() -> None:
    """build_model(lenet5): the layer shapes of LeNet-5, (N, 784) -> (N, 10), the module and
    its layers compute the same, every weight gets a gradient, same seed same weights."""
    cfg = ModelConfig(arch="lenet5", lenet5=LeNet5Config(channels=(6, 16), fc=(120, 84)))
    with torch.random.fork_rng():
        model = build_model(cfg, 0, torch.device("cpu"))
        again = build_model(cfg, 0, torch.device("cpu"))
    assert [tuple(w.shape) for w in model.weights()] == [
        (6, 1, 5, 5), (16, 6, 5, 5), (120, 400), (84, 120), (10, 84)]
    assert all(torch.equal(a, b) for a, b in zip(model.weights(), again.weights(), strict=True))
    x = torch.randn(7, 784)
    logits = model(x)
    assert logits.shape == (7, 10)
    assert torch.equal(logits, forward(model.layers(), x))
    torch.nn.functional.cross_entropy(logits, torch.arange(7)).backward()
    assert all(w.grad is not None and bool(w.grad.abs().sum() > 0) for w in model.weights())
    # layers() are the live parameters, not copies
    assert all(layer.weight is w for layer, w in zip(model.layers(), model.weights(),
                                                    strict=True))


# --- config -----------------------------------------------------------------------------------


def params_doc(**model: Any) -> dict[str, Any]:
    """The tests' small params with the model section updated."""
    doc = copy.deepcopy(SMALL_PARAMS)
    doc["model"].update(model)
    return doc


def params_error(doc: dict[str, Any]) -> str:
    with pytest.raises(ParamsError) as err:
        parse_params(doc)
    message = str(err.value)
    assert "\n" not in message and message.startswith("params.yaml: "), message
    return message


def test_config_lenet5_parses() -> None:
    """model.arch: lenet5 with its own section parses; the MLP's section is kept as given."""
    doc = params_doc(arch="lenet5", lenet5={"channels": [4, 8], "fc": [32]})
    model = parse_params(doc).model
    assert model == ModelConfig(arch="lenet5", mlp=MLPConfig(hidden=(64, 32)),
                                lenet5=LeNet5Config(channels=(4, 8), fc=(32,)))
    flat = parse_params(doc).flat()
    assert flat["model.arch"] == "lenet5" and flat["model.lenet5.channels"] == [4, 8]


def test_config_hidden_at_the_old_place_is_named() -> None:
    """model.hidden (the old layout) is an unknown key, named, with what model allows."""
    message = params_error(params_doc(hidden=[64, 32]))
    assert "'model.hidden'" in message and "arch, mlp, lenet5" in message, message


def test_config_key_of_another_architecture_is_named() -> None:
    """model.lenet5.hidden (the MLP's key in LeNet-5's section) is named."""
    doc = params_doc()
    doc["model"]["lenet5"]["hidden"] = [64]
    message = params_error(doc)
    assert "model.lenet5.hidden" in message and "channels, fc" in message, message


def test_config_unknown_architecture_lists_the_known_ones() -> None:
    """model.arch: vgg names the key, the value and mlp, lenet5, resnet, lstm."""
    message = params_error(params_doc(arch="vgg"))
    assert "model.arch" in message and "vgg" in message and "mlp, lenet5, resnet, lstm" in message
