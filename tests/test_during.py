"""The during-training study: the schedules against their formulas (property-tested) and in
training, the dynamic loop against the study's loop, regrowth's exact counts, the early-bird
rule, seeded robustness, resumable arms, params errors, and what the comparison shows."""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from prunelab.config import DataConfig, MLPConfig, ModelConfig, Params, PruneConfig, TrainConfig
from prunelab.data.split import Split
from prunelab.errors import ParamsError
from prunelab.models.layers import Layer
from prunelab.models.networks import Network, build_model
from prunelab.studies.during import arms, compare, schedule, sparse
from prunelab.studies.during import study as during
from prunelab.studies.registry import parse_params
from prunelab.training.loop import train

ROOT = Path(__file__).resolve().parents[1]
SIZES = ((784, 24), (24, 12), (12, 10))


def split(n: int = 200, seed: int = 0) -> Split:
    g = torch.Generator().manual_seed(seed)
    x, y = torch.randn(n, 784, generator=g), torch.randint(0, 10, (n,), generator=g)
    return Split(x, y, x[:50], y[:50])


def params(**changes: Any) -> Params:
    cfg = during.DuringConfig(**{"method_seeds": (0,), "schedule_seeds": (0, 1),
                                 "sparsities": (0.9,), "dst_sparsities": (0.9,), "every": 2,
                                 "earlybird_every": 1, "earlybird_window": 2, "eval_every": 10,
                                 **changes})
    return Params(DataConfig(200, 50), ModelConfig("mlp", MLPConfig((24, 12))),
                  TrainConfig(epochs=2, lr=0.01, batch_size=20, seed=0), PruneConfig(),
                  sections={"during": cfg})


def init(seed: int = 0) -> tuple[Layer, ...]:
    return tuple(layer.with_weight(layer.weight.detach())
                 for layer in build_model(params().model, seed, torch.device("cpu")).layers())


# -- the schedules -----------------------------------------------------------------------------

@settings(max_examples=200, deadline=None)
@given(st.integers(0, 3000), st.floats(0.05, 0.99), st.integers(1, 1000), st.integers(1, 2000),
       st.sampled_from(schedule.SHAPES))
def test_the_schedule_is_the_formula_at_every_step(step: int, final: float, start: int,
                                                   length: int, shape: str) -> None:
    end = start + length
    got = schedule.sparsity_at(step, final, start, end, shape)
    p = min(max((step - start) / (end - start), 0), 1)
    expected = {"decreasing": final * (1 - (1 - p) ** 3), "constant": final * p,
                "increasing": final * p ** 3}[shape]
    assert got == pytest.approx(0.0 if step < start else expected, abs=1e-12)
    assert 0 <= got <= final + 1e-12
    later = schedule.sparsity_at(step + 1, final, start, end, shape)
    assert later >= got - 1e-12  # never un-prunes


def test_the_shapes_prune_fast_first_evenly_and_slow_first() -> None:
    def rates(shape: str) -> list[float]:
        pts = schedule.curve(shape, 0.9, 100, 1100, 100, 1200)
        return [b[1] - a[1] for a, b in zip(pts[1:-2], pts[2:-1])]
    dec, con, inc = rates("decreasing"), rates("constant"), rates("increasing")
    assert all(a > b for a, b in zip(dec, dec[1:]))  # decreasing rate
    assert max(con) - min(con) < 1e-9
    assert all(a < b for a, b in zip(inc, inc[1:]))
    assert schedule.curve("constant", 0.9, 100, 1100, 100, 1200)[-1] == (1200, 0.9)


def test_a_gradual_arm_prunes_to_the_formula_at_each_update_step() -> None:
    cfg = params()
    start, end = arms.steps(cfg)
    method = sparse.Gradual(0.9, start, end, 2, "constant")
    net, done = sparse.train_dynamic(init(), split(), cfg.train, method)
    hidden = sum(a * b for a, b in SIZES[:-1])
    total = sum(a * b for a, b in SIZES)
    for step, left in done.sparsity[1:]:
        s = schedule.sparsity_at(step, 0.9, start, end, "constant")
        kept = sum(sparse.kept(a * b, s) for a, b in SIZES[:-1]) + SIZES[-1][0] * SIZES[-1][1]
        assert left == round(100 * kept / total, 4), (step, s)
    assert done.sparsity[-1][0] == end and done.steps == 20
    for layer, m in zip(net, done.masks, strict=True):  # pruned weights are exact zeros
        assert torch.equal(layer.weight[~m], torch.zeros_like(layer.weight[~m]))
    assert hidden > 0


def test_a_method_that_never_prunes_takes_exactly_the_study_loops_steps() -> None:
    cfg = params()
    data = split()
    model = Network(init())
    train(model, data.x, data.y, data.x_test, data.y_test, cfg.train, progress=False)
    net, done = sparse.train_dynamic(init(), data, cfg.train, sparse.Method())
    assert all(torch.equal(a.weight, b.weight) for a, b in zip(net, model.layers(), strict=True))
    assert done.masks is None and done.steps == 20


def test_the_oneshot_arm_is_dense_until_the_end_then_pruned_once() -> None:
    cfg = params()
    start, end = arms.steps(cfg)
    method = arms.method_of(arms.Arm(0, "oneshot", 0.9), cfg, init(), None)
    _, done = sparse.train_dynamic(init(), split(), cfg.train, method)
    assert [s for s, _ in done.sparsity] == [0, end]


# -- dynamic sparse training -------------------------------------------------------------------

@settings(max_examples=40, deadline=None)
@given(st.integers(0, 10_000), st.sampled_from(["random", "gradient"]),
       st.floats(0.5, 0.95), st.floats(0.05, 0.5))
def test_regrowth_keeps_the_count_exact_and_never_regrows_what_it_dropped(
        seed: int, grow: str, sparsity: float, drop: float) -> None:
    g = torch.Generator().manual_seed(seed)
    weights = [torch.randn(o, i, generator=g) for i, o in SIZES]
    grads = [torch.randn(o, i, generator=g) for i, o in SIZES]
    method = sparse.Regrow(sparsity, 1, 100, drop, grow, seed)
    masks = method.start(weights)
    weights = [w * m for w, m in zip(weights, masks, strict=True)]
    new = method.update(1, weights, grads, masks)
    assert new is not None
    for old, m, (i, o) in zip(masks, new, SIZES, strict=True):
        assert int(m.sum()) == int(old.sum()) == (sparse.kept(i * o, sparsity)
                                                   if (i, o) != SIZES[-1] else i * o)
        dropped = old & ~m
        grown = m & ~old
        assert int(dropped.sum()) == int(grown.sum())
        assert not (grown & old).any()  # a regrown weight was inactive before this update


def test_rigl_regrows_the_largest_gradients_and_set_does_not_look_at_them() -> None:
    weights = [torch.ones(4, 10), torch.ones(10, 4)]
    grads = [torch.zeros(4, 10), torch.zeros(10, 4)]
    masks = [torch.zeros(4, 10, dtype=torch.bool), torch.ones(10, 4, dtype=torch.bool)]
    masks[0][:, :5] = True
    grads[0][0, 9] = grads[0][1, 8] = 5.0  # the inactive weights with the largest gradient
    weights[0][0, 0] = weights[0][1, 1] = 0.1  # the active weights with smallest |w|
    rigl = sparse.Regrow(0.5, 1, 100, 0.2, "gradient", 0)  # f = 0.2 at step 0 of 100
    new = rigl.update(0, weights, grads, masks)
    assert new is not None
    assert new[0][0, 9] and new[0][1, 8] and not new[0][0, 0] and not new[0][1, 1]
    assert rigl.fraction(100) == pytest.approx(0.0) and rigl.fraction(50) == pytest.approx(0.1)


def test_the_static_baseline_holds_set_and_rigls_starting_mask() -> None:
    cfg = params()
    net = init()
    start = arms.method_of(arms.Arm(0, "rigl", 0.9), cfg, net, None).start(
        [layer.weight for layer in net])
    static = arms.method_of(arms.Arm(0, "static", 0.9), cfg, net, None).start(
        [layer.weight for layer in net])
    assert start is not None and static is not None
    assert all(torch.equal(a, b) for a, b in zip(start, static, strict=True))


# -- early-bird tickets ------------------------------------------------------------------------

def test_the_early_bird_step_is_where_the_window_first_stays_below_the_threshold() -> None:
    d = [(50, 0.4), (100, 0.05), (150, 0.2), (200, 0.08), (250, 0.09), (300, 0.01)]
    assert sparse.earliest_stable(d, 0.1, 2) == 250
    assert sparse.earliest_stable(d, 0.1, 1) == 100
    assert sparse.earliest_stable(d, 0.1, 4) is None
    assert sparse.earliest_stable(d, 0.01, 1) is None


def test_the_early_bird_distance_is_the_share_of_hidden_mask_entries_that_changed() -> None:
    bird = sparse.EarlyBird(0.5, 1)
    w = [torch.arange(1.0, 9.0).view(2, 4), torch.ones(3, 2)]
    bird.after_step(1, w)
    swapped = [w[0].flip(0), w[1]]  # the kept half (row 1) becomes the pruned half
    bird.after_step(2, swapped)
    assert bird.distances == [(2, 1.0)]


# -- robustness, arms, resume ------------------------------------------------------------------

def test_robustness_is_seeded_reproducible_and_deletes_the_stated_share() -> None:
    cfg = params()
    net, done = sparse.train_dynamic(init(), split(), cfg.train, sparse.Static(
        sparse.random_masks([layer.weight for layer in init()], 0.5, 3)))
    arm = arms.Arm(0, "static", 0.5)
    first = arms.robustness(net, done.masks, split(), cfg, arm)
    assert first == arms.robustness(net, done.masks, split(), cfg, arm)
    assert set(first) == {"noise_0.1", "noise_0.3", "delete_0.1", "delete_0.3"}
    for share in (0.1, 0.3):
        g = torch.Generator().manual_seed(5)
        cut = arms.deleted(net, done.masks, share, g)
        for i, (a, b, m) in enumerate(zip(net, cut, done.masks, strict=True)):
            alive = int(m.sum())
            gone = int(((a.weight != 0) & (b.weight == 0)).sum())
            assert gone == (0 if i == len(net) - 1 else math.floor(share * alive))
            assert torch.equal(b.weight[b.weight != 0], a.weight[b.weight != 0])
        again = arms.deleted(net, done.masks, share, torch.Generator().manual_seed(5))
        assert all(torch.equal(x.weight, y.weight) for x, y in zip(cut, again, strict=True))


def test_every_arm_runs_once_and_a_second_run_resumes_all_of_them(tmp_path: Path) -> None:
    cfg = params(shapes=("decreasing", "constant"), dst_methods=("set", "static"),
                 earlybird_threshold=0.9)
    names = [a.key for a in arms.arms(cfg)]
    assert len(names) == len(set(names))
    assert "0/gradual/decreasing@0.9" in names and "1/gradual/constant@0.9" in names
    seen: list[tuple[str, bool]] = []
    first = list(arms.run(cfg, split(), tmp_path, "k", lambda r, d: seen.append((r["arm"], d))))
    assert not any(d for _, d in seen)
    assert {r["arm"] for r in first} >= {"dense/earlybird", "earlybird@0.9",
                                         "earlybird/late@0.9", "set@0.9", "static@0.9"}
    late = next(r for r in first if r["arm"] == "earlybird/late@0.9")
    early = next(r for r in first if r["arm"] == "earlybird@0.9")
    assert late["drawn_at"] == 20 and 1 <= early["drawn_at"] <= 20
    seen.clear()
    again = list(arms.run(cfg, split(), tmp_path, "k", lambda r, d: seen.append((r["arm"], d))))
    assert again == first and all(d for _, d in seen)
    seen.clear()
    list(arms.run(cfg, split(), tmp_path, "other", lambda r, d: seen.append((r["arm"], d))))
    assert not any(d for _, d in seen)


def test_arms_in_two_workers_equal_the_arms_run_here(tmp_path: Path) -> None:
    """Two spawned single-threaded workers (the early-bird arms started once their seed's
    dense run has drawn the tickets) give every arm exactly what one thread here gives, in the
    study's order; the tickets are stored either way."""
    cfg = params(dst_methods=("set",), earlybird_threshold=0.9)
    here = arms.run(cfg, split(), tmp_path / "here", "k", lambda r, d: None, workers=1)
    told: list[str] = []
    pooled = arms.run(cfg, split(), tmp_path / "pool", "k",
                      lambda r, d: told.append(r["arm"]), workers=2)
    assert [r["arm"] for r in pooled] == [r["arm"] for r in here] and len(told) == len(here)
    assert {"earlybird@0.9", "earlybird/late@0.9"} <= {r["arm"] for r in pooled}
    for a, b in zip(here, pooled, strict=True):
        assert {k: v for k, v in a.items() if "seconds" not in k} == \
            {k: v for k, v in b.items() if "seconds" not in k}, a["arm"]
    assert (tmp_path / "pool" / "0" / "tickets.pt").is_file()


def test_the_init_is_the_one_train_draws_for_the_seed() -> None:
    a, b = init(3), build_model(params().model, 3, torch.device("cpu")).layers()
    assert all(torch.equal(x.weight, y.weight) for x, y in zip(a, b, strict=True))


# -- params ------------------------------------------------------------------------------------

def raw_params() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "params.yaml").read_text())


@pytest.mark.parametrize(("key", "value", "message"), [
    ("shapes", ["decreasing", "sudden"], "during.shapes[1] = 'sudden' is not allowed"),
    ("final_sparsity", 1.0, "during.final_sparsity = 1.0 is not allowed"),
    ("end", 0.05, "during.end = 0.05 is not allowed: a share of the training steps in (0.1, 1)"),
    ("sparsities", [0.9, 0.9], "during.sparsities[1] = 0.9 is not allowed"),
    ("dst_methods", ["rigl", "snip"], "during.dst_methods[1] = 'snip' is not allowed"),
    ("schedule_seeds", [0, -1], "during.schedule_seeds[1] = -1 is not allowed"),
    ("earlybird", "yes", "during.earlybird = 'yes' is not allowed: true or false"),
    ("every", 0, "during.every = 0 is not allowed"),
])
def test_bad_during_params_are_one_line_naming_the_key(key: str, value: Any,
                                                       message: str) -> None:
    raw = copy.deepcopy(raw_params())
    raw["during"][key] = value
    with pytest.raises(ParamsError) as err:
        parse_params(raw)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_params_yaml_during_section_is_the_default() -> None:
    assert parse_params(raw_params()).during == during.DuringConfig()


# -- the comparison ----------------------------------------------------------------------------

def fake_rows() -> list[dict[str, Any]]:
    rows = []
    for seed in range(3):
        def row(arm: str, method: str, acc: float, shape: str = "", s: float = 0.9,
                left: float = 10.1, seed: int = seed, **extra: Any) -> dict[str, Any]:
            return {"seed": seed, "arm": arm, "method": method, "shape": shape, "sparsity": s,
                    "weights_remaining": left, "accuracy": acc, "seconds": 30.0 + seed,
                    "steps": 1800, "drawn_at": extra.pop("drawn_at", None),
                    "noise_0.1": acc - 1, "delete_0.3": acc - 5 + extra.pop("bump", 0),
                    **extra}
        rows += [row("dense/earlybird", "dense", 97.0, s=0.0, left=100.0, drawn_at=300,
                     tracking_seconds=0.6),
                 row("earlybird@0.9", "earlybird", 96.0, drawn_at=300),
                 row("earlybird/late@0.9", "earlybird", 96.5, "late", drawn_at=1800),
                 row("gradual/decreasing@0.9", "gradual", 96.8 + 0.1 * seed, "decreasing",
                     bump=2),
                 row("gradual/constant@0.9", "gradual", 96.0 + 0.1 * seed, "constant"),
                 row("gradual/increasing@0.9", "gradual", 96.9 + 0.1 * seed - 0.05 * (seed % 2),
                     "increasing", bump=2 - 0.3 * seed),
                 row("rigl@0.9", "rigl", 95.0 + 0.01 * seed),
                 row("static@0.9", "static", 94.0 - 0.02 * seed)]
    return rows


def test_the_schedule_verdicts_follow_the_paired_intervals() -> None:
    rows = fake_rows()
    verdicts = {(v["measure"], v["against"]): v for v in compare.schedule_verdicts(rows, 0.9)}
    assert verdicts[("accuracy", "constant")]["verdict"] == "wins"
    assert verdicts[("accuracy", "constant")]["difference"] == pytest.approx(0.8)
    assert verdicts[("accuracy", "increasing")]["verdict"] in ("ties", "loses")
    assert verdicts[("delete_0.3", "constant")]["verdict"] == "wins"
    one = compare.schedule_verdicts([r for r in rows if r["seed"] == 0], 0.9)
    assert {v["verdict"] for v in one} == {"one seed: no interval"}


def test_the_comparison_draws_every_method_and_the_section_states_the_findings() -> None:
    rows = fake_rows()
    curve = compare.aggregate(rows)
    result = compare.summary(rows, curve, 0.9, 1800)
    assert result["dense_accuracy"] == 97.0
    assert result["gap_to_dense"]["gradual/decreasing@0.9"] == pytest.approx(-0.1)
    assert result["dynamic_vs_static"]["rigl@0.9"]["verdict"] == "wins"
    assert result["earlybird"]["0"] == {"drawn_at": 300, "steps_saved_share": 0.8333,
                                        "accuracy": 96.0, "late_accuracy": 96.5}
    assert result["costs"]["earlybird_tracking_share"] == pytest.approx(0.02, abs=1e-3)
    head = compare.headline(result)
    assert head == {"gradual.gap_to_dense": pytest.approx(-0.1),
                    "schedule.decreasing_minus_constant": pytest.approx(0.8)}
    imp = [{"variant": "ticket", "weights_remaining": w, "accuracy": a}
           for w, a in (("100", "97"), ("10.7", "97.5"), ("3.5", "96"))]
    schedules = {s: schedule.curve(s, 0.9, 180, 1260, 100, 1800) for s in schedule.SHAPES}
    gated = [{"weights_remaining": "30.5", "accuracy": "97.1", "l2_refit_accuracy": "96.0"}]
    fig = compare.draw(curve, schedules, {"imp": imp, "l0": gated}, result, "mlp")
    left, mid, right = fig.axes
    labels = {line.get_label() for line in left.get_lines()}
    assert {"IMP ticket", "gradual magnitude (decreasing rate)", "RigL",
            "static random mask"} <= labels
    ticket = next(line for line in left.get_lines() if line.get_label() == "IMP ticket")
    assert sorted(ticket.get_xdata()) == [3.5, 10.7, 100.0]
    assert left.get_xscale() == "log" and left.xaxis_inverted()
    triangles = {c.get_label(): c.get_offsets().tolist() for c in left.collections}
    assert triangles["L0 gates on units (compacted)"] == [[30.5, 97.1]]
    assert triangles["l2_refit at the same widths"] == [[30.5, 96.0]]
    assert [line.get_label() for line in mid.get_lines()] == [f"{s} rate"
                                                              for s in schedule.SHAPES]
    assert max(mid.get_lines()[0].get_ydata()) == pytest.approx(90.0)
    heights = sorted(round(p.get_height(), 4) for p in right.patches)
    assert heights[-1] == pytest.approx(96.9 + 0.1 - 0.05 / 3, abs=1e-3)  # increasing, clean
    assert len(right.patches) == 3 * 3  # three shapes x (clean, noise, delete)
    text = compare.section(result, "3 seeds")
    assert "wins against constant (+0.80" in text and "| accuracy | constant | +0.80 |" in text
    assert "Early-bird ticket (seed 0): drawn at step 300 (83% of the dense run's steps saved)" \
        in text
    assert math.isfinite(result["costs"]["rigl_over_dense"])
