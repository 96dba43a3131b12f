"""A unit-level subnetwork found from the objective: L0-regularised hard-concrete gates on the
hidden units (Louizos, Welling & Kingma 2018).

Each hidden unit j of layer i has a gate z = min(1, max(0, s (zeta - gamma) + gamma)), s a
hard-concrete sample sigmoid((log u - log(1 - u) + log_alpha) / beta) while training and
sigmoid(log_alpha) at test time; the unit's output (after its ReLU) is multiplied by z. The
loss is the cross-entropy plus lambda times the expected share of hidden weights kept:
sum_j P(z_j != 0) * fan_in_j / (hidden weights), P(z != 0) = sigmoid(log_alpha - beta
log(-gamma / zeta)). After training, a unit whose test-time gate is 0 is removed and the others'
gates are folded into their rows (relu(w x) z = relu(z w x) for z >= 0): the compacted net
computes exactly what the gated net computes.

Weights and gates train together with the study's recipe (Adam at train.lr for the weights; the
gates' log-alphas at GATE_LR, initialised open, as the paper's 0.5-dropout init is for a net
trained from scratch); lambda is swept (during.l0_lambdas), each value one training.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from prunelab.config import TrainConfig
from prunelab.data.split import Split
from prunelab.models.layers import Net, with_weights
from prunelab.models.networks import Network, accuracy
from prunelab.pruning.compaction import compact
from prunelab.pruning.criteria.base import Context
from prunelab.pruning.criteria.reconstruct import L2_REFIT
from prunelab.pruning.masks import apply_masks
from prunelab.pruning.savings import REPEATS, THREADS, Realised, paired_latency, threads

BETA, GAMMA, ZETA = 2 / 3, -0.1, 1.1  # the paper's hard-concrete temperature and stretch
GATE_LR = 0.01  # Adam's step for the gates' log-alphas (the weights use train.lr)
OPEN = 3.0  # initial log-alpha: P(gate != 0) = 0.99, every unit kept at the start


def keep_probability(log_alpha: Tensor) -> Tensor:
    """P(z != 0) of each gate: the expected L0 norm's terms."""
    return torch.sigmoid(log_alpha - BETA * math.log(-GAMMA / ZETA))


def test_gates(log_alpha: Tensor) -> Tensor:
    """The deterministic gates the trained net is tested and compacted with."""
    return (torch.sigmoid(log_alpha) * (ZETA - GAMMA) + GAMMA).clamp(0, 1)


class Gated(nn.Module):
    """The net's layers with a hard-concrete gate on every hidden unit."""

    def __init__(self, net: Net, seed: int) -> None:
        super().__init__()
        self.body = Network(net)
        self.log_alpha = nn.ParameterList(
            nn.Parameter(torch.full((layer.units,), OPEN, device=layer.weight.device))
            for layer in net[:-1])
        self.fan_in = [layer.fan_in for layer in net[:-1]]
        self.generator = torch.Generator().manual_seed(seed)

    def gates(self) -> list[Tensor]:
        if not self.training:
            return [test_gates(a) for a in self.log_alpha]
        out = []
        for a in self.log_alpha:
            u = torch.rand(a.shape, generator=self.generator).clamp(1e-6, 1 - 1e-6).to(a.device)
            s = torch.sigmoid((torch.log(u) - torch.log(1 - u) + a) / BETA)
            out.append((s * (ZETA - GAMMA) + GAMMA).clamp(0, 1))
        return out

    def forward(self, x: Tensor) -> Tensor:
        layers = self.body.layers()
        for layer, z in zip(layers[:-1], self.gates(), strict=True):
            a = layer.activate(layer.pre_activation(x))
            x = a * z.view(1, -1, *[1] * (a.dim() - 2))
        return layers[-1].pre_activation(x)

    def expected_share(self) -> Tensor:
        """The expected share of hidden weights kept (the L0 penalty, before lambda)."""
        kept = sum(keep_probability(a).sum() * f for a, f in zip(self.log_alpha, self.fan_in,
                                                                  strict=True))
        return kept / sum(len(a) * f for a, f in zip(self.log_alpha, self.fan_in, strict=True))

    def compacted(self) -> Net:
        """The trained net with the closed units removed and the open gates folded in."""
        layers = self.body.layers()
        with torch.no_grad():
            zs = [test_gates(a) for a in self.log_alpha]
            rows = [layer.weight * z.view(-1, *[1] * (layer.weight.dim() - 1))
                    for layer, z in zip(layers[:-1], zs, strict=True)]
            folded = with_weights(layers, [*rows, layers[-1].weight.detach()])
            live = [torch.ones_like(layer.weight, dtype=torch.bool) if i == len(folded) - 1
                    else layer.unit_mask(zs[i] > 0) for i, layer in enumerate(folded)]
            return compact(tuple(layer.with_weight(layer.weight.detach()) for layer in folded),
                           live)


@dataclass(frozen=True)
class GateResult:
    net: Net  # compacted
    widths: tuple[int, ...]  # hidden units kept per layer
    accuracy: float
    seconds: float
    expected_share: float  # the penalty's expected share of hidden weights kept, at the end


def train_gated(net: Net, data: Split, cfg: TrainConfig, lam: float, seed: int) -> GateResult:
    """Train weights and gates together (the study's recipe) with penalty ``lam``; test the
    compacted net."""
    model = Gated(net, seed)
    optimizer = torch.optim.Adam([{"params": list(model.body.parameters()), "lr": cfg.lr},
                                  {"params": list(model.log_alpha), "lr": GATE_LR}])
    shuffle = torch.Generator().manual_seed(cfg.seed)
    began = time.perf_counter()
    model.train()
    for _ in range(cfg.epochs):
        order = torch.randperm(len(data.x), generator=shuffle).to(data.x.device)
        for idx in order.split(cfg.batch_size):
            loss = F.cross_entropy(model(data.x[idx]), data.y[idx]) + lam * model.expected_share()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    seconds = time.perf_counter() - began
    model.eval()
    small = model.compacted()
    return GateResult(small, tuple(layer.units for layer in small[:-1]),
                      round(accuracy(small, data.x_test, data.y_test), 4), round(seconds, 3),
                      round(float(model.expected_share()), 6))


def widths_masks(net: Net, widths: Sequence[int], scores: Sequence[Tensor]) -> list[Tensor]:
    """Keep-masks keeping, in each hidden layer, its ``widths`` units of highest score (the
    output layer whole)."""
    out = []
    for layer, w, s in zip(net[:-1], widths, scores, strict=True):
        keep = torch.zeros(layer.units, dtype=torch.bool, device=s.device)
        keep[torch.argsort(s, descending=True, stable=True)[:w]] = True
        out.append(layer.unit_mask(keep))
    return [*out, torch.ones_like(net[-1].weight, dtype=torch.bool)]


def l2_refit_at(dense: Net, widths: Sequence[int], context: Context) -> Net:
    """The trained dense net pruned by ``l2_refit`` (the one-shot study's criterion: l2 units,
    then the kept weights re-fitted to the dense outputs on calibration images) to exactly
    ``widths`` hidden units per layer, compacted."""
    scores = [L2_REFIT.score(context, i) for i in range(len(dense) - 1)]
    masks = widths_masks(dense, widths, scores)
    rebuilt = with_weights(dense, L2_REFIT.reconstruct(context, masks))  # type: ignore[misc]
    return compact(apply_masks(rebuilt, masks))


def speedup(small: Net, dense: Net) -> float:
    """The compacted net's measured speed-up over the dense one, batch 100 (one thread, the
    median of the speed study's repeats, timed alternately)."""
    with threads(THREADS):
        seconds, dense_seconds = paired_latency(Realised(tuple(small)), Realised(tuple(dense)),
                                                100, REPEATS)
    return round(dense_seconds / seconds, 3)


def sweep(init: Net, dense: Net, data: Split, cfg: TrainConfig, lambdas: Sequence[float],
          context: Context, seed: int) -> list[dict[str, Any]]:
    """One gated training per lambda from ``init``; each beside l2_refit of the trained
    ``dense`` net at the widths it found: widths, accuracy, measured speed-up, both ways."""
    rows = []
    for lam in lambdas:
        found = train_gated(init, data, cfg, lam, seed)
        refit = l2_refit_at(dense, found.widths, context)
        rows.append({"lambda": lam, "widths": "-".join(map(str, found.widths)),
                     "accuracy": found.accuracy, "speedup_b100": speedup(found.net, dense),
                     "expected_share": found.expected_share, "seconds": found.seconds,
                     "l2_refit_accuracy": round(accuracy(refit, data.x_test, data.y_test), 4),
                     "l2_refit_speedup_b100": speedup(refit, dense),
                     "weights_remaining": round(100 * sum(layer.weight.numel() for layer in
                                                          found.net)
                                                / sum(layer.weight.numel() for layer in dense),
                                                4)})
    return rows
