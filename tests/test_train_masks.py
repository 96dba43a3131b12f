"""Training under a keep-mask (issue 11, part 1): pruned weights stay exactly zero, an all-ones
mask is the unmasked run, and a checkpoint at a step is the net after that step."""

from __future__ import annotations

import pytest
import torch

from prunelab.config import LeNet5Config, MLPConfig, ModelConfig, TrainConfig
from prunelab.models.networks import build_model
from prunelab.pruning.masks import Pruner, apply_masks, live_masks
from prunelab.training.loop import train

CPU = torch.device("cpu")
CFG = TrainConfig(epochs=2, lr=0.01, batch_size=25, seed=3)
ARCHS = {
    "mlp": ModelConfig(arch="mlp", mlp=MLPConfig(hidden=(24, 16))),
    "lenet5": ModelConfig(arch="lenet5", lenet5=LeNet5Config(channels=(3, 4), fc=(12,))),
}


def data(n: int = 200) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(11)
    x = torch.randn(n, 784, generator=g)
    return x, torch.randint(0, 10, (n,), generator=g), x[:50], torch.randint(0, 10, (50,))


def masks_for(model: torch.nn.Module, granularity: str, k: float) -> list[torch.Tensor]:
    net = tuple(layer.with_weight(layer.weight.detach()) for layer in model.layers())
    return Pruner(net, granularity, "layer").masks(k)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize(("granularity", "k"), [("weight", 0.5), ("weight", 0.9), ("unit", 0.5)])
def test_masked_training_keeps_pruned_weights_exactly_zero(arch: str, granularity: str,
                                                           k: float) -> None:
    """Every masked weight is a bit-exact 0.0 after training (not merely small), most live
    weights moved (a kept weight that reads a pruned unit has no gradient; nor has a unit that
    is dead on this data), and the loss is finite."""
    model = build_model(ARCHS[arch], 0, CPU)
    masks = masks_for(model, granularity, k)
    before = [w.detach().clone() for w in model.weights()]
    live = live_masks(apply_masks(tuple(model.layers()), masks))  # kept and connected
    result = train(model, *data(), CFG, progress=False, masks=masks)
    for w, m, w0, alive in zip(model.weights(), masks, before, live, strict=True):
        assert bool((w.detach()[~m] == 0).all())
        assert int((w.detach()[alive] != w0[alive]).sum()) > 0.5 * int(alive.sum())
    assert all(torch.isfinite(torch.tensor(result.step_losses)))


def test_adam_cannot_bring_masked_weights_back() -> None:
    """Unmasked, the same training moves those weights away from 0 (their gradients are not
    0); masked, Adam's update of them is exactly 0 at every step, because their gradients are
    zeroed before it and its moments for them therefore stay 0."""
    model = build_model(ARCHS["mlp"], 0, CPU)
    masks = masks_for(model, "weight", 0.7)
    train(model, *data(), CFG, progress=False, masks=masks)
    assert bool((model.weights()[0].detach()[~masks[0]] == 0).all())
    other = build_model(ARCHS["mlp"], 0, CPU)
    with torch.no_grad():
        for w, m in zip(other.weights(), masks, strict=True):
            w.mul_(m)  # the same start, but trained without the mask
    train(other, *data(), CFG, progress=False)
    assert int((other.weights()[0].detach()[~masks[0]] != 0).sum()) > 0


@pytest.mark.parametrize("arch", ARCHS)
def test_all_ones_mask_is_unmasked_training(arch: str) -> None:
    """Multiplying by 1 is exact: an all-ones mask gives bit-identical weights and losses."""
    plain, masked = (build_model(ARCHS[arch], 0, CPU) for _ in range(2))
    a = train(plain, *data(), CFG, progress=False)
    ones = [torch.ones_like(w, dtype=torch.bool) for w in masked.weights()]
    b = train(masked, *data(), CFG, progress=False, masks=ones)
    assert a.step_losses == b.step_losses
    for u, v in zip(plain.weights(), masked.weights(), strict=True):
        assert torch.equal(u, v)


def test_checkpoint_is_the_net_after_that_step() -> None:
    """checkpoint_at = one epoch's steps gives the weights a one-epoch run ends with; 0 gives
    the initial (masked) weights; None keeps nothing."""
    x, y, xt, yt = data()
    steps_per_epoch = len(x) // CFG.batch_size
    long = build_model(ARCHS["mlp"], 0, CPU)
    result = train(long, x, y, xt, yt, CFG, progress=False, checkpoint_at=steps_per_epoch)
    short = build_model(ARCHS["mlp"], 0, CPU)
    train(short, x, y, xt, yt, TrainConfig(epochs=1, lr=CFG.lr, batch_size=CFG.batch_size,
                                           seed=CFG.seed), progress=False)
    assert result.checkpoint is not None
    for c, w in zip(result.checkpoint, short.weights(), strict=True):
        assert torch.equal(c, w.detach())
    start = build_model(ARCHS["mlp"], 0, CPU)
    init = [w.detach().clone() for w in start.weights()]
    masks = masks_for(start, "weight", 0.5)
    first = train(start, x, y, xt, yt, CFG, progress=False, masks=masks, checkpoint_at=0)
    assert first.checkpoint is not None
    for c, w0, m in zip(first.checkpoint, init, masks, strict=True):
        assert torch.equal(c, w0 * m)
    assert train(build_model(ARCHS["mlp"], 0, CPU), x, y, xt, yt, CFG,
                 progress=False).checkpoint is None


def test_masked_training_is_deterministic() -> None:
    """Same seed, same masks: the same weights, bit for bit."""
    runs = []
    for _ in range(2):
        model = build_model(ARCHS["lenet5"], 0, CPU)
        train(model, *data(), CFG, progress=False, masks=masks_for(model, "weight", 0.8))
        runs.append([w.detach().clone() for w in model.weights()])
    for u, v in zip(*runs, strict=True):
        assert torch.equal(u, v)


@pytest.mark.parametrize("step", [-1, 2 * 8 + 1])
def test_checkpoint_outside_the_run_is_refused(step: int) -> None:
    """A rewind step the run never reaches is an error, not a silent None."""
    with pytest.raises(ValueError, match="checkpoint_at"):
        train(build_model(ARCHS["mlp"], 0, CPU), *data(), CFG, progress=False,
              checkpoint_at=step)


def test_masked_weights_are_positive_zeros() -> None:
    """Masked to +0.0 (w * 0 would keep a negative weight's sign bit, and the file's bytes)."""
    model = build_model(ARCHS["mlp"], 0, CPU)
    masks = masks_for(model, "weight", 0.5)
    train(model, *data(), CFG, progress=False, masks=masks)
    for w, m in zip(model.weights(), masks, strict=True):
        assert not bool(torch.signbit(w.detach()[~m]).any())


@pytest.mark.parametrize(("eval_every", "passes"), [(None, 2), (8, 2), (4, 4), (3, 7), (5, 5)])
def test_an_epoch_ending_on_a_test_pass_is_not_tested_twice(
        eval_every: int | None, passes: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each epoch's test accuracy is the test of the net as the epoch leaves it: a fresh pass,
    or the mid-training pass at that same step, never both. 2 epochs of 8 steps: eval_every=4
    tests at 4, 8, 12, 16 and nothing more; eval_every=3 at 3, 6, ..., 15, 16 and once more at
    the end of epoch 1 (step 8). The numbers are those of a fresh pass over the weights."""
    from prunelab.training import loop

    calls: list[int] = []
    real = loop.model_accuracy

    def counted(*args: object, **kwargs: object) -> float:
        calls.append(1)
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(loop, "model_accuracy", counted)
    x, y, xt, yt = data()
    model = build_model(ARCHS["mlp"], 0, CPU)
    result = train(model, x, y, xt, yt, CFG, progress=False, eval_every=eval_every)
    assert len(calls) == passes
    evals = dict(result.evals)
    for epoch, step in ((0, 8), (1, 16)):
        if step in evals:
            assert result.history[epoch].test_accuracy == evals[step]
    model.eval()
    assert result.history[-1].test_accuracy == round(real(model, xt, yt), 4)
