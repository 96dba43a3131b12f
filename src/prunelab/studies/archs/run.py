"""One architecture on one dataset: train it, sweep the grid with every criterion and scope that
reads its graph, and time its compacted net -- what a row of the comparison is made of.

Every step reads the net's :class:`~prunelab.models.graph.Graph` and the graph criteria
(:mod:`prunelab.pruning.graph_criteria`: ``archs.weight_criteria`` and ``archs.unit_criteria``):
weight pruning ranks each part's weights (``layer``) or all parts' together (``global``); unit
pruning ranks each coupling group's units (``layer``), or all groups' together with each
group's best unit protected (``global``); ``random`` draws the same counts at random (the
controls). The output layer stays dense. Effective sparsity counts what the graph's liveness
says can still affect the output. Calibration inputs (for wanda, obd, activation) are
``prune.calibration_size`` training samples drawn with the seed.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from prunelab.data import mnist1d
from prunelab.data.mnist import calibration_indices
from prunelab.models import graph as g
from prunelab.models.archs import build
from prunelab.models.archs.base import GraphNet, Input, compacted, masked
from prunelab.pruning import graph_criteria as gc
from prunelab.pruning import graph_sweep
from prunelab.pruning.graph_sweep import Sweep, timed_pair
from prunelab.runtime.rng import derived_seed
from prunelab.studies.archs import study as archs_study
from prunelab.studies.opening import Opened

EVAL_BATCH = 1000
AUGMENT = 5  # the training images' random shifts: a stream of their own (runtime.rng)
SCOPES = ("layer", "global")
Arm = tuple[str, str, str]  # (granularity, criterion, scope)


@dataclass(frozen=True)
class Data:
    """A dataset as flat float inputs and int64 labels, on the device."""

    x: Tensor
    y: Tensor
    x_test: Tensor
    y_test: Tensor


def scheduler(opt: torch.optim.Optimizer, schedule: str, lr: float,
              steps: int) -> torch.optim.lr_scheduler.LRScheduler | None:
    """``constant`` (none); ``cosine``: lr decayed to 0 over ``steps``; ``onecycle``: warm-up
    to lr over the first 30% of steps, then annealed (PyTorch's OneCycleLR defaults)."""
    if schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    if schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    return None


def shifted(x: Tensor, shape: tuple[int, ...], pixels: int, generator: torch.Generator) -> Tensor:
    """Each image of the flat batch ``x`` (B, C*H*W; ``shape`` = (C, H, W)) translated by its own
    random offset of -``pixels``..``pixels`` rows and columns, zero-filled: the random-shift
    augmentation of the MNIST references. Offsets are drawn on the CPU from ``generator``."""
    c, h, w = shape
    b, p = len(x), pixels
    padded = F.pad(x.reshape(b, c, h, w), (p, p, p, p))  # (B, C, H + 2p, W + 2p)
    dy, dx = torch.randint(0, 2 * p + 1, (2, b), generator=generator).to(x.device)
    rows = dy[:, None] + torch.arange(h, device=x.device)  # (B, H)
    cols = dx[:, None] + torch.arange(w, device=x.device)  # (B, W)
    batch = torch.arange(b, device=x.device)[:, None, None, None]
    chans = torch.arange(c, device=x.device)[None, :, None, None]
    return padded[batch, chans, rows[:, None, :, None], cols[:, None, None, :]].reshape(b, -1)


def fit(net: GraphNet, data: Data, epochs: int, lr: float, batch: int, seed: int,
        schedule: str = "constant", shift: int = 0) -> float:
    """The study's recipe on any graph net (Adam, cross-entropy, shuffled mini-batches drawn
    from ``seed``), the learning rate on ``schedule``; with ``shift``, every training image
    randomly translated by up to that many pixels (images only; the shifts are their own
    stream, so the data order is the same with and without). The seconds of optimisation."""
    if shift and len(net.inp.shape) != 3:
        raise ValueError(f"shift={shift}: random shifts are for images (C, H, W), not "
                         f"inputs of shape {net.inp.shape}")
    opt = torch.optim.Adam(net.parameters(), lr=lr, fused=True)
    steps = epochs * -(-len(data.x) // batch)
    sched = scheduler(opt, schedule, lr, steps)
    shuffle = torch.Generator().manual_seed(seed)
    shifts = torch.Generator().manual_seed(derived_seed(seed, AUGMENT))
    net.train()
    start = time.perf_counter()
    for _ in range(epochs):
        order = torch.randperm(len(data.x), generator=shuffle).to(data.x.device)
        for i in range(0, len(order), batch):
            idx = order[i : i + batch]
            x = data.x[idx]
            if shift:
                x = shifted(x, net.inp.shape, shift, shifts)
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(net(x), data.y[idx]).backward()
            opt.step()
            if sched is not None:
                sched.step()
    seconds = time.perf_counter() - start
    net.eval()
    return seconds


@torch.no_grad()
def accuracy(net: GraphNet, x: Tensor, y: Tensor) -> float:
    """Percent correct, 4 decimals."""
    correct = sum(int((net(x[i : i + EVAL_BATCH]).argmax(1) == y[i : i + EVAL_BATCH]).sum())
                  for i in range(0, len(x), EVAL_BATCH))
    return round(100.0 * correct / len(x), 4)


def calibration(data: Data, size: int, seed: int) -> tuple[Tensor, Tensor]:
    """``size`` training samples (at most all of them) and their labels, drawn with ``seed``;
    never a test sample."""
    idx = torch.from_numpy(calibration_indices(len(data.x), min(size, len(data.x)), seed))
    idx = idx.to(data.x.device)
    return data.x[idx], data.y[idx]


def point(net: GraphNet, masks: Mapping[str, Tensor], data: Data) -> dict[str, float]:
    """Accuracy and what is left of a pruned copy of ``net``."""
    p = graph_sweep.point(net, masks, 0.0, data.x_test, data.y_test)
    return {"accuracy": p.accuracy, "nominal_sparsity": p.nominal_sparsity,
            "effective_sparsity": p.effective_sparsity}


def arms(criteria: Mapping[str, Sequence[str]]) -> tuple[Arm, ...]:
    """Every (granularity, criterion, scope) of the configured criteria."""
    return tuple((gr, c, s) for gr, cs in criteria.items() for c in cs for s in SCOPES)


def sweep(context: gc.GraphContext, data: Data, grid: Sequence[float],
          criteria: Mapping[str, Sequence[str]]) -> list[dict[str, object]]:
    """Every criterion and scope over the grid: one row per (granularity, criterion, scope, k)."""
    rows = []
    for granularity, criterion, scope in arms(criteria):
        s = Sweep(context, granularity, criterion, scope)
        for k in grid:
            rows.append({"granularity": granularity, "criterion": criterion, "scope": scope,
                         "sparsity": k, **point(context.net, s.masks(k), data)})
    return rows


def compaction(net: GraphNet, data: Data, sparsity: float, seed: int, batch: int = 100,
               repeats: int = 15) -> dict[str, object]:
    """Unit pruning (l2, layer scope) at ``sparsity``, realised as a smaller dense net: its
    accuracy (checked equal to the masked net's), widths, MACs and speed-up at ``batch`` (the
    stage's threads, median of ``repeats``)."""
    s = Sweep(gc.GraphContext(net, seed=seed), "unit", "l2", "layer")
    keep = s.keep(sparsity)
    pruned = masked(net, s.masks(sparsity))
    small = compacted(pruned, keep)
    acc_small = accuracy(small, data.x_test, data.y_test)
    acc_masked = accuracy(pruned, data.x_test, data.y_test)
    if abs(acc_small - acc_masked) > 0.05:  # float rounding may flip a near-tie, not more
        raise AssertionError(f"compacted net {acc_small}% vs masked {acc_masked}%")
    # timed with the stage's threads: switching torch's thread count mid-process left the
    # next convolutions of this process many times slower (libgomp), so it is not switched
    t_small, t_dense = timed_pair(small, net, data.x_test[:batch], repeats)
    return {"compact_sparsity": sparsity, "compact_accuracy": acc_small,
            "compact_widths": "-".join(str(v) for v in g.sizes_of(small.graph()).values()),
            "compact_macs": g.macs(small.graph(), small.state()),
            "dense_macs": g.macs(net.graph(), net.state()),
            "speedup_b100": round(t_dense / t_small, 3),
            "dense_ms_b100": round(1000 * t_dense, 3)}


def highest_within(rows: Sequence[Mapping[str, object]], dense: float,
                   points: float = 1.0) -> tuple[float, float]:
    """The highest k whose accuracy is within ``points`` of dense (0 when none), and the
    effective sparsity there: where the cliff starts."""
    ok = [r for r in rows if float(r["accuracy"]) >= dense - points]  # type: ignore[arg-type]
    best = max(ok, key=lambda r: float(r["sparsity"]), default=None)  # type: ignore[arg-type]
    if best is None:
        return 0.0, 0.0
    return float(best["sparsity"]), float(best["effective_sparsity"])  # type: ignore[arg-type]


def summary(curve: Sequence[Mapping[str, Any]], dense: float) -> dict[str, float]:
    """Per arm of the curve: the highest k within 1 point of dense and the effective sparsity
    there."""
    out = {}
    for gr, c, s in dict.fromkeys((r["granularity"], r["criterion"], r["scope"]) for r in curve):
        rows = [r for r in curve if (r["granularity"], r["criterion"], r["scope"]) == (gr, c, s)]
        k, eff = highest_within(rows, dense)
        out[f"{gr}.{c}.{s}.k_within_1pt"] = k
        out[f"{gr}.{c}.{s}.effective_at_k"] = eff
    return out


def datasets(stage: Opened, data_dir: Path) -> Iterator[tuple[str, Data, Input]]:
    """The configured datasets on the stage's device: MNIST (data.train_size / test_size
    images, 1x28x28) and MNIST-1D (verified arrays, 1x40 signals)."""
    for name in stage.cfg.archs.datasets:
        if name == "mnist":
            s = stage.split
            yield name, Data(s.x, s.y, s.x_test, s.y_test), Input((1, 28, 28))
        else:
            a = mnist1d.load(data_dir)
            t = {k: torch.from_numpy(v).to(stage.device) for k, v in a.items()}
            yield name, Data(t["x_train"], t["y_train"], t["x_test"], t["y_test"]), \
                Input((1, mnist1d.LENGTH))


def study(stage: Opened, data_dir: Path) -> Iterator[tuple[str, str, list[dict], dict]]:
    """Every (dataset, arch, seed): its curve rows and its table row, one at a time."""
    cfg = stage.cfg
    widths = archs_study.widths(cfg)
    grid = sorted({0.0, *cfg.prune.sparsities})
    for dataset, data, inp in datasets(stage, data_dir):
        for arch in cfg.archs.archs:
            for seed in cfg.archs.seeds:
                net = build(arch, inp, widths, seed, stage.device)
                epochs, shift = cfg.archs.epochs(dataset, arch), cfg.archs.shift(dataset, arch)
                lr = cfg.archs.lr(arch, cfg.train.lr)
                seconds = fit(net, data, epochs, lr, cfg.train.batch_size, seed,
                              cfg.archs.schedule_of(arch), shift)
                dense = accuracy(net, data.x_test, data.y_test)
                key = {"dataset": dataset, "arch": arch, "seed": seed}
                context = gc.GraphContext(net, *calibration(data, cfg.prune.calibration_size,
                                                            seed), seed)
                rows = [{**key, **r} for r in sweep(context, data, grid, cfg.archs.criteria)]
                row = {**key, "epochs": epochs, "shift": shift, "lr": lr,
                       "schedule": cfg.archs.schedule_of(arch),
                       "train_seconds": round(seconds, 2),
                       "dense_accuracy": dense,
                       "params": sum(w.numel() for w in net.state().values()),
                       "widths": "-".join(str(v) for v in net.sizes.values()),
                       **summary(rows, dense),
                       **compaction(net, data, cfg.archs.compact_sparsity, seed)}
                yield dataset, arch, rows, row
