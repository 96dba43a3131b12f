"""A network as a graph of prunable parts: what each weight reads and writes, and what must go
together (after Torch-Pruning's dependency graph, Fang et al. CVPR 2023, written small for our
layer kinds).

A *part* is one weight tensor (a module parameter, by name). Two of its axes index *units*: the
units it writes (axis 0: rows of a linear layer, output channels of a conv, the four gate rows
of an LSTM unit) and the units it reads (axis 1: columns, input channels, a channel's flatten
block, the recurrent column). An :class:`Axis` names the *group* of units it indexes -- the
coupling group: a unit of a group is removed from every axis that names the group at once
(every writer's rows, every reader's columns). A residual stage's channels are one group
written by every block's last conv and the shortcut projection, and read by the next blocks;
an LSTM's hidden units one group whose unit owns four gate rows (``repeat=4``) of the input and
recurrent matrices, a recurrent column and an output column.

For liveness an axis also names its *node*, one activation tensor: a residual stream after
block j is another node than after block j+1 of the same group, linked by an identity skip.
Groups ``in`` (the input features) and ``out`` (the classes) are never pruned, and neither is
the output part: the study's output layer stays dense.

Everything that used to assume a chain comes from here: unit scores over a whole group,
keep-masks of a unit pruning, structural liveness, compaction into a smaller dense net of the
same architecture, multiply-accumulates. Bias-free throughout: a unit whose incoming weights
are all zero outputs exactly 0 (after ReLU, pooling, an average, a residual add of zeros, or an
LSTM cell whose candidate gate is 0), which is what makes it removable.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor

INPUT, OUTPUT = "in", "out"  # the two groups never pruned


@dataclass(frozen=True)
class Axis:
    """One axis of a part that indexes the units of ``group``.

    ``repeat`` stacked copies of the group's units lie along it (an LSTM's gates: 4); each unit
    spans ``block`` consecutive entries (a channel's H * W columns after a flatten). ``node``
    is the activation it reads or writes, for liveness (default: the group itself).
    """

    group: str
    dim: int
    repeat: int = 1
    block: int = 1
    node: str = ""

    @property
    def at(self) -> str:
        return self.node or self.group

    def entries(self, units: Tensor, size: int) -> Tensor:
        """Indices along the axis of the given units (every repeat, every entry of a block)."""
        r = torch.arange(self.repeat, device=units.device)[:, None, None] * (size * self.block)
        b = torch.arange(self.block, device=units.device)[None, None, :]
        return (r + units[None, :, None] * self.block + b).flatten()

    def by_unit(self, t: Tensor, size: int) -> Tensor:
        """The tensor with this axis split by unit: (size, everything else)."""
        t = t.movedim(self.dim, 0)
        rest = t.shape[1:]
        t = t.reshape(self.repeat, size, self.block, *rest).movedim(1, 0)
        return t.reshape(size, -1)


@dataclass(frozen=True)
class Part:
    """One weight: the units it writes (``out``) and reads (``inp``), and where it is applied
    per sample (``positions``: a conv's output pixels, an LSTM's time steps; 1 for linear).
    ``feeds`` are the repeats of ``out`` through which the units receive a signal (an LSTM
    unit's candidate gate g: its cell stays 0 without it); None: every repeat."""

    name: str
    out: Axis
    inp: Axis
    positions: int = 1
    feeds: tuple[int, ...] | None = None


@dataclass(frozen=True)
class Graph:
    """The parts of a net, its groups' sizes (``in`` and ``out`` included), identity skips
    between nodes of one group (residual adds), and which part is the output layer."""

    parts: tuple[Part, ...]
    sizes: Mapping[str, int]
    output: str
    skips: tuple[tuple[str, str], ...] = ()  # (from node, to node): channel-wise identity

    @property
    def groups(self) -> tuple[str, ...]:
        """The prunable groups (every group but ``in`` and ``out``), in first-written order."""
        seen: list[str] = []
        for p in self.parts:
            if p.out.group not in (INPUT, OUTPUT, *seen):
                seen.append(p.out.group)
        return tuple(seen)

    @property
    def prunable(self) -> tuple[Part, ...]:
        """The parts weight pruning ranks: all but the output layer."""
        return tuple(p for p in self.parts if p.name != self.output)

    def writers(self, group: str) -> tuple[Part, ...]:
        return tuple(p for p in self.parts if p.out.group == group)


State = Mapping[str, Tensor]


def check(graph: Graph, state: State) -> None:
    """Every part's tensor has the axes its declaration says (a wrong declaration fails here,
    naming the part), and every group is written by some part."""
    for p in graph.parts:
        w = state[p.name]
        for a in (p.out, p.inp):
            want = a.repeat * graph.sizes[a.group] * a.block
            if w.shape[a.dim] != want:
                raise ValueError(f"{p.name}: axis {a.dim} has {w.shape[a.dim]} entries, its "
                                 f"declaration ({a.group} x{a.repeat} x{a.block}) says {want}")
    for g in graph.groups:
        if not graph.writers(g):
            raise ValueError(f"group {g} is written by no part")


# --- unit scores and masks -------------------------------------------------------------------


def unit_rows(graph: Graph, state: State, group: str) -> Tensor:
    """Every weight writing into each unit of ``group``, over all its writers: (units, n)."""
    size = graph.sizes[group]
    rows = [p.out.by_unit(state[p.name], size) for p in graph.writers(group)]
    return rows[0] if len(rows) == 1 else torch.cat(rows, dim=1)


def l2_scores(graph: Graph, state: State, group: str, rms: bool = False) -> Tensor:
    """Each unit's L2 norm over its whole coupling group's incoming weights (a chain's: its
    row); divided by sqrt(weights per unit) when ``rms`` (comparable across groups)."""
    rows = unit_rows(graph, state, group)
    norm = torch.linalg.vector_norm(rows, dim=1)
    return norm / math.sqrt(rows.shape[1]) if rms else norm


def unit_keep_masks(graph: Graph, state: State, keep: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Keep-masks of every part for kept units (bool (units,) per group): a dropped unit loses
    every weight writing into it, in every writer of its group; nothing else changes."""
    masks = {}
    for p in graph.parts:
        w = state[p.name]
        m = torch.ones_like(w, dtype=torch.bool)
        if p.out.group in keep:
            dropped = (~keep[p.out.group]).nonzero().flatten()
            m.index_fill_(p.out.dim, p.out.entries(dropped, graph.sizes[p.out.group]), False)
        masks[p.name] = m
    return masks


# --- liveness ----------------------------------------------------------------------------------


def _links(graph: Graph, p: Part, w: Tensor, feeding: bool) -> Tensor:
    """(out units, in units): which units of ``inp`` reach which of ``out`` through a nonzero
    weight (through the ``feeds`` repeats only, when ``feeding``)."""
    no, ni = graph.sizes[p.out.group], graph.sizes[p.inp.group]
    t = (w != 0).movedim((p.out.dim, p.inp.dim), (0, 1))
    t = t.reshape(p.out.repeat, no, p.out.block, p.inp.repeat, ni, p.inp.block, -1)
    if feeding and p.feeds is not None:
        t = t[list(p.feeds)]
    return t.any(dim=6).any(dim=5).any(dim=3).any(dim=2).any(dim=0)


def _nodes(graph: Graph) -> dict[str, int]:
    sizes = {}
    for p in graph.parts:
        for a in (p.out, p.inp):
            sizes[a.at] = graph.sizes[a.group]
    return sizes


def live_masks(graph: Graph, state: State) -> dict[str, Tensor]:
    """Which weights still matter: nonzero, fed from the input, and reaching the output.

    Units are fed when a nonzero weight links them to a fed unit (through an LSTM unit's
    candidate gate: without it its cell stays 0) or an identity skip carries a fed channel;
    they reach the output when a nonzero weight links a fed one of them to a unit that reaches
    it (or a skip carries them there). A weight is live when it is nonzero, reads a fed unit
    and writes a fed unit that reaches the output. Recurrent and residual cycles are followed
    to a fixed point. Structural: a unit always negative before its ReLU still counts as live.
    """
    sizes = _nodes(graph)
    device = next(iter(state.values())).device
    fed = {n: torch.zeros(s, dtype=torch.bool, device=device) for n, s in sizes.items()}
    fed[INPUT] = torch.ones(graph.sizes[INPUT], dtype=torch.bool, device=device)
    feed = {p.name: _links(graph, p, state[p.name], True).float() for p in graph.parts}
    link = {p.name: _links(graph, p, state[p.name], False).float() for p in graph.parts}
    changed = True
    while changed:  # forward to a fixed point
        changed = False
        for p in graph.parts:
            new = fed[p.out.at] | ((feed[p.name] @ fed[p.inp.at].float()) > 0)
            changed |= bool((new != fed[p.out.at]).any())
            fed[p.out.at] = new
        for a, b in graph.skips:
            new = fed[b] | fed[a]
            changed |= bool((new != fed[b]).any())
            fed[b] = new
    reach = {n: torch.zeros(s, dtype=torch.bool, device=device) for n, s in sizes.items()}
    out_node = next(p.out.at for p in graph.parts if p.name == graph.output)
    reach[out_node] = torch.ones(sizes[out_node], dtype=torch.bool, device=device)
    changed = True
    while changed:  # backward, through fed units only
        changed = False
        for p in graph.parts:
            through = (reach[p.out.at] & fed[p.out.at]).float()
            new = reach[p.inp.at] | ((through @ link[p.name]) > 0)
            changed |= bool((new != reach[p.inp.at]).any())
            reach[p.inp.at] = new
        for a, b in graph.skips:
            new = reach[a] | reach[b]
            changed |= bool((new != reach[a]).any())
            reach[a] = new
    masks = {}
    for p in graph.parts:
        w = state[p.name]
        ok_out = fed[p.out.at] & reach[p.out.at]
        m = (w != 0)
        m = m & _expand(p.out, ok_out, w) & _expand(p.inp, fed[p.inp.at], w)
        masks[p.name] = m
    return masks


def _expand(axis: Axis, units: Tensor, w: Tensor) -> Tensor:
    """A per-unit bool (units,) broadcast along ``axis`` of ``w``'s shape."""
    along = units[None, :, None].expand(axis.repeat, -1, axis.block).flatten()
    shape = [1] * w.dim()
    shape[axis.dim] = -1
    return along.view(shape)


# --- compaction and counts --------------------------------------------------------------------


def compact(graph: Graph, state: State,
            keep: Mapping[str, Tensor]) -> tuple[dict[str, Tensor], dict[str, int]]:
    """The weights with the dropped units removed from every axis of their group, and the new
    group sizes: the state of a smaller dense net of the same architecture."""
    sizes = dict(graph.sizes)
    index = {}
    for g, k in keep.items():
        kept = k.nonzero().flatten()
        index[g] = kept
        sizes[g] = len(kept)
    out = {}
    for p in graph.parts:
        w = state[p.name]
        for a in (p.out, p.inp):
            if a.group in index:
                w = w.index_select(a.dim, a.entries(index[a.group].to(w.device),
                                                    graph.sizes[a.group]))
        out[p.name] = w.contiguous()
    return out, sizes


def dead_units(graph: Graph, live: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Per group, the units none of whose incoming weights is live (removable: they output 0)."""
    return {g: torch.stack([p.out.by_unit(live[p.name], graph.sizes[g]).any(dim=1)
                            for p in graph.writers(g)]).any(dim=0).logical_not()
            for g in graph.groups}


def macs(graph: Graph, state: State) -> int:
    """Multiply-accumulates per sample of the weights as they are (nonzeros x positions)."""
    return sum(int(state[p.name].count_nonzero()) * p.positions for p in graph.parts)


def sizes_of(graph: Graph) -> dict[str, int]:
    """The prunable groups' widths."""
    return {g: graph.sizes[g] for g in graph.groups}
