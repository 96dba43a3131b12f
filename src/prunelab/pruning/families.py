"""The one-shot sweep and the speed measurement of a trained net of either family: a chain of
layers (``model.arch`` mlp, lenet5: every criterion, :mod:`prunelab.pruning.sweep`) or a
graph-family net (resnet, lstm: the graph criteria, :mod:`prunelab.pruning.graph_sweep`). The
stages call these and never ask which family a net is."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path

import torch
from torch import Tensor

from prunelab.config import METHODS, SCOPES, STUDY_CRITERIA, Params
from prunelab.errors import PrunelabError
from prunelab.models.archs.base import GraphNet
from prunelab.models.layers import Net
from prunelab.models.networks import dense_accuracy
from prunelab.pruning import graph_sweep, savings
from prunelab.pruning import sweep as chain
from prunelab.pruning.criteria.registry import criterion
from prunelab.pruning.masks import DEFAULT_CRITERIA, check_support

Curves = dict[str, list[chain.SweepPoint]]


def prune_curves(net: Net | GraphNet, method: str, cfg: Params, x: Tensor, y: Tensor,
                 data_dir: Path, device: torch.device,
                 note: Callable[[str], None] = lambda line: None) -> tuple[Curves, float]:
    """Every listed criterion of one granularity (``prune.<method>_criteria``) over the grid in
    ``prune.scope``, tested on (x, y); and the dense accuracy. On a graph net a criterion that
    has no graph form (obs, l2_refit: a chain's re-fit) is left out with one ``note`` line
    saying why; none left is an error."""
    if not isinstance(net, GraphNet):
        chosen = chain.checked_criteria(method, cfg.prune.criteria(method), net, cfg.model.arch)
        context = chain.criteria_context(net, chosen, cfg, data_dir, device)
        dense = chain.DenseCopies(net, x, y)  # every criterion's k = 0 copy: tested once
        curves = {c.name: chain.sweep(net, method, cfg.prune.scope, cfg.prune.sparsities, x, y,
                                      c, context, dense) for c in chosen}
        return curves, chain.dense_accuracy(net, next(iter(curves.values())), x, y)
    names, why = graph_sweep.usable(method, cfg.prune.criteria(method))
    for name, reason in why.items():
        note(f"{name} not run on model.arch = {cfg.model.arch}: {reason}")
    if not names:
        raise PrunelabError(f"params.yaml: prune.{method}_criteria has no criterion that applies "
                            f"to model.arch = {cfg.model.arch}; allowed: "
                            + ", ".join(graph_sweep.gc.CRITERIA[method]))
    context = graph_sweep.graph_context(net, names, method,
                                        partial(chain.calibration, cfg, data_dir, device),
                                        cfg.train.seed)
    curves = {n: graph_sweep.sweep(context, method, cfg.prune.scope, cfg.prune.sparsities, x, y,
                                   n) for n in names}
    return curves, chain.dense_accuracy(net, next(iter(curves.values())), x, y)  # type: ignore[arg-type]


def timed_sets(cfg: Params) -> list[tuple[str, str, str]]:
    """(granularity, criterion, scope) the speed stage realises and times: the study's
    criteria in both scopes (a mask's speed depends on its pattern, not on how it was ranked),
    and every listed criterion that rewrites the weights it keeps, in layer scope (chain nets:
    a graph net has none)."""
    sets = [(m, STUDY_CRITERIA[m], s) for m in METHODS for s in SCOPES]
    if cfg.model.graph:
        return sets
    return sets + [(m, n, "layer") for m in METHODS for n in cfg.prune.criteria(m)
                   if criterion(m, n).reconstruct is not None]  # type: ignore[arg-type]


def speed_rows(net: Net | GraphNet, cfg: Params, x: Tensor, y: Tensor, data_dir: Path,
               device: torch.device) -> tuple[list[dict[str, object]], float]:
    """Every timed set realised at every k and timed against the dense net (one thread), each
    checked against its pruned twin; and the dense accuracy."""
    sets, grid = timed_sets(cfg), cfg.prune.sparsities
    if isinstance(net, GraphNet):  # one thread count throughout: switching it between the
        with savings.threads(savings.THREADS):  # convolutions slowed later ones (libgomp)
            rows = [row for m, n, s in sets for row in graph_sweep.measure(
                net, m, s, grid, x, y, savings.REPEATS, savings.LATENCY_BATCHES,
                cfg.train.seed, n)]
    else:
        chosen = [(m, DEFAULT_CRITERIA[m] if n == STUDY_CRITERIA[m] else criterion(m, n), s)  # type: ignore[arg-type]
                  for m, n, s in sets]
        for _, c, _ in chosen:  # before any work: one line naming the criterion and the arch
            check_support(c, net, cfg.model.arch)
        context = chain.criteria_context(net, [c for _, c, _ in chosen], cfg, data_dir, device)
        copies = chain.DenseCopies(net, x, y)  # every set's k = 0 copy: tested once
        rows = [row for m, c, s in chosen for row in savings.measure(
            net, m, s, grid, x, y, savings.REPEATS, savings.THREADS, c, context, copies)]
    savings.check_equivalence(rows)
    return rows, dense_accuracy(net, x, y)

