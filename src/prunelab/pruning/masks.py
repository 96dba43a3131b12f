"""Pruning masks as pure functions: importance -> ranking -> keep-mask.

A *criterion* (`prunelab.pruning.criteria`) scores the things that can be pruned: single weights
(granularity ``weight``; the study's |w|) or whole output neurons (``unit``; the study's L2 norm
of each row). A *scope* decides where the ranking runs:
``layer`` prunes floor(k * n) from each layer separately (the study); ``global`` ranks all
pruned layers together and drops floor(k * N) of the N candidates. The output layer is never
pruned. Masks are boolean keep-masks shaped like the weights; nothing here mutates a weight.

Global unit ranking compares rows of different fan-in (784, 1000, 1000, 500), whose L2 norms
grow like sqrt(fan-in) for weights of similar size. Rows are therefore ranked by their RMS,
||row||_2 / sqrt(fan_in), and each layer's highest-RMS unit is protected so that no layer can
lose all its units (which would cut the network in two).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

import torch
from torch import Tensor

from prunelab.config import STUDY_CRITERIA as STUDY_NAMES
from prunelab.errors import PrunelabError
from prunelab.models.layers import Layer, Net, with_weights
from prunelab.pruning.criteria.base import Context, Criterion
from prunelab.pruning.criteria.magnitude import L2, MAGNITUDE

# The study's criteria (config.STUDY_CRITERIA), used when a caller names none.
DEFAULT_CRITERIA: dict[str, Criterion] = {
    m: {c.name: c for c in (MAGNITUDE, L2)}[name] for m, name in STUDY_NAMES.items()}


def weight_scores(w: Tensor) -> Tensor:
    """|w| per weight: (out, in) -> (out, in)."""
    return w.abs()


def unit_scores(w: Tensor) -> Tensor:
    """L2 norm of each unit's incoming weights (a row, or a conv channel's kernel stack):
    (out, ...) -> (out,)."""
    return torch.linalg.vector_norm(w.flatten(1), dim=1)


def n_pruned(sparsity: float, n: int) -> int:
    """floor(k * n), with k read as the decimal the user wrote (0.29 * 100 -> 29, not 28)."""
    return math.floor(Fraction(repr(float(sparsity))) * n)


def drop_smallest(scores: Tensor, n_drop: int) -> Tensor:
    """Keep-mask shaped like ``scores`` that drops exactly the ``n_drop`` smallest.

    Ties are broken by position (stable sort), so the count is exact and the result is
    deterministic.
    """
    keep = torch.ones(scores.numel(), dtype=torch.bool, device=scores.device)
    keep[scores.flatten().argsort(stable=True)[:n_drop]] = False
    return keep.view(scores.shape)


def weight_mask(w: Tensor, sparsity: float) -> Tensor:
    """The notebook's weight pruning of one layer (a reference for the tests): keep-mask
    dropping the floor(k * numel) weights of smallest |w|, shaped like ``w``."""
    return drop_smallest(weight_scores(w), n_pruned(sparsity, w.numel()))


def unit_mask(w: Tensor, sparsity: float) -> Tensor:
    """The notebook's unit pruning of one layer (a reference for the tests): keep-mask
    dropping the floor(k * units) units of smallest L2 norm, shaped like ``w``."""
    keep_units = drop_smallest(unit_scores(w), n_pruned(sparsity, w.shape[0]))  # (out,)
    return keep_units.view(-1, *[1] * (w.dim() - 1)).expand_as(w)


@dataclass(frozen=True)
class Ranking:
    """One sort of the candidates, reused for every sparsity in a sweep.

    ``order`` lists candidate positions (in the concatenation of the layers' flattened scores)
    from least to most important; ``droppable`` caps how many may go (protected units last).
    """

    order: Tensor
    shapes: tuple[torch.Size, ...]
    droppable: int

    def keep(self, sparsity: float) -> list[Tensor]:
        """Per-layer keep-masks over the scores (weight- or row-shaped) at this sparsity."""
        total = sum(math.prod(s) for s in self.shapes)
        n_drop = min(n_pruned(sparsity, total), self.droppable)
        flat = torch.ones(total, dtype=torch.bool, device=self.order.device)
        flat[self.order[:n_drop]] = False
        sizes = [math.prod(s) for s in self.shapes]
        return [part.view(s) for part, s in zip(flat.split(sizes), self.shapes, strict=True)]


def stable_order(values: Tensor) -> Tensor:
    """``values.argsort(stable=True)`` of a float32 vector, ~10x faster on the CPU: the floats
    as int32 keys with the same order (a negative one's magnitude bits flipped; -0.0 made
    +0.0 first, as the float comparison has them equal), which torch sorts by radix.
    NaN is not ordered like argsort's (the scores never hold one)."""
    bits = (values.float() + 0.0).view(torch.int32)  # + 0.0: -0.0 becomes +0.0
    return (bits ^ ((bits >> 31) & 0x7FFFFFFF)).argsort(stable=True)


def rank(scores: Sequence[Tensor], protect_best: bool = False) -> Ranking:
    """Rank the candidates of one pool (one layer, or all layers for global scope)."""
    flat = [s.flatten().float() for s in scores]
    if protect_best:
        # Each layer's best candidate sorts last and is never dropped.
        flat = [f.clone().index_fill_(0, f.argmax().view(1), math.inf) for f in flat]
    cat = torch.cat(flat)
    return Ranking(
        order=stable_order(cat),
        shapes=tuple(s.shape for s in scores),
        droppable=cat.numel() - (len(flat) if protect_best else 0),
    )


def check_support(criterion: Criterion, net: Sequence[Layer], arch: str | None = None) -> None:
    """Raise naming the criterion (and the architecture, when given) when it cannot rank one
    of the net's layers."""
    for layer in net[:-1]:  # the output layer is never ranked
        if layer.kind not in criterion.layer_kinds:
            which = f", which model.arch = {arch} has" if arch else ""
            raise PrunelabError(
                f"criterion {criterion.granularity}/{criterion.name} does not support "
                f"{layer.kind} layers{which}; it supports: " + ", ".join(criterion.layer_kinds))


class Pruner:
    """All the keep-masks of one criterion and scope for one trained net, ranked once.

    ``granularity`` is what is pruned (weights or units: rows of a linear layer, output
    channels of a conv); ``criterion`` how candidates are ranked (default: the study's, |w| or
    the unit's L2 norm); ``context`` what it may look at (default: the net alone).
    """

    def __init__(self, net: Sequence[Layer], granularity: str, scope: str,
                 criterion: Criterion | None = None, context: Context | None = None) -> None:
        if granularity not in DEFAULT_CRITERIA:
            raise ValueError(f"unknown granularity {granularity!r}; allowed: weight, unit")
        criterion = DEFAULT_CRITERIA[granularity] if criterion is None else criterion
        if criterion.granularity != granularity:
            raise ValueError(f"{criterion.name} is a {criterion.granularity} criterion")
        check_support(criterion, net)
        self.net, self.granularity = tuple(net), granularity
        context = Context(self.net) if context is None else context
        prunable = range(len(self.net) - 1)  # the output layer stays dense
        if scope == "layer":
            self.rankings = [rank([criterion.scores(context, i, False)]) for i in prunable]
        elif scope == "global":
            scores = [criterion.scores(context, i, True) for i in prunable]
            self.rankings = [rank(scores, protect_best=granularity == "unit")]
        else:
            raise ValueError(f"unknown scope {scope!r}; allowed: layer, global")

    def masks(self, sparsity: float) -> list[Tensor]:
        """Keep-masks shaped like every weight; the output layer's is all True."""
        keeps = [m for ranking in self.rankings for m in ranking.keep(sparsity)]
        out = []
        for layer, keep in zip(self.net, keeps, strict=False):
            out.append(layer.unit_mask(keep) if self.granularity == "unit" else keep)
        out.append(torch.ones_like(self.net[-1].weight, dtype=torch.bool))
        return out


def prune_masks(
    net: Sequence[Layer], granularity: str, scope: str, sparsity: float
) -> list[Tensor]:
    """The study's keep-masks for one sparsity (see :class:`Pruner` to sweep many)."""
    return Pruner(net, granularity, scope).masks(sparsity)


def apply_masks(net: Sequence[Layer], masks: Sequence[Tensor]) -> Net:
    """The net with the masked-out weights set to zero (new tensors)."""
    return with_weights(net, [layer.weight * m for layer, m in zip(net, masks, strict=True)])


def live_masks(net: Sequence[Layer]) -> list[Tensor]:
    """Which weights still matter: nonzero, fed from the input, and reaching the output.

    A zeroed unit (all-zero row or kernel stack, no bias) outputs 0 after the ReLU and pool,
    so every weight reading it is dead too -- a column of a linear layer, an input channel of
    a conv, or a whole block of columns after a flatten; a unit none of whose outgoing weights
    is live makes its incoming weights dead. Structural: a unit that happens to be always
    negative before the ReLU still counts as live. Masks are shaped like the weights.
    """
    nonzero = [layer.by_input_unit(layer.weight != 0) for layer in net]  # (out, in_units, per)
    links = [nz.any(dim=2) for nz in nonzero]  # (out, in_units): unit -> unit connections
    fed = torch.ones(net[0].in_units, dtype=torch.bool, device=net[0].weight.device)
    fed_in = []
    for link in links:  # forward: which units receive any signal from the input
        fed_in.append(fed)
        fed = (link.float() @ fed.float()) > 0  # (out, in) @ (in,) -> (out,)
    reaches = torch.ones(net[-1].units, dtype=torch.bool, device=net[-1].weight.device)
    live: list[Tensor] = []
    for layer, nz, link, fed_here in zip(reversed(net), reversed(nonzero), reversed(links),
                                         reversed(fed_in), strict=True):  # backward
        alive = nz & fed_here[None, :, None] & reaches[:, None, None]
        live.append(alive.reshape(layer.weight.shape))
        reaches = (reaches.float() @ link.float()) > 0  # (out,) @ (out, in) -> (in,)
    return live[::-1]
