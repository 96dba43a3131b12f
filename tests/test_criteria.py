"""The pruning criteria: exact counts, controls, and what each reconstruction promises.

Tiny random nets (a dozen inputs) keep these fast; Context takes any net (here MLPs built with
``mlp_layers``; tests/test_layers.py runs the same checks on conv nets).
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor

from prunelab.models.layers import mlp_layers, weights
from prunelab.pruning.criteria import calibrated, reconstruct
from prunelab.pruning.criteria.base import Context, Criterion
from prunelab.pruning.criteria.registry import CRITERIA, check_prune
from prunelab.pruning.masks import Pruner, apply_masks, drop_smallest, n_pruned

SIZES = (12, 10, 8, 6, 3)  # in, three hidden layers, classes
ALL = [(g, c) for g, named in CRITERIA.items() for c in named.values()]
IDS = [f"{g}-{c.name}" for g, c in ALL]
SETTINGS = settings(max_examples=25, deadline=None)


def tiny_context(seed: int, sizes: tuple[int, ...] = SIZES, n: int = 40,
                 dtype: torch.dtype = torch.float32) -> Context:
    """A random MLP and ``n`` random calibration inputs with random labels."""
    g = torch.Generator().manual_seed(seed)
    ws = [torch.randn(o, i, generator=g, dtype=dtype) / i**0.5
          for i, o in zip(sizes, sizes[1:])]  # (out, in) per layer
    x = torch.randn(n, sizes[0], generator=g, dtype=dtype)
    y = torch.randint(0, sizes[-1], (n,), generator=g)
    return Context(mlp_layers(ws), x, y, seed=seed)


def pruned(criterion: Criterion, context: Context, scope: str, k: float) -> list[Tensor]:
    """What the sweep does at one k: masks, then reconstruct when the criterion does."""
    masks = Pruner(context.net, criterion.granularity, scope, criterion, context).masks(k)
    if criterion.reconstruct is not None:
        return criterion.reconstruct(context, masks)
    return weights(apply_masks(context.net, masks))


def test_registry_is_keyed_by_granularity_and_name() -> None:
    """params.yaml's criteria are checked against the registry itself (check_prune): each entry
    sits under its own granularity and name."""
    for granularity, named in CRITERIA.items():
        assert all(c.granularity == granularity and c.name == name for name, c in named.items())


def test_check_prune_names_the_key_the_value_and_the_registered_criteria() -> None:
    from prunelab.config import PruneConfig
    from prunelab.errors import ParamsError

    check_prune(PruneConfig(weight_criteria=tuple(CRITERIA["weight"]),
                            unit_criteria=tuple(CRITERIA["unit"])))
    with pytest.raises(ParamsError) as err:
        check_prune(PruneConfig(unit_criteria=("l2", "snip")))
    known = ", ".join(CRITERIA["unit"])
    assert str(err.value) == ("params.yaml: prune.unit_criteria[1] = 'snip' is not allowed: a "
                              f"non-empty list of distinct names from: {known}")


@SETTINGS
@given(k=st.floats(0.0, 0.95), seed=st.integers(0, 10_000))
def test_layer_scope_prunes_exact_count(k: float, seed: int) -> None:
    """Every criterion drops floor(k * n) weights (or rows) per hidden layer, even after
    reconstructing; units go whole (dropped rows all zero, kept rows not), and a re-fit
    never feeds on a removed unit (its outgoing column stays zero)."""
    context = tiny_context(seed)
    for granularity, criterion in ALL:
        net = pruned(criterion, context, "layer", k)
        for i, w in enumerate(net[:-1]):
            if granularity == "weight":
                assert int((w == 0).sum()) == n_pruned(k, w.numel()), (criterion.name, i)
            else:
                dead = (w == 0).all(dim=1)  # (out,)
                assert int(dead.sum()) == n_pruned(k, w.shape[0]), (criterion.name, i)
                if criterion.reconstruct is not None:  # re-fits only over the kept inputs
                    assert bool((net[i + 1][:, dead] == 0).all()), (criterion.name, i)
                assert bool((w[~dead] != 0).any(dim=1).all()), (criterion.name, i)


@pytest.mark.parametrize(("granularity", "criterion"), ALL, ids=IDS)
@pytest.mark.parametrize("scope", ["layer", "global"])
def test_masks_leave_output_layer_and_units_whole(granularity: str, criterion: Criterion,
                                                  scope: str) -> None:
    """The output layer's mask is all True (obs and l2_refit may still re-fit its weights to
    the dense logits: that is reconstruction, not pruning); unit masks are whole rows."""
    context = tiny_context(3)
    masks = Pruner(context.net, granularity, scope, criterion, context).masks(0.6)
    assert bool(masks[-1].all())
    assert any(not bool(m.all()) for m in masks[:-1])
    if granularity == "unit":
        for m in masks:
            assert bool((m.all(dim=1) | ~m.any(dim=1)).all())
    if criterion.reconstruct is None:
        assert torch.equal(pruned(criterion, context, scope, 0.6)[-1], context.weights[-1])


@pytest.mark.parametrize(("granularity", "criterion"), ALL, ids=IDS)
@pytest.mark.parametrize("scope", ["layer", "global"])
def test_zero_sparsity_is_identity(granularity: str, criterion: Criterion, scope: str) -> None:
    """k = 0 returns the dense weights exactly, reconstruction included."""
    context = tiny_context(4)
    net = pruned(criterion, context, scope, 0.0)
    assert all(torch.equal(a, b) for a, b in zip(net, context.weights, strict=True))


@pytest.mark.parametrize("granularity", ["weight", "unit"])
def test_random_is_reproducible_per_seed(granularity: str) -> None:
    """The random control draws from the run's seed: same seed, same masks; another, not."""
    criterion = CRITERIA[granularity]["random"]
    net = tiny_context(0, sizes=(40, 40, 40, 3)).net

    def masks(seed: int) -> list[Tensor]:
        context = Context(net, seed=seed)
        return Pruner(net, granularity, "layer", criterion, context).masks(0.5)

    assert all(torch.equal(a, b) for a, b in zip(masks(1), masks(1), strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(masks(1), masks(2), strict=True))


@SETTINGS
@given(k=st.sampled_from([0.25, 0.5, 0.75]), seed=st.integers(0, 10_000),
       scope=st.sampled_from(["layer", "global"]))
def test_largest_keeps_what_magnitude_drops(k: float, seed: int, scope: str) -> None:
    """largest at k keeps exactly what magnitude (l2) drops at 1 - k (k * n integral)."""
    context = tiny_context(seed, sizes=(8, 12, 16, 8, 3))  # row and weight counts: 4 | n
    for granularity, study in (("weight", "magnitude"), ("unit", "l2")):
        if granularity == "unit" and scope == "global":
            continue  # global unit ranking protects each layer's best unit: not symmetric
        largest = Pruner(context.net, granularity, scope,
                         CRITERIA[granularity]["largest"], context).masks(k)
        smallest = Pruner(context.net, granularity, scope,
                          CRITERIA[granularity][study], context).masks(1 - k)
        for a, b in zip(largest[:-1], smallest[:-1], strict=True):
            assert torch.equal(a, ~b)


@SETTINGS
@given(share=st.integers(0, 9), seed=st.integers(0, 10_000))
def test_wanda_with_equal_input_norms_is_row_magnitude(share: int, seed: int) -> None:
    """With every input of norm 1, Wanda drops each row's smallest |w|, and exactly
    floor(k * fan-in) from every row when that is integral."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(8, 10, generator=g)
    x = torch.linalg.qr(torch.randn(30, 10, generator=g, dtype=torch.float64))[0].float()
    context = Context(mlp_layers([w, torch.randn(3, 8, generator=g)]), x,
                      torch.zeros(30, dtype=torch.long))
    k = share / 10  # a decimal, so floor(k * 10) is share
    keep = Pruner(context.net, "weight", "layer", calibrated.WANDA, context).masks(k)[0]
    for row, kept in zip(w, keep, strict=True):
        assert torch.equal(kept, drop_smallest(row.abs(), share))


@SETTINGS
@given(k=st.floats(0.0, 0.95), seed=st.integers(0, 10_000),
       damping=st.sampled_from([0.0, 0.01, 0.1]))
def test_obs_with_identity_hessian_is_magnitude(k: float, seed: int, damping: float) -> None:
    """X^T X = I: OBS ranks as |w| and moves no surviving weight (one column block)."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(10, 12, generator=g, dtype=torch.float64)
    x = torch.linalg.qr(torch.randn(30, 12, generator=g, dtype=torch.float64))[0]  # (30, 12)
    context = Context(mlp_layers([w, torch.randn(3, 10, generator=g, dtype=torch.float64)]),
                      x, torch.zeros(30, dtype=torch.long))
    magnitude = Pruner(context.net, "weight", "layer", CRITERIA["weight"]["magnitude"],
                       context).masks(k)[0]
    obs = Pruner(context.net, "weight", "layer", reconstruct.OBS, context).masks(k)[0]
    assert torch.equal(obs, magnitude)
    n_zero = int((~magnitude).sum())
    for new in (reconstruct.obs_prune_layer(w, x, n_zero, damping)[0],
                reconstruct.OBS.reconstruct(context, [magnitude, torch.ones(3, 10).bool()])[0]):
        assert torch.equal(new != 0, magnitude)
        torch.testing.assert_close(new, w * magnitude, rtol=1e-12, atol=1e-12)


def random_layer(seed: int, out: int, n_in: int, n: int, correlated: bool
                 ) -> tuple[Tensor, Tensor]:
    """Weights (out, in) and inputs (n, in), float64; correlated inputs make OBS work hard."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(out, n_in, generator=g, dtype=torch.float64)
    x = torch.randn(n, n_in, generator=g, dtype=torch.float64)
    if correlated:
        x = x @ torch.randn(n_in, n_in, generator=g, dtype=torch.float64)
    return w, x


def squared_error(x: Tensor, w: Tensor, target: Tensor, relu: bool = False) -> float:
    """||(relu of) x w^T - target||^2 over the inputs."""
    out = x @ w.T
    return float((torch.relu(out) - torch.relu(target) if relu else out - target).square().sum())


LAYERS = dict(seed=st.integers(0, 10_000), out=st.integers(1, 6), n_in=st.integers(1, 12),
              n=st.integers(1, 30), correlated=st.booleans())


@settings(max_examples=100, deadline=None)
@given(**LAYERS, share=st.floats(0.0, 1.0), damping=st.sampled_from([1e-6, 0.01, 0.1]))
def test_obs_layer_never_worse_than_masking(seed: int, out: int, n_in: int, n: int,
                                            correlated: bool, share: float,
                                            damping: float) -> None:
    """The per-layer OBS update keeps the count and never has a larger output error on its
    inputs than zeroing the same weights alone (without the per-row fallback it can)."""
    w, x = random_layer(seed, out, n_in, n, correlated)
    n_zero = int(share * w.numel())
    new, pre = reconstruct.obs_prune_layer(w, x, n_zero, damping)
    torch.testing.assert_close(pre, x @ new.T)
    assert int((new == 0).sum()) == n_zero
    target = x @ w.T
    masked = squared_error(x, w * (new != 0), target)
    assert squared_error(x, new, target) <= masked * (1 + 1e-9) + 1e-9


@settings(max_examples=100, deadline=None)
@given(**LAYERS, relu=st.booleans(), ridge=st.sampled_from([1e-6, 1e-3, 1.0]))
def test_refit_never_worse_than_masking(seed: int, out: int, n_in: int, n: int,
                                        correlated: bool, relu: bool, ridge: float) -> None:
    """l2_refit's per-layer fits (ridge on logits, ReLU-aware on hidden units) are never
    worse on the calibration inputs than the masked weights they start from."""
    prior, a = random_layer(seed, out, n_in, n, correlated)  # masked weights, pruned inputs
    g = torch.Generator().manual_seed(seed + 1)
    z = a @ (prior + torch.randn(prior.shape, generator=g, dtype=torch.float64)).T  # (n, out)
    fit = (reconstruct.relu_fit if relu else reconstruct.ridge_fit)(a, z, prior, ridge)
    assert fit.shape == prior.shape
    before = squared_error(a, prior, z, relu)
    assert squared_error(a, fit, z, relu) <= before * (1 + 1e-9) + 1e-9


def test_obd_fisher_is_mean_squared_per_sample_gradient() -> None:
    """The empirical Fisher diagonal from one backward pass equals the brute-force mean of
    squared per-sample weight gradients."""
    context = tiny_context(5, n=6, dtype=torch.float64)
    fisher = calibrated.empirical_fisher(context)
    brute = [torch.zeros_like(w) for w in context.weights]
    for x, y in zip(context.calibration, context.labels, strict=True):
        ws = [w.clone().requires_grad_() for w in context.weights]
        a = x[None, :]
        for i, w in enumerate(ws):
            a = a @ w.T if i == len(ws) - 1 else torch.relu(a @ w.T)
        loss = torch.nn.functional.cross_entropy(a, y[None])
        for b, grad in zip(brute, torch.autograd.grad(loss, ws), strict=True):
            b += grad.square() / len(context.labels)
    for f, b in zip(fisher, brute, strict=True):
        torch.testing.assert_close(f, b)


def test_activation_global_is_scale_free() -> None:
    """Scaling one layer's weights (and so its activations) leaves its global scores alone."""
    context = tiny_context(6)
    scaled = Context(mlp_layers([context.weights[0] * 7.0, *context.weights[1:]]),
                     context.calibration, context.labels)
    torch.testing.assert_close(calibrated.activation_global(scaled, 0),
                               calibrated.activation_global(context, 0))
    torch.testing.assert_close(calibrated.mean_activation(scaled, 0),
                               7.0 * calibrated.mean_activation(context, 0))
