"""Training with a mask that changes while the net trains, and the methods that change it.

:func:`train_dynamic` is the study's recipe (Adam, cross-entropy, the seed's shuffled batches:
with a method that never prunes it takes exactly the steps of
:func:`prunelab.training.loop.train`), plus a method consulted after each backward pass. When
the method returns new keep-masks, the weights they drop are set to 0 and Adam's moments of
every weight whose mask changed are reset, so a dropped weight stays exactly 0 and a regrown
one starts from 0 with a fresh optimizer state (as RigL does). Gradients are multiplied by the
mask before each step, as the fixed-mask loop does.

Only the hidden layers are pruned; the output layer stays dense, as in the study's sweep.

Methods (each an object with ``start``, ``update`` and ``after_step``):

* :class:`Gradual`: magnitude pruning to a :mod:`.schedule` (Zhu & Gupta 2017; the schedule
  comparison; ``oneshot``: dense, then pruned once and fine-tuned);
* :class:`Static`: a fixed mask from the first step (the dynamic methods' baseline, and the
  tickets' retraining);
* :class:`Regrow`: dynamic sparse training -- every ``every`` steps until ``end`` drop the
  share ``f_t = drop/2 (1 + cos(pi t / end))`` of each layer's active weights with smallest |w|
  and regrow as many among the inactive ones that were not just dropped: at random (SET,
  Mocanu et al. 2018) or those of largest |gradient| (RigL, Evci et al. 2020);
* :class:`EarlyBird`: never prunes; every ``every`` steps it draws the magnitude mask at the
  target sparsity and records the normalised Hamming distance to the previous one (You et al.
  2020).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

from prunelab.config import TrainConfig
from prunelab.data.split import Split
from prunelab.models.layers import Net
from prunelab.models.networks import Network, accuracy
from prunelab.studies.atinit.scores import top
from prunelab.studies.during.schedule import sparsity_at, update_steps

Masks = list[Tensor]


def kept(n: int, sparsity: float) -> int:
    """Weights a layer of ``n`` keeps at ``sparsity`` (floor of the pruned count, as the
    study's sweep counts; at least one)."""
    return max(1, n - math.floor(sparsity * n + 1e-9))


def magnitude_masks(weights: Sequence[Tensor], sparsity: float,
                    masks: Sequence[Tensor] | None = None) -> Masks:
    """Keep-masks of each hidden layer's largest |w| at ``sparsity``, nested in ``masks`` (a
    pruned weight stays pruned); the output layer all kept."""
    out = []
    for i, w in enumerate(weights):
        if i == len(weights) - 1:
            out.append(torch.ones_like(w, dtype=torch.bool))
            continue
        scores = w.detach().abs()
        if masks is not None:
            scores = scores.masked_fill(~masks[i], -torch.inf)
        out.append(top(scores, kept(w.numel(), sparsity)))
    return out


def remaining_percent(masks: Sequence[Tensor] | None, weights: Sequence[Tensor]) -> float:
    """Weights kept, in % of all weights (as the IMP study counts)."""
    total = sum(w.numel() for w in weights)
    if masks is None:
        return 100.0
    return round(100 * sum(int(m.count_nonzero()) for m in masks) / total, 4)


class Method:
    """Never prunes (dense training); the base of every method."""

    def start(self, weights: Sequence[Tensor]) -> Masks | None:
        """The masks the first step trains with (None: dense)."""
        return None

    def update(self, step: int, weights: Sequence[Tensor], grads: Sequence[Tensor],
               masks: Masks | None) -> Masks | None:
        """New masks after step ``step``'s backward pass (None: unchanged)."""
        return None

    def after_step(self, step: int, weights: Sequence[Tensor]) -> None:
        """Called after step ``step``'s optimizer update (observers)."""


@dataclass
class Gradual(Method):
    """Magnitude pruning of each hidden layer to ``shape``'s sparsity at each update step."""

    final: float
    start_step: int
    end_step: int
    every: int
    shape: str

    def __post_init__(self) -> None:
        self.steps = set(update_steps(self.start_step, self.end_step, self.every))

    def update(self, step: int, weights: Sequence[Tensor], grads: Sequence[Tensor],
               masks: Masks | None) -> Masks | None:
        if step not in self.steps:
            return None
        target = sparsity_at(step, self.final, self.start_step, self.end_step, self.shape)
        return magnitude_masks(weights, target, masks) if target > 0 else None


@dataclass
class Static(Method):
    """A fixed mask from the first step on."""

    masks: Masks

    def start(self, weights: Sequence[Tensor]) -> Masks | None:
        return list(self.masks)


def random_masks(weights: Sequence[Tensor], sparsity: float, seed: int) -> Masks:
    """Each hidden layer's ``kept`` weights at ``sparsity``, placed uniformly at random
    (seeded); the output layer all kept."""
    generator = torch.Generator().manual_seed(seed)
    out = []
    for i, w in enumerate(weights):
        if i == len(weights) - 1:
            out.append(torch.ones_like(w, dtype=torch.bool))
            continue
        flat = torch.zeros(w.numel(), dtype=torch.bool)
        flat[torch.randperm(w.numel(), generator=generator)[: kept(w.numel(), sparsity)]] = True
        out.append(flat.view(w.shape).to(w.device))
    return out


@dataclass
class Regrow(Method):
    """SET (``grow="random"``) or RigL (``grow="gradient"``) from a random mask at
    ``sparsity``: drop by magnitude, regrow as many, every ``every`` steps until ``end_step``."""

    sparsity: float
    every: int
    end_step: int
    drop: float
    grow: str
    seed: int
    generator: torch.Generator = field(init=False)

    def __post_init__(self) -> None:
        self.generator = torch.Generator().manual_seed(self.seed)

    def start(self, weights: Sequence[Tensor]) -> Masks | None:
        return random_masks(weights, self.sparsity, self.seed)

    def fraction(self, step: int) -> float:
        """The share of active weights an update at ``step`` drops (cosine-decayed)."""
        return self.drop / 2 * (1 + math.cos(math.pi * min(step, self.end_step) / self.end_step))

    def update(self, step: int, weights: Sequence[Tensor], grads: Sequence[Tensor],
               masks: Masks | None) -> Masks | None:
        if masks is None or step % self.every or step >= self.end_step:
            return None
        share = self.fraction(step)
        out = []
        for i, (w, g, m) in enumerate(zip(weights, grads, masks, strict=True)):
            n = int(share * int(m.count_nonzero()))
            if i == len(weights) - 1 or n == 0:
                out.append(m)
                continue
            active = int(m.count_nonzero())
            survive = top(w.detach().abs().masked_fill(~m, -torch.inf), active - n)
            candidates = ~m  # inactive before this update: never the weights just dropped
            if self.grow == "random":
                score = torch.rand(w.shape, generator=self.generator).to(w.device)
            else:
                score = g.detach().abs()
            grown = top(score.masked_fill(~candidates, -torch.inf), n)
            out.append(survive | grown)
        return out


@dataclass
class EarlyBird(Method):
    """Dense training that draws the magnitude mask at ``sparsity`` every ``every`` steps and
    records (step, normalised Hamming distance to the previous mask)."""

    sparsity: float
    every: int
    distances: list[tuple[int, float]] = field(default_factory=list)
    masks: dict[int, Masks] = field(default_factory=dict)  # every drawn mask, by step
    seconds: float = 0.0  # spent drawing and comparing masks

    def after_step(self, step: int, weights: Sequence[Tensor]) -> None:
        if step % self.every:
            return
        began = time.perf_counter()
        drawn = magnitude_masks(weights, self.sparsity)
        if self.masks:
            previous = self.masks[max(self.masks)]
            changed = sum(int((a != b).count_nonzero()) for a, b in
                          zip(previous[:-1], drawn[:-1], strict=True))
            total = sum(m.numel() for m in drawn[:-1])
            self.distances.append((step, round(changed / total, 6)))
        self.masks[step] = drawn
        self.seconds += time.perf_counter() - began


def earliest_stable(distances: Sequence[tuple[int, float]], threshold: float,
                    window: int) -> int | None:
    """The first step at which the last ``window`` distances are all below ``threshold`` (the
    early-bird ticket's step); None if the run never settles."""
    for i in range(window - 1, len(distances)):
        if all(d < threshold for _, d in distances[i - window + 1 : i + 1]):
            return distances[i][0]
    return None


@dataclass(frozen=True)
class Trained:
    """What a dynamic-mask training produced, besides the weights."""

    masks: Masks | None
    seconds: float  # optimisation, mask updates included (test passes excluded)
    steps: int
    evals: tuple[tuple[int, float], ...]  # (step, test accuracy %)
    sparsity: tuple[tuple[int, float], ...]  # (step, % of all weights remaining) at each change
    losses: tuple[tuple[int, float], ...]  # (step, training loss), every 50 steps


def _apply(params: Sequence[Tensor], optimizer: torch.optim.Optimizer, old: Masks | None,
           new: Masks) -> list[Tensor]:
    """Hold ``new``: dropped weights to +0.0, Adam's moments reset where the mask changed; the
    float keep-masks the gradients are multiplied by."""
    keep = []
    with torch.no_grad():
        for i, (p, m) in enumerate(zip(params, new, strict=True)):
            p.masked_fill_(~m, 0.0)
            state = optimizer.state.get(p, {})
            changed = ~m if old is None else (m != old[i])
            for key in ("exp_avg", "exp_avg_sq"):
                if key in state:
                    state[key].masked_fill_(changed, 0.0)
            keep.append(m.to(p.dtype))
    return keep


def train_dynamic(net: Net, data: Split, cfg: TrainConfig, method: Method,
                  eval_every: int | None = None) -> tuple[Net, Trained]:
    """Train ``net`` with the study's recipe for ``cfg.epochs`` while ``method`` sets the mask.
    Returns the trained weights (detached, the mask applied) and what the run measured."""
    model = Network(net)
    params = list(model.parameters())
    optimizer = torch.optim.Adam(params, lr=cfg.lr, fused=True)
    shuffle = torch.Generator().manual_seed(cfg.seed)  # the seed's order, as the dense run's
    masks = method.start([p.detach() for p in params])
    keep = None if masks is None else _apply(params, optimizer, None, masks)
    sparsity = [(0, remaining_percent(masks, params))]
    evals, losses, step, seconds = [], [], 0, 0.0
    per_epoch = math.ceil(len(data.x) / cfg.batch_size)
    total = cfg.epochs * per_epoch
    model.train()
    for _ in range(cfg.epochs):
        order = torch.randperm(len(data.x), generator=shuffle).to(data.x.device)
        began = time.perf_counter()
        for idx in order.split(cfg.batch_size):
            optimizer.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(data.x[idx]), data.y[idx])
            loss.backward()
            step += 1
            new = method.update(step, [p.detach() for p in params],
                                [p.grad for p in params], masks)  # type: ignore[misc]
            if new is not None:
                keep = _apply(params, optimizer, masks, new)
                masks = new
                sparsity.append((step, remaining_percent(masks, params)))
            if keep is not None:
                torch._foreach_mul_([p.grad for p in params], keep)  # type: ignore[misc]
            optimizer.step()
            method.after_step(step, [p.detach() for p in params])
            if step % 50 == 0:
                losses.append((step, round(float(loss.detach()), 6)))
            if eval_every and (step % eval_every == 0 or step == total):
                seconds += time.perf_counter() - began
                model.eval()
                evals.append((step, round(accuracy(model.layers(), data.x_test, data.y_test), 4)))
                model.train()
                began = time.perf_counter()
        seconds += time.perf_counter() - began
    trained = tuple(layer.with_weight(layer.weight.detach()) for layer in model.layers())
    return trained, Trained(masks, round(seconds, 3), step, tuple(evals), tuple(sparsity),
                            tuple(losses))
