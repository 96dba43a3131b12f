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

from prunelab.models.layers import Layer
from prunelab.pruning.criteria.base import Context, Criterion


def input_norms(context: Context, layer: int) -> Tensor:
    """||x_j||_2 of each input of ``layer`` over the calibration images (and, for a conv, over
    every position its kernel visits): (fan_in,)."""
    return torch.linalg.vector_norm(context.patches(layer), dim=0)  # (N * P, fan_in) -> (fan_in,)


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
    layer_ = context.net[layer]
    w = layer_.matrix()  # (out, fan_in): a conv's row is one output channel's kernel stack
    return layer_.as_weight(row_ranks(w.abs() * input_norms(context, layer)[None, :]))


def wanda_global(context: Context, layer: int) -> Tensor:
    """Row rank / fan-in: a global ranking then takes the same share from every row of every
    layer, i.e. it reproduces the layer-scope result (up to rounding); (out, in)."""
    return wanda_score(context, layer) / context.net[layer].fan_in


def empirical_fisher(context: Context) -> list[Tensor]:
    """Diagonal empirical Fisher of every layer's weights, shaped like them.

    One forward/backward of the summed cross-entropy over the dense net gives each sample's
    gradient w.r.t. the pre-activations, delta. A linear layer's per-sample weight gradient is
    delta x^T, so the mean of its square is (delta^2)^T (x^2) / N, exact and never
    materialising N gradient matrices. A conv shares its kernel over positions, so its
    per-sample gradient sums delta_p x_p^T over the positions p first (small: out x fan_in per
    sample). Cached on the context (one pass for all layers).
    """
    cache = context._cache  # the context's own cache, keyed by what is stored
    if "fisher" not in cache:
        if context.calibration is None or context.labels is None:
            raise ValueError("obd needs calibration images and labels; the context has none")
        net = [layer.with_weight(layer.weight.detach().requires_grad_()) for layer in context.net]
        inputs, pre = [], []
        a = context.calibration  # (N, 784)
        for i, layer in enumerate(net):
            inputs.append(a.detach())
            z = layer.pre_activation(a)  # (N, out) or (N, out, s, s)
            pre.append(z)
            a = layer.activate(z) if i < len(net) - 1 else z
        loss = F.cross_entropy(a, context.labels, reduction="sum")  # sum: per-sample grads
        deltas = torch.autograd.grad(loss, pre)
        n = context.calibration.shape[0]
        cache["fisher"] = [fisher_diagonal(layer, d, x, n)
                           for layer, d, x in zip(context.net, deltas, inputs, strict=True)]
    return cache["fisher"]


def fisher_diagonal(layer: Layer, delta: Tensor, x: Tensor, n: int) -> Tensor:
    """Mean squared per-sample gradient of ``layer``'s weight, from the gradients ``delta``
    w.r.t. its pre-activations and its inputs ``x`` on ``n`` samples; weight-shaped."""
    if layer.kind != "conv":  # (out, N) @ (N, in) -> (out, in)
        return (delta.square().T @ x.flatten(1).square()) / n
    patches = layer.patches(x).view(n, layer.positions, layer.fan_in)  # (N, P, fan_in)
    d = delta.flatten(2)  # (N, out, P)
    grads = torch.bmm(d, patches)  # (N, out, fan_in): each sample's kernel gradient
    return layer.as_weight(grads.square().mean(dim=0))


def obd_score(context: Context, layer: int) -> Tensor:
    """Optimal Brain Damage saliency 1/2 h_ii w_i^2, h = empirical Fisher diagonal: (out, in).

    It estimates the loss increase of removing one weight, so it is comparable across layers
    and serves the global scope as it is.
    """
    w = context.weights[layer]
    return 0.5 * empirical_fisher(context)[layer] * w.square()  # weight-shaped


def mean_activation(context: Context, layer: int) -> Tensor:
    """Mean post-ReLU activation (= mean |activation|) of each unit of ``layer`` over the
    calibration images (and a conv channel's pooled positions): (out,)."""
    out = context.layer_inputs()[layer + 1]  # the layer's output: (N, out) or (N, out, s, s)
    return out.mean(dim=0) if out.dim() == 2 else out.mean(dim=(0, 2, 3))


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
