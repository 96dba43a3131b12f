"""The sweep, the one-layer sensitivity and the realised speed-up of a graph-family net (ResNet,
LSTM: :mod:`prunelab.models.archs`), read from its graph and the graph criteria
(:mod:`prunelab.pruning.graph_criteria`) -- what the chain sweep (:mod:`prunelab.pruning.sweep`)
and :mod:`prunelab.pruning.savings` are for a chain of layers.

Weight pruning ranks each part's weights (``layer`` scope) or all parts' together (``global``);
unit pruning ranks each coupling group's units (a residual stage's channels, an LSTM's hidden
units), or all groups' together with each group's best unit protected. The output layer stays
dense. Realised: a unit-pruned net is compacted into a smaller dense net of the same
architecture; a weight-pruned one is stored dense (no sparse kernel for its convs or gates here:
its speed-up is measured, and is about 1).
"""

from __future__ import annotations

import io
import statistics
import time
import zlib
from collections.abc import Callable, Mapping, Sequence

import torch
from torch import Tensor

from prunelab.models import graph as g
from prunelab.models.archs.base import GraphNet, compacted, masked
from prunelab.models.networks import model_accuracy
from prunelab.pruning import graph_criteria as gc
from prunelab.pruning.masks import rank
from prunelab.pruning.sweep import SweepPoint


class Sweep:
    """All keep-masks of one (granularity, criterion, scope) for one net, ranked once."""

    def __init__(self, context: gc.GraphContext, granularity: str, criterion: str,
                 scope: str) -> None:
        net = context.net
        self.graph, self.state, self.granularity = context.graph, net.state(), granularity
        self.keys = ([p.name for p in self.graph.prunable] if granularity == "weight"
                     else list(self.graph.groups))
        scores = gc.scores(gc.CRITERIA[granularity][criterion], context, self.keys,
                           scope == "global")
        self.rankings = ([rank([s]) for s in scores] if scope == "layer"
                         else [rank(scores, protect_best=granularity == "unit")])

    def keep(self, sparsity: float) -> dict[str, Tensor]:
        """Per part (weight) or per group (unit): the keep-masks at ``sparsity``."""
        flat = [m for r in self.rankings for m in r.keep(sparsity)]
        return dict(zip(self.keys, flat, strict=True))

    def masks(self, sparsity: float) -> dict[str, Tensor]:
        """Keep-masks of every part (the output layer's all True)."""
        keep = self.keep(sparsity)
        if self.granularity == "unit":
            return g.unit_keep_masks(self.graph, self.state, keep)
        return {p.name: keep[p.name].to(self.state[p.name].device) if p.name in keep
                else torch.ones_like(self.state[p.name], dtype=torch.bool)
                for p in self.graph.parts}


def point(net: GraphNet, masks: Mapping[str, Tensor], sparsity: float, x: Tensor,
          y: Tensor) -> SweepPoint:
    """Accuracy and what is left of a pruned copy of ``net``."""
    pruned = masked(net, masks)
    state = pruned.state()
    total = sum(w.numel() for w in state.values())
    nonzero = sum(int(w.count_nonzero()) for w in state.values())
    live = sum(int(m.sum()) for m in g.live_masks(pruned.graph(), state).values())
    return SweepPoint(sparsity=sparsity, accuracy=round(model_accuracy(pruned, x, y), 4),
                      nominal_sparsity=round(1 - nonzero / total, 6),
                      effective_sparsity=round(1 - live / total, 6),
                      nonzero_params=nonzero, live_params=live)


def usable(granularity: str, names: Sequence[str]) -> tuple[list[str], dict[str, str]]:
    """The criteria a graph net can be pruned with, and why each other one cannot (refused:
    a re-fit of a chain; unknown to the graph family)."""
    ok = [n for n in names if n in gc.CRITERIA[granularity]]
    why = {n: gc.REFUSED.get(n, f"{n} has no graph-net form") for n in names if n not in ok}
    return ok, why


def graph_context(net: GraphNet, names: Sequence[str], granularity: str,
                  calibration: Callable[[], tuple[Tensor, Tensor]] | None, seed: int
                  ) -> gc.GraphContext:
    """What the criteria may look at: the net, the seed, and the calibration inputs (training
    split only), loaded by ``calibration()`` only when one of them needs them."""
    needs = any(gc.CRITERIA[granularity][n].needs_calibration for n in names)
    x, y = calibration() if needs and calibration is not None else (None, None)
    return gc.GraphContext(net, x, y, seed)


def sweep(context: gc.GraphContext, granularity: str, scope: str, grid: Sequence[float],
          x: Tensor, y: Tensor, criterion: str) -> list[SweepPoint]:
    """Every grid value of one criterion and scope, tested on (x, y)."""
    s = Sweep(context, granularity, criterion, scope)
    return [point(context.net, s.masks(k), k, x, y) for k in grid]


def group_weights(graph: g.Graph, state: Mapping[str, Tensor], group: str) -> int:
    """Weights writing into a group's units (its incoming weights)."""
    return sum(state[p.name].numel() for p in graph.writers(group))


def timed_pair(a: GraphNet, b: GraphNet, x: Tensor, repeats: int) -> tuple[float, float]:
    """Median seconds of a forward pass of ``a`` and of ``b``, timed alternately (drifts of the
    machine stay out of their ratio), after 3 warm-up rounds."""
    times: tuple[list[float], list[float]] = ([], [])
    with torch.no_grad():
        for i in range(repeats + 3):
            for net, out in ((a, times[0]), (b, times[1])):
                start = time.perf_counter()
                net(x)
                if i >= 3:
                    out.append(time.perf_counter() - start)
    return statistics.median(times[0]), statistics.median(times[1])


def stored_bytes(net: GraphNet) -> tuple[int, int]:
    """Size of the serialised weights (torch.save), raw and zlib-compressed."""
    buf = io.BytesIO()
    torch.save({k: w.detach().cpu() for k, w in net.state().items()}, buf)
    raw = buf.getvalue()
    return len(raw), len(zlib.compress(raw, 6))


def measure(net: GraphNet, granularity: str, scope: str, grid: Sequence[float], x: Tensor,
            y: Tensor, repeats: int, batches: Sequence[int], seed: int,
            criterion: str) -> list[dict[str, object]]:
    """The speed stage's rows for a graph net (the columns of
    :func:`prunelab.pruning.savings.measure`): unit-pruned copies compacted, weight-pruned
    ones stored dense; each checked against its masked twin and timed against the dense net
    (the calling thread count)."""
    s = Sweep(gc.GraphContext(net, seed=seed), granularity, criterion, scope)
    rows = []
    for k in grid:
        pruned = masked(net, s.masks(k))
        model = compacted(pruned, s.keep(k)) if granularity == "unit" else pruned
        with torch.no_grad():
            gap = float((model(x[:100]) - pruned(x[:100])).abs().max())
        raw, packed = stored_bytes(model)
        row: dict[str, object] = {
            "method": granularity, "criterion": criterion, "scope": scope, "sparsity": k,
            "accuracy": round(model_accuracy(model, x, y), 4),
            "formats": "compact" if granularity == "unit" else "dense",
            "stored_params": sum(w.numel() for w in model.state().values()),
            "bytes": raw, "bytes_compressed": packed,
            "flops_per_sample": 2 * g.macs(model.graph(), model.state()),
            "max_abs_diff_vs_masked": gap}
        for b in batches:
            inputs = torch.randn(b, net.inp.features, device=x.device)
            seconds, dense_seconds = timed_pair(model, net, inputs, repeats)
            row[f"latency_ms_b{b}"] = round(seconds * 1e3, 4)
            row[f"speedup_b{b}"] = round(dense_seconds / seconds, 3)
        rows.append(row)
    return rows
