"""Retraining (issue 11) on tiny seeded nets and random data: IMP's masks, rewinding, the
controls, fine-tuning's compaction, the round store, and the new params sections.

Fast: no MNIST, no DVC. Training runs are a few dozen steps of a 784-24-16-10 MLP (or a
three-channel LeNet-5) on random tensors.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from prunelab.config import (
    DataConfig,
    LeNet5Config,
    MLPConfig,
    ModelConfig,
    Params,
    PruneConfig,
    TrainConfig,
    train_steps,
)
from prunelab.errors import ParamsError
from prunelab.models.layers import forward, mlp_layers, weights, with_weights
from prunelab.models.networks import Network, build_model, lenet5_geometry
from prunelab.pruning.masks import Pruner, apply_masks, live_masks
from prunelab.runtime.rng import IMP_CONTROL, derived_seed
from prunelab.studies import retraining as retrain
from prunelab.studies.imp import (
    CONTROL_SEEDS,
    Outcome,
    Round,
    RoundStore,
    dense_round,
    fingerprint,
    next_round,
    run,
)
from prunelab.studies.imp_outputs import ImpConfig
from prunelab.studies.registry import parse_params
from prunelab.studies.retraining import (
    Split,
    fine_tune,
    imp_masks,
    imp_sizes,
    masked_train,
    random_masks,
    reinitialised,
    remaining,
    sized_masks,
)
from prunelab.training.loop import train

CPU = torch.device("cpu")
ROOT = Path(__file__).resolve().parents[1]
ARCHS = {
    "mlp": ModelConfig(arch="mlp", mlp=MLPConfig(hidden=(24, 16))),
    "lenet5": ModelConfig(arch="lenet5", lenet5=LeNet5Config(channels=(3, 4), fc=(12,))),
}
TRAIN = TrainConfig(epochs=2, lr=0.01, batch_size=25, seed=3)  # 200 images: 16 steps
STEPS = 16


def split(n: int = 200, n_test: int = 60) -> Split:
    g = torch.Generator().manual_seed(11)
    return Split(torch.randn(n, 784, generator=g), torch.randint(0, 10, (n,), generator=g),
                 torch.randn(n_test, 784, generator=g),
                 torch.randint(0, 10, (n_test,), generator=g))


def initial(arch: str = "mlp", seed: int = 0) -> tuple:
    """A freshly initialised net as a layer description (detached weights)."""
    model = build_model(ARCHS[arch], seed, CPU)
    return tuple(layer.with_weight(layer.weight.detach().clone()) for layer in model.layers())


def params(rewind: int | str = "init", controls: tuple[str, ...] = ("reinit", "random_mask"),
           rounds: int = 2, rate: float = 0.3, output_rate: float = 0.15,
           eval_every: int = 5, arch: str = "mlp") -> Params:
    """Params for the tiny runs (built directly: the values are valid by construction)."""
    return Params(data=DataConfig(train_size=200, test_size=60), model=ARCHS[arch],
                  train=TRAIN, prune=PruneConfig(),
                  sections={"imp": ImpConfig(rounds=rounds, rate=rate, output_rate=output_rate,
                                             rewind=rewind, controls=controls,
                                             eval_every=eval_every)})


def assert_same(a, b) -> None:  # noqa: ANN001 -- sequences of tensors
    assert len(a) == len(b)
    for u, v in zip(a, b, strict=True):
        assert u.dtype == v.dtype and u.shape == v.shape
        assert torch.equal(u, v)


def assert_bits(a, b) -> None:  # noqa: ANN001 -- float tensors, compared bit for bit (-0.0)
    for u, v in zip(a, b, strict=True):
        assert torch.equal(u.view(torch.int32), v.view(torch.int32))


def same_outcome(a: Outcome, b: Outcome) -> bool:
    """Everything but the wall-clock seconds."""
    return (a.accuracy, a.best_step, a.evals) == (b.accuracy, b.best_step, b.evals)


# --- 1. IMP's masks ------------------------------------------------------------------------------

SHAPES = ((12, 20), (9, 12), (4, 9))  # two hidden layers and the output layer


def floor_share(rate: float, n: int) -> int:
    """floor(rate x n) with the rate read as the decimal written (0.29 x 100 = 29)."""
    return math.floor(Decimal(repr(rate)) * n)


@settings(max_examples=150, deadline=None)
@given(rate=st.floats(0.001, 0.999), output_rate=st.floats(0.001, 0.999),
       seed=st.integers(0, 2**31 - 1), n_rounds=st.integers(1, 6), ties=st.booleans())
def test_imp_prunes_floor_rate_of_remaining_smallest_first_nested(
        rate: float, output_rate: float, seed: int, n_rounds: int, ties: bool) -> None:
    """Each round drops exactly floor(rate x remaining) of every hidden layer's remaining
    weights (the output layer: output_rate), those of smallest |w| among the remaining; the
    new mask is inside the old one. The weights change between rounds (retraining), and may
    tie (integers) -- the count stays exact."""
    g = torch.Generator().manual_seed(seed)
    masks = [torch.ones(s, dtype=torch.bool) for s in SHAPES]
    for _ in range(n_rounds):
        if ties:
            ws = [torch.randint(-3, 4, s, generator=g).float() for s in SHAPES]
        else:
            ws = [torch.randn(s, generator=g) for s in SHAPES]
        ws = [w * m for w, m in zip(ws, masks, strict=True)]  # a trained ticket: pruned are 0
        new = imp_masks(mlp_layers(ws), masks, rate, output_rate)
        assert remaining(new) == imp_sizes(remaining(masks), rate, output_rate)  # no training
        for i, (w, old, keep) in enumerate(zip(ws, masks, new, strict=True)):
            share = output_rate if i == len(SHAPES) - 1 else rate
            before = int(old.sum())
            assert keep.dtype == torch.bool and keep.shape == old.shape
            assert int(keep.sum()) == before - floor_share(share, before), (i, share, before)
            assert not bool((keep & ~old).any())  # nested: new is a subset of old
            dropped, kept = w[old & ~keep].abs(), w[keep].abs()
            if len(dropped) and len(kept):
                assert float(dropped.max()) <= float(kept.min())
        masks = new


def test_imp_masks_follow_remaining_not_total() -> None:
    """The share is of the *remaining* weights: 0.8^r of each hidden layer after r rounds
    (with the floors), not a fixed count per round."""
    masks = [torch.ones(s, dtype=torch.bool) for s in ((100, 10), (10, 100))]
    expected = [1000, 1000]
    g = torch.Generator().manual_seed(0)
    for _ in range(5):
        ws = [torch.randn(m.shape, generator=g) * m for m in masks]
        masks = imp_masks(mlp_layers(ws), masks, 0.2, 0.1)
        expected = [expected[0] - math.floor(0.2 * expected[0]),
                    expected[1] - floor_share(0.1, expected[1])]
        assert list(remaining(masks)) == expected
    assert remaining(masks)[0] == 328  # 1000 -> 800 -> 640 -> 512 -> 410 -> 328


# --- 2. rewinding --------------------------------------------------------------------------------

@pytest.mark.parametrize("step", [0, 1, 7, STEPS])
def test_dense_round_rewind_is_an_independent_short_run(step: int) -> None:
    """imp.rewind = s keeps, bit for bit, the weights an independent run stopped after step s
    ends with (tests in between change nothing); the trained weights are those of a full
    independent run; the masks are all ones."""
    init, data, cfg = initial(), split(), params(rewind=step)
    rnd = dense_round(init, data, cfg)
    short = Network(init)
    train(short, data.x, data.y, data.x_test, data.y_test, TRAIN, progress=False,
          max_steps=step)
    assert rnd.rewind is not None
    assert_bits(rnd.rewind, [w.detach() for w in short.weights()])
    if step == 0:
        assert_bits(rnd.rewind, weights(init))
    full = Network(init)
    result = train(full, data.x, data.y, data.x_test, data.y_test, TRAIN, progress=False)
    assert_bits(rnd.trained, [w.detach() for w in full.weights()])
    assert all(bool(m.all()) for m in rnd.masks)
    assert rnd.outcomes["ticket"].accuracy == result.history[-1].test_accuracy
    # tests every 5 steps and after the last
    assert [s for s, _ in rnd.outcomes["ticket"].evals] == [5, 10, 15, 16]


def test_dense_round_with_init_rewinding_keeps_no_checkpoint() -> None:
    rnd = dense_round(initial(), split(), params(rewind="init"))
    assert rnd.rewind is None


@pytest.mark.parametrize("rewind", ["init", 6])
def test_rounds_start_from_exactly_the_rewind_point(rewind: int | str, tmp_path: Path) -> None:
    """`run` retrains every round's ticket from the rewind point (the init, or the dense run
    after step n, then for the rest of the schedule): a manual masked run from those weights,
    on the masks of the previous round's trained ticket, gives bit-identical weights and the
    same test passes."""
    init, data, cfg = initial(), split(), params(rewind=rewind, rounds=2)
    # the manual runs below train with this process's threads: so does run() here
    rounds = run(init, data, cfg, RoundStore(tmp_path / "imp", "fp"),
                 threads=torch.get_num_threads())
    assert [r.index for r in rounds] == [0, 1, 2]
    if rewind == "init":
        start = init
    else:
        short = Network(init)
        train(short, data.x, data.y, data.x_test, data.y_test, TRAIN, progress=False,
              max_steps=rewind)
        start = with_weights(init, [w.detach() for w in short.weights()])
    for prev, rnd in zip(rounds, rounds[1:]):
        masks = imp_masks(with_weights(init, prev.trained), prev.masks, cfg.imp.rate,
                          cfg.imp.output_rate)
        assert_same(rnd.masks, masks)
        model = Network(start)
        result = train(model, data.x, data.y, data.x_test, data.y_test, TRAIN, progress=False,
                       masks=masks, eval_every=cfg.imp.eval_every,
                       start_step=0 if rewind == "init" else rewind)
        assert_bits(rnd.trained, [w.detach() for w in model.weights()])
        assert same_outcome(rnd.outcomes["ticket"], Outcome.of(result))
        for w, m in zip(rnd.trained, rnd.masks, strict=True):
            assert bool((w[~m] == 0).all())


def test_next_round_from_a_start_equals_masked_train_from_it() -> None:
    """next_round's ticket is masked_train from the start it is given (nothing else)."""
    init, data, cfg = initial(), split(), params(controls=())
    r0 = dense_round(init, data, cfg)
    start = reinitialised(init, 99)  # any start: the ticket must begin exactly there
    r1 = next_round(r0, start, data, cfg)
    assert set(r1.outcomes) == {"ticket"}
    trained, result = masked_train(start, r1.masks, data, TRAIN, eval_every=cfg.imp.eval_every)
    assert_bits(r1.trained, weights(trained))
    assert same_outcome(r1.outcomes["ticket"], Outcome.of(result))


# --- 3. controls ---------------------------------------------------------------------------------

def some_masks(seed: int = 0, k: float = 0.6) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.rand(s, generator=g) >= k for s in SHAPES]


@settings(max_examples=50, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), mask_seed=st.integers(0, 1000),
       k=st.floats(0.0, 1.0))
def test_random_masks_keep_the_counts_and_are_seeded(seed: int, mask_seed: int,
                                                     k: float) -> None:
    masks = some_masks(mask_seed, k)
    a, b = random_masks(masks, seed), random_masks(masks, seed)
    assert remaining(a) == remaining(masks)
    for m, u, v in zip(masks, a, b, strict=True):
        assert u.dtype == torch.bool and u.shape == m.shape and u.device == m.device
        assert torch.equal(u, v)


@settings(max_examples=50, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), mask_seed=st.integers(0, 1000), k=st.floats(0.0, 1.0))
def test_random_masks_read_only_the_sizes(seed: int, mask_seed: int, k: float) -> None:
    """A random mask is the same from the ticket's masks as from any masks of their sizes (so
    the random_mask control can start before the ticket's masks exist)."""
    masks = some_masks(mask_seed, k)
    net = mlp_layers([torch.zeros(m.shape) for m in masks])
    stand_in = sized_masks(net, remaining(masks))
    assert remaining(stand_in) == remaining(masks)
    assert_same(random_masks(masks, seed), random_masks(stand_in, seed))


def test_random_masks_differ_by_seed_and_from_the_ticket() -> None:
    masks = some_masks()
    a, b = random_masks(masks, 1), random_masks(masks, 2)
    assert any(not torch.equal(u, v) for u, v in zip(a, b, strict=True))
    assert any(not torch.equal(u, m) for u, m in zip(a, masks, strict=True))


@pytest.mark.parametrize("arch", ARCHS)
def test_reinitialised_is_seeded_fresh_and_keeps_the_geometry(arch: str) -> None:
    net = initial(arch)
    a, b, c = reinitialised(net, 5), reinitialised(net, 5), reinitialised(net, 6)
    assert_bits(weights(a), weights(b))
    for layer, u, v in zip(net, a, c, strict=True):
        assert u.weight.shape == layer.weight.shape
        assert (u.kind, u.kernel, u.side, u.padding, u.pool, u.block) == \
            (layer.kind, layer.kernel, layer.side, layer.padding, layer.pool, layer.block)
        assert not torch.equal(u.weight, layer.weight)
        assert not torch.equal(u.weight, v.weight)
        # PyTorch's default init: uniform within 1/sqrt(fan_in)
        assert float(u.weight.abs().max()) <= 1 / math.sqrt(layer.fan_in) + 1e-7
    assert all(w.requires_grad is False for w in weights(a))


def test_derived_seeds_are_distinct_and_stable() -> None:
    seeds = {derived_seed(0, r, c) for r in range(1, 20) for c in CONTROL_SEEDS.values()}
    assert len(seeds) == 19 * len(CONTROL_SEEDS)
    assert derived_seed(0, 3, 1) == derived_seed(0, 3, 1) != derived_seed(1, 3, 1)
    assert all(0 <= s < 2**32 for s in seeds)


def test_next_round_controls_train_on_the_rounds_mask_sizes() -> None:
    """Both controls are recorded, and each is exactly the masked run its definition gives:
    reinit = the ticket's mask from a fresh init (seed derived from train.seed, the round and
    the control), random_mask = a random mask of the round's per-layer sizes from the
    ticket's start."""
    init, data, cfg = initial(), split(), params()
    r0 = dense_round(init, data, cfg)
    r1 = next_round(r0, init, data, cfg)
    r2 = next_round(r1, init, data, cfg)
    hooks = {"eval_every": cfg.imp.eval_every}
    for rnd in (r1, r2):
        assert set(rnd.outcomes) == {"ticket", "reinit", "random_mask"}
        seed = {name: derived_seed(TRAIN.seed, IMP_CONTROL, rnd.index, n)
                for name, n in CONTROL_SEEDS.items()}
        shuffled = random_masks(rnd.masks, seed["random_mask"])
        assert remaining(shuffled) == rnd.remaining
        _, res = masked_train(init, shuffled, data, TRAIN, **hooks)
        assert same_outcome(rnd.outcomes["random_mask"], Outcome.of(res))
        _, res = masked_train(reinitialised(init, seed["reinit"]), rnd.masks, data, TRAIN,
                              **hooks)
        assert same_outcome(rnd.outcomes["reinit"], Outcome.of(res))
    assert sum(r2.remaining) < sum(r1.remaining) < sum(r0.remaining)


def test_next_round_runs_only_the_listed_controls() -> None:
    init, data = initial(), split()
    r0 = dense_round(init, data, params())
    assert set(next_round(r0, init, data, params(controls=("random_mask",))).outcomes) == \
        {"ticket", "random_mask"}
    assert set(next_round(r0, init, data, params(controls=())).outcomes) == {"ticket"}


# --- 4. fine-tuning ------------------------------------------------------------------------------

@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize(("granularity", "k"), [("weight", 0.0), ("weight", 0.5),
                                                ("weight", 0.95), ("unit", 0.5),
                                                ("unit", 0.75)])
def test_fine_tune_compacts_exactly_and_keeps_pruned_weights_zero(
        arch: str, granularity: str, k: float, monkeypatch: pytest.MonkeyPatch) -> None:
    """The net fine_tune trains is the masked net with its dead units removed: before
    training it computes the same function (within 1e-5); after, every weight its mask prunes
    is exactly +0.0, and what is left is at most the live weights of the masked net."""
    net, data = initial(arch), split()  # (a net pre-trained on noise can die when pruned)
    masks = Pruner(net, granularity, "layer").masks(k)
    pruned = apply_masks(net, masks)
    seen: list[tuple] = []
    real = retrain.masked_train

    def spy(small, small_masks, *args, **kwargs):  # noqa: ANN001, ANN202
        seen.append((tuple(layer.with_weight(layer.weight.clone()) for layer in small),
                     [m.clone() for m in small_masks]))
        return real(small, small_masks, *args, **kwargs)

    monkeypatch.setattr(retrain, "masked_train", spy)
    tuned, result = fine_tune(pruned, masks, data, TRAIN)
    (small, small_masks), = seen
    x = torch.randn(64, 784, generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(forward(small, x), forward(pruned, x), atol=1e-5, rtol=0)
    n_live = sum(int(m.sum()) for m in live_masks(pruned))
    assert sum(int(m.sum()) for m in small_masks) == n_live
    if granularity == "unit" and k > 0:
        assert small[0].units < net[0].units  # dead units are really gone
    if k == 0.0:
        assert [layer.weight.shape for layer in small] == [layer.weight.shape for layer in net]
    assert len(tuned) == len(net)
    for layer, m, s in zip(tuned, small_masks, small, strict=True):
        assert layer.weight.shape == m.shape == s.weight.shape
        pruned_part = layer.weight[~m]
        assert bool((pruned_part == 0).all()) and not bool(torch.signbit(pruned_part).any())
    assert sum(int(layer.weight.count_nonzero()) for layer in tuned) <= n_live
    moved = sum(int((t.weight != s.weight)[m].sum())
                for t, s, m in zip(tuned, small, small_masks, strict=True))
    assert moved > 0  # it did train
    assert math.isfinite(result.history[-1].loss)
    if k == 0.0:  # nothing to remove or hold: plain training from the same weights, exactly
        plain = Network(net)
        train(plain, data.x, data.y, data.x_test, data.y_test, TRAIN, progress=False)
        assert_bits(weights(tuned), [w.detach() for w in plain.weights()])


def test_fine_tune_on_the_lenet5_geometry_of_the_stage() -> None:
    """lenet5_geometry's layers (the stage's LeNet-5) survive unit pruning + compaction."""
    torch.manual_seed(0)
    from prunelab.models.networks import init_weight

    net = tuple(layer.with_weight(init_weight(layer, shape))
                for layer, shape in lenet5_geometry((3, 5), (10,)))
    masks = Pruner(net, "unit", "layer").masks(0.5)
    tuned, _ = fine_tune(apply_masks(net, masks), masks, split(100, 20),
                         dataclasses.replace(TRAIN, epochs=1))
    assert [layer.units for layer in tuned] == [2, 3, 5, 10]  # floor(0.5 x n) units gone


# --- 5. the round store ------------------------------------------------------------------------

def a_round(index: int, seed: int = 0, rewind: bool = False) -> Round:
    g = torch.Generator().manual_seed(seed + index)
    masks = tuple(torch.rand(s, generator=g) > 0.3 for s in SHAPES)
    trained = tuple(torch.randn(s, generator=g) * m for s, m in zip(SHAPES, masks, strict=True))
    trained = tuple(torch.where(m, w, torch.tensor(-0.0)) if i == 0 else w
                    for i, (w, m) in enumerate(zip(trained, masks, strict=True)))
    outcomes = {"ticket": Outcome(97.25, 40, ((20, 96.5), (40, 97.25)), 1.5),
                "reinit": Outcome(90.0, None, (), 0.25)}
    back = tuple(torch.randn(s, generator=g) for s in SHAPES) if rewind else None
    return Round(index, masks, trained, outcomes, back, wall_seconds=2.5 + index)


def assert_round_equal(a: Round, b: Round) -> None:
    assert a.index == b.index
    assert_same(a.masks, b.masks)
    assert_bits(a.trained, b.trained)
    assert a.outcomes == b.outcomes
    assert a.wall_seconds == b.wall_seconds
    assert (a.rewind is None) == (b.rewind is None)
    if a.rewind is not None:
        assert_bits(a.rewind, b.rewind)


def test_round_store_round_trips_bit_exactly(tmp_path: Path) -> None:
    store = RoundStore(tmp_path / "imp", "abc")
    saved = [a_round(0, rewind=True), a_round(1), a_round(2)]
    for rnd in saved:
        store.save(rnd)
    assert sorted(p.name for p in (tmp_path / "imp").iterdir()) == \
        ["round_00.pt", "round_01.pt", "round_02.pt"]  # and no temporaries
    loaded, stale = store.resume(CPU)
    assert stale == 0 and len(loaded) == 3
    for a, b in zip(saved, loaded, strict=True):
        assert_round_equal(a, b)
        assert b.resumed and not a.resumed
    assert loaded[1].trained[0].dtype == torch.float32 and loaded[1].masks[0].dtype == torch.bool


def test_round_files_are_byte_stable(tmp_path: Path) -> None:
    """The same round saved twice (anywhere) gives the same bytes: a rerun that recomputes a
    round identically does not change DVC's hash of models/imp."""
    a, b = RoundStore(tmp_path / "a", "fp"), RoundStore(tmp_path / "b", "fp")
    a.save(a_round(3))
    b.save(a_round(3))
    assert a.path(3).read_bytes() == b.path(3).read_bytes()


def fill(store: RoundStore, n: int) -> None:
    for i in range(n):
        store.save(a_round(i, rewind=i == 0))


@pytest.mark.parametrize("damage", ["fingerprint", "truncated", "garbage", "format", "empty"])
def test_resume_stops_at_a_foreign_or_damaged_round_and_deletes_the_rest(
        tmp_path: Path, damage: str) -> None:
    folder = tmp_path / "imp"
    store = RoundStore(folder, "mine")
    fill(store, 4)
    bad = store.path(2)
    if damage == "fingerprint":
        RoundStore(folder, "other").save(a_round(2))
    elif damage == "truncated":
        bad.write_bytes(bad.read_bytes()[:200])
    elif damage == "garbage":
        bad.write_bytes(b"not a torch file")
    elif damage == "format":
        torch.save({"format": "something-else", "fingerprint": "mine"}, bad)
    else:
        bad.write_bytes(b"")
    (folder / "notes.txt").write_text("mine", encoding="utf-8")
    loaded, stale = store.resume(CPU)
    assert [r.index for r in loaded] == [0, 1]
    assert stale == 2
    assert sorted(p.name for p in folder.iterdir()) == ["notes.txt", "round_00.pt",
                                                        "round_01.pt"]


def test_resume_stops_at_a_gap(tmp_path: Path) -> None:
    store = RoundStore(tmp_path / "imp", "mine")
    fill(store, 5)
    store.path(2).unlink()
    loaded, stale = store.resume(CPU)
    assert [r.index for r in loaded] == [0, 1] and stale == 2
    assert not store.path(3).exists() and not store.path(4).exists()


def test_resume_without_round_zero_or_folder(tmp_path: Path) -> None:
    store = RoundStore(tmp_path / "imp", "mine")
    assert store.resume(CPU) == ([], 0)  # no folder
    fill(store, 3)
    store.path(0).unlink()
    assert store.resume(CPU) == ([], 2)
    assert list((tmp_path / "imp").iterdir()) == []


def test_resume_of_another_fingerprint_discards_everything(tmp_path: Path) -> None:
    fill(RoundStore(tmp_path / "imp", "old"), 3)
    assert RoundStore(tmp_path / "imp", "new").resume(CPU) == ([], 3)


def test_keep_only(tmp_path: Path) -> None:
    store = RoundStore(tmp_path / "imp", "mine")
    fill(store, 5)
    store.keep_only(2)
    assert sorted(p.name for p in (tmp_path / "imp").iterdir()) == \
        ["round_00.pt", "round_01.pt", "round_02.pt"]
    store.keep_only(7)  # nothing past 7: nothing deleted
    assert len(list((tmp_path / "imp").iterdir())) == 3
    RoundStore(tmp_path / "none", "x").keep_only(0)  # no folder: nothing to do


def test_run_resumes_and_extends_without_recomputing(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """run() continues after the rounds it is given (from the store) and computes only the
    new ones; fewer rounds than saved keeps the first ones and deletes the rest; the results
    equal an uninterrupted run's."""
    init, data = initial(), split()
    store = RoundStore(tmp_path / "imp", "fp")
    two = run(init, data, params(rounds=2, rewind=4), store)
    done, _ = store.resume(CPU)
    calls: list[int] = []
    import prunelab.studies.imp as imp_module

    real_ticket = imp_module._ticket

    def counting(job):  # noqa: ANN001, ANN202
        calls.append(int(sum(int(m.sum()) for m in job[1])))  # the ticket's kept weights
        return real_ticket(job)

    monkeypatch.setattr(imp_module, "_ticket", counting)
    three = run(init, data, params(rounds=3, rewind=4), store, done)
    assert calls == [sum(three[3].remaining)]  # only round 3's ticket trained
    assert [r.resumed for r in three] == [True, True, True, False]
    fresh = run(init, data, params(rounds=3, rewind=4), RoundStore(tmp_path / "fresh", "fp"))
    for a, b in zip(three, fresh, strict=True):
        assert_same(a.masks, b.masks)
        assert_bits(a.trained, b.trained)
        assert all(same_outcome(a.outcomes[v], b.outcomes[v]) for v in b.outcomes)
    for a, b in zip(two, three, strict=False):
        assert_bits(a.trained, b.trained)
    done, _ = store.resume(CPU)
    calls.clear()
    one = run(init, data, params(rounds=1, rewind=4), store, done)
    assert calls == [] and len(one) == 2
    assert sorted(p.name for p in (tmp_path / "imp").iterdir()) == ["round_00.pt",
                                                                    "round_01.pt"]


@pytest.mark.parametrize("rewind", [4, "init"])
def test_rounds_in_two_workers_equal_the_rounds_run_here(tmp_path: Path,
                                                         rewind: int | str) -> None:
    """Two spawned single-threaded workers (round r's controls beside round r + 1's ticket;
    rewinding to the init, round 1's random_mask beside round 0) give every round bit for bit
    what one thread in this process gives; rounds are saved in order and their wall times add
    up to the run's."""
    init, data, cfg = initial(), split(), params(rounds=3, rewind=rewind)
    here = run(init, data, cfg, RoundStore(tmp_path / "here", "fp"), workers=1, threads=1)
    store = RoundStore(tmp_path / "pool", "fp")
    seen: list[int] = []
    began = time.perf_counter()
    pooled = run(init, data, cfg, store, workers=2, threads=1,
                 on_round=lambda r: seen.append(r.index))
    took = time.perf_counter() - began
    assert seen == [0, 1, 2, 3]
    for a, b in zip(here, pooled, strict=True):
        assert_same(a.masks, b.masks)
        assert_bits(a.trained, b.trained)
        assert set(a.outcomes) == set(b.outcomes)
        assert all(same_outcome(a.outcomes[v], b.outcomes[v]) for v in b.outcomes)
    if rewind == "init":  # the early control (stand-ins of round 1's sizes) is the real one
        by_definition = next_round(here[0], init, data, cfg).outcomes["random_mask"]
        assert same_outcome(pooled[1].outcomes["random_mask"], by_definition)
    assert 0 < sum(r.wall_seconds for r in pooled) <= took
    assert [r.index for r in store.resume(CPU)[0]] == [0, 1, 2, 3]
    assert fingerprint(cfg, b"init", "cpu", 1) != fingerprint(cfg, b"init", "cpu", 2)


@pytest.mark.parametrize(("rewind", "early"), [("init", ["random_mask"]), (4, [])])
def test_round_ones_size_only_control_starts_beside_round_zero(
        rewind: int | str, early: list[str], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Rewinding to the init, round 1's random_mask control (it reads the mask's sizes only) is
    handed to the second worker right after round 0, before round 0 is trained, so that worker
    does not idle through round 0; it is trained once, not again with round 1. The re-init
    control needs the ticket's mask and waits; rewinding to a step, so does everything: round
    1's ticket is then the next task after round 0."""
    from prunelab.studies import imp

    submitted: list[tuple[str, Any]] = []
    real = imp.Tasks.submit

    def record(self: Any, work: Any, task: Any) -> Any:
        submitted.append((work.__name__, task[:2] if work.__name__ == "_control" else None))
        return real(self, work, task)

    monkeypatch.setattr(imp.Tasks, "submit", record)
    cfg = params(rounds=2, rewind=rewind)
    run(initial(), split(), cfg, RoundStore(tmp_path / "imp", "fp"), workers=2, threads=1)
    assert submitted[0] == ("_dense", None)
    assert submitted[1:1 + len(early)] == [("_control", (name, 1)) for name in early]
    assert submitted[1 + len(early)] == ("_ticket", None)
    controls = [task for work, task in submitted if work == "_control"]
    assert sorted(controls) == sorted((n, r) for r in (1, 2) for n in cfg.imp.controls)


def test_fingerprint_covers_settings_but_not_rounds() -> None:
    cfg = params()
    base = fingerprint(cfg, b"init")
    assert fingerprint(cfg, b"init") == base
    assert fingerprint(cfg.with_section("imp", rounds=9),
                       b"init") == base
    # more replicates leave the first seed's rounds as they are
    assert fingerprint(dataclasses.replace(cfg, train=dataclasses.replace(
        cfg.train, seeds=(cfg.train.seed, 7, 8))), b"init") == base
    for changed in (cfg.with_section("imp", rate=0.25),
                    cfg.with_section("imp", rewind=3),
                    dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, seed=1)),
                    dataclasses.replace(cfg, data=DataConfig(train_size=100, test_size=60))):
        assert fingerprint(changed, b"init") != base
    assert fingerprint(cfg, b"other init") != base


# --- 6. params -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def raw_params() -> dict[str, Any]:
    """The repository's params.yaml, with 1,000 training images (30 steps at 3 epochs of
    100-image batches: the longest imp.rewind allowed)."""
    raw = yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))
    raw["data"]["train_size"] = 1000
    raw["prune"]["calibration_size"] = 256
    return raw


def steps_of(raw: dict[str, Any]) -> int:
    size = raw["data"]["train_size"] or 60000
    return raw["train"]["epochs"] * math.ceil(size / raw["train"]["batch_size"])


def changed(raw: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    doc = copy.deepcopy(raw)
    *parents, last = path.split(".")
    node = doc
    for key in parents:
        node = node[key]
    node[last] = value
    return doc


RATE = "a number in (0, 1)"
BAD = [
    *[(f"imp.{key}", v, f"imp.{key}", RATE) for key in ("rate", "output_rate")
      for v in (0, 1, -0.1, 1.5, "x", True, None, float("nan"), float("inf"), [0.2])],
    *[("imp.rounds", v, "imp.rounds", "an integer from 1 to 100") for v in
      (0, -1, 1.5, True, "3", None, 101)],
    ("imp.rewind", 31, "imp.rewind", "init, or an optimizer step from 0 to 30"),
    ("imp.rewind", -1, "imp.rewind", "from 0 to 30"),
    ("imp.rewind", "late", "imp.rewind", "init, or an optimizer step"),
    ("imp.rewind", 2.0, "imp.rewind", "init, or an optimizer step"),
    ("imp.rewind", True, "imp.rewind", "init, or an optimizer step"),
    ("imp.rewind", None, "imp.rewind", "init, or an optimizer step"),
    ("imp.controls", ["reinit", "shuffle"], "imp.controls[1]", "reinit, random_mask"),
    ("imp.controls", ["random_mask", "random_mask"], "imp.controls[1]", "distinct"),
    ("imp.controls", "reinit", "imp.controls", "a list of distinct names"),
    ("imp.controls", None, "imp.controls", "a list of distinct names"),
    ("imp.controls", [1], "imp.controls[0]", "reinit, random_mask"),
    ("imp.eval_every", 0, "imp.eval_every", "an integer from 1"),
    ("imp.eval_every", -5, "imp.eval_every", "an integer from 1"),
    ("imp.eval_every", 2.5, "imp.eval_every", "an integer from 1"),
    ("finetune.epochs", 0, "finetune.epochs", "an integer from 1 to 1000"),
    ("finetune.epochs", 1.5, "finetune.epochs", "an integer from 1 to 1000"),
    ("finetune.epochs", True, "finetune.epochs", "an integer from 1 to 1000"),
    *[("finetune.lr", v, "finetune.lr", "or a finite number in (0, 10]") for v in
      (0, -1, "a", True, float("nan"), 11, [0.001])],
    ("finetune.weight_criteria", [], "finetune.weight_criteria", "a non-empty list"),
    ("finetune.weight_criteria", "magnitude", "finetune.weight_criteria", "a non-empty list"),
    ("finetune.weight_criteria", ["magnitude", "l2"], "finetune.weight_criteria[1]",
     "magnitude, random, largest"),
    ("finetune.weight_criteria", ["random", "random"], "finetune.weight_criteria[1]",
     "distinct"),
    ("finetune.unit_criteria", [], "finetune.unit_criteria", "a non-empty list"),
    ("finetune.unit_criteria", ["magnitude"], "finetune.unit_criteria[0]", "l2, random"),
    ("finetune", {"epochs": 1}, "finetune.lr", "missing key"),
    ("imp", 5, "imp", "a mapping of rounds, rate"),
    ("finetune", None, "finetune", "a mapping of epochs, lr"),
]


@pytest.mark.parametrize(("path", "value", "key", "allowed"), BAD,
                         ids=[f"{p}={v!r}" for p, v, _, _ in BAD])
def test_bad_retraining_params_name_the_key(raw_params: dict[str, Any], path: str, value: Any,
                                            key: str, allowed: str) -> None:
    with pytest.raises(ParamsError) as info:
        parse_params(changed(raw_params, path, value))
    message = str(info.value)
    assert "\n" not in message
    assert key in message and allowed in message, message
    assert message.startswith("params.yaml: ")


@pytest.mark.parametrize("section", ["finetune", "imp"])
def test_unknown_and_missing_keys_of_the_new_sections(raw_params: dict[str, Any],
                                                      section: str) -> None:
    doc = copy.deepcopy(raw_params)
    doc[section]["rounds_" if section == "imp" else "epoch"] = 3
    with pytest.raises(ParamsError, match=rf"unknown key '{section}\.(rounds_|epoch)' in "
                                          rf"{section}; allowed: "):
        parse_params(doc)
    doc = copy.deepcopy(raw_params)
    del doc[section]
    with pytest.raises(ParamsError, match=rf"missing key '{section}' in the top level"):
        parse_params(doc)
    doc = copy.deepcopy(raw_params)
    first = next(iter(doc[section]))
    del doc[section][first]
    with pytest.raises(ParamsError, match=rf"missing key '{section}\.{first}' in {section}"):
        parse_params(doc)


def test_rewind_bound_follows_the_length_of_the_dense_run(raw_params: dict[str, Any]) -> None:
    """imp.rewind may be any step of the dense run: 0 to epochs x ceil(train_size / batch)."""
    steps = steps_of(raw_params)
    assert steps == 30 == train_steps(DataConfig(1000), TrainConfig(epochs=3, batch_size=100))
    for ok in (0, 1, steps):
        assert parse_params(changed(raw_params, "imp.rewind", ok)).imp.rewind == ok
    assert parse_params(raw_params).imp.rewind == "init"
    doc = changed(raw_params, "data.train_size", 1001)  # a last, partial batch: 33 steps
    assert parse_params(changed(doc, "imp.rewind", 33)).imp.rewind == 33
    with pytest.raises(ParamsError, match=r"imp\.rewind = 34 .*from 0 to 33"):
        parse_params(changed(doc, "imp.rewind", 34))
    everything = changed(raw_params, "data.train_size", None)  # all 60,000 images
    assert parse_params(changed(everything, "imp.rewind", 1800)).imp.rewind == 1800
    with pytest.raises(ParamsError, match=r"imp\.rewind = 1801 .*from 0 to 1800"):
        parse_params(changed(everything, "imp.rewind", 1801))


def test_good_retraining_params_are_read(raw_params: dict[str, Any]) -> None:
    p = parse_params(raw_params)
    assert p.finetune.lr is None and p.finetune.learning_rate(p.train) == pytest.approx(1e-4)
    assert p.imp == ImpConfig(rounds=15, rate=0.2, output_rate=0.1, rewind="init",
                              controls=("reinit", "random_mask"), eval_every=200)
    doc = changed(changed(raw_params, "imp.controls", []), "finetune.lr", 0.01)
    doc = changed(changed(doc, "imp.rounds", 100), "imp.rate", 0.999)
    p = parse_params(doc)
    assert p.imp.controls == () and p.imp.rounds == 100 and p.imp.rate == 0.999
    assert p.finetune.learning_rate(p.train) == 0.01
    assert parse_params(changed(raw_params, "imp.rate", 1e-9)).imp.rate == 1e-9


@settings(max_examples=100, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=st.floats(allow_nan=True, allow_infinity=True) | st.integers(-5, 5))
def test_any_rate_outside_the_open_unit_interval_is_refused(raw_params: dict[str, Any],
                                                            value: float) -> None:
    for key in ("imp.rate", "imp.output_rate"):
        doc = changed(raw_params, key, value)
        if isinstance(value, float) and 0 < value < 1:
            got = parse_params(doc).imp
            assert getattr(got, key.split(".")[1]) == value
        else:
            with pytest.raises(ParamsError, match=rf"{key} = .* a number in \(0, 1\)"):
                parse_params(doc)


# --- the `random` control is independent of the initial weights (it was not, at seed 0) ----------

def test_random_criterion_is_independent_of_the_initial_weights() -> None:
    """finetune.weight_criteria's `random` is the control for magnitude: its ranking must not
    follow the weights. With the default train.seed = 0 it follows the initial weights of the
    first layer exactly when both were seeded with 0 (correlation 1.0, before runtime.rng)."""
    from prunelab.pruning.criteria.base import Context
    from prunelab.pruning.criteria.registry import criterion

    net = initial("mlp", seed=0)
    scores = criterion("weight", "random").scores(Context(net, seed=0), 0, False)
    corr = torch.corrcoef(torch.stack([scores.flatten(), net[0].weight.flatten()]))[0, 1]
    assert abs(float(corr)) < 0.1


def test_the_fingerprint_covers_the_code_that_computes_a_round() -> None:
    """The fingerprint hashes every prunelab module the IMP code imports (across sub-packages)
    except those named as reporting only; each of those is really imported (no stale names),
    and the modules that compute a round are in."""
    from prunelab.runtime.fingerprint import imports_of
    from prunelab.studies import imp

    closure = imports_of(imp.__name__)
    shaping = imp.shaping_modules()
    for excluded in imp.NOT_SHAPING:
        assert any(m == excluded or m.startswith(excluded + ".") for m in closure), excluded
        assert not any(m == excluded or m.startswith(excluded + ".") for m in shaping)
    computing = {"prunelab.config", "prunelab.data.mnist", "prunelab.models.layers",
                 "prunelab.models.networks", "prunelab.pruning.masks",
                 "prunelab.pruning.compaction", "prunelab.runtime.rng",
                 "prunelab.studies.imp", "prunelab.studies.retraining",
                 "prunelab.training.loop"}
    assert computing <= shaping, computing - shaping
    assert fingerprint(params(), b"init", "cpu") != fingerprint(params(), b"init", "cuda")


# --- after review: late rewinding continues the schedule; reconstructions' own zeros; reports -----

def test_a_late_start_continues_the_same_batches_for_the_remaining_steps() -> None:
    """train(start_step=s) from the step-s weights trains steps s+1..T on the batches the full
    run used there: its first loss is the full run's loss at step s+1, bit for bit."""
    data, s = split(), 6
    full = train(Network(initial()), data.x, data.y, data.x_test, data.y_test, TRAIN,
                 progress=False, checkpoint_at=s)
    at_s = with_weights(initial(), full.checkpoint)
    late = train(Network(at_s), data.x, data.y, data.x_test, data.y_test, TRAIN,
                 progress=False, start_step=s, eval_every=5)
    assert len(late.step_losses) == STEPS - s
    assert late.step_losses[0] == full.step_losses[s]
    assert late.samples == (STEPS - s) * TRAIN.batch_size
    assert [step for step, _ in late.evals] == [10, 15, 16]
    with pytest.raises(ValueError, match="start_step"):
        train(Network(initial()), data.x, data.y, data.x_test, data.y_test, TRAIN,
              progress=False, start_step=STEPS + 1)


def test_late_rewinding_gives_every_net_the_rest_of_the_schedule() -> None:
    """imp.rewind = s: the ticket and both controls train steps s+1..T (not T more), so
    a rewound ticket gets no more training than the dense net had."""
    s = 7
    init, data, cfg = initial(), split(), params(rewind=s)
    r0 = dense_round(init, data, cfg)
    start = with_weights(init, r0.rewind)
    r1 = next_round(r0, start, data, cfg)
    for outcome in r1.outcomes.values():
        assert [step for step, _ in outcome.evals] == [10, 15, 16]
    _, manual = masked_train(start, r1.masks, data, TRAIN, eval_every=5, start_step=s)
    assert same_outcome(r1.outcomes["ticket"], Outcome.of(manual))


def test_a_reconstructions_mask_is_the_zeros_it_chose() -> None:
    """obs keeps the ranking's count per layer but picks its own positions: the mask that
    fine-tuning holds is the rebuilt net's nonzeros, and fine-tuning keeps exactly those."""
    from prunelab.pruning.criteria.base import Context
    from prunelab.pruning.criteria.registry import criterion
    from prunelab.pruning.sweep import pruned_with_masks

    net, data = initial(), split()
    obs = criterion("weight", "obs")
    context = Context(net, data.x[:64], data.y[:64], seed=0)
    (_, masks, rebuilt), = pruned_with_masks(net, "weight", "layer", (0.6,), obs, context)
    for layer, keep in zip(rebuilt[:-1], masks[:-1], strict=True):
        assert torch.equal(keep, layer.weight != 0)
    assert bool(masks[-1].all())
    tuned, _ = fine_tune(rebuilt, masks, data, TRAIN)
    live = sum(int(layer.weight.count_nonzero()) for layer in tuned)
    assert live <= sum(int(m.sum()) for m in masks)


def test_controls_are_the_names_params_yaml_allows(raw_params: dict[str, Any]) -> None:
    from prunelab.studies import imp

    assert ImpConfig().controls == tuple(imp.CONTROLS) and ("ticket", *imp.CONTROLS) == imp.VARIANTS
    with pytest.raises(ParamsError) as err:
        parse_params(changed(raw_params, "imp.controls", ["shuffle"]))
    assert str(err.value).endswith("from: " + ", ".join(imp.CONTROLS) + " (may be empty)")


def fake_round(index: int, kept: int, accs: dict[str, float], seconds: float = 1.0) -> Round:
    masks = (torch.arange(10) < kept,)
    return Round(index, masks, (torch.zeros(10),),
                 {v: Outcome(a, 5 * index or None, ((5, a),), seconds) for v, a in accs.items()},
                 wall_seconds=2 * seconds)


def test_imp_reports_stay_within_only_while_every_round_does() -> None:
    """'within 0.1 point down to X%' is contiguous from the first round: a later recovery does
    not extend it; the CSV has a row per round and net; timing sums the rounds."""
    from prunelab.studies import imp_outputs as imp_report

    rounds = [fake_round(0, 10, {"ticket": 97.0}),
              fake_round(1, 8, {"ticket": 96.95, "reinit": 96.5, "random_mask": 96.0}),
              fake_round(2, 6, {"ticket": 96.8, "reinit": 96.0, "random_mask": 95.0}),
              fake_round(3, 4, {"ticket": 97.2, "reinit": 95.0, "random_mask": 94.0})]
    assert imp_report.within_down_to(rounds, "ticket", 97.0) == 80.0
    assert imp_report.within_down_to(rounds, "reinit", 97.0) is None
    summary = imp_report.summary(rounds)
    assert summary["dense_accuracy"] == 97.0
    assert summary["within_0.1pt_down_to_percent"] == {"ticket": 80.0, "reinit": None,
                                                      "random_mask": None}
    assert summary["rounds"]["3"] == {"weights_remaining": 40.0, "ticket": 97.2,
                                      "reinit": 95.0, "random_mask": 94.0}
    rows = imp_report.rows(rounds)
    assert len(rows) == 1 + 3 * 3 and rows[0]["variant"] == "ticket"
    assert list(rows[0]) == list(imp_report.IMP_COLUMNS)
    timing = imp_report.timing(rounds)
    assert timing["wall_seconds"] == 8.0 and timing["masked_over_dense"] == 1.0


def test_finetune_summary_is_contiguous_from_the_smallest_k() -> None:
    """A k that passes after a k that failed does not count ('stays within ... up to k')."""
    from prunelab.pruning.sweep import SweepPoint
    from prunelab.studies.retraining import TunedPoint, finetune_summary

    def point(k: float, shot: float, tuned: float) -> TunedPoint:
        return TunedPoint(SweepPoint(k, shot, k, k, 0, 0), tuned, 0.0)

    points = [point(0.0, 97.0, 98.0), point(0.5, 96.95, 96.8), point(0.9, 90.0, 97.0)]
    got = finetune_summary(points, 97.0, 98.0)
    assert got["fine-tuned.max_sparsity_within_0.1pt"] == 0.0  # 0.5 misses; 0.9 does not count
    assert got["fine-tuned.max_sparsity_within_0.5pt"] == 0.9
    assert got["one-shot.max_sparsity_within_0.1pt"] == 0.5
    assert got["fine-tuned.max_sparsity_within_1pt_of_tuned_dense"] == 0.0
