"""The criteria on graph nets (prunelab.pruning.graph_criteria): on the study's MLP and LeNet-5
they score what the chain criteria score (each checked against hand computations in
test_criteria.py); on the ResNet and the LSTM, what a part's weight multiplies is checked
against an independent computation."""

from __future__ import annotations

import hypothesis.strategies as st
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from test_graph import chain_and_graph

from prunelab.models.archs import build
from prunelab.models.archs.base import Input, Widths, conv, unfolded
from prunelab.pruning import graph_criteria as gc
from prunelab.pruning.criteria.base import Context
from prunelab.pruning.criteria.registry import CRITERIA as CHAIN
from prunelab.pruning.graph_sweep import Sweep
from prunelab.pruning.masks import Pruner

CASES = [(gr, name) for gr, cs in gc.CRITERIA.items() for name in cs]
EXACT = {"magnitude", "random", "largest", "l2"}  # weights only: bit-identical masks


@pytest.mark.parametrize("arch", ["mlp", "cnn"])
@pytest.mark.parametrize("granularity,name", CASES)
@pytest.mark.parametrize("scope", ["layer", "global"])
def test_graph_criteria_score_what_the_chain_criteria_score(arch: str, granularity: str,
                                                             name: str, scope: str) -> None:
    chain, net = chain_and_graph(arch, 2)
    torch.manual_seed(3)
    x, y = torch.randn(96, 784).clamp_min(0), torch.randint(0, 10, (96,))
    context = gc.GraphContext(net, x, y, seed=5)
    graph = context.graph
    keys = [p.name for p in graph.prunable] if granularity == "weight" else list(graph.groups)
    got = gc.scores(gc.CRITERIA[granularity][name], context, keys, scope == "global")
    chain_context = Context(chain, x, y, seed=5)
    criterion = CHAIN[granularity][name]
    for i, score in enumerate(got):
        want = criterion.scores(chain_context, i, scope == "global")
        if name == "wanda":  # the same row ranks; ties between rows by the product, not position
            fan_in = score[0].numel()
            score = ((score * fan_in + 1e-3).floor() / fan_in if scope == "global"
                     else score.floor())
        torch.testing.assert_close(score, want.float(), rtol=1e-4, atol=1e-7)
    if name in EXACT:  # and so the masks of every sparsity
        pruner = Pruner(chain, granularity, scope, criterion, chain_context)
        sweep = Sweep(context, granularity, name, scope)
        for k in (0.3, 0.9):
            assert all(torch.equal(a, b) for a, b in
                       zip(sweep.masks(k).values(), pruner.masks(k), strict=True))


@settings(max_examples=25, deadline=None)
@given(dims=st.sampled_from([1, 2]), c_in=st.integers(1, 3), kernel=st.sampled_from([1, 3, 5]),
       stride=st.integers(1, 2), padding=st.integers(0, 2), seed=st.integers(0, 99))
def test_an_unfolded_input_times_the_weight_matrix_is_the_conv(dims: int, c_in: int, kernel: int,
                                                               stride: int, padding: int,
                                                               seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(2, c_in, *(9,) * dims, generator=gen)
    w = torch.randn(4, c_in, *(kernel,) * dims, generator=gen)
    out = conv(x, w, stride, padding)  # (N, 4, *positions)
    cols = unfolded(x, kernel, stride, padding)  # (N * positions, c_in * kernel**dims)
    got = (cols @ w.flatten(1).T).view(2, -1, 4).transpose(1, 2)
    torch.testing.assert_close(got, out.flatten(2), rtol=1e-5, atol=1e-5)


def test_an_lstm_part_reads_its_inputs_and_the_states_before_them() -> None:
    """Unrolled by hand (PyTorch's gate order i, f, g, o): ih multiplies every step's input,
    hh the hidden state before each step, fc the last one; a unit's activity is its mean |h|."""
    net = build("lstm", Input((1, 40)), Widths(lstm_hidden=6), 0)
    x = torch.randn(5, 40)
    probe = net.probe(x, batch=2)  # batches add up
    w_ih, w_hh = net.state()["ih"].detach(), net.state()["hh"].detach()
    h, c, before, states = torch.zeros(5, 6), torch.zeros(5, 6), [], []
    for t in range(40):
        before.append(h)
        i, f, g, o = (x[:, t : t + 1] @ w_ih.T + h @ w_hh.T).chunk(4, dim=1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        states.append(h)
    prev, hs = torch.cat(before), torch.cat(states)
    torch.testing.assert_close(probe.column_norms("ih"), x.reshape(-1, 1).norm(dim=0))
    torch.testing.assert_close(probe.column_norms("hh"), prev.norm(dim=0), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(probe.column_norms("fc"), h.norm(dim=0), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(probe.mean_activity("h"), hs.abs().mean(dim=0), rtol=1e-4,
                               atol=1e-6)


def test_a_residual_stream_is_active_at_every_block_it_passes() -> None:
    """A stage's group is written at each block's output: its activity averages all of them."""
    widths = Widths(resnet_widths=(4, 8), resnet_blocks=2)
    net = build("resnet", Input((1, 12, 12)), widths, 0)
    x = torch.randn(3, 144)
    probe = net.probe(x)
    positions = {"stem": 144, "s0": 36, "s1": 9}
    for group, per in positions.items():
        blocks = 1 if group == "stem" else 2
        assert probe.counts[group] == 3 * per * blocks
    assert probe.column_sq["stem"].shape == (9,) and probe.column_sq["s1b0c1"].shape == (4 * 9,)
    assert probe.column_sq["s1proj"].shape == (4,) and probe.column_sq["fc"].shape == (8,)


def test_obd_on_a_recurrent_net_is_the_mean_squared_per_sample_gradient() -> None:
    net = build("lstm", Input((1, 40)), Widths(lstm_hidden=4), 1)
    x, y = torch.randn(3, 40), torch.tensor([1, 7, 2])
    fisher = gc.GraphContext(net, x, y).fisher()
    w = net.state()["hh"]
    grads = [torch.autograd.grad(F.cross_entropy(net(x[i : i + 1]), y[i : i + 1]), w)[0]
             for i in range(3)]
    torch.testing.assert_close(fisher["hh"], sum(g.square() for g in grads) / 3)
    assert not torch.equal(fisher["hh"], (sum(grads) / 3).square())  # not the batch gradient's


def test_wanda_with_one_input_per_row_drops_the_smallest_products_not_the_first_rows() -> None:
    """An LSTM reading one value per step: ih is (4 * hidden, 1), every row rank is 0."""
    net = build("lstm", Input((1, 40)), Widths(lstm_hidden=16), 0)
    context = gc.GraphContext(net, torch.randn(64, 40), torch.randint(0, 10, (64,)))
    sweep = Sweep(context, "weight", "wanda", "layer")
    kept = sweep.masks(0.25)["ih"].flatten()
    product = net.state()["ih"].detach().abs().flatten()  # one column: its norm is a constant
    assert int((~kept).sum()) == 16
    assert set((~kept).nonzero().flatten().tolist()) == set(product.argsort()[:16].tolist())


def test_a_criterion_needing_calibration_says_so_without_it() -> None:
    net = build("mlp", Input((1, 40)), Widths(mlp_hidden=(8,)), 0)
    with pytest.raises(ValueError, match="needs calibration inputs"):
        gc.scores(gc.CRITERIA["weight"]["wanda"], gc.GraphContext(net), ["fc0"], False)
