"""The sweep: for each sparsity, prune a fresh copy of the dense net and test it (no retraining)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from prunelab.config import Params, grid_step
from prunelab.data.mnist import calibration_set
from prunelab.models.layers import Layer, Net, with_weights
from prunelab.models.networks import accuracy, to_inputs, to_targets
from prunelab.models.networks import dense_accuracy as measured_dense
from prunelab.pruning.compaction import fast_equivalent
from prunelab.pruning.criteria.base import Context, Criterion
from prunelab.pruning.criteria.registry import checked_names, criterion
from prunelab.pruning.masks import Pruner, apply_masks, check_support, live_masks

TOLERANCE_POINTS = 1.0  # "within 1 point of dense" for the summaries
CURVE_COLUMNS = (
    "sparsity",
    "accuracy",
    "nominal_sparsity",
    "effective_sparsity",
    "nonzero_params",
    "live_params",
)


@dataclass(frozen=True)
class SweepPoint:
    """One pruned copy: its grid value k, test accuracy (%) and what is left of it.

    nominal_sparsity is the share of all weights (output layer included) that are zero;
    effective_sparsity the share that are zero or can no longer affect the output.
    """

    sparsity: float
    accuracy: float
    nominal_sparsity: float
    effective_sparsity: float
    nonzero_params: int
    live_params: int


def tested(pruned: Sequence[Layer], live: Sequence[Tensor], x: Tensor, y: Tensor) -> float:
    """Test accuracy (%) of a pruned net, run as its cheapest exact stand-in."""
    return round(accuracy(fast_equivalent(pruned, live), x, y), 4)


class DenseCopies:
    """Tests the dense net at most once for a stage's sweeps: every criterion's k = 0 copy is
    the dense net itself (nothing masked, nothing re-fitted), the same test on the same
    weights. A copy is recognised by its weights, compared exactly with the dense net's (and
    its layers' shapes and kinds), never by its k, so a criterion whose k = 0 copy differed
    would be tested as itself."""

    def __init__(self, net: Sequence[Layer], x: Tensor, y: Tensor) -> None:
        self.net, self.x, self.y = tuple(net), x, y
        self._accuracy: float | None = None

    def is_dense(self, pruned: Sequence[Layer]) -> bool:
        return len(pruned) == len(self.net) and all(
            _same_layer(a, b) for a, b in zip(pruned, self.net, strict=True))

    def accuracy(self, pruned: Sequence[Layer], live: Sequence[Tensor], x: Tensor,
                 y: Tensor) -> float:
        """``pruned``'s test accuracy on (x, y); the dense net's measured once."""
        if x is not self.x or y is not self.y:
            return tested(pruned, live, x, y)
        return self.measured(pruned, lambda: tested(pruned, live, x, y))

    def measured(self, pruned: Sequence[Layer], measure: Callable[[], float]) -> float:
        """``measure()``, ``pruned``'s accuracy on this test set; the dense net's measured
        once (the first call that finds it)."""
        if not self.is_dense(pruned):
            return measure()
        if self._accuracy is None:
            self._accuracy = measure()
        return self._accuracy


_SAME_SIZE_INT = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


def _same_layer(a: Layer, b: Layer) -> bool:
    """Equal geometry (every field but the weight) and bit-identical weights (same shape,
    dtype, layout and device; -0.0 is not 0.0 here, as it need not be in a product)."""
    wa, wb = a.weight, b.weight
    if any(getattr(a, f.name) != getattr(b, f.name) for f in fields(Layer) if f.name != "weight"):
        return False
    if wa is wb:
        return True
    if (wa.dtype, wa.device, wa.layout) != (wb.dtype, wb.device, wb.layout) or \
            wa.layout != torch.strided or wa.shape != wb.shape:
        return False
    bits = _SAME_SIZE_INT[wa.element_size()]
    return torch.equal(wa.view(bits), wb.view(bits))


def prune_point(pruned: Sequence[Layer], sparsity: float, x: Tensor, y: Tensor,
                dense: DenseCopies | None = None) -> SweepPoint:
    """Measure what is left of a pruned net and test it (a copy of ``dense``'s net: once)."""
    total = sum(layer.weight.numel() for layer in pruned)
    nonzero = sum(int(layer.weight.count_nonzero()) for layer in pruned)
    live_per_layer = live_masks(pruned)
    live = sum(int(m.sum()) for m in live_per_layer)
    test = dense.accuracy if dense is not None else tested
    return SweepPoint(
        sparsity=sparsity,
        accuracy=test(pruned, live_per_layer, x, y),
        nominal_sparsity=round(1 - nonzero / total, 6),
        effective_sparsity=round(1 - live / total, 6),
        nonzero_params=nonzero,
        live_params=live,
    )


def criteria_context(net: Sequence[Layer], criteria: Sequence[Criterion], cfg: Params,
                     data_dir: Path, device: torch.device) -> Context:
    """What ``criteria`` may look at: the weights and the run's seed, plus calibration images
    (training split only, ``prune.calibration_size`` drawn with ``train.seed``) when one of
    them needs them."""
    if not any(c.needs_calibration for c in criteria):
        return Context(tuple(net), seed=cfg.train.seed)
    return Context(tuple(net), *calibration(cfg, data_dir, device), seed=cfg.train.seed)


def calibration(cfg: Params, data_dir: Path, device: torch.device) -> tuple[Tensor, Tensor]:
    """``prune.calibration_size`` TRAINING images and labels drawn with ``train.seed``, on the
    device: what calibrated criteria (either net family) look at."""
    images, labels = calibration_set(data_dir, cfg.data.train_size, cfg.prune.calibration_size,
                                     cfg.train.seed)
    return to_inputs(images, device), to_targets(labels, device)


def pruned_with_masks(net: Sequence[Layer], granularity: str, scope: str,
                      sparsities: Iterable[float], criterion: Criterion | None = None,
                      context: Context | None = None
                      ) -> Iterator[tuple[float, list[Tensor], Net]]:
    """(k, keep-masks, pruned net) for every grid value, each from the same dense ``net``:
    masked, then reconstructed when the criterion does that. The ranking is computed once.
    The masks are the pruned net's: for a reconstruction, the weights it left nonzero."""
    pruner = Pruner(net, granularity, scope, criterion, context)
    for k in sparsities:
        masks = pruner.masks(k)
        if criterion is not None and criterion.reconstruct is not None and context is not None:
            rebuilt = with_weights(net, criterion.reconstruct(context, masks))
            # A reconstruction may choose its own zeros (obs keeps the ranking's count per
            # layer, not its positions): the pruned net's mask is what it zeroed.
            kept = [layer.weight != 0 for layer in rebuilt[:-1]] + [masks[-1]]
            yield k, kept, rebuilt
        else:
            yield k, masks, apply_masks(net, masks)


def pruned_nets(net: Sequence[Layer], granularity: str, scope: str,
                sparsities: Iterable[float], criterion: Criterion | None = None,
                context: Context | None = None) -> Iterator[tuple[float, Net]]:
    """(k, pruned net) for every grid value (see :func:`pruned_with_masks`)."""
    for k, _, pruned in pruned_with_masks(net, granularity, scope, sparsities, criterion,
                                          context):
        yield k, pruned


def sweep(net: Sequence[Layer], granularity: str, scope: str, sparsities: Iterable[float],
          x: Tensor, y: Tensor, criterion: Criterion | None = None,
          context: Context | None = None, dense: DenseCopies | None = None
          ) -> list[SweepPoint]:
    """Every grid value of one criterion (default: the study's), tested on (x, y); sweeps
    sharing ``dense`` test the unpruned net once between them."""
    return [prune_point(pruned, k, x, y, dense)
            for k, pruned in pruned_nets(net, granularity, scope, sparsities, criterion, context)]


def summarise(points: Sequence[SweepPoint], dense_accuracy: float) -> dict[str, Any]:
    """The headline of a sweep: the highest k within 1 point of dense, and what it keeps.

    This is the metrics file (`dvc metrics show`, `dvc exp show`): a few numbers per method.
    The accuracy at every k lives in the curve CSV (`dvc plots`) and in MLflow.
    """
    ok = [p for p in points if p.accuracy >= dense_accuracy - TOLERANCE_POINTS]
    best = max(ok, key=lambda p: p.sparsity, default=None)
    return {
        "max_sparsity_within_1pt": best.sparsity if best else None,
        "accuracy_at_max_sparsity": best.accuracy if best else None,
    }


def grid_key(sparsity: float) -> str:
    """A metrics key naming a grid value exactly (shortest round-trip repr: '0.97', '0.0')."""
    return repr(float(sparsity))


def curve_rows(points: Sequence[SweepPoint], method: str, scope: str,
               criterion: str | None = None) -> list[dict[str, Any]]:
    """One CSV row per sparsity: method (granularity), criterion and scope -- the plots colour
    by them -- then CURVE_COLUMNS."""
    head: dict[str, Any] = {"method": method}
    if criterion is not None:
        head["criterion"] = criterion
    head["scope"] = scope
    return [{**head, **{c: asdict(p)[c] for c in CURVE_COLUMNS}} for p in points]


def checked_criteria(granularity: str, names: Sequence[str], net: Sequence[Layer],
                     arch: str) -> list[Criterion]:
    """The named criteria of one granularity, each checked against the architecture before
    any work (one line naming the criterion and the arch when one does not apply)."""
    chosen = [criterion(granularity, name)  # type: ignore[arg-type]
              for name in checked_names(granularity, names)]  # type: ignore[arg-type]
    for c in chosen:
        check_support(c, net, arch)
    return chosen


def dense_accuracy(net: Sequence[Layer], points: Sequence[SweepPoint], x: Tensor,
                   y: Tensor) -> float:
    """The unpruned net's accuracy: the k=0 point when the grid has one, else measured."""
    for p in points:
        if p.sparsity == 0.0:
            return p.accuracy
    return measured_dense(net, x, y)


def metric_series(points: Sequence[SweepPoint],
                  prefix: str = "") -> dict[str, list[tuple[int, float]]]:
    """Histories over the grid (step = per-mille sparsity), so MLflow's chart draws accuracy
    against sparsity; ``prefix`` names the criterion (``magnitude.accuracy``)."""
    names = ("accuracy", "effective_sparsity", "nominal_sparsity", "live_params")
    return {prefix + n: [(grid_step(p.sparsity), float(getattr(p, n))) for p in points]
            for n in names}
