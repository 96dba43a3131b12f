"""The at-initialisation study: each score against a hand computation on a tiny net, SynFlow's
data independence, the controls' exact counts, masks held bit-exact in training, calibration
from the training split only, the IMP counts, the supermask's top-k, params errors."""

from __future__ import annotations

import copy
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.nn import functional as F

from prunelab.config import DataConfig, MLPConfig, ModelConfig, Params, PruneConfig, TrainConfig
from prunelab.data.split import Split
from prunelab.errors import ParamsError
from prunelab.models.layers import Layer, forward, with_weights
from prunelab.runtime.pool import run_tasks
from prunelab.studies.atinit import arms, compare, scores, supermask
from prunelab.studies.atinit import study as atinit
from prunelab.studies.imp_outputs import ImpConfig
from prunelab.studies.registry import parse_params
from prunelab.studies.retraining import imp_masks, masked_train, random_masks

ROOT = Path(__file__).resolve().parents[1]
torch.set_default_dtype(torch.float32)


def tiny(seed: int = 0, sizes: tuple[int, ...] = (6, 5, 4, 3)) -> tuple[Layer, ...]:
    g = torch.Generator().manual_seed(seed)
    return tuple(Layer(torch.randn(o, i, generator=g, dtype=torch.float64) * 0.7)
                 for i, o in zip(sizes, sizes[1:]))


def batch(seed: int = 1, n: int = 8, d: int = 6, classes: int = 3) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, d, generator=g, dtype=torch.float64),
            torch.randint(0, classes, (n,), generator=g))


def loss_at(net: tuple[Layer, ...], flat: torch.Tensor, x: torch.Tensor, y: torch.Tensor,
            temperature: float = 1.0) -> torch.Tensor:
    shapes = [layer.weight.shape for layer in net]
    parts, start = [], 0
    for s in shapes:
        parts.append(flat[start : start + s.numel()].view(s))
        start += s.numel()
    return F.cross_entropy(forward(with_weights(net, parts), x) / temperature, y)


def numeric_grad(net, x, y, flat, temperature=1.0, eps=1e-6) -> torch.Tensor:  # noqa: ANN001
    grad = torch.zeros_like(flat)
    for i in range(flat.numel()):
        e = torch.zeros_like(flat)
        e[i] = eps
        grad[i] = (loss_at(net, flat + e, x, y, temperature)
                   - loss_at(net, flat - e, x, y, temperature)) / (2 * eps)
    return grad


def flat_weights(net) -> torch.Tensor:  # noqa: ANN001
    return torch.cat([layer.weight.flatten() for layer in net])


def test_snip_is_abs_gradient_times_weight_by_finite_differences() -> None:
    net, (x, y) = tiny(), batch()
    w = flat_weights(net)
    expected = (numeric_grad(net, x, y, w) * w).abs()
    got = torch.cat([s.flatten() for s in scores.snip_scores(net, [(x, y)], 0)])
    assert torch.allclose(got, expected, atol=1e-7)


def test_grasp_is_weight_times_hessian_gradient_by_finite_differences(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # At the study's temperature (200) the products are ~1e-6: too small for finite differences
    # to resolve; the formula is the same at any temperature.
    monkeypatch.setattr(scores, "GRASP_TEMPERATURE", 1.0)
    net, (x, y) = tiny(), batch()
    w = flat_weights(net)
    g = numeric_grad(net, x, y, w)
    eps = 1e-4
    hg = (numeric_grad(net, x, y, w + eps * g) - numeric_grad(net, x, y, w - eps * g)) / (2 * eps)
    got = torch.cat([s.flatten() for s in scores.grasp_scores(net, [(x, y)], 0)])
    assert torch.allclose(got, w * hg, atol=1e-5 * float((w * hg).abs().max()))
    assert float((w * hg).abs().max()) > 1e-4  # a real check, not of zeros


def test_synflow_on_a_positive_chain_is_the_product_of_column_and_row_sums() -> None:
    net = tuple(Layer(layer.weight.abs()) for layer in tiny())
    w1, w2, w3 = (layer.weight for layer in net)
    ones_in, ones_out = torch.ones(w1.shape[1], dtype=w1.dtype), torch.ones(w3.shape[0],
                                                                            dtype=w1.dtype)
    after1 = ones_out @ w3 @ w2  # dR/d(h1): what each first-layer unit reaches
    expected1 = w1 * torch.outer(after1, ones_in)
    got = scores.synflow_scores(net, [], 0)
    assert torch.allclose(got[0], expected1)
    assert torch.allclose(got[2], w3 * torch.outer(ones_out, w2 @ w1 @ ones_in))


def test_synflow_uses_no_data() -> None:
    net, counts = tiny(), [10, 8, 6]
    method = scores.METHODS["synflow"]
    a = scores.method_masks(method, net, counts, [batch(1)], 0)
    b = scores.method_masks(method, net, counts, [batch(2), batch(3)], 5)
    assert all(torch.equal(u, v) for u, v in zip(a, b, strict=True))


@settings(max_examples=30, deadline=None)
@given(rounds=st.integers(0, 12), seed=st.integers(0, 1000),
       name=st.sampled_from(sorted(scores.METHODS)), inverted=st.booleans())
def test_every_method_keeps_exactly_the_imp_counts(rounds: int, seed: int, name: str,
                                                   inverted: bool) -> None:
    net = tiny(seed, (12, 9, 7, 3))
    counts = scores.imp_counts(net, rounds, 0.2, 0.1)
    masks = scores.method_masks(scores.METHODS[name], net, counts, [batch(seed, d=12)], seed,
                                inverted)
    kept = [int(m.sum()) for m in masks]
    assert kept[-1] == counts[-1] and sum(kept) == sum(counts)
    if scores.METHODS[name].scope == "layer":
        assert kept == counts


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 200_000), k_share=st.floats(0.0, 1.0), ties=st.integers(0, 3),
       dead=st.floats(0.0, 0.9), seed=st.integers(0, 2**31 - 1))
def test_bracketed_selection_is_the_exact_kth_largest_and_top_keeps_exactly(
        n: int, k_share: float, ties: int, dead: float, seed: int) -> None:
    """kth_largest equals a full selection whatever the values (few distinct ones, -inf for
    pruned entries, sizes past the sampling threshold); top keeps exactly keep, ties to the
    earlier index, never a pruned entry while others remain."""
    generator = torch.Generator().manual_seed(seed)
    values = torch.rand(n, generator=generator)
    if ties:  # few distinct values: ties at every threshold
        values = (values * 10**ties).floor()
    values[torch.rand(n, generator=generator) < dead] = -torch.inf
    k = min(n, max(1, round(k_share * n)))
    assert scores.kth_largest(values, k) == values.kthvalue(n - k + 1).values
    chosen = scores.top(values, k)
    alive = int((values > -torch.inf).sum())
    assert int(chosen.sum()) == (k if k == n else min(k, alive))
    if k < n and 0 < k <= alive:
        assert values[chosen].min() >= values[~chosen].max()
        at = values[chosen].min()
        assert (values == at).nonzero().flatten()[: int((chosen & (values == at)).sum())].equal(
            (chosen & (values == at)).nonzero().flatten())


def test_bracketed_selection_falls_back_when_the_sample_misleads() -> None:
    """A sample that sees only one value (every stride-th entry 0) brackets nothing: the full
    selection answers, still exact."""
    n = 4 * scores.SAMPLE + 1000
    values = torch.rand(n, generator=torch.Generator().manual_seed(0)) + 1
    values[:: n // scores.SAMPLE] = 0.0
    for k in (1, 10, n // 2, n - 5000, n):
        assert scores.kth_largest(values, k) == values.kthvalue(n - k + 1).values


def test_imp_counts_are_what_imp_rounds_keep() -> None:
    net = tiny(3, (40, 30, 20, 10))
    masks = [torch.ones_like(layer.weight, dtype=torch.bool) for layer in net]
    for r in range(1, 8):
        masks = imp_masks(net, masks, 0.2, 0.1)
        assert [int(m.sum()) for m in masks] == scores.imp_counts(net, r, 0.2, 0.1)


def test_inverted_keeps_the_lowest_scores() -> None:
    net, counts = tiny(), [10, 8, 6]
    top = scores.method_masks(scores.METHODS["magnitude"], net, counts, [], 0)
    low = scores.method_masks(scores.METHODS["magnitude"], net, counts, [], 0, inverted=True)
    kept_top = torch.cat([layer.weight.abs()[m] for layer, m in zip(net, top, strict=True)])
    kept_low = torch.cat([layer.weight.abs()[m] for layer, m in zip(net, low, strict=True)])
    assert kept_low.max() <= kept_top.min() or kept_low.mean() < kept_top.mean()


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10_000))
def test_shuffled_control_keeps_per_layer_counts_exactly(seed: int) -> None:
    net = tiny(seed, (12, 9, 7, 3))
    masks = scores.method_masks(scores.METHODS["magnitude"], net,
                                scores.imp_counts(net, 5, 0.2, 0.1), [], seed)
    shuffled = random_masks(masks, seed)
    assert [int(m.sum()) for m in shuffled] == [int(m.sum()) for m in masks]


def small_split(n: int = 64) -> Split:
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(n, 784, generator=g), torch.randint(0, 10, (n,), generator=g)
    return Split(x, y, torch.full((16, 784), float("nan")), torch.zeros(16, dtype=torch.long))


def params(**atinit: Any) -> Params:
    cfg = atinit_config(**atinit)
    return Params(DataConfig(64, 16), ModelConfig("mlp", MLPConfig((16, 8))),
                  TrainConfig(epochs=1, lr=0.01, batch_size=16, seed=0), PruneConfig(),
                  sections={"imp": ImpConfig(), "atinit": cfg})


def atinit_config(**changes: Any) -> atinit.AtInitConfig:
    return atinit.AtInitConfig(**{"batches": 2, "supermask_epochs": 1, **changes})


def test_calibration_batches_come_from_the_training_split_only() -> None:
    split = small_split()
    got = arms.calibration_batches(split, params())
    assert len(got) == 2 and all(len(x) == 16 for x, _ in got)
    pairs = {(tuple(r.tolist()), int(label)) for r, label in zip(split.x, split.y, strict=True)}
    for x, y in got:
        assert not torch.isnan(x).any()  # the test split here is all NaN
        assert all((tuple(r.tolist()), int(label)) in pairs for r, label in zip(x, y, strict=True))


def test_an_at_init_arm_holds_its_mask_bit_exact_through_training() -> None:
    cfg = params()
    torch.manual_seed(0)
    init = tuple(Layer(torch.randn(o, i) * 0.05) for i, o in ((784, 16), (16, 8), (8, 10)))
    split = Split(small_split().x, small_split().y, small_split().x[:16], small_split().y[:16])
    start, masks = arms.start_of(arms.Arm("snip", round=5), init, cfg,
                                 arms.calibration_batches(split, cfg))
    trained, _ = masked_train(start, masks, split, cfg.train)
    for layer, m in zip(trained, masks, strict=True):
        assert torch.equal(layer.weight[~m], torch.zeros_like(layer.weight[~m]))


def test_supermask_keeps_exactly_its_share_and_never_trains_the_weights() -> None:
    torch.manual_seed(0)
    init = tuple(Layer(torch.randn(o, i) * 0.05) for i, o in ((784, 16), (16, 8), (8, 10)))
    masks = supermask.masks_of(init, 0.3, 1)
    assert [int(m.sum()) for m in masks] == [supermask.kept_count(layer, 0.3) for layer in init]
    frozen = supermask.frozen_weights(init, "signed_constant", 0.3)
    for layer, f in zip(init, frozen, strict=True):
        assert torch.equal(f.weight.sign(), layer.weight.sign())
        assert f.weight.abs().unique().numel() == 1
    before = [layer.weight.clone() for layer in frozen]
    supermask.train_supermask(frozen, 0.3, small_split(), params().train, 0.01, 1, 0)
    assert all(torch.equal(a, layer.weight) for a, layer in zip(before, frozen, strict=True))


def raw_params() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "params.yaml").read_text())


@pytest.mark.parametrize(("key", "value", "message"), [
    ("methods", ["snip", "lottery"], "atinit.methods[1] = 'lottery' is not allowed"),
    ("rounds", [], "atinit.rounds = [] is not allowed"),
    ("control_rounds", [7, 7], "atinit.control_rounds[1] = 7 is not allowed"),
    ("supermask_keep", [0.5, 1.5], "atinit.supermask_keep[1] = 1.5 is not allowed"),
    ("supermask_lr", float("nan"), "atinit.supermask_lr = nan is not allowed"),
    ("control_rounds", [7, 8], "atinit.control_rounds[1] = 8 is not allowed: one of atinit.rounds"),
    ("supermask_keep", [0.1, 0.1000001], "atinit.supermask_keep[1] = 0.1000001 is not allowed"),
    ("seeds", [], "atinit.seeds = [] is not allowed"),
    ("seeds", [0, 1, 1], "atinit.seeds[2] = 1 is not allowed"),
    ("seeds", [0, -1], "atinit.seeds[1] = -1 is not allowed"),
])
def test_bad_atinit_params_are_one_line_naming_the_key(key: str, value: Any,
                                                       message: str) -> None:
    raw = copy.deepcopy(raw_params())
    raw["atinit"][key] = value
    with pytest.raises(ParamsError) as err:
        parse_params(raw)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_params_yaml_atinit_section_is_the_default() -> None:
    assert parse_params(raw_params()).atinit == atinit.AtInitConfig()


def test_a_seed_of_the_study_need_not_be_a_seed_of_train() -> None:
    """atinit@<seed> runs for every seed of atinit.seeds, trained net or not: its params are
    train's recipe with that seed; a seed of neither list is refused in one line."""
    raw = copy.deepcopy(raw_params())
    raw["train"]["seeds"], raw["atinit"]["seeds"] = [0], [0, 7]
    cfg = parse_params(raw)
    assert cfg.for_seed(7, "atinit.seeds").train.seed == 7
    with pytest.raises(ParamsError, match=r"atinit\.seeds = \[0, 7\].*\(3\)"):
        cfg.for_seed(3, "atinit.seeds")
    assert atinit.STUDY.stage("atinit").seeds == "atinit.seeds"
    assert "atinit.seeds" not in atinit.STUDY.stage("atinit").params  # adding one: that one runs
    assert "atinit.seeds" in atinit.STUDY.stage("atinit_compare").params


def test_the_init_drawn_again_is_the_one_train_saves() -> None:
    """The stage's init is build_model(model, seed): the weights train@<seed> starts from
    (and saves as init.pt), byte for byte; another seed draws other weights."""
    from prunelab.models.networks import build_model, weights_blob
    from prunelab.training.loop import train

    cfg = params()
    cpu = torch.device("cpu")
    first = weights_blob(build_model(cfg.model, 3, cpu).layers(), "mlp")
    model = build_model(cfg.model, 3, cpu)
    saved = weights_blob(model.layers(), "mlp")  # as stages/train.py saves it, then trains
    x, y = small_split().x[:20], small_split().y[:20]
    train(model, x, y, x, y, replace(cfg.train, epochs=1, batch_size=10))
    assert first == saved != weights_blob(model.layers(), "mlp")
    assert weights_blob(build_model(cfg.model, 4, cpu).layers(), "mlp") != first


def test_verdicts_follow_the_paired_interval() -> None:
    def rows(method: float, control: float) -> list[dict[str, str]]:
        return [{"arm": "snip@7", "accuracy": str(method)},
                {"arm": "snip@7/shuffled", "accuracy": str(control)}]

    clear = compare.verdicts({0: rows(95, 90), 1: rows(96, 90.5), 2: rows(95.5, 90.2)})
    assert clear[0]["verdict"] == "beats it" and clear[0]["difference"] > 4
    tie = compare.verdicts({0: rows(95, 96), 1: rows(96, 95), 2: rows(95.5, 95.4)})
    assert tie[0]["verdict"] == "no difference beyond the interval"
    one = compare.verdicts({0: rows(95, 90)})
    assert one[0]["verdict"] == "one seed: no interval"


def test_a_second_run_resumes_every_finished_arm_and_a_new_key_recomputes(
        tmp_path: Path) -> None:
    cfg = params(methods=("random", "synflow"), rounds=(2,), control_rounds=(2,),
                 controls=("shuffled",), supermask_inits=("kaiming",), supermask_keep=(0.5,))
    torch.manual_seed(0)
    init = tuple(Layer(torch.randn(o, i) * 0.05) for i, o in ((784, 16), (16, 8), (8, 10)))
    split = Split(small_split().x, small_split().y, small_split().x[:16], small_split().y[:16])
    seen: list[tuple[str, bool]] = []
    store = arms.ArmStore(tmp_path / "atinit" / "0", "key-a")
    first = list(arms.run(cfg, init, split, store, lambda r, done: seen.append((r["arm"], done))))
    assert [a.name for a in arms.arms(cfg)] == [r["arm"] for r in first]
    assert not any(done for _, done in seen) and len(first) == 6
    assert (tmp_path / "atinit" / ".gitignore").read_text() == "*\n"
    seen.clear()
    again = list(arms.run(cfg, init, split, store, lambda r, done: seen.append((r["arm"], done))))
    assert again == first and all(done for _, done in seen)
    seen.clear()
    other = arms.ArmStore(tmp_path / "atinit" / "0", "key-b")  # other settings or code
    list(arms.run(cfg, init, split, other, lambda r, done: seen.append((r["arm"], done))))
    assert not any(done for _, done in seen)


def test_arms_in_two_workers_equal_the_arms_run_here(tmp_path: Path) -> None:
    """Two spawned single-threaded workers give every arm exactly what this process gives it
    with one thread (each arm seeds its own draws: the order they finish in changes nothing);
    rows come back in the study's order; the stage's own thread count is restored."""
    cfg = params(methods=("random", "snip"), rounds=(2,), control_rounds=(2,),
                 controls=("shuffled", "reinit"), supermask_inits=("kaiming",),
                 supermask_keep=(0.5,))
    torch.manual_seed(0)
    init = tuple(Layer(torch.randn(o, i) * 0.05) for i, o in ((784, 16), (16, 8), (8, 10)))
    split = Split(small_split().x, small_split().y, small_split().x[:16], small_split().y[:16])
    before = torch.get_num_threads()
    torch.set_num_threads(2)  # not the arms' 1 (an xdist worker may run with 1 already)
    try:
        here = arms.run(cfg, init, split, arms.ArmStore(tmp_path / "a", "k"), lambda r, d: None,
                        workers=1, threads=1)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    told: list[str] = []
    pooled = arms.run(cfg, init, split, arms.ArmStore(tmp_path / "b", "k"),
                      lambda r, d: told.append(r["arm"]), workers=2, threads=1)
    assert [r["arm"] for r in pooled] == [a.name for a in arms.arms(cfg)] and sorted(told) == \
        sorted(r["arm"] for r in pooled)
    for a, b in zip(here, pooled, strict=True):
        assert {k: v for k, v in a.items() if k != "seconds"} == \
            {k: v for k, v in b.items() if k != "seconds"}, a["arm"]


def test_a_failing_arm_in_a_worker_stops_the_run_with_its_error() -> None:
    cfg = params(methods=("random",), rounds=(2,), control_rounds=(), controls=(),
                 supermask_inits=(), supermask_keep=())
    init = tuple(Layer(torch.randn(o, i) * 0.05) for i, o in ((784, 16), (16, 8), (8, 10)))
    split = Split(small_split().x, small_split().y, small_split().x[:16], small_split().y[:16])
    tasks = [arms.Arm("random", round=2), arms.Arm("no_such_method", round=2)]
    with pytest.raises(KeyError, match="no_such_method"):
        list(run_tasks(arms._work, tasks, workers=2, setup=arms._setup,
                       shared=(cfg, init, split)))


def fake_seed_rows(seed: int) -> list[dict[str, str]]:
    rows = []
    for method, base in (("snip", 95.0), ("random", 93.0)):
        for rnd, left in ((7, 21.0), (13, 5.5)):
            rows.append({"arm": f"{method}@{rnd}", "method": method, "control": "",
                         "round": str(rnd), "keep": "", "weights_remaining": str(left),
                         "accuracy": str(base - rnd / 10 + seed * 0.1)})
            rows.append({"arm": f"{method}@{rnd}/shuffled", "method": method,
                         "control": "shuffled", "round": str(rnd), "keep": "",
                         "weights_remaining": str(left), "accuracy": str(base - 3 + seed * 0.2)})
    for keep, acc in ((0.3, 96.5), (0.5, 95.5)):
        rows.append({"arm": f"supermask/kaiming@{keep:g}", "method": "supermask", "control": "",
                     "round": "", "keep": str(keep), "weights_remaining": str(keep * 100),
                     "accuracy": str(acc)})
        rows.append({"arm": f"supermask/kaiming@{keep:g}/random", "method": "supermask",
                     "control": "random", "round": "", "keep": str(keep),
                     "weights_remaining": str(keep * 100), "accuracy": "10.0"})
    return rows


IMP_ROWS = [{"round": str(r), "variant": v, "weights_remaining": str(w), "accuracy": str(a)}
            for r, w, a in ((0, 100, 97.0), (7, 21.0, 97.5), (13, 5.5, 96.0))
            for v in ("ticket", "reinit")]
TUNED = [{"criterion": "magnitude", "training": "fine-tuned", "nominal_sparsity": str(k),
          "accuracy": str(97 - 10 * k * k)} for k in (0.0, 0.5, 0.9)]


def test_the_comparison_draws_every_curve_and_the_section_states_the_verdicts() -> None:
    per_seed = {s: fake_seed_rows(s) for s in (0, 1, 2)}
    rows = compare.aggregate(per_seed)
    result = compare.summary(rows, compare.verdicts(per_seed), IMP_ROWS, 97.0)
    assert result["supermask_best"] == {"arm": "supermask/kaiming@0.3", "accuracy": 96.5,
                                        "random_mask_accuracy": 10.0}
    assert result["gap_to_ticket"]["snip@13"] == pytest.approx(95.0 - 1.3 + 0.1 - 96.0)
    assert compare.headline(result)["supermask.best_accuracy"] == 96.5
    fig = compare.draw(rows, IMP_ROWS, TUNED, 97.0, "mlp")
    ax = fig.axes[0]
    labels = [line.get_label() for line in ax.get_lines()]
    assert {"IMP ticket", "one-shot magnitude + fine-tune", "snip at init",
            "random at init"} <= set(labels)
    ticket = next(line for line in ax.get_lines() if line.get_label() == "IMP ticket")
    assert list(ticket.get_xdata()) == [5.5, 21.0, 100.0]
    assert ax.get_xscale() == "log" and ax.xaxis_inverted()
    assert len(ax.collections) >= 4  # controls, supermasks, random masks, bands
    text = compare.section(result, 3)
    assert "| snip | 7 | shuffled |" in text and "beats it" in text
    assert "96.50%" in text and "10.00%" in text


def test_stages_of_different_studies_log_the_same_params_and_hash() -> None:
    from prunelab.config import parse_params as core_only
    from prunelab.tracking.runs import params_hash, values

    doc = raw_params()
    core, whole = core_only(doc), parse_params(doc)  # a train stage; the validate stage
    assert set(values(core, doc)) == set(values(whole, doc)) >= {"atinit.supermask_keep",
                                                                  "imp.rounds", "train.lr"}
    assert params_hash(core, doc) == params_hash(whole, doc)
    changed = copy.deepcopy(doc)
    changed["imp"]["rounds"] = 5
    assert params_hash(core, changed) != params_hash(core, doc)
