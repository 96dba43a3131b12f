"""Supermasks: a subnetwork found from the objective alone, the weights never trained.

Edge-popup (Ramanujan et al. 2020): every weight gets a score; the forward pass uses the
frozen weights times a mask keeping the ``keep`` share of each layer with the highest |score|;
the gradient reaches the scores straight through the top-k, and only the scores are trained.
Two frozen inits (Zhou et al. 2019; Ramanujan et al. 2020): the net's own init, and the signed
constant: each weight +-sigma of its layer (sigma the standard deviation of the layer's own
init, scaled by 1/sqrt(keep) so a kept unit's input keeps its variance), the sign the init's.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from prunelab.config import TrainConfig
from prunelab.data.split import Split
from prunelab.models.layers import Layer, Net, forward, with_weights
from prunelab.models.networks import accuracy
from prunelab.studies.atinit.scores import top

INITS: tuple[str, ...] = ("kaiming", "signed_constant")


def frozen_weights(net: Net, init: str, keep: float) -> Net:
    """The weights the supermask selects from: the net's own init, or its signed constant."""
    if init == "kaiming":
        return net
    return with_weights(net, [torch.sign(layer.weight) * layer.weight.std() / math.sqrt(keep)
                              for layer in net])


class _TopK(torch.autograd.Function):
    """Forward: 1 for the ``k`` largest values, 0 elsewhere; backward: the identity (applied
    to |scores|, so the gradient reaches each score through its absolute value)."""

    @staticmethod
    def forward(ctx: object, values: Tensor, k: int) -> Tensor:  # type: ignore[override]
        # Every step, every layer: one bracketed selection (scores.kth_largest).
        return top(values, k).to(values.dtype)  # exactly k, ties to the earlier index

    @staticmethod
    def backward(ctx: object, grad: Tensor) -> tuple[Tensor, None]:  # type: ignore[override]
        return grad, None


def kept_count(layer: Layer, keep: float) -> int:
    """Weights a layer keeps: the share ``keep`` of them, at least one."""
    return max(1, round(keep * layer.weight.numel()))


class Supermask(nn.Module):
    """Frozen weights, trainable scores (Kaiming-uniform like the weights, as edge-popup)."""

    def __init__(self, net: Net, keep: float, seed: int) -> None:
        super().__init__()
        self.net, self.counts = net, [kept_count(layer, keep) for layer in net]
        generator = torch.Generator().manual_seed(seed)
        self.scores = nn.ParameterList(
            nn.Parameter((torch.rand(layer.weight.shape, generator=generator) * 2 - 1).mul(
                1 / math.sqrt(layer.fan_in)).to(layer.weight.device)) for layer in net)

    def masks(self) -> list[Tensor]:
        return [_TopK.apply(s.abs(), k) for s, k in zip(self.scores, self.counts, strict=True)]

    def forward(self, x: Tensor) -> Tensor:
        weights = [layer.weight * m for layer, m in zip(self.net, self.masks(), strict=True)]
        return forward(with_weights(self.net, weights), x)

    def masked(self) -> Net:
        """The frozen net with its current mask applied (weights detached)."""
        with torch.no_grad():
            return with_weights(self.net, [layer.weight * m.bool() for layer, m in
                                           zip(self.net, self.masks(), strict=True)])


@dataclass(frozen=True)
class Found:
    accuracy: float
    seconds: float
    history: tuple[tuple[int, float], ...]  # (step, training loss)


def train_supermask(net: Net, keep: float, data: Split, cfg: TrainConfig, lr: float,
                    epochs: int, seed: int) -> Found:
    """Train the scores of ``net``'s frozen weights (Adam at ``lr``, cosine-decayed, the study's
    batch size and shuffling) for ``epochs``; test the mask it ends with."""
    model = Supermask(net, keep, seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, fused=True)
    per_epoch = math.ceil(len(data.x) / cfg.batch_size)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, epochs * per_epoch)
    shuffle, history, start = torch.Generator().manual_seed(cfg.seed), [], time.perf_counter()
    step = 0
    for _ in range(epochs):
        order = torch.randperm(len(data.x), generator=shuffle).to(data.x.device)
        for batch in order.split(cfg.batch_size):
            loss = F.cross_entropy(model(data.x[batch]), data.y[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            step += 1
            if step % 50 == 0:
                history.append((step, float(loss.detach())))
    seconds = time.perf_counter() - start
    return Found(round(accuracy(model.masked(), data.x_test, data.y_test), 4), round(seconds, 3),
                 tuple(history))


def random_supermask(net: Net, keep: float, data: Split, seed: int) -> float:
    """Test accuracy of a random mask of the same per-layer counts on the same frozen weights
    (the baseline: about chance)."""
    model = Supermask(net, keep, seed)  # random scores: a random top-k mask
    return round(accuracy(model.masked(), data.x_test, data.y_test), 4)


def masks_of(net: Net, keep: float, seed: int) -> Sequence[Tensor]:
    """The initial (random-score) masks: exactly ``kept_count`` per layer (used by tests)."""
    return [m.bool() for m in Supermask(net, keep, seed).masks()]
