"""Per-layer sensitivity: prune one layer at a time, the others dense, and test each copy.

Which layer breaks first, and how far each can go alone, is what a per-layer budget needs
(Distiller's and NNI's sensitivity analysis). Each layer is ranked by the same criterion code as
the sweep (`prunelab.pruning.criteria`, default the study's: |w| for weights, L2 for units) and cut
with the same layer-scope step (`pruning.masks.rank`): floor(k * n) weights, or floor(k * rows)
whole units (rows of a linear layer, output channels of a conv), of that layer alone.

Weight granularity covers every layer, the output layer included (the study keeps it dense,
but how much it tolerates is informative); unit granularity covers hidden layers only
(removing an output unit deletes a class). ``prune.scope`` does not apply: with one layer
pruned, global and layer scope rank the same candidates (global ranks a layer's units by RMS,
its L2 norm over a constant, so the order is the same), and the count is floor(k * n) either way.

A graph-family net (model.arch resnet, lstm) is swept the same way over its graph: weight
granularity one part (weight tensor) at a time, the output layer included; unit granularity one
coupling group at a time (a residual stage's channels across every block and the projection,
an LSTM's hidden units with their four gate rows), each unit's incoming weights in every writer
of the group.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor

from prunelab import paths
from prunelab.config import METHODS, grid_step
from prunelab.models import graph as g
from prunelab.models.archs.base import GraphNet, masked
from prunelab.models.layers import Layer, Net
from prunelab.models.networks import accuracy, dense_accuracy
from prunelab.pruning.compaction import fast_equivalent
from prunelab.pruning.criteria.base import Context, Criterion
from prunelab.pruning.masks import DEFAULT_CRITERIA, apply_masks, check_support, live_masks, rank
from prunelab.pruning.sweep import TOLERANCE_POINTS, grid_key
from prunelab.runtime.declare import Stage, Study

CURVE_COLUMNS = ("method", "layer", "name", "shape", "sparsity", "accuracy",
                 "removed_share_of_all")


@dataclass(frozen=True)
class SensitivityPoint:
    """One copy with layer ``layer`` alone pruned to ``sparsity``: its test accuracy (%) and the
    share of all the net's weights that pruning zeroed (a unit's incoming weights only; what it
    leaves dead downstream is not counted)."""

    method: str  # the granularity: weight or unit
    layer: int  # index in the net, input layer first
    name: str  # conv1, conv2, fc1, ...
    shape: str  # the weight's shape: "1000x784", "6x1x5x5"
    weights: int  # weights in the layer
    sparsity: float
    accuracy: float
    removed_share_of_all: float


def layer_names(net: Sequence[Layer]) -> list[str]:
    """conv1, conv2, ..., fc1, fc2, ...: each kind numbered from 1, input side first."""
    counts = {"conv": 0, "linear": 0}
    names = []
    for layer in net:
        counts[layer.kind] += 1
        names.append(f"{'conv' if layer.kind == 'conv' else 'fc'}{counts[layer.kind]}")
    return names


def sensitive_layers(net: Sequence[Layer], granularity: str) -> range:
    """The layers a granularity prunes alone: every layer for weights, hidden layers for units
    (an output unit is a class)."""
    if granularity not in DEFAULT_CRITERIA:
        raise ValueError(f"unknown granularity {granularity!r}; allowed: weight, unit")
    return range(len(net) if granularity == "weight" else len(net) - 1)


def layer_masks(net: Sequence[Layer], layer: int, granularity: str, grid: Sequence[float],
                criterion: Criterion | None = None,
                context: Context | None = None) -> Iterator[tuple[float, Tensor]]:
    """(k, keep-mask of layer ``layer`` alone) for every k: the layer ranked once by the
    criterion, floor(k * n) of its candidates dropped; the mask is shaped like its weight."""
    criterion = DEFAULT_CRITERIA[granularity] if criterion is None else criterion
    context = Context(tuple(net)) if context is None else context
    ranking = rank([criterion.scores(context, layer, False)])
    for k in grid:
        keep = ranking.keep(k)[0]  # (out, ...) weights or (out,) units
        yield k, net[layer].unit_mask(keep) if granularity == "unit" else keep


def prune_layer(net: Sequence[Layer], layer: int, mask: Tensor) -> Net:
    """A copy of ``net`` with layer ``layer`` masked; the other layers keep their tensors (no
    copies: nothing downstream mutates a weight)."""
    pruned = list(net)
    pruned[layer] = apply_masks([net[layer]], [mask])[0]
    return tuple(pruned)


def dense_activations(net: Sequence[Layer], x: Tensor) -> Iterator[tuple[Tensor, Tensor | None]]:
    """(input, output) of each layer through the dense net, input layer first: (N, 784), then
    (N, C, H, W) after a conv (ReLU, pool) or (N, out) after a linear layer (ReLU); the output
    layer's output is None (its logits are not needed). One layer's pair alive at a time."""
    a = x
    with torch.no_grad():
        for layer in net[:-1]:
            out = layer.activate(layer.pre_activation(a))
            yield a, out
            a = out
    yield a, None


def tested(net: Sequence[Layer], layer: int, granularity: str, mask: Tensor, a_in: Tensor,
           a_out: Tensor | None, y: Tensor) -> float:
    """Accuracy (%) of ``net`` with layer ``layer`` masked, run from that layer's dense input
    ``a_in`` (the layers before it are untouched) as its compacted equivalent (exact up to
    float summation order, as :func:`fast_equivalent`).

    With units pruned, the kept units compute what they computed in the dense net, so the run
    starts after the layer, from its dense output ``a_out`` restricted to the units left.
    """
    suffix = prune_layer(net, layer, mask)[layer:]
    if granularity == "weight" or a_out is None:
        return accuracy(fast_equivalent(suffix), a_in, y)
    live = live_masks(suffix)
    left = suffix[0].matrix(live[0]).any(dim=1).nonzero().flatten()  # the rows compact keeps
    return accuracy(fast_equivalent(suffix, live)[1:], a_out.index_select(1, left), y)


def layer_sweep(net: Sequence[Layer], granularity: str, grid: Sequence[float],
                x: Tensor, y: Tensor, criterion: Criterion | None = None,
                context: Context | None = None) -> list[SensitivityPoint]:
    """Every (layer, k) of one granularity: that layer alone pruned, tested on (x, y).

    ``net`` is never modified: each copy shares the dense tensors of every other layer. The
    dense layers before the pruned one are run once per layer, not per copy (see
    :func:`tested`); a copy that drops nothing is the dense net and gets the dense accuracy.
    Criteria that rewrite the weights they keep (``reconstruct``) are not supported.
    """
    criterion = DEFAULT_CRITERIA[granularity] if criterion is None else criterion
    if criterion.reconstruct is not None:
        raise ValueError(f"{criterion.name} reconstructs the whole net; it has no one-layer form")
    check_support(criterion, net)
    layers, names = sensitive_layers(net, granularity), layer_names(net)
    total = sum(layer.weight.numel() for layer in net)
    measured: list[tuple[int, float, int, float | None]] = []  # (layer, k, removed, accuracy)
    for i, (a_in, a_out) in enumerate(dense_activations(net, x)):
        if i not in layers:
            continue
        for k, mask in layer_masks(net, i, granularity, grid, criterion, context):
            removed = int(mask.numel() - mask.sum())
            acc = tested(net, i, granularity, mask, a_in, a_out, y) if removed else None
            measured.append((i, k, removed, acc))
    dense = accuracy(net[-1:], a_in, y)  # the output layer on its dense input: the dense net
    return [SensitivityPoint(
        method=granularity, layer=i, name=names[i], shape=shape_text(net[i].weight),
        weights=net[i].weight.numel(), sparsity=k,
        accuracy=round(dense if acc is None else acc, 4),
        removed_share_of_all=round(removed / total, 6),
    ) for i, k, removed, acc in measured]


def graph_layer_sweep(net: GraphNet, granularity: str, grid: Sequence[float], x: Tensor,
                      y: Tensor) -> list[SensitivityPoint]:
    """Every (part, k) for weights (the output layer too) or (coupling group, k) for units of a
    graph net: that part or group alone pruned by the study's criterion (|w|; a unit's L2 norm
    over its whole group), tested on (x, y); a copy that drops nothing gets the dense accuracy."""
    graph, state = net.graph(), net.state()
    total = sum(w.numel() for w in state.values())
    dense = dense_accuracy(net, x, y)
    keys = [p.name for p in graph.parts] if granularity == "weight" else list(graph.groups)
    points = []
    for i, key in enumerate(keys):
        if granularity == "weight":
            ranking = rank([state[key].detach().abs().float().cpu()])
            writers = (next(p for p in graph.parts if p.name == key),)
        else:
            ranking = rank([g.l2_scores(graph, state, key).detach().float().cpu()])
            writers = graph.writers(key)
        for k in grid:
            keep = ranking.keep(k)[0]
            masks = (g.unit_keep_masks(graph, state, {key: keep}) if granularity == "unit" else
                     {n: keep.to(w.device) if n == key else torch.ones_like(w, dtype=torch.bool)
                      for n, w in state.items()})
            removed = sum(int((~masks[p.name]).sum()) for p in writers)
            acc = dense_accuracy(masked(net, masks), x, y) if removed else dense
            points.append(SensitivityPoint(
                method=granularity, layer=i, name=key,
                shape="+".join(shape_text(state[p.name]) for p in writers),
                weights=sum(state[p.name].numel() for p in writers), sparsity=k, accuracy=acc,
                removed_share_of_all=round(removed / total, 6)))
    return points


def sweep_layers(net: Net | GraphNet, grid: Sequence[float], x: Tensor,
                 y: Tensor) -> tuple[list[SensitivityPoint], str]:
    """Both granularities' one-layer sweeps of a net of either family, and the name of its
    output layer."""
    if isinstance(net, GraphNet):
        return ([p for m in METHODS for p in graph_layer_sweep(net, m, grid, x, y)],
                net.graph().output)
    return ([p for m in METHODS for p in layer_sweep(net, m, grid, x, y)],
            layer_names(net)[-1])


def shape_text(w: Tensor) -> str:
    """A weight's shape as the CSV writes it: (1000, 784) -> "1000x784"."""
    return "x".join(str(d) for d in w.shape)


def held_sparsity(points: Sequence[SensitivityPoint], dense: float) -> float | None:
    """The highest k up to which every grid value from the smallest stays within 1 point of
    dense (None when the first already does not)."""
    held = None
    for p in sorted(points, key=lambda p: p.sparsity):
        if p.accuracy < dense - TOLERANCE_POINTS:
            break
        held = p.sparsity
    return held


def _first_to_break(held: Mapping[int, float | None], layers: Sequence[int], top: float
                    ) -> tuple[int | None, list[int]]:
    """Among ``layers`` (indices into ``held``): the one with the lowest k held alone (None,
    failing at the first k, is lowest; ties: the earlier layer) and every layer sharing that
    k, in net order -- or (None, []) when none of them breaks (all hold up to ``top``)."""
    if not layers:
        return None, []
    def level(i: int) -> float:
        return -1.0 if held[i] is None else held[i]  # type: ignore[return-value]

    lowest = min(layers, key=lambda i: (level(i), i))
    if held[lowest] is not None and held[lowest] >= top:  # type: ignore[operator]
        return None, []
    return lowest, [i for i in sorted(layers) if level(i) == level(lowest)]


def summary(points: Sequence[SensitivityPoint], dense: float,
            output_layer: str | None = None) -> dict[str, Any]:
    """The metrics file: per granularity, per layer name, how far it holds alone and its
    accuracy at every k; and which layer breaks first.

    ``{"dense_accuracy": 96.84, "weight": {"breaks_first": "fc5", "tied": "fc5",
    "output_layer": "fc5", "breaks_first_hidden": "fc1", "tied_hidden": "fc1", "fc1":
    {"max_sparsity_within_1pt": 0.9, "accuracy": {"0.0": 96.84, ...}}, ...}, "unit": ...}``.

    ``breaks_first`` is the layer with the lowest such k (ties: the earlier layer), or None
    when every layer holds over the whole grid (nothing breaks); ``tied`` names every layer
    sharing that lowest k, comma-joined in net order ("fc1,fc3"; just breaks_first when alone;
    None when nothing breaks). Weight granularity tests the output layer too, which the study
    never prunes: ``breaks_first_hidden`` and ``tied_hidden`` are the same among the hidden
    layers only, and ``output_layer`` names the output layer (``output_layer`` if given, else
    the last layer the weight sweep tested; None when neither is known). For unit granularity
    (hidden layers only) the hidden fields equal the plain ones.
    """
    out: dict[str, Any] = {"dense_accuracy": dense}
    if output_layer is None:
        weights = [p for p in points if p.method == "weight"]
        output_layer = max(weights, key=lambda p: p.layer).name if weights else None
    for method in dict.fromkeys(p.method for p in points):
        by_layer: dict[int, list[SensitivityPoint]] = {}
        for p in points:
            if p.method == method:
                by_layer.setdefault(p.layer, []).append(p)
        held = {i: held_sparsity(ps, dense) for i, ps in by_layer.items()}
        top = max(p.sparsity for ps in by_layer.values() for p in ps)
        names = {i: ps[0].name for i, ps in by_layer.items()}
        first, tied = _first_to_break(held, list(by_layer), top)
        hidden = [i for i in by_layer if names[i] != output_layer]
        first_hidden, tied_hidden = _first_to_break(held, hidden, top)
        section: dict[str, Any] = {
            "breaks_first": None if first is None else names[first],
            "tied": ",".join(names[i] for i in tied) or None,
            "output_layer": output_layer,
            "breaks_first_hidden": None if first_hidden is None else names[first_hidden],
            "tied_hidden": ",".join(names[i] for i in tied_hidden) or None,
        }
        for i, ps in by_layer.items():
            section[ps[0].name] = {
                "max_sparsity_within_1pt": held[i],
                "accuracy": {grid_key(p.sparsity): p.accuracy for p in ps},
            }
        out[method] = section
    return out


def curve_rows(points: Sequence[SensitivityPoint]) -> list[dict[str, Any]]:
    """One CSV row per (granularity, layer, k), columns CURVE_COLUMNS."""
    return [{c: asdict(p)[c] for c in CURVE_COLUMNS} for p in points]


def metric_series(points: Sequence[SensitivityPoint]) -> dict[str, list[tuple[int, float]]]:
    """MLflow histories ``<granularity>.<layer>.accuracy`` over the grid (step = per-mille k)."""
    series: dict[str, list[tuple[int, float]]] = {}
    for p in points:
        series.setdefault(f"{p.method}.{p.name}.accuracy", []).append(
            (grid_step(p.sparsity), p.accuracy))
    return series


def scalar_metrics(section: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """The numbers of a :func:`summary` flattened to ``weight.fc1.max_sparsity_within_1pt``
    (MLflow metrics take numbers only; the per-k accuracies are in :func:`metric_series`)."""
    flat: dict[str, float] = {}
    for key, value in section.items():
        if isinstance(value, Mapping) and key != "accuracy":
            flat.update(scalar_metrics(value, f"{prefix}{key}."))
        elif isinstance(value, int | float) and not isinstance(value, bool):
            flat[f"{prefix}{key}"] = float(value)
    return flat


def headline(metrics: Mapping[str, Any], method: str) -> str:
    """The stage's stderr line for one granularity: which layer breaks first (when that is the
    output layer, which the study keeps dense, also the first among the hidden layers), and
    how far each holds alone."""
    section = metrics[method]
    held = ", ".join(f"{name} {v['max_sparsity_within_1pt']}".replace("None", "none")
                     for name, v in section.items() if isinstance(v, Mapping))
    first = breaks_first(metrics)[method]
    if section.get("breaks_first") and section["breaks_first"] == section.get("output_layer"):
        first += (f", the output layer (kept dense by the study); among hidden layers "
                  f"{section.get('breaks_first_hidden') or 'none'}")
    return (f"sensitivity {method}: breaks first: {first} (alone "
            f"within {TOLERANCE_POINTS:g} point of dense up to k: {held})")


def breaks_first(section: Mapping[str, Any], key: str = "breaks_first") -> dict[str, str]:
    """``{granularity: layer name}`` from a :func:`summary` ("none" when nothing breaks);
    ``key="breaks_first_hidden"``: the first among the hidden layers."""
    return {m: str(s.get(key) or "none") for m, s in section.items()
            if isinstance(s, Mapping)}


STUDY = Study(
    name="sensitivity",
    description="one layer pruned at a time, the others dense: which layer breaks first",
    figure=paths.SENSITIVITY_FIGURE,
    report_section="Which layer breaks first",
    stages=(Stage("sensitivity", "prune one layer at a time (the others dense), first seed's net",
                  "stages/sensitivity.py",
                  params=("data.test_size", "train.device", "prune.sparsities"),
                  reads=(paths.model(paths.FIRST_SEED), paths.DATA_DIR),
                  outs=(paths.SENSITIVITY_CURVE,), details=(paths.SENSITIVITY_METRICS,),
                  figures=(paths.SENSITIVITY_FIGURE,)),),
)
