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

import hashlib
import json
import math
import platform
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from prunelab.config import Params, TrainConfig
from prunelab.data.split import Split
from prunelab.models.layers import Net, with_weights
from prunelab.models.networks import Network, accuracy
from prunelab.pruning.compaction import compact
from prunelab.pruning.criteria.base import Context
from prunelab.pruning.criteria.reconstruct import L2_REFIT
from prunelab.pruning.masks import apply_masks
from prunelab.pruning.savings import REPEATS, THREADS, Realised, paired_latency, threads
from prunelab.runtime.files import read_json, write_json, write_text
from prunelab.runtime.fingerprint import code_digest, shaping

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
    history: tuple[tuple[int, float], ...] = ()  # (step, expected share) every 50 steps


def train_gated(net: Net, data: Split, cfg: TrainConfig, lam: float, seed: int) -> GateResult:
    """Train weights and gates together (the study's recipe) with penalty ``lam``; test the
    compacted net."""
    model = Gated(net, seed)
    optimizer = torch.optim.Adam([{"params": list(model.body.parameters()), "lr": cfg.lr},
                                  {"params": list(model.log_alpha), "lr": GATE_LR}])
    shuffle = torch.Generator().manual_seed(cfg.seed)
    began, step, history = time.perf_counter(), 0, []
    model.train()
    for _ in range(cfg.epochs):
        order = torch.randperm(len(data.x), generator=shuffle).to(data.x.device)
        for idx in order.split(cfg.batch_size):
            share = model.expected_share()
            loss = F.cross_entropy(model(data.x[idx]), data.y[idx]) + lam * share
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            if step % 50 == 0:
                history.append((step, round(float(share.detach()), 6)))
    seconds = time.perf_counter() - began
    model.eval()
    small = model.compacted()
    return GateResult(small, tuple(layer.units for layer in small[:-1]),
                      round(accuracy(small, data.x_test, data.y_test), 4), round(seconds, 3),
                      round(float(model.expected_share().detach()), 6), tuple(history))


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


def fingerprint(cfg: Params, device: str) -> str:
    """What a lambda's result depends on besides lambda: the recipe and model, the calibration
    size, the code that computes it (by module content), the device, the thread count and the
    CPU's instruction set."""
    flat = cfg.flat()
    keys = [k for k in flat if k.split(".")[0] in ("data", "train", "model")
            and k not in ("train.device", "train.seeds")] + ["prune.calibration_size"]
    doc = {"params": {k: flat[k] for k in keys},
           "code": code_digest(shaping(__name__, ("prunelab.errors", "prunelab.runtime.files",
                                                  "prunelab.runtime.fingerprint"))),
           "torch": torch.__version__, "device": device, "threads": torch.get_num_threads(),
           "machine": platform.machine(), "simd": torch.backends.cpu.get_cpu_capability()}
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:16]


class Store:
    """Each finished lambda's row, one JSON file each, kept only under the same key: a killed
    run resumes after its last finished lambda, and a new lambda trains only itself."""

    def __init__(self, folder: Path, key: str) -> None:
        self.folder, self.key = Path(folder), key

    def _path(self, lam: float) -> Path:
        return self.folder / f"lambda_{lam:g}.json"

    def get(self, lam: float) -> dict[str, Any] | None:
        try:
            doc = read_json(self._path(lam))
        except Exception:  # missing or damaged: recomputed, not trusted
            return None
        return doc.get("row") if doc.get("key") == self.key else None

    def put(self, lam: float, row: dict[str, Any]) -> None:
        ignore = self.folder / ".gitignore"  # working state: never committed
        if not ignore.is_file():
            write_text(ignore, "*\n")
        write_json(self._path(lam), {"key": self.key, "row": row})


def sweep(init: Net, dense: Net, data: Split, cfg: TrainConfig, lambdas: Sequence[float],
          context: Context, seed: int, store: Store | None = None
          ) -> Iterator[tuple[dict[str, Any], bool]]:
    """One gated training per lambda from ``init``; each beside l2_refit of the trained
    ``dense`` net at the widths it found: widths, accuracy, measured speed-up, both ways.
    Yields (row, resumed): a lambda finished before under the same key comes from ``store``."""
    for lam in lambdas:
        done = store.get(lam) if store is not None else None
        if done is not None:
            yield done, True
            continue
        row = _row(lam, init, dense, data, cfg, context, seed)
        if store is not None:
            store.put(lam, row)
        yield row, False


def _row(lam: float, init: Net, dense: Net, data: Split, cfg: TrainConfig, context: Context,
         seed: int) -> dict[str, Any]:
    """One lambda: the gated training, its compacted net, and l2_refit at its widths."""
    found = train_gated(init, data, cfg, lam, seed)
    refit = l2_refit_at(dense, found.widths, context)
    total = sum(layer.weight.numel() for layer in dense)
    return {"lambda": lam, "widths": "-".join(map(str, found.widths)),
            "accuracy": found.accuracy, "speedup_b100": speedup(found.net, dense),
            "expected_share": found.expected_share, "seconds": found.seconds,
            "l2_refit_accuracy": round(accuracy(refit, data.x_test, data.y_test), 4),
            "l2_refit_speedup_b100": speedup(refit, dense),
            "weights_remaining": round(100 * sum(layer.weight.numel() for layer in found.net)
                                       / total, 4),
            "history": [list(h) for h in found.history]}
