"""Criteria that look at the weights alone: the study's two, and their controls.

`magnitude` (|w|) and `l2` (row norms) are the notebook's criteria. `largest` drops the most
important first (the study's own question), `random` is the seeded control Blalock et al. ask
every pruning study to report.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from prunelab.pruning.criteria.base import Context, Criterion


def weight_magnitude(context: Context, layer: int) -> Tensor:
    """|w| per weight: (out, in) -> (out, in)."""
    return context.weights[layer].abs()


def unit_l2(context: Context, layer: int) -> Tensor:
    """L2 norm of each unit's incoming weights: (out, ...) -> (out,)."""
    return torch.linalg.vector_norm(context.weights[layer].flatten(1), dim=1)


def unit_rms(context: Context, layer: int) -> Tensor:
    """Row norm / sqrt(fan-in): comparable across layers whose fan-in differs (784 vs 200)."""
    w = context.weights[layer].flatten(1)
    return unit_l2(context, layer) / math.sqrt(w.shape[1])


def negated(score: Callable[[Context, int], Tensor]) -> Callable[[Context, int], Tensor]:
    """The reverse ranking: the most important candidates are dropped first."""
    return lambda context, layer: -score(context, layer)


def weight_random(context: Context, layer: int) -> Tensor:
    """A uniform draw per weight from the run's seed: (out, in)."""
    w = context.weights[layer]
    return torch.rand(w.shape, generator=context.generator(layer)).to(w.device)


def unit_random(context: Context, layer: int) -> Tensor:
    """A uniform draw per unit from the run's seed: (out,)."""
    w = context.weights[layer]
    return torch.rand(w.shape[0], generator=context.generator(layer)).to(w.device)


MAGNITUDE = Criterion("magnitude", "weight", weight_magnitude,
                      summary="smallest |w| first (the study's weight pruning)")
L2 = Criterion("l2", "unit", unit_l2, global_score=unit_rms,
               summary="smallest L2 row norm first (the study's unit pruning)")
LARGEST_WEIGHT = Criterion("largest", "weight", negated(weight_magnitude),
                           summary="largest |w| first (control: the study's question)")
LARGEST_UNIT = Criterion("largest", "unit", negated(unit_l2), global_score=negated(unit_rms),
                         summary="largest L2 row norm first (control)")
RANDOM_WEIGHT = Criterion("random", "weight", weight_random,
                          summary="uniformly at random, seeded (control)")
RANDOM_UNIT = Criterion("random", "unit", unit_random,
                        summary="uniformly at random, seeded (control)")
