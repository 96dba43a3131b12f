"""What a pruned model really buys: parameters, bytes, FLOPs and measured CPU latency.

A mask alone speeds nothing up. Here each pruned model is *realised* the way it would be
deployed: a unit-pruned net is compacted (dead neurons and channels physically removed), a
weight-pruned net stores each layer dense or as CSR, whichever runs faster at its sparsity on
this machine (a conv as CSR multiplies its unfolded patches; the `formats` column of the speed
CSV records what won, so "sparse convolution does not pay on this CPU" is measured, per k).
Timing lives here, in its own stage, so the pruning stages' outputs stay deterministic.
"""

from __future__ import annotations

import hashlib
import io
import statistics
import time
import zlib
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor

from prunelab.config import grid_step
from prunelab.errors import PrunelabError
from prunelab.models.layers import Layer, forward
from prunelab.models.networks import accuracy
from prunelab.pruning.compaction import compact, csr
from prunelab.pruning.criteria.base import Context, Criterion
from prunelab.pruning.masks import DEFAULT_CRITERIA
from prunelab.pruning.sweep import DenseCopies, pruned_nets

LATENCY_BATCHES = (1, 100)
THREADS = 1  # per-core latency: steady on a busy machine, and what a serving worker gets
REPEATS = 15  # timed passes per model; the median is reported
MAX_MISMATCH = 1e-3  # logits of a realised model vs its masked twin (float32 rounding ~1e-5)
# A CSR layer whose first timed passes all take this many times the dense median has lost:
# its remaining passes are skipped (the choice is already made; at moderate densities CSR
# costs several times the dense product, and timing it fully was most of the choosing).
CSR_GIVE_UP = 2.0
ZLIB_LEVEL = 6


@dataclass(frozen=True)
class Realised:
    """A pruned net as deployed: each layer's weight dense or CSR."""

    layers: tuple[Layer, ...]

    @property
    def formats(self) -> str:
        """e.g. 'dense,csr,csr,dense,dense'."""
        return ",".join("csr" if layer.weight.layout == torch.sparse_csr else "dense"
                        for layer in self.layers)


@contextmanager
def threads(n: int) -> Iterator[None]:
    """Run the block with ``n`` intra-op threads (timing), then restore the previous count."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def median_seconds(fn: object, repeats: int, warmup: int = 3,
                   give_up: float | None = None) -> float:
    """Median wall time of calling ``fn()`` (no autograd), after ``warmup`` calls; when the
    first three timed calls each take longer than ``give_up`` seconds, their median (no more
    calls: ``fn`` is slower than that, which is all a comparison with ``give_up`` needs)."""
    with torch.no_grad():
        for _ in range(warmup):
            fn()  # type: ignore[operator]
        times: list[float] = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn()  # type: ignore[operator]
            times.append(time.perf_counter() - start)
            if give_up is not None and len(times) == 3 and min(times) > give_up:
                break
    return statistics.median(times)


def faster_format(layer: Layer, batch: int, repeats: int = 15) -> Layer:
    """``layer`` dense or as CSR, whichever computes a batch of ``batch`` inputs faster here."""
    w = layer.weight
    if int(w.count_nonzero()) > 0.5 * w.numel():
        return layer  # CSR never wins at this density; skip the measurement
    sparse = layer.with_weight(csr(w))
    x = torch.randn(batch, layer.in_features, device=w.device)
    dense_s = median_seconds(lambda: layer.pre_activation(x), repeats)
    sparse_s = median_seconds(lambda: sparse.pre_activation(x), repeats,
                              give_up=CSR_GIVE_UP * dense_s)
    return sparse if sparse_s < dense_s else layer


def realise(pruned: Sequence[Layer], method: str, batch: int = 100,
            n_threads: int = 1) -> Realised:
    """Deployable form: compacted for units; per-layer dense/CSR (timed) for weights."""
    if method == "unit":
        return Realised(compact(pruned))
    with threads(n_threads):
        return Realised(tuple(faster_format(layer, batch) for layer in pruned))


def nonzeros(layer: Layer) -> int:
    """Stored nonzero weights of a dense or CSR layer."""
    w = layer.weight
    return int(w.values().count_nonzero() if w.layout == torch.sparse_csr else w.count_nonzero())


def stored_params(model: Realised) -> int:
    """Numbers stored for the weights (nonzeros for CSR, every entry for dense)."""
    return sum(int(layer.weight.values().numel()) if layer.weight.layout == torch.sparse_csr
               else layer.weight.numel() for layer in model.layers)


def flops_per_sample(model: Realised) -> int:
    """Multiply-adds x 2 for one input, skipping stored zeros (the theoretical cost): a conv's
    weights work at every output position."""
    return 2 * sum(nonzeros(layer) * layer.positions for layer in model.layers)


def serialised(model: Realised) -> bytes:
    """The model's weights as torch.save writes them."""
    buf = io.BytesIO()
    torch.save([layer.weight.cpu() for layer in model.layers], buf)
    return buf.getvalue()


_COMPRESSED: dict[bytes, int] = {}  # blake2b digest of a blob -> its zlib size


def compressed_sizes(blobs: Sequence[bytes], workers: int = 1) -> list[int]:
    """The zlib-compressed size (level 6) of each blob, computed in ``workers`` threads (zlib
    lets go of the GIL); a blob seen before (the dense net of every k = 0) is not compressed
    again."""
    digests = [hashlib.blake2b(blob, digest_size=16).digest() for blob in blobs]
    todo = {d: blob for d, blob in zip(digests, blobs, strict=True) if d not in _COMPRESSED}
    with ThreadPoolExecutor(max(1, min(workers, len(todo)))) as pool:
        sizes = pool.map(lambda blob: len(zlib.compress(blob, ZLIB_LEVEL)), todo.values())
        _COMPRESSED.update(zip(todo, sizes, strict=True))
    return [_COMPRESSED[d] for d in digests]


def stored_bytes(model: Realised) -> tuple[int, int]:
    """Size of the serialised model (torch.save), raw and zlib-compressed."""
    raw = serialised(model)
    return len(raw), compressed_sizes([raw])[0]


def paired_latency(model: Realised, dense: Realised, batch: int,
                   repeats: int) -> tuple[float, float]:
    """Median seconds of one forward pass of ``model`` and of ``dense``, timed alternately.

    Alternating the two in one loop keeps drifts of the machine (another process, clock
    changes) out of their ratio.
    """
    first = dense.layers[0]
    x = torch.randn(batch, first.in_features, device=first.weight.device)
    times: dict[str, list[float]] = {"model": [], "dense": []}
    with torch.no_grad():
        for i in range(repeats + 3):
            for name, layers in (("model", model.layers), ("dense", dense.layers)):
                start = time.perf_counter()
                forward(layers, x)
                if i >= 3:  # the first rounds warm caches and allocators
                    times[name].append(time.perf_counter() - start)
    return statistics.median(times["model"]), statistics.median(times["dense"])


def measure(net: Sequence[Layer], method: str, scope: str, grid: Sequence[float],
            x: Tensor, y: Tensor, repeats: int, n_threads: int = 1,
            criterion: Criterion | None = None, context: Context | None = None,
            copies: DenseCopies | None = None) -> list[dict[str, object]]:
    """One row per sparsity: accuracy, size, FLOPs, latency and speed-up over the dense net.

    The pruned net of each k is the sweep's (masked, or reconstructed when the criterion does
    that; default criterion: the study's). Latency is timed with ``n_threads`` threads;
    accuracy and the compressed sizes use every core. Sets sharing ``copies`` test the dense
    net (every k = 0 copy) once between them.
    """
    dense = Realised(tuple(net))
    copies = copies or DenseCopies(net, x, y)
    name = (criterion or DEFAULT_CRITERIA[method]).name
    rows, blobs = [], []
    for k, pruned in pruned_nets(net, method, scope, grid, criterion, context):
        model = realise(pruned, method, n_threads=n_threads)
        blobs.append(serialised(model))
        with torch.no_grad():  # the realised net must compute what the pruned net computes
            gap = float((forward(model.layers, x[:100]) - forward(pruned, x[:100])).abs().max())
        row: dict[str, object] = {
            "method": method, "criterion": name, "scope": scope, "sparsity": k,
            "accuracy": copies.measured(model.layers,
                                        lambda m=model: round(accuracy(m.layers, x, y), 4)),
            "formats": model.formats, "stored_params": stored_params(model),
            "bytes": len(blobs[-1]), "bytes_compressed": 0,
            "flops_per_sample": flops_per_sample(model), "max_abs_diff_vs_masked": gap,
        }
        for b in LATENCY_BATCHES:
            with threads(n_threads):
                seconds, dense_seconds = paired_latency(model, dense, b, repeats)
            row[f"latency_ms_b{b}"] = round(seconds * 1e3, 4)
            row[f"speedup_b{b}"] = round(dense_seconds / seconds, 3)
        rows.append(row)
    # after the timings, so the compression threads never run beside a timed pass
    for row, packed in zip(rows, compressed_sizes(blobs, torch.get_num_threads()), strict=True):
        row["bytes_compressed"] = packed
    return rows


def summarise(rows: Sequence[dict[str, object]], dense_accuracy: float) -> dict[str, object]:
    """The headline per method, criterion and scope: the measured speed-up (batch 100) of the
    sparsest model within 1 point of dense. Every other figure is in the speed CSV and MLflow."""
    out: dict[str, object] = {}
    keys = sorted({(str(r["method"]), str(r["criterion"]), str(r["scope"])) for r in rows})
    for method, name, scope in keys:
        mine = [r for r in rows
                if (r["method"], r["criterion"], r["scope"]) == (method, name, scope)]
        ok = [r for r in mine if float(r["accuracy"]) >= dense_accuracy - 1.0]  # type: ignore[arg-type]
        best = max(ok, key=lambda r: float(r["sparsity"]), default=None)  # type: ignore[arg-type]
        out[f"{method}_{name}_{scope}"] = {
            "speedup_b100_at_max": best["speedup_b100"] if best else None}
    return out


SERIES = ("speedup_b100", "speedup_b1", "bytes_compressed", "flops_per_sample")


def speed_series(rows: Sequence[dict[str, object]]) -> dict[str, list[tuple[int, float]]]:
    """MLflow histories over the grid (step = per-mille sparsity), one per method, criterion,
    scope and figure: ``weight_magnitude_layer.speedup_b100``."""
    series: dict[str, list[tuple[int, float]]] = {}
    for r in rows:
        for n in SERIES:
            key = f"{r['method']}_{r['criterion']}_{r['scope']}.{n}"
            series.setdefault(key, []).append((grid_step(float(r["sparsity"])),  # type: ignore[arg-type]
                                               float(r[n])))  # type: ignore[arg-type]
    return series


def check_equivalence(rows: Sequence[dict[str, object]]) -> None:
    """A realised model must compute what its masked twin computes, else its timing is of a
    different net: raise naming the first one that does not."""
    for r in rows:
        if float(r["max_abs_diff_vs_masked"]) > MAX_MISMATCH:  # type: ignore[arg-type]
            raise PrunelabError(
                f"speed: the realised {r['method']}/{r['scope']} model at k={r['sparsity']} "
                f"differs from the masked net by {r['max_abs_diff_vs_masked']} (> {MAX_MISMATCH})")
