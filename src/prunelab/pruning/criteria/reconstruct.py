"""Criteria that re-fit what they keep, so the pruned net computes closer to the dense one.

`obs` is layer-wise Optimal Brain Surgeon in the SparseGPT form (Frantar & Alistarh 2023):
each layer, fed by the already pruned layers before it, drops weights column block by column
block and moves their contribution onto the weights still to come. It keeps each layer's count
but chooses the positions itself. `l2_refit` removes units as `l2` does, then re-fits each
layer's surviving weights by ridge least squares to the dense net's outputs (ReLU-aware), the
"data-driven" reconstruction of ThiNet-style neuron pruning. Both finally re-fit the (never
pruned) output layer to the dense net's logits, and keep, per row, the masked weights wherever
the re-fit would be worse on the calibration inputs. Only calibration images (training split)
are used; with nothing pruned both return the dense weights exactly.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from prunelab.pruning.criteria.base import Context, Criterion
from prunelab.pruning.criteria.magnitude import unit_l2, unit_rms

DAMPING = 0.01  # SparseGPT's default: 1% of the mean Hessian diagonal
BLOCK = 128  # SparseGPT's column block: its share of the count is chosen within the block
RIDGE = 1e-3  # ridge strength per unit of mean Gram diagonal (trace / n); held-out training
RELU_STEPS = 10  # majorise-minimise steps of the ReLU-aware fit (gains flatten after ~10)


def damped_hessian(x: Tensor, damping: float = DAMPING) -> Tensor:
    """H = X^T X + damping * mean(diag) * I, float64: (N, in) -> (in, in).

    The Gram matrix is summed in x's precision (float32 keeps the results, at half the cost);
    the damping and the factorisations that follow are float64, where conditioning matters.
    An input that is zero on every calibration image (a dead unit) gets H_jj = 1 so that H
    stays invertible; its weights change nothing on the calibration set and go first.
    """
    h = (x.T @ x).double()  # (in, in)
    diag = h.diagonal()
    diag[diag == 0] = 1.0
    diag += damping * diag.mean()
    return h


def upper_inverse_cholesky(h: Tensor) -> Tensor:
    """Upper-triangular U with U^T U = H^-1 (SparseGPT's Hinv): (in, in).

    Row j of U holds the OBS update of columns >= j once columns < j are fixed, and U_jj^2 is
    [H_F^-1]_jj over the columns F >= j. One Cholesky of the flipped H: if P H P = L L^T (P the
    reversal) then U = P L^-1 P.
    """
    lower = torch.linalg.cholesky(h.flip(0, 1))
    eye = torch.eye(h.shape[0], dtype=h.dtype, device=h.device)
    return torch.linalg.solve_triangular(lower, eye, upper=False).flip(0, 1)


def obs_saliency(w: Tensor, u: Tensor) -> Tensor:
    """OBS saliency w_ij^2 / [H^-1]_jj: the output error of removing w_ij alone after the
    optimal update of the rest of its row. ``u`` from :func:`upper_inverse_cholesky`, whose
    squared column sums are diag(H^-1); (out, in)."""
    hinv_diag = u.double().square().sum(dim=0)  # (in,)
    return (w.double().square() / hinv_diag[None, :]).to(w.dtype)


def smallest(scores: Tensor, n: int) -> Tensor:
    """Keep-mask dropping the n smallest ``scores`` (a partial sort: topk, not argsort)."""
    keep = torch.ones(scores.numel(), dtype=torch.bool, device=scores.device)
    if n > 0:
        keep[torch.topk(scores.flatten(), n, largest=False, sorted=False).indices] = False
    return keep.view(scores.shape)


def sparsegpt_prune(w: Tensor, u: Tensor, n_zero: int, block: int = BLOCK) -> Tensor:
    """SparseGPT: ``w`` (out, in) with exactly ``n_zero`` zeros, the rest OBS-compensated.

    ``u`` is :func:`upper_inverse_cholesky` of the layer's Hessian, in the working precision.
    The count is spread evenly over the column blocks, as SparseGPT does (each block gets its
    floor share of the running total, so the total is exact); within a block the weights of
    smallest w^2 / U_jj^2 go, judged on the weights as updated by the blocks before (adaptive:
    positions are not the scope's mask).
    Each dropped column's error is moved onto the columns after it. Pruned entries are 0.
    """
    work = w.to(u.dtype).T.contiguous()  # (in, out): a column of w is a contiguous row here
    n_in, done = w.shape[1], 0
    for start in range(0, n_in, block):
        end = min(start + block, n_in)
        w1, u1 = work[start:end], u[start:end, start:end]  # views (b, out), (b, b)
        n_drop, done = n_zero * end // n_in - done, n_zero * end // n_in
        keep = smallest(w1.square() / u1.diagonal().square()[:, None], n_drop)  # (b, out)
        drop = ~keep
        errors = torch.empty_like(w1)  # (b, out): scaled errors, for the lazy update below
        for j in range(end - start):
            err = torch.mul(w1[j], drop[j], out=errors[j]).div_(u1[j, j])  # (out,)
            w1[j:].addr_(u1[j, j:], err, alpha=-1)  # OBS update of the block's later columns
        w1.mul_(keep)  # exactly zero (the update leaves rounding residue)
        work[end:].addmm_(u[start:end, end:].T, errors, alpha=-1)  # (rest, b) @ (b, out)
    return work.T.to(w.dtype)


def better_rows(candidate: Tensor, fallback: Tensor, x: Tensor, target: Tensor,
                relu: bool = False) -> tuple[Tensor, Tensor]:
    """Per output row, ``candidate`` or ``fallback``, whichever has the smaller squared error
    of (relu of) x W^T against ``target`` on these inputs: the weights (out, in) and their
    pre-activations x W^T (N, out).

    Rows are independent, so this makes a reconstruction never worse than masking alone on
    the calibration inputs (sequential OBS can be, on small ill-conditioned layers).
    """
    def act(t: Tensor) -> Tensor:
        return torch.relu(t) if relu else t

    out_c, out_f = x @ candidate.T, x @ fallback.T  # (N, out) each
    goal = act(target)
    use = (act(out_c) - goal).square().sum(0) <= (act(out_f) - goal).square().sum(0)  # (out,)
    return torch.where(use[:, None], candidate, fallback), torch.where(use, out_c, out_f)


def obs_prune_layer(w: Tensor, x: Tensor, n_zero: int, damping: float = DAMPING,
                    u: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """One layer by OBS: exactly ``n_zero`` zeros; no row worse on ``x`` than masking it.

    ``x`` (N, in) are the layer's inputs; ``u`` the inverse Cholesky factor if already known.
    Returns the weights (out, in) and their pre-activations on ``x`` (N, out).
    """
    if u is None:
        u = upper_inverse_cholesky(damped_hessian(x, damping))
    pruned = sparsegpt_prune(w, u.to(w.dtype), n_zero)
    return better_rows(pruned, w * (pruned != 0), x, x @ w.T)


def ridge_gram(a: Tensor, ridge: float) -> tuple[Tensor, Tensor]:
    """a^T a + lam I and lam = ridge * trace(a^T a) / in (1 if ``a`` is all zero, whose fit
    is then the prior): (N, in) -> (in, in), ()."""
    gram = a.T @ a  # (in, in)
    lam = ridge * gram.diagonal().mean()
    lam = torch.where(lam > 0, lam, torch.ones_like(lam))
    gram.diagonal().add_(lam)
    return gram, lam


def ridge_fit(a: Tensor, z: Tensor, prior: Tensor, ridge: float = RIDGE) -> Tensor:
    """argmin_W ||a W^T - z||^2 + lam ||W - prior||^2, lam = ridge * trace(a^T a) / in.

    Shrinking towards ``prior`` (the masked weights) rather than towards zero guarantees the
    fit is never worse on (a, z) than ``prior`` itself. a (N, in), z (N, out), prior
    (out, in) -> (out, in); float64 inside.
    """
    a64, z64, prior64 = a.double(), z.double(), prior.double()
    gram, lam = ridge_gram(a64, ridge)  # (in, in)
    rhs = a64.T @ z64 + lam * prior64.T  # (in, out)
    return torch.linalg.solve(gram, rhs).T.to(prior.dtype)


def relu_fit(a: Tensor, z: Tensor, prior: Tensor, ridge: float = RIDGE,
             steps: int = RELU_STEPS) -> Tensor:
    """Ridge fit of a ReLU layer: only what survives the ReLU has to match.

    Where the dense pre-activation z is <= 0 any prediction <= 0 is exact, so the target there
    is min(prediction, 0): majorise-minimise from the plain ridge fit, each step one product
    with the same inverse Gram matrix (inverted in float64, iterated in a's precision). Rows
    that end worse than ``prior`` (post-ReLU) keep ``prior``.
    a (N, in), z (N, out), prior (out, in) -> (out, in).
    """
    gram, lam = ridge_gram(a.double(), ridge)
    ginv = torch.cholesky_inverse(torch.linalg.cholesky(gram)).to(a.dtype)  # (in, in)
    pull = (lam * prior.double().T).to(a.dtype)  # (in, out): the shrinkage towards prior
    target = z
    for _ in range(steps + 1):
        fit_t = ginv @ (a.T @ target + pull)  # (in, out)
        target = torch.where(z > 0, z, (a @ fit_t).clamp_max(0))  # (N, out)
    return better_rows(fit_t.T, prior.to(a.dtype), a, z, relu=True)[0].to(prior.dtype)


def dense_factor(context: Context, layer: int) -> Tensor:
    """The OBS factor U of ``layer`` on the dense net's calibration patches (float64), cached:
    it ranks (the saliency), and the first layer's is reused for every k (pixels in)."""
    cache, key = context._cache, f"obs_factor_{layer}"  # the context's own cache
    if key not in cache:
        cache[key] = [upper_inverse_cholesky(damped_hessian(context.patches(layer)))]
    return cache[key][0]


def obs_reconstruct(context: Context, masks: Sequence[Tensor]) -> list[Tensor]:
    """Every layer after OBS pruning to its mask's count, and the output layer re-fitted.

    Layer i is pruned on the calibration images as they arrive through the already pruned
    layers 0..i-1, to exactly as many zeros as its mask has. Only that count is taken from the
    mask: OBS spreads it evenly over the column blocks and picks the positions within each, so
    the zeros need not be where the scope's ranking put them. A conv is pruned as its
    (out, in * k * k) matrix over every patch its kernel sees. Layers with nothing to prune are
    left as they are; with nothing pruned at all the output layer too (k = 0: the identity).
    """
    net, new = context.net, []
    a = context.layer_inputs()[0]  # the current layer's input through the pruned net
    n = len(a)
    for i, (layer, keep) in enumerate(zip(net[:-1], masks[:-1], strict=True)):
        n_zero = int((~keep).sum())
        x = layer.patches(a)  # (N * P, fan_in)
        if n_zero == 0:
            w_new, pre = layer.matrix().clone(), x @ layer.matrix().T
        else:
            u = dense_factor(context, 0) if i == 0 else None  # layer 0: the pixels, every k
            w_new, pre = obs_prune_layer(layer.matrix(), x, n_zero, u=u)
        new.append(layer.as_weight(w_new))
        a = layer.activate(layer.from_patches(pre, n))  # (N, out) or (N, out, s, s)
    last = net[-1]
    out = last.weight * masks[-1]
    if any(not bool(m.all()) for m in masks[:-1]):
        out = last.as_weight(ridge_fit(last.patches(a), context.dense_logits(), last.matrix(out)))
    return new + [out]


def refit_reconstruct(context: Context, masks: Sequence[Tensor]) -> list[Tensor]:
    """Remove the masked units, then re-fit each layer's kept units over its kept inputs.

    A layer after a pruned one is fitted so its kept units' outputs match the dense net's
    (whose inputs include the removed units) on the calibration images fed through the already
    re-fitted layers: ReLU-aware for hidden layers, plain ridge on the logits for the output
    layer; a conv is fitted as its (out, in * k * k) matrix over every patch. The first layer
    (pixels in) is only masked. Removed units and the weights that read them stay exactly zero,
    so the net still compacts.
    """
    dense_in = context.layer_inputs()  # each layer's input through the dense net
    a = dense_in[0]  # the current layer's input through the re-fitted net
    n = len(a)
    kept_in = torch.ones(context.net[0].in_units, dtype=torch.bool, device=a.device)
    changed, last, new = False, len(context.net) - 1, []
    for i, (layer, mask) in enumerate(zip(context.net, masks, strict=True)):
        w = layer.matrix()  # (out, fan_in)
        rows = layer.matrix(mask).all(dim=1)  # (out,) kept units: all-or-nothing per unit
        x = layer.patches(a)  # (N * P, fan_in)
        if changed:  # inputs differ from the dense net's: re-fit
            # The kept inputs' columns: every column of the patch that reads a kept unit.
            cols = kept_in.repeat_interleave(layer.fan_in // layer.in_units)  # (fan_in,)
            z = context.patches(i) @ w[rows].T  # (N * P, kept_out): dense pre-activations
            prior = w[rows][:, cols]  # (kept_out, kept_cols): masking alone
            fit = ridge_fit if i == last else relu_fit
            fitted = torch.zeros_like(w)
            fitted[rows.nonzero(), cols.nonzero().T] = fit(x[:, cols], z, prior)
        else:
            fitted = w * layer.matrix(mask)
        new.append(layer.as_weight(fitted))
        a = layer.activate(layer.from_patches(x @ fitted.T, n))  # unused after the last layer
        changed = changed or not bool(rows.all())
        kept_in = rows
    return new


def obs_score(context: Context, layer: int) -> Tensor:
    """OBS saliency on the dense net's calibration patches of ``layer``; weight-shaped."""
    layer_ = context.net[layer]
    return layer_.as_weight(obs_saliency(layer_.matrix(), dense_factor(context, layer)))


OBS = Criterion("obs", "weight", obs_score, reconstruct=obs_reconstruct, needs_calibration=True,
                summary="layer-wise Optimal Brain Surgeon with updates (SparseGPT) + output refit")
L2_REFIT = Criterion("l2_refit", "unit", unit_l2, global_score=unit_rms,
                     reconstruct=refit_reconstruct, needs_calibration=True,
                     summary="l2, then the kept weights re-fitted to the dense outputs (ridge)")
