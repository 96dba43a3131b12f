"""The graph of prunable parts: coupling groups, liveness, compaction, MACs -- for every
architecture, property-tested on random nets; and the MLP's and LeNet-5's numbers through the
graph bit-identical to the chain code's (the study's outputs)."""

from __future__ import annotations

import hypothesis.strategies as st
import pytest
import torch
from hypothesis import given, settings

from prunelab.models import graph as g
from prunelab.models.archs import ARCHS, build
from prunelab.models.archs.base import Input, Widths, compacted, masked
from prunelab.models.layers import forward as chain_forward
from prunelab.models.networks import init_weight, lenet5_geometry, mlp_geometry
from prunelab.pruning.graph_criteria import GraphContext
from prunelab.pruning.graph_sweep import Sweep
from prunelab.pruning.masks import Pruner, live_masks, unit_scores

INPUTS = {"image": Input((1, 28, 28)), "signal": Input((1, 40))}
SMALL = Widths(mlp_hidden=(24, 12), cnn_channels=(4, 6), cnn_fc=(10, 8),
               resnet_widths=(4, 6, 8), resnet_blocks=2, lstm_hidden=6)


def small_net(arch: str, inp: str, seed: int):
    net = build(arch, INPUTS[inp], SMALL, seed)
    with torch.no_grad():  # weights of one scale, so no unit is numerically negligible
        for p in net.state().values():
            p.normal_(0, 0.5)
    return net


def random_keep(graph: g.Graph, seed: int, share: float) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    keep = {}
    for name in graph.groups:
        k = torch.rand(graph.sizes[name], generator=gen) >= share
        k[torch.randint(graph.sizes[name], (1,), generator=gen)] = True  # one unit stays
        keep[name] = k
    return keep


@settings(max_examples=12, deadline=None)
@given(arch=st.sampled_from(sorted(ARCHS)), inp=st.sampled_from(sorted(INPUTS)),
       seed=st.integers(0, 2**16), share=st.floats(0.0, 0.9))
def test_removing_coupling_groups_equals_the_masked_net(arch: str, inp: str, seed: int,
                                                        share: float) -> None:
    net = small_net(arch, inp, seed)
    graph = net.graph()
    g.check(graph, net.state())
    keep = random_keep(graph, seed, share)
    pruned = masked(net, g.unit_keep_masks(graph, net.state(), keep))
    small = compacted(pruned, keep)
    g.check(small.graph(), small.state())
    assert {k: small.sizes[k] for k in keep} == {k: int(v.sum()) for k, v in keep.items()}
    x = torch.randn(5, INPUTS[inp].features, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        torch.testing.assert_close(small(x), pruned(x), rtol=1e-4, atol=1e-5)
    # the removed units' weights were all dead: the compacted net keeps every live weight
    live = sum(int(m.sum()) for m in g.live_masks(graph, pruned.state()).values())
    assert live <= sum(int((w != 0).sum()) for w in small.state().values())


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_a_dropped_unit_leaves_every_weight_reading_it_dead(arch: str) -> None:
    net = small_net(arch, "signal", 1)
    graph = net.graph()
    group = graph.groups[0]
    keep = {group: torch.ones(graph.sizes[group], dtype=torch.bool)}
    keep[group][0] = False
    pruned = masked(net, g.unit_keep_masks(graph, net.state(), keep))
    live = g.live_masks(graph, pruned.state())
    for p in graph.parts:
        if p.inp.group == group:  # every slice reading unit 0 of the group is dead
            reads = p.inp.by_unit(live[p.name], graph.sizes[group])
            assert not reads[0].any(), p.name
        if p.out.group == group:
            assert not p.out.by_unit(live[p.name], graph.sizes[group])[0].any(), p.name
    dead = g.dead_units(graph, live)
    assert dead[group][0] and not dead[group][1:].any()


def test_an_lstm_unit_without_its_candidate_gate_is_dead_and_removable() -> None:
    net = small_net("lstm", "image", 2)
    graph, state = net.graph(), net.state()
    h = graph.sizes["h"]
    masks = {k: torch.ones_like(w, dtype=torch.bool) for k, w in state.items()}
    for name in ("ih", "hh"):  # only gate g's row of unit 3 (rows 2h+3)
        masks[name][2 * h + 3] = False
    pruned = masked(net, masks)
    live = g.live_masks(graph, pruned.state())
    for name in ("ih", "hh"):
        rows = graph.parts[0].out.by_unit(live[name], h)
        assert not rows[3].any() and rows[4].any()  # its i, f, o rows are dead too
    assert not live["hh"][:, 3].any() and not live["fc"][:, 3].any()
    keep = {"h": torch.arange(h) != 3}
    small = compacted(pruned, keep)
    x = torch.randn(4, 784)
    with torch.no_grad():
        torch.testing.assert_close(small(x), pruned(x), rtol=1e-4, atol=1e-5)


def test_a_residual_channel_is_one_group_across_blocks_and_the_projection() -> None:
    net = small_net("resnet", "image", 3)
    graph = net.graph()
    writers = {p.name for p in graph.writers("s1")}
    assert writers == {"s1b0c2", "s1proj", "s1b1c2"}
    readers = {p.name for p in graph.parts if p.inp.group == "s1"}
    assert readers == {"s1b1c1", "s2b0c1", "s2proj"}
    assert ("s1.0", "s1.1") in graph.skips


def test_macs_count_nonzeros_times_positions() -> None:
    net = small_net("cnn", "image", 4)
    graph, state = net.graph(), net.state()
    # conv0 at 28x28 (pad 2), conv1 at 10x10 (14 - 4), then linear layers once
    expected = state["conv0"].numel() * 784 + state["conv1"].numel() * 100 + sum(
        state[k].numel() for k in state if k.startswith("fc"))
    assert g.macs(graph, state) == expected


def test_a_wrong_declaration_fails_naming_the_part() -> None:
    net = small_net("mlp", "image", 0)
    graph = net.graph()
    bad = g.Graph(graph.parts, {**graph.sizes, "h0": 7}, graph.output)
    with pytest.raises(ValueError, match="fc0: axis 0 has 24 entries"):
        g.check(bad, net.state())


# --- the study's MLP and LeNet-5 through the graph: bit-identical to the chain code ----------


def chain_and_graph(arch: str, seed: int):
    torch.manual_seed(seed)
    if arch == "mlp":
        geometry, widths = mlp_geometry((40, 30, 20)), Widths(mlp_hidden=(40, 30, 20))
    else:
        geometry, widths = lenet5_geometry((6, 16), (120, 84)), Widths()
    chain = tuple(layer.with_weight(init_weight(layer, shape)) for layer, shape in geometry)
    net = build(arch, Input((1, 28, 28)), widths, seed)
    names = list(net.state())
    net = net.with_state({n: layer.weight for n, layer in zip(names, chain, strict=True)})
    return chain, net


@pytest.mark.parametrize("arch", ["mlp", "cnn"])
def test_the_chain_nets_compute_bit_identically_through_the_graph(arch: str) -> None:
    chain, net = chain_and_graph(arch, 0)
    x = torch.randn(32, 784)
    with torch.no_grad():
        assert torch.equal(net(x), chain_forward(chain, x))
    graph = net.graph()
    for layer, group in zip(chain, graph.groups[: len(chain) - 1], strict=False):
        assert torch.equal(g.l2_scores(graph, net.state(), group), unit_scores(layer.weight))


@pytest.mark.parametrize("arch", ["mlp", "cnn"])
@pytest.mark.parametrize("granularity,criterion", [("weight", "magnitude"), ("unit", "l2")])
@pytest.mark.parametrize("scope", ["layer", "global"])
def test_graph_masks_and_liveness_equal_the_chain_codes(arch: str, granularity: str,
                                                        criterion: str, scope: str) -> None:
    chain, net = chain_and_graph(arch, 1)
    pruner = Pruner(chain, granularity, scope)
    sweep = Sweep(GraphContext(net, seed=0), granularity, criterion, scope)
    for k in (0.25, 0.7, 0.95):
        want = pruner.masks(k)
        got = list(sweep.masks(k).values())
        assert all(torch.equal(a, b) for a, b in zip(got, want, strict=True))
        pruned_chain = tuple(layer.with_weight(layer.weight * m) for layer, m in zip(chain, want))
        pruned = masked(net, sweep.masks(k))
        live_chain = live_masks(pruned_chain)
        live = list(g.live_masks(pruned.graph(), pruned.state()).values())
        assert all(torch.equal(a, b) for a, b in zip(live, live_chain, strict=True))
