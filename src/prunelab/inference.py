"""Fast, exact evaluation of pruned nets: dead units removed, very sparse layers as CSR.

A masked net computes as much as the dense one. For testing a pruned copy we evaluate an
equivalent net instead: hidden units that can no longer affect the output are physically
removed (their rows and the next layer's matching columns), and layers that stay very sparse
are stored as CSR. Both are exact rewrites of the same function, up to float summation order.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import torch
from torch import Tensor

from prunelab.masks import live_masks

# torch's CSR matmul beats dense BLAS only when few weights remain; the per-layer timings of
# the `speed` stage (plots/speed.csv, column `formats`) show where CSR wins on this machine.
CSR_MAX_DENSITY = 0.05

# CSR works fine for the one matmul we use it for; the "beta" notice would only be noise.
warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta state")


def compact(weights: Sequence[Tensor], live: Sequence[Tensor] | None = None) -> list[Tensor]:
    """Remove hidden units without live weights: rows of their layer, columns of the next.

    ``live`` is :func:`prunelab.masks.live_masks` of ``weights`` when the caller has it.
    """
    live = live_masks(weights) if live is None else live
    out = list(weights)
    for i in range(len(weights) - 1):
        # A unit with a live incoming weight is fed and reaches the output; any other unit
        # either always outputs 0 or feeds only dead ends, so removing it changes nothing.
        alive = live[i].any(dim=1)  # (out,)
        if bool(alive.all()):
            continue  # nothing to remove: skip the copy
        idx = alive.nonzero().flatten()
        out[i] = out[i].index_select(0, idx)
        out[i + 1] = out[i + 1].index_select(1, idx)
    return out


def csr(w: Tensor) -> Tensor:
    """``w`` as CSR with int32 indices (half the index bytes of int64, and ~1.5x faster here)."""
    s = w.to_sparse_csr()
    return torch.sparse_csr_tensor(s.crow_indices().int(), s.col_indices().int(), s.values(),
                                   s.shape, check_invariants=False)


def sparsify(weights: Sequence[Tensor], max_density: float = CSR_MAX_DENSITY) -> list[Tensor]:
    """Store each layer with at most ``max_density`` nonzeros as CSR; leave the rest dense."""
    out = []
    for w in weights:
        density = float(w.count_nonzero()) / max(w.numel(), 1)
        out.append(csr(w) if w.numel() and density <= max_density else w)
    return out


def fast_equivalent(weights: Sequence[Tensor],
                    live: Sequence[Tensor] | None = None) -> list[Tensor]:
    """The cheapest exact stand-in for ``weights`` that :func:`prunelab.model.forward` runs."""
    return sparsify(compact(weights, live))

