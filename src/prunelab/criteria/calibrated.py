"""Criteria that also look at calibration inputs: training images passed through the dense net.

`wanda` weighs |w| by the norm of the input it multiplies (Sun et al. 2023), `obd` is Optimal
Brain Damage (LeCun et al. 1990) with the empirical Fisher as its Hessian, `activation` ranks
units by how much they fire. All statistics come from ``Context.calibration`` (training images
only) through the *dense* net; none of these criteria changes a surviving weight.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from prunelab.criteria.base import Context, Criterion


def input_norms(context: Context, layer: int) -> Tensor:
    """||x_j||_2 of each input of ``layer`` over the calibration images: (in,)."""
    return torch.linalg.vector_norm(context.layer_inputs()[layer], dim=0)  # (N, in) -> (in,)


def row_ranks(scores: Tensor) -> Tensor:
    """Each entry's rank within its row, 0 = smallest (ties by position), as float: (out, in)."""
    return scores.argsort(dim=1, stable=True).argsort(dim=1).float()


def wanda_score(context: Context, layer: int) -> Tensor:
    """Wanda: the within-row rank of |w_ij| * ||x_j||_2, so each row is pruned separately.

    Wanda compares weights only within an output row. Returning the row rank (rather than the
    product) lets the scope step's stable sort drop every row's rank-0 entry, then every row's
    rank-1 entry, ...: rows lose floor or ceil of their share while the layer loses exactly
    floor(k * n). Shape (out, in).
    """
    w = context.weights[layer]
    return row_ranks(w.abs() * input_norms(context, layer)[None, :])


def wanda_global(context: Context, layer: int) -> Tensor:
    """Row rank / fan-in: a global ranking then takes the same share from every row of every
    layer, i.e. it reproduces the layer-scope result (up to rounding); (out, in)."""
    w = context.weights[layer]
    return wanda_score(context, layer) / w.shape[1]


def empirical_fisher(context: Context) -> list[Tensor]:
    """Diagonal empirical Fisher of every layer's weights: (out_i, in_i) per layer.

    One forward/backward of the summed cross-entropy over the dense net gives each sample's
    gradient w.r.t. the pre-activations, delta (N, out); the per-sample weight gradient is
    delta x^T, so the mean of its square is (delta^2)^T (x^2) / N, exact and never
    materialising N gradient matrices. Cached on the context (one pass for all layers).
    """
    cache = context._cache  # the context's own cache, keyed by what is stored
    if "fisher" not in cache:
        if context.calibration is None or context.labels is None:
            raise ValueError("obd needs calibration images and labels; the context has none")
        ws = [w.detach().requires_grad_() for w in context.weights]  # a graph to the pre-acts
        inputs, pre = [], []
        a = context.calibration  # (N, 784)
        for i, w in enumerate(ws):
            inputs.append(a.detach())
            z = a @ w.T  # (N, out_i)
            pre.append(z)
            a = torch.relu(z) if i < len(ws) - 1 else z
        loss = F.cross_entropy(a, context.labels, reduction="sum")  # sum: per-sample grads
        deltas = torch.autograd.grad(loss, pre)
        n = context.calibration.shape[0]
        cache["fisher"] = [(d.square().T @ x.square()) / n  # (out, N) @ (N, in) -> (out, in)
                           for d, x in zip(deltas, inputs, strict=True)]
    return cache["fisher"]


def obd_score(context: Context, layer: int) -> Tensor:
    """Optimal Brain Damage saliency 1/2 h_ii w_i^2, h = empirical Fisher diagonal: (out, in).

    It estimates the loss increase of removing one weight, so it is comparable across layers
    and serves the global scope as it is.
    """
    w = context.weights[layer]
    return 0.5 * empirical_fisher(context)[layer] * w.square()


def mean_activation(context: Context, layer: int) -> Tensor:
    """Mean post-ReLU activation (= mean |activation|) of each unit of ``layer``: (out,)."""
    return context.layer_inputs()[layer + 1].mean(dim=0)  # (N, out) -> (out,); layer's output


def activation_global(context: Context, layer: int) -> Tensor:
    """Mean activation over the layer's mean: scale-free, so layers compare: (out,)."""
    score = mean_activation(context, layer)
    return score / score.mean().clamp_min(torch.finfo(score.dtype).tiny)  # all-dead layer: 0s


WANDA = Criterion("wanda", "weight", wanda_score, global_score=wanda_global,
                  needs_calibration=True,
                  summary="smallest |w| * input norm first, per output row (Wanda)")
OBD = Criterion("obd", "weight", obd_score, needs_calibration=True,
                summary="smallest Fisher saliency h w^2 / 2 first (Optimal Brain Damage)")
ACTIVATION = Criterion("activation", "unit", mean_activation, global_score=activation_global,
                       needs_calibration=True,
                       summary="units with the smallest mean activation first")
