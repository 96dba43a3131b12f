"""Fast, exact evaluation of pruned nets: dead units removed, very sparse layers as CSR.

A masked net computes as much as the dense one. For testing a pruned copy we evaluate an
equivalent net instead: hidden units that can no longer affect the output are physically
removed (their rows or conv channels, and whatever reads them in the next layer), and linear
layers that stay very sparse are stored as CSR. Both are exact rewrites of the same function,
up to float summation order.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import torch
from torch import Tensor

from prunelab.models.layers import Layer, Net
from prunelab.pruning.masks import live_masks

# torch's CSR matmul beats dense BLAS only when few weights remain; the per-layer timings of
# the `speed` stage (plots/speed.csv, column `formats`) show where CSR wins on this machine.
CSR_MAX_DENSITY = 0.05

# CSR works fine for the one matmul we use it for; the "beta" notice would only be noise.
warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta state")


def compact(net: Sequence[Layer], live: Sequence[Tensor] | None = None) -> Net:
    """Remove units without live weights: a linear layer's rows or a conv's output channels,
    and whatever reads them in the next layer (columns, input channels, flattened blocks).

    ``live`` is :func:`prunelab.pruning.masks.live_masks` of ``net`` when the caller has it.
    """
    live = live_masks(net) if live is None else live
    out = list(net)
    for i in range(len(net) - 1):
        # A unit with a live incoming weight is fed and reaches the output; any other unit
        # either always outputs 0 or feeds only dead ends, so removing it changes nothing.
        alive = out[i].matrix(live[i]).any(dim=1)  # (out,)
        if bool(alive.all()):
            continue  # nothing to remove: skip the copy
        idx = alive.nonzero().flatten()
        out[i] = out[i].with_weight(out[i].weight.index_select(0, idx))
        nxt = out[i + 1]
        grouped = nxt.by_input_unit(nxt.weight).index_select(1, idx)  # (out, kept, per)
        shape = (nxt.units, len(idx), nxt.kernel, nxt.kernel) if nxt.kind == "conv" else \
            (nxt.units, -1)
        out[i + 1] = nxt.with_weight(grouped.reshape(shape))
    return tuple(out)


def csr(w: Tensor) -> Tensor:
    """``w`` as CSR with int32 indices (half the index bytes of int64, and ~1.5x faster here);
    a conv kernel as its (out, in * k * k) matrix."""
    s = w.flatten(1).to_sparse_csr()
    return torch.sparse_csr_tensor(s.crow_indices().int(), s.col_indices().int(), s.values(),
                                   s.shape, check_invariants=False)


def sparsify(net: Sequence[Layer], max_density: float = CSR_MAX_DENSITY) -> Net:
    """Store each linear layer with at most ``max_density`` nonzeros as CSR; leave the rest
    (and every conv: see prunelab.pruning.savings) dense."""
    out = []
    for layer in net:
        w = layer.weight
        density = float(w.count_nonzero()) / max(w.numel(), 1)
        sparse = layer.kind == "linear" and w.numel() and density <= max_density
        out.append(layer.with_weight(csr(w)) if sparse else layer)
    return tuple(out)


def fast_equivalent(net: Sequence[Layer], live: Sequence[Tensor] | None = None) -> Net:
    """The cheapest exact stand-in for ``net`` that :func:`prunelab.models.layers.forward` runs."""
    return sparsify(compact(net, live))
