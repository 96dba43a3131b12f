"""The criteria on any graph net (:mod:`prunelab.models.archs`): what each ranks, read from the
net's graph and what its parts see on calibration inputs -- never from its class.

A weight criterion scores every weight of a part (the output layer is never ranked); a unit
criterion scores every unit of a coupling group (a ResNet stage's channel, an LSTM unit, an MLP
row). ``across`` asks for scores comparable between parts or groups (global scope). The
definitions are the chain criteria's (:mod:`prunelab.pruning.criteria`), on the graph's views:

* ``magnitude`` |w|; ``largest`` its reverse; ``random`` a seeded draw (the control).
* ``wanda`` the within-row rank of |w_ij| * ||x_j|| (x: what the part's weight matrix
  multiplies -- a conv's unfolded patches, an LSTM's inputs and its previous states), ties
  between rows broken by that product (not by position), over the fan-in across parts.
* ``obd`` 1/2 F_ii w_i^2 with the diagonal empirical Fisher F: per-sample gradients of the
  cross-entropy, one sample at a time (any architecture, recurrent ones included).
* ``l2`` a unit's norm over every weight writing into its group (RMS across groups);
  ``largest`` its reverse; ``random``.
* ``activation`` a unit's mean |activation| at every node of its group (over its mean across
  groups).

``obs`` and ``l2_refit`` are refused (:data:`REFUSED`): they re-fit each layer from its inputs
in a chain, layer after layer; a residual add or a recurrence feeds a part from parts that are
pruned after it, which that re-fit does not model. The main study runs them on the MLP and
LeNet-5 (``model.arch``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

from prunelab.models import graph as g
from prunelab.models.archs.base import GraphNet, Probe
from prunelab.pruning.criteria.calibrated import row_ranks
from prunelab.runtime.rng import RANDOM_CRITERION, derived_seed


@dataclass(frozen=True)
class GraphContext:
    """A dense graph net and what a criterion may use besides it: ``calibration`` inputs
    (training split only, flat) and their ``labels``; the run's ``seed``. The net's probe and
    Fisher diagonal are computed once, on first use."""

    net: GraphNet
    calibration: Tensor | None = None
    labels: Tensor | None = None
    seed: int = 0
    _cache: dict[str, object] = field(default_factory=dict, compare=False, repr=False)

    @property
    def graph(self) -> g.Graph:
        if "graph" not in self._cache:
            self._cache["graph"] = self.net.graph()
        return self._cache["graph"]  # type: ignore[return-value]

    def weight(self, part: str) -> Tensor:
        return self.net.state()[part].detach()

    def _needs(self, what: str) -> tuple[Tensor, Tensor]:
        if self.calibration is None or self.labels is None:
            raise ValueError(f"{what} needs calibration inputs; the context has none")
        return self.calibration, self.labels

    def probe(self) -> Probe:
        if "probe" not in self._cache:
            self._cache["probe"] = self.net.probe(self._needs("this criterion")[0])
        return self._cache["probe"]  # type: ignore[return-value]

    def fisher(self) -> dict[str, Tensor]:
        """Diagonal empirical Fisher of every part: mean squared per-sample gradient."""
        if "fisher" not in self._cache:
            x, y = self._needs("obd")
            params = self.net.parameters_by_name()
            total = {k: torch.zeros_like(p) for k, p in params.items()}
            for i in range(len(x)):
                loss = F.cross_entropy(self.net(x[i : i + 1]), y[i : i + 1])
                for k, grad in zip(total, torch.autograd.grad(loss, list(params.values())),
                                   strict=True):
                    total[k].add_(grad.square())
            self._cache["fisher"] = {k: v / len(x) for k, v in total.items()}
        return self._cache["fisher"]  # type: ignore[return-value]

    def random(self, shape: torch.Size, index: int) -> Tensor:
        """A uniform draw for the ``index``-th ranked part or group, from the run's seed."""
        gen = torch.Generator().manual_seed(derived_seed(self.seed, RANDOM_CRITERION, index))
        return torch.rand(shape, generator=gen)


Score = Callable[[GraphContext, str, int, bool], Tensor]  # (context, key, index, across)


@dataclass(frozen=True)
class GraphCriterion:
    name: str
    granularity: str
    score: Score
    needs_calibration: bool = False


def _magnitude(c: GraphContext, part: str, i: int, across: bool) -> Tensor:
    return c.weight(part).abs()


def _wanda(c: GraphContext, part: str, i: int, across: bool) -> Tensor:
    """The within-row rank of |w_ij| * ||x_j||, ties between rows broken by the product itself.

    The chain's wanda breaks those ties by position, harmless at its fan-ins (784, 1000, ...);
    with a fan-in of 1 (an LSTM reading one value per step) every weight has rank 0 and
    position would drop whole leading rows -- all input gates first. Adding the product scaled
    into [0, 1) keeps every row's order and drops the smaller products first.
    """
    w = c.weight(part)
    matrix = w.flatten(1)  # (out, fan_in): a conv's row is one output channel's kernel stack
    product = matrix.abs() * c.probe().column_norms(part)[None, :].to(w.device)
    tie = product / (product.max() * 2).clamp_min(torch.finfo(product.dtype).tiny)  # [0, 0.5]
    score = row_ranks(product) + tie
    return (score / matrix.shape[1] if across else score).view_as(w)


def _obd(c: GraphContext, part: str, i: int, across: bool) -> Tensor:
    return 0.5 * c.fisher()[part] * c.weight(part).square()


def _l2(c: GraphContext, group: str, i: int, across: bool) -> Tensor:
    return g.l2_scores(c.graph, c.net.state(), group, rms=across).detach()


def _activation(c: GraphContext, group: str, i: int, across: bool) -> Tensor:
    score = c.probe().mean_activity(group)
    return score / score.mean().clamp_min(torch.finfo(score.dtype).tiny) if across else score


def _random_weight(c: GraphContext, part: str, i: int, across: bool) -> Tensor:
    return c.random(c.weight(part).shape, i)


def _random_unit(c: GraphContext, group: str, i: int, across: bool) -> Tensor:
    return c.random(torch.Size([c.graph.sizes[group]]), i)


def _negated(score: Score) -> Score:
    return lambda c, key, i, across: -score(c, key, i, across)


CRITERIA: dict[str, dict[str, GraphCriterion]] = {
    "weight": {c.name: c for c in (
        GraphCriterion("magnitude", "weight", _magnitude),
        GraphCriterion("random", "weight", _random_weight),
        GraphCriterion("largest", "weight", _negated(_magnitude)),
        GraphCriterion("wanda", "weight", _wanda, needs_calibration=True),
        GraphCriterion("obd", "weight", _obd, needs_calibration=True),
    )},
    "unit": {c.name: c for c in (
        GraphCriterion("l2", "unit", _l2),
        GraphCriterion("random", "unit", _random_unit),
        GraphCriterion("largest", "unit", _negated(_l2)),
        GraphCriterion("activation", "unit", _activation, needs_calibration=True),
    )},
}

REFUSED: dict[str, str] = {
    "obs": "obs re-fits each layer of a chain from its pruned inputs; on a graph net "
           "(residual adds, recurrence) it is not defined here -- the main study runs it on "
           "model.arch mlp and lenet5",
    "l2_refit": "l2_refit re-fits each layer of a chain from its pruned inputs; on a graph "
                "net (residual adds, recurrence) it is not defined here -- the main study runs "
                "it on model.arch mlp and lenet5",
}


def scores(criterion: GraphCriterion, context: GraphContext, keys: Sequence[str],
           across: bool) -> list[Tensor]:
    """The criterion's scores of each part (weight) or group (unit) in ``keys``, on the CPU."""
    return [criterion.score(context, k, i, across).detach().float().cpu()
            for i, k in enumerate(keys)]
