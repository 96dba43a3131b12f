"""Pruning at initialisation: a keep-mask from the untrained net, each method a named score.

Every method returns one importance tensor per layer (the weight's shape; higher = keep) and
says how its scores are compared: ``global`` methods rank the hidden layers' weights together
(as their papers do; the per-layer densities are then the method's choice), ``layer`` ones
rank within each layer at the IMP study's per-layer counts. The output layer is always ranked
on its own at the IMP study's output count (its half rate), so every mask keeps exactly the
weights an IMP round of the same index keeps (:func:`imp_counts`).

* ``random``: uniform scores, per layer (the baseline every paper compares with).
* ``magnitude``: |w0|, global (the untrained net's magnitudes).
* ``snip`` (Lee et al. 2019): |g * w| with g the loss gradient on a few training mini-batches.
* ``grasp`` (Wang et al. 2020): the paper's score -w * Hg (H the Hessian, g the gradient, on a
  few training mini-batches, logits at temperature 200 as in its code) removes the *highest*
  scores; the importance here is its negation, w * Hg (higher = keep).
* ``synflow`` (Tanaka et al. 2020): data-free; on the net with |w| and an all-ones input,
  R = sum of the outputs, score w * dR/dw (float32 flows, float64 if they overflow); 100
  rounds, each pruning to the next density of an exponential schedule (d^(j/100)), so no layer
  is emptied before the others.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.nn import functional as F

from prunelab.models.layers import Layer, Net, forward, with_weights
from prunelab.pruning.masks import n_pruned

Batches = Sequence[tuple[Tensor, Tensor]]  # training mini-batches (images, labels)
GRASP_TEMPERATURE = 200.0
SYNFLOW_ROUNDS = 100


def imp_counts(net: Sequence[Layer], rounds: int, rate: float, output_rate: float) -> list[int]:
    """Weights an IMP round ``rounds`` keeps per layer: each round prunes ``rate`` of every
    hidden layer's remaining weights (``output_rate`` of the output layer's), rounded as the
    IMP study rounds (:func:`prunelab.pruning.masks.n_pruned`)."""
    counts = []
    for i, layer in enumerate(net):
        kept, share = layer.weight.numel(), output_rate if i == len(net) - 1 else rate
        for _ in range(rounds):
            kept -= n_pruned(share, kept)
        counts.append(kept)
    return counts


SAMPLE = 16_384  # values a bracketed selection samples (:func:`kth_largest`)


def kth_largest(flat: Tensor, k: int) -> Tensor:
    """The ``k``-th largest value of the 1-D ``flat`` (1 <= k <= n), exactly.

    A full selection (``kthvalue``) costs ~30 ms on a 2.4M-weight net, and SynFlow selects 100
    times, a supermask every step. So on large tensors a strided sample first brackets the
    value: ``hi`` and ``lo`` are sample values a few binomial standard deviations above and below
    the target rank; one pass counts the values above ``hi``, and the selection runs on the
    values in ``(lo, hi]`` only. When the bracket misses (a sample unlike the whole), the full
    selection answers: the result never depends on the sample, only the time does."""
    n = flat.numel()
    if n <= 4 * SAMPLE:
        return flat.kthvalue(n - k + 1).values
    sample = flat[:: n // SAMPLE]
    m = sample.numel()
    rank = k * m / n  # the target's expected rank from the top of the sample
    margin = 4 * math.sqrt(rank * (1 - k / n)) + 4
    high, low = math.floor(rank - margin), math.ceil(rank + margin)
    above = flat > sample.kthvalue(m - high + 1).values if high >= 1 else None
    n_above = int(above.count_nonzero()) if above is not None else 0
    if n_above < k:
        band = flat > sample.kthvalue(m - low + 1).values if low <= m else flat > -torch.inf
        if above is not None:
            band &= ~above
        values = flat[band]
        if n_above + values.numel() >= k:
            return values.kthvalue(values.numel() - (k - n_above) + 1).values
    return flat.kthvalue(n - k + 1).values


def top(scores: Tensor, keep: int) -> Tensor:
    """A boolean mask of the ``keep`` highest entries (ties at the threshold: the earlier
    index). Entries scored -inf (pruned) are chosen only when ``keep`` is every entry: fewer
    than ``keep`` others, all of those. Found by selection (:func:`kth_largest`), not by sorting."""
    flat = scores.flatten()
    if keep <= 0:
        return torch.zeros_like(flat, dtype=torch.bool).view(scores.shape)
    if keep >= flat.numel():
        return torch.ones_like(flat, dtype=torch.bool).view(scores.shape)
    threshold = kth_largest(flat, keep)
    if threshold == -torch.inf:  # fewer than keep alive: all of them
        return (flat > -torch.inf).view(scores.shape)
    chosen = flat >= threshold
    if int(chosen.count_nonzero()) == keep:  # no tie at the threshold (the usual case)
        return chosen.view(scores.shape)
    chosen = flat > threshold
    ties = (flat == threshold).nonzero().flatten()[: keep - int(chosen.count_nonzero())]
    chosen[ties] = True
    return chosen.view(scores.shape)


def select(scores: Sequence[Tensor], counts: Sequence[int], scope: str) -> list[Tensor]:
    """Keep-masks of exactly ``counts`` weights per layer (``layer`` scope), or of their hidden
    total ranked together and the output layer's count (``global``)."""
    if scope == "layer":
        return [top(s, k) for s, k in zip(scores, counts, strict=True)]
    hidden = torch.cat([s.flatten() for s in scores[:-1]])
    kept = top(hidden, sum(counts[:-1]))
    masks, start = [], 0
    for s in scores[:-1]:
        masks.append(kept[start : start + s.numel()].view(s.shape))
        start += s.numel()
    return [*masks, top(scores[-1], counts[-1])]


def _leaves(net: Sequence[Layer], dtype: torch.dtype | None = None) -> list[Tensor]:
    return [layer.weight.detach().to(dtype or layer.weight.dtype).clone().requires_grad_(True)
            for layer in net]


def _loss(net: Sequence[Layer], weights: Sequence[Tensor], x: Tensor, y: Tensor,
          temperature: float = 1.0) -> Tensor:
    return F.cross_entropy(forward(with_weights(net, weights), x) / temperature, y)


def random_scores(net: Net, batches: Batches, seed: int) -> list[Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.rand(layer.weight.shape, generator=generator).to(layer.weight.device)
            for layer in net]


def magnitude_scores(net: Net, batches: Batches, seed: int) -> list[Tensor]:
    return [layer.weight.detach().abs() for layer in net]


def snip_scores(net: Net, batches: Batches, seed: int) -> list[Tensor]:
    """|g * w|, g summed over the mini-batches."""
    weights = _leaves(net)
    for x, y in batches:
        _loss(net, weights, x, y).backward()
    return [(w.grad * w).detach().abs() for w in weights]  # type: ignore[operator]


def grasp_scores(net: Net, batches: Batches, seed: int) -> list[Tensor]:
    """w * Hg: g the gradient over the mini-batches (held fixed), Hg the gradient of g . grad
    (a Hessian-gradient product by double backward)."""
    weights = _leaves(net)
    g = [torch.zeros_like(w) for w in weights]
    for x, y in batches:
        grads = torch.autograd.grad(_loss(net, weights, x, y, GRASP_TEMPERATURE), weights)
        g = [a + b.detach() for a, b in zip(g, grads, strict=True)]
    for x, y in batches:
        grads = torch.autograd.grad(_loss(net, weights, x, y, GRASP_TEMPERATURE), weights,
                                    create_graph=True)
        torch.stack([(a * b).sum() for a, b in zip(grads, g, strict=True)]).sum().backward()
    return [(w * w.grad).detach() for w in weights]  # type: ignore[operator]


def synflow_scores(net: Net, batches: Batches, seed: int) -> list[Tensor]:
    """w * dR/dw on the |w| net, R the sum of the outputs for an all-ones input (every factor
    is non-negative, so the score is its own absolute value). Uses no data: ``batches`` is
    ignored. The flows run in the weights' float32 (half the memory traffic of the paper's
    float64, and the ranking is float32 anyway); if R overflows (a net deep enough to grow past
    float32's range) they are recomputed in float64."""
    for dtype in (net[0].weight.dtype, torch.float64):
        weights = [layer.weight.detach().abs().to(dtype).requires_grad_(True) for layer in net]
        ones = torch.ones(1, net[0].in_features, dtype=dtype, device=net[0].weight.device)
        flow = forward(with_weights(net, weights), ones).sum()
        if torch.isfinite(flow) or dtype == torch.float64:
            flow.backward()
            return [(w * w.grad).detach() for w in weights]  # type: ignore[operator]
    raise AssertionError("unreachable")


@dataclass(frozen=True)
class Method:
    """A way to score the untrained net: its name (params.yaml), how its scores are ranked,
    how many prune-and-rescore rounds reach the target (1: one shot) and whether it reads
    training data."""

    name: str
    scope: str  # "global" (hidden layers together) or "layer"
    score: Callable[[Net, Batches, int], list[Tensor]]
    uses_data: bool = False
    rounds: int = 1


METHODS: dict[str, Method] = {m.name: m for m in (
    Method("random", "layer", random_scores),
    Method("magnitude", "global", magnitude_scores),
    Method("snip", "global", snip_scores, uses_data=True),
    Method("grasp", "global", grasp_scores, uses_data=True),
    Method("synflow", "global", synflow_scores, rounds=SYNFLOW_ROUNDS),
)}


def schedule(sizes: Sequence[int], counts: Sequence[int], j: int, rounds: int) -> list[int]:
    """Per-layer counts after round ``j`` of ``rounds``: each layer's density d^(j/rounds) of its
    final density d (exponential, SynFlow's schedule); the last round is exact."""
    if j == rounds:
        return list(counts)
    return [round(n * (c / n) ** (j / rounds)) for n, c in zip(sizes, counts, strict=True)]


def method_masks(method: Method, net: Net, counts: Sequence[int], batches: Batches, seed: int,
                 inverted: bool = False) -> list[Tensor]:
    """The method's keep-masks of exactly ``counts`` weights per layer (``global``: the hidden
    layers' total, spread as the scores rank). Each round scores the net as masked so far and
    keeps the next schedule's counts among the surviving weights; ``inverted`` keeps the lowest
    scores instead (the sanity check's inverted control)."""
    masks = [torch.ones_like(layer.weight, dtype=torch.bool) for layer in net]
    sizes = [layer.weight.numel() for layer in net]
    for j in range(1, method.rounds + 1):
        masked = with_weights(net, [layer.weight * m for layer, m in zip(net, masks, strict=True)])
        scores = [(-s if inverted else s).float() for s in method.score(masked, batches, seed)]
        scores = [s.masked_fill_(~m, -torch.inf) for s, m in zip(scores, masks, strict=True)]
        masks = select(scores, schedule(sizes, counts, j, method.rounds), method.scope)
    return masks
