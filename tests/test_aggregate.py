"""Replicates: mean, sample std and t-interval across seeds (reporting.aggregate), the prediction
interval the notebook is tested against, when the notebook applies (reporting.notebook), the band
figure, and the aggregate stage end to end on fake seeds."""

from __future__ import annotations

import csv
import importlib.util
import io
import json
import math
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from prunelab import paths
from prunelab.config import DataConfig, MLPConfig, Params, load_params
from prunelab.errors import DataError
from prunelab.reporting.aggregate import (
    AGGREGATE_COLUMNS,
    COVERAGE_COLUMNS,
    aggregate_metrics,
    aggregate_rows,
    flat_metrics,
    headline_stats,
    stats,
    study_coverage,
    summary_line,
)
from prunelab.reporting.figures import band_figure
from prunelab.reporting.intervals import prediction_interval
from prunelab.reporting.notebook import STUDY_ACCURACY, STUDY_GRID, notebook_applies
from prunelab.runtime.files import csv_text

ROOT = Path(__file__).resolve().parents[1]
CURVE_HEAD = ("method", "criterion", "scope", "sparsity", "accuracy", "nominal_sparsity",
              "effective_sparsity", "nonzero_params", "live_params")


def curve(method: str, points: Sequence[tuple[str, float, float, float]],
          scope: str = "layer") -> list[dict[str, str]]:
    """A per-seed curve CSV's rows, as read back (text): (criterion, k, accuracy, effective)."""
    return [dict(zip(CURVE_HEAD, map(str, (method, name, scope, k, acc, k, eff, 100, 100)),
                     strict=True)) for name, k, acc, eff in points]


def source(seed: int) -> str:
    return f"plots/seeds/{seed}/prune_weight.csv"


def as_csv(rows: list[dict[str, Any]]) -> list[dict[str, str]]:
    """Rows through the CSV file and back, as the plot stage reads them."""
    return list(csv.DictReader(io.StringIO(csv_text(rows))))


# -- stats -------------------------------------------------------------------------------------

def test_stats_match_a_hand_computation() -> None:
    # values 1, 2, 3, 4: mean 2.5; s^2 = (1.5^2 + 0.5^2 + 0.5^2 + 1.5^2) / 3 = 5/3, s = 1.2909944;
    # t(0.975, 3) = 3.1824463; half-width = 3.1824463 * 1.2909944 / sqrt(4) = 2.0542603
    s = stats([1.0, 2.0, 3.0, 4.0])
    assert s.n == 4 and s.mean == 2.5
    assert s.std == pytest.approx(1.2909944, abs=1e-7)
    assert s.ci_low == pytest.approx(2.5 - 2.0542603, abs=1e-7)
    assert s.ci_high == pytest.approx(2.5 + 2.0542603, abs=1e-7)


def test_prediction_interval_matches_a_hand_computation() -> None:
    # values 1, 2, 3, 4: mean 2.5, s = 1.2909944, t(0.975, 3) = 3.1824463; one new draw:
    # half-width = 3.1824463 * 1.2909944 * sqrt(1 + 1/4) = 4.5934656 (the CI's: 2.0542603)
    s = stats([1.0, 2.0, 3.0, 4.0])
    pi = prediction_interval(s.mean, s.std, s.n)
    assert pi is not None
    assert pi[0] == pytest.approx(2.5 - 4.5934656, abs=1e-7)
    assert pi[1] == pytest.approx(2.5 + 4.5934656, abs=1e-7)
    # n = 3, s = 1: t(0.975, 2) * sqrt(4/3) = 4.3026527 * 1.1547005 = 4.9682754
    assert prediction_interval(10.0, 1.0, 3) == pytest.approx((5.0317246, 14.9682754), abs=1e-7)
    # one seed (or no std): no spread to predict from
    assert prediction_interval(96.84, None, 1) is None
    assert prediction_interval(96.84, 0.5, 1) is None


def test_one_value_has_no_spread_and_no_interval() -> None:
    s = stats([96.84])
    assert (s.n, s.mean, s.std, s.ci_low, s.ci_high) == (1, 96.84, None, None, None)
    with pytest.raises(ValueError):
        stats([])


# -- curves ------------------------------------------------------------------------------------

def three_seeds() -> dict[int, list[dict[str, str]]]:
    """magnitude at k = 0 and 0.5, random at k = 0.5, for seeds 0, 1, 2."""
    return {
        0: curve("weight", [("magnitude", 0.0, 97.0, 0.0), ("magnitude", 0.5, 95.0, 0.6),
                            ("random", 0.5, 90.0, 0.5)]),
        1: curve("weight", [("magnitude", 0.0, 97.0, 0.0), ("magnitude", 0.5, 96.0, 0.7),
                            ("random", 0.5, 91.0, 0.5)]),
        2: curve("weight", [("magnitude", 0.0, 97.0, 0.0), ("magnitude", 0.5, 97.0, 0.8),
                            ("random", 0.5, 95.0, 0.5)]),
    }


def test_aggregate_rows_equal_a_hand_computation() -> None:
    rows = aggregate_rows(three_seeds(), source)
    assert [tuple(r) for r in rows] == [AGGREGATE_COLUMNS] * 3
    assert [(r["criterion"], r["sparsity"], r["seeds"]) for r in rows] == [
        ("magnitude", 0.0, 3), ("magnitude", 0.5, 3), ("random", 0.5, 3)]  # first seed's order
    mag = rows[1]
    # accuracy 95, 96, 97: mean 96, s = 1; t(0.975, 2) = 4.3026527, half = 4.3026527 / sqrt(3)
    # = 2.4841377 -> 93.5159, 98.4841 (4 decimals)
    assert (mag["accuracy"], mag["accuracy_std"]) == (96.0, 1.0)
    assert (mag["accuracy_ci_low"], mag["accuracy_ci_high"]) == (93.5159, 98.4841)
    # effective sparsity 0.6, 0.7, 0.8: mean 0.7, s = 0.1, half 0.24841377 (6 decimals)
    assert (mag["effective_sparsity"], mag["effective_sparsity_std"]) == (0.7, 0.1)
    assert (mag["effective_sparsity_ci_low"], mag["effective_sparsity_ci_high"]) == (
        0.451586, 0.948414)
    # random 90, 91, 95: mean 92, s^2 = (4 + 1 + 9) / 2 = 7, s = 2.6457513,
    # half = 4.3026527 * 2.6457513 / sqrt(3) = 6.5723906 -> 85.4276, 98.5724
    rnd = rows[2]
    assert (rnd["accuracy"], rnd["accuracy_std"]) == (92.0, 2.6458)
    assert (rnd["accuracy_ci_low"], rnd["accuracy_ci_high"]) == (85.4276, 98.5724)
    dense = rows[0]  # three equal values: no spread, the interval is the point
    assert (dense["accuracy"], dense["accuracy_std"], dense["accuracy_ci_low"]) == (97.0, 0.0,
                                                                                     97.0)


def test_one_seed_leaves_the_spread_cells_empty() -> None:
    rows = aggregate_rows({4: three_seeds()[0]}, source)
    assert rows[1]["seeds"] == 1 and rows[1]["accuracy"] == 95.0
    text = as_csv(rows)
    for column in AGGREGATE_COLUMNS[6:9] + AGGREGATE_COLUMNS[10:]:
        assert text[1][column] == ""


@pytest.mark.parametrize("change, says", [
    (lambda rows: rows[:2], "lacks 1 of seed 0's points: weight/random (layer) at k = 0.5"),
    (lambda rows: [*rows, {**rows[2], "sparsity": "0.9"}],
     "has 1 that seed 0 lacks: weight/random (layer) at k = 0.9"),
])
def test_seeds_with_other_points_name_the_seed_and_the_fix(change: Any, says: str) -> None:
    curves = three_seeds()
    curves[1] = change(curves[1])
    with pytest.raises(DataError) as err:
        aggregate_rows(curves, source)
    message = str(err.value)
    assert message.startswith("plots/seeds/1/prune_weight.csv: seed 1 ")
    assert says in message and "dvc repro" in message and "\n" not in message


@pytest.mark.parametrize("column, value", [("accuracy", "nan"), ("sparsity", "x"),
                                           ("criterion", None)])
def test_a_damaged_seed_file_is_a_data_error(column: str, value: str | None) -> None:
    curves = three_seeds()
    if value is None:
        del curves[2][0][column]
    else:
        curves[2][0][column] = value
    with pytest.raises(DataError, match=r"^plots/seeds/2/prune_weight.csv: damaged"):
        aggregate_rows(curves, source)


def test_the_same_point_twice_is_damage() -> None:
    curves = three_seeds()
    curves[0].append(dict(curves[0][0]))
    with pytest.raises(DataError, match="appears twice"):
        aggregate_rows(curves, source)


# -- headlines ---------------------------------------------------------------------------------

def summary(k_magnitude: float | None, k_random: float) -> dict[str, Any]:
    return {"magnitude": {"max_sparsity_within_1pt": k_magnitude,
                          "accuracy_at_max_sparsity": 96.5},
            "random": {"max_sparsity_within_1pt": k_random, "accuracy_at_max_sparsity": 96.2}}


def test_headlines_across_seeds() -> None:
    summaries = {0: summary(0.7, 0.25), 1: summary(0.6, 0.25), 2: summary(0.7, 0.25)}
    got = headline_stats(summaries, three_seeds(), lambda s: f"metrics/seeds/{s}/x.json")
    assert list(got) == ["magnitude", "random"]
    k = got["magnitude"]["max_sparsity_within_1pt"]
    # 0.7, 0.6, 0.7: mean 0.6666667, s = 0.0577350; a grid value: no t-interval (it would
    # reach 0.523245-0.810088, off the grid), the seeds' range instead
    assert k == {"n": 3, "mean": 0.666667, "std": 0.057735, "ci_low": None, "ci_high": None,
                 "min": 0.6, "max": 0.7}
    # the accuracies keep their interval: 96.5 three times
    assert got["magnitude"]["accuracy_at_max_sparsity"] == {
        "n": 3, "mean": 96.5, "std": 0.0, "ci_low": 96.5, "ci_high": 96.5}
    assert got["magnitude"]["dense_accuracy"] == {"n": 3, "mean": 97.0, "std": 0.0,
                                                  "ci_low": 97.0, "ci_high": 97.0}
    # random's curve has no k = 0 point: no dense accuracy to average
    assert got["random"]["dense_accuracy"]["n"] == 0
    assert got["random"]["max_sparsity_within_1pt"]["std"] == 0.0


def test_k_off_the_grid_is_reported_with_its_grid_range() -> None:
    # 0.8 and 0.9: the mean 0.85 is no grid value; min and max say which values the seeds took.
    # s = 0.0707107; a t-interval (t(0.975, 1) = 12.7062047) would be 0.85 +- 0.6353, past 1
    summaries = {0: summary(0.8, 0.25), 1: summary(0.9, 0.25)}
    curves = {s: three_seeds()[s] for s in (0, 1)}
    k = headline_stats(summaries, curves, str)["magnitude"]["max_sparsity_within_1pt"]
    assert k == {"n": 2, "mean": 0.85, "std": 0.070711, "ci_low": None, "ci_high": None,
                 "min": 0.8, "max": 0.9}
    one = headline_stats({3: summary(0.7, 0.25)}, {3: three_seeds()[0]}, str)
    assert one["magnitude"]["max_sparsity_within_1pt"] == {
        "n": 1, "mean": 0.7, "std": None, "ci_low": None, "ci_high": None, "min": 0.7,
        "max": 0.7}
    assert one["magnitude"]["accuracy_at_max_sparsity"] == {
        "n": 1, "mean": 96.5, "std": None, "ci_low": None, "ci_high": None}
    metrics = aggregate_metrics([0, 1], {"weight": headline_stats(summaries, curves, str)},
                                {"weight": {"points": 3, "inside_ci": 1, "inside_pi": 3}})
    assert summary_line(metrics) == (
        "2 seeds; weight (magnitude) within 1 point of dense up to k = 0.85 +- 0.07 (0.8-0.9), "
        "notebook inside the 95% range of one run of ours at 3 of 3 k (inside our mean's 95% "
        "CI at 1)")


def test_a_k_of_none_is_left_out_of_its_stats() -> None:
    summaries = {0: summary(None, 0.25), 1: summary(0.6, 0.25), 2: summary(0.7, 0.25)}
    got = headline_stats(summaries, three_seeds(), lambda s: f"x{s}.json")
    assert got["magnitude"]["max_sparsity_within_1pt"]["n"] == 2
    assert got["magnitude"]["max_sparsity_within_1pt"]["min"] == 0.6
    nothing = {0: summary(None, 0.25)}
    got = headline_stats(nothing, {0: three_seeds()[0]}, str)
    assert got["magnitude"]["max_sparsity_within_1pt"] == {
        "n": 0, "mean": None, "std": None, "ci_low": None, "ci_high": None, "min": None,
        "max": None}


def test_a_seed_without_a_criterion_summary_is_named() -> None:
    summaries = {0: summary(0.7, 0.25), 1: summary(0.6, 0.25), 2: summary(0.7, 0.25)}
    del summaries[2]["random"]
    with pytest.raises(DataError, match=r"^metrics/seeds/2/x.json: seed 2's summary is damaged"
                                        r" \(no summary for criterion 'random'"):
        headline_stats(summaries, three_seeds(), lambda s: f"metrics/seeds/{s}/x.json")


def test_metrics_nest_numbers_only_under_names() -> None:
    summaries = {0: summary(0.7, 0.25), 1: summary(0.6, 0.25)}
    curves = {s: three_seeds()[s] for s in (0, 1)}
    metrics = aggregate_metrics([0, 1], {"weight": headline_stats(summaries, curves, str)},
                                {"weight": {"points": 3, "inside_ci": 2, "inside_pi": 3}})
    assert metrics["seeds"] == [0, 1] and metrics["n"] == 2
    flat = flat_metrics(metrics)
    assert flat["weight.magnitude.max_sparsity_within_1pt.mean"] == 0.65
    assert flat["weight.magnitude.max_sparsity_within_1pt.min"] == 0.6
    assert flat["weight.magnitude.max_sparsity_within_1pt.max"] == 0.7
    assert "weight.magnitude.max_sparsity_within_1pt.ci_low" not in flat  # None
    assert flat["study_coverage.weight.inside_ci"] == 2
    assert flat["study_coverage.weight.inside_pi"] == 3
    assert "seeds" not in flat and "weight.random.dense_accuracy.mean" not in flat  # None

    def leaves(node: Any) -> list[Any]:
        return [x for v in node.values() for x in (leaves(v) if isinstance(v, dict) else [v])]

    assert all(x is None or isinstance(x, (int, float)) for m in ("weight", "study_coverage")
               for x in leaves(metrics[m]))


# -- the study's notebook ----------------------------------------------------------------------

def study_rows(band: dict[float, tuple[float, float | None, float | None, float | None]],
               method: str = "weight", criterion: str = "magnitude",
               scope: str = "layer") -> list[dict[str, Any]]:
    """Aggregate rows at the notebook's grid: k -> (mean, std, ci_low, ci_high)."""
    return [{"method": method, "criterion": criterion, "scope": scope, "sparsity": k,
             "seeds": 1 if std is None else 3, "accuracy": mean, "accuracy_std": std,
             "accuracy_ci_low": low, "accuracy_ci_high": high}
            for k, (mean, std, low, high) in band.items()]


def test_coverage_tests_the_notebook_against_the_range_of_one_run() -> None:
    # the notebook: 97.15 at k = 0, 82.43 at k = 0.9, 72.03 at k = 0.95. Three seeds: the
    # prediction interval is mean +- t(0.975, 2) * s * sqrt(1 + 1/3) = mean +- 4.9682754 * s
    rows = study_rows({0.0: (97.0, 0.1, 96.8, 97.2),     # PI 96.5032-97.4968: inside both
                       0.9: (85.0, 2.0, 83.0, 87.0),     # PI 75.0634-94.9366: inside, not CI
                       0.95: (60.0, 1.0, 58.0, 62.0)})   # PI 55.0317-64.9683: outside both
    points, counts = study_coverage(rows, True)
    assert all(tuple(p) == COVERAGE_COLUMNS for p in points)
    assert [(p["sparsity"], p["study"], p["pi_low"], p["pi_high"], p["inside_ci"],
             p["inside_pi"]) for p in points] == [
        (0.0, 97.15, 96.5032, 97.4968, True, True),
        (0.9, 82.43, 75.0634, 94.9366, False, True),
        (0.95, 72.03, 55.0317, 64.9683, False, False)]
    assert [(p["mean"], p["ci_low"], p["ci_high"]) for p in points] == [
        (97.0, 96.8, 97.2), (85.0, 83.0, 87.0), (60.0, 58.0, 62.0)]
    assert counts == {"weight": {"points": 3, "inside_ci": 1, "inside_pi": 2}}


def test_coverage_is_undefined_with_one_seed_and_absent_elsewhere() -> None:
    one = study_rows({0.0: (97.15, None, None, None)})
    points, counts = study_coverage(one, True)
    assert points[0]["inside_ci"] is None and points[0]["inside_pi"] is None
    assert points[0]["pi_low"] is None and points[0]["pi_high"] is None
    assert counts == {"weight": {"points": 1, "inside_ci": None, "inside_pi": None}}
    assert study_coverage(one, False) == ([], {})  # not the notebook's set-up
    assert study_coverage(study_rows({0.0: (97.0, 0.1, 96.8, 97.2)}, scope="global"),
                          True) == ([], {})
    assert study_coverage(study_rows({0.0: (97.0, 0.1, 96.8, 97.2)}, criterion="random"),
                          True) == ([], {})
    # read back from the CSV (text, '' for None) the classification is the same
    rows = study_rows({0.9: (85.0, 2.0, 83.0, 87.0)})
    assert study_coverage(as_csv(rows), True) == study_coverage(rows, True)


def test_coverage_refuses_the_old_architecture_argument() -> None:
    # study_coverage(rows, cfg.model.arch) would be a truthy string: refused, not compared
    with pytest.raises(TypeError, match="notebook_applies"):
        study_coverage(study_rows({0.0: (97.0, 0.1, 96.8, 97.2)}), "mlp")  # type: ignore[arg-type]


NOTEBOOK_PARAMS = load_params(ROOT / "params.yaml")


def _vary(cfg: Params, section: str, **changes: Any) -> Params:
    return replace(cfg, **{section: replace(getattr(cfg, section), **changes)})


def test_notebook_applies_to_its_own_set_up_only() -> None:
    cfg = NOTEBOOK_PARAMS  # the repository's params.yaml is the notebook's set-up
    assert notebook_applies(cfg)
    # what the notebook's numbers do not depend on: the seeds, the device, the grid, criteria
    assert notebook_applies(_vary(cfg, "train", seeds=(0, 1, 2, 3, 4), seed=3, device="cpu"))
    assert notebook_applies(_vary(cfg, "prune", sparsities=(0.0, 0.5),
                                  weight_criteria=("magnitude",)))
    assert notebook_applies(replace(cfg, model=replace(cfg.model, lenet5=replace(
        cfg.model.lenet5, fc=(10,)))))  # the unused architecture's settings
    others = [
        replace(cfg, model=replace(cfg.model, arch="lenet5")),
        replace(cfg, model=replace(cfg.model, mlp=MLPConfig(hidden=(1000, 1000, 500)))),
        replace(cfg, model=replace(cfg.model, mlp=MLPConfig(hidden=(300, 100)))),
        _vary(cfg, "train", epochs=5),
        _vary(cfg, "train", lr=0.01),
        _vary(cfg, "train", batch_size=50),
        _vary(cfg, "prune", scope="global"),
        replace(cfg, data=DataConfig(train_size=1000)),
        replace(cfg, data=DataConfig(test_size=500)),
    ]
    assert [notebook_applies(c) for c in others] == [False] * len(others)


def test_the_statistics_import_no_plotting() -> None:
    code = ("import sys, prunelab.reporting.aggregate, prunelab.reporting.intervals, "
            "prunelab.reporting.notebook; "
            "print(sorted(m for m in ('matplotlib', 'torch') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True, cwd=ROOT)
    assert done.stdout.strip() == "[]"


# -- properties --------------------------------------------------------------------------------

accuracies = st.floats(0.0, 100.0, allow_nan=False, allow_subnormal=False)


@settings(max_examples=200, deadline=None)
@given(st.lists(accuracies, min_size=2, max_size=8))
def test_the_mean_lies_inside_its_interval(values: list[float]) -> None:
    s = stats(values)
    assert s.ci_low is not None and s.ci_high is not None
    assert s.ci_low <= s.mean <= s.ci_high
    assert min(values) - 1e-9 <= s.mean <= max(values) + 1e-9


@settings(max_examples=200, deadline=None)
@given(st.lists(accuracies, min_size=2, max_size=8))
def test_the_interval_shrinks_when_the_same_values_are_seen_twice(values: list[float]) -> None:
    once, twice = stats(values), stats(values + values)
    width = once.ci_high - once.ci_low  # type: ignore[operator]
    width2 = twice.ci_high - twice.ci_low  # type: ignore[operator]
    assert twice.mean == pytest.approx(once.mean, abs=1e-9)
    assert width2 <= width
    if once.std and once.std > 1e-9:
        assert width2 < width


@settings(max_examples=200, deadline=None)
@given(st.lists(accuracies, min_size=2, max_size=8))
def test_the_range_of_one_run_is_sqrt_n_plus_1_times_the_ci(values: list[float]) -> None:
    s = stats(values)
    pi = prediction_interval(s.mean, s.std, s.n)
    assert pi is not None and s.ci_low is not None and s.ci_high is not None
    assert pi[0] <= s.ci_low <= s.mean <= s.ci_high <= pi[1]
    if s.std and s.std > 1e-6:
        ratio = (pi[1] - pi[0]) / (s.ci_high - s.ci_low)
        assert ratio == pytest.approx(math.sqrt(s.n + 1), rel=1e-9)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(accuracies, accuracies), min_size=1, max_size=6), st.randoms())
def test_the_order_of_the_seeds_changes_nothing(per_seed: list[tuple[float, float]],
                                               rng: Any) -> None:
    curves = {seed: curve("unit", [("l2", 0.0, a, 0.0), ("l2", 0.5, b, 0.75)])
              for seed, (a, b) in enumerate(per_seed)}
    order = list(curves)
    rng.shuffle(order)
    assert aggregate_rows({s: curves[s] for s in order}, source) == aggregate_rows(curves, source)


# -- the figure --------------------------------------------------------------------------------

def both_methods(seeds: int) -> list[dict[str, str]]:
    """Aggregate CSV rows of both methods at the notebook's grid, from ``seeds`` fake seeds."""
    rows: list[dict[str, Any]] = []
    for method, name in (("weight", "magnitude"), ("unit", "l2")):
        curves = {s: curve(method, [(c, k, acc + s - 1 + (c == "random"), k)
                                    for c in (name, "random")
                                    for k, acc in zip(STUDY_GRID, STUDY_ACCURACY[method],
                                                      strict=True)])
                  for s in range(seeds)}
        rows += aggregate_rows(curves, source)
    return as_csv(rows)


@pytest.mark.parametrize("notebook", [True, False])
@pytest.mark.parametrize("seeds", [1, 3])
def test_band_figure_draws_a_png(seeds: int, notebook: bool) -> None:
    blob = band_figure(both_methods(seeds), "layer", 3, "mlp", notebook=notebook)
    assert blob.startswith(b"\x89PNG")


def test_band_figure_marks_the_notebook_against_the_range_of_one_run(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Filled diamonds where the notebook is inside the prediction interval, hollow outside;
    both bands shaded for the study criteria; no notebook when it does not apply."""
    import matplotlib.figure

    from prunelab.reporting import figures as plot

    figures: list[Any] = []
    monkeypatch.setattr(plot, "png", lambda fig: figures.append(fig) or b"")
    rows = both_methods(3)  # our mean = the notebook + 0 (seeds 0, 1, 2: -1, 0, +1), s = 1
    far = next(r for r in rows if r["method"] == "weight" and r["criterion"] == "magnitude"
               and r["sparsity"] == "0.9")
    far["accuracy"] = str(float(far["accuracy"]) + 6.0)  # PI +- 4.9683: the notebook outside
    band_figure(rows, "layer", 3, "mlp", notebook=True)
    fig: matplotlib.figure.Figure = figures.pop()
    weight_left = fig.axes[0]
    labels = [t.get_text() for t in weight_left.get_legend().get_texts()]
    assert "notebook inside the 95% range of a single run of ours (9 of 10)" in labels
    assert "notebook outside the 95% range of a single run of ours (1 of 10)" in labels
    assert "magnitude: 95% CI of our mean" in labels
    assert "magnitude: 95% range of a single run (prediction interval)" in labels
    outside = [c for c in weight_left.collections
               if c.get_label().startswith("notebook outside")][0]
    assert [tuple(xy) for xy in outside.get_offsets()] == [(0.9, 82.43)]
    band_figure(rows, "layer", 3, "mlp", notebook=False)
    other = figures.pop()
    labels = [t.get_text() for t in other.axes[0].get_legend().get_texts()]
    assert not any("notebook" in label for label in labels)
    plot.pyplot().close(fig)
    plot.pyplot().close(other)


def test_band_figure_rejects_a_damaged_curve() -> None:
    rows = both_methods(3)
    rows[4]["accuracy"] = ""
    with pytest.raises(DataError, match=r"^plots/aggregate_weight.csv: damaged"):
        band_figure(rows, "layer", 3, "mlp")


# -- the stage, end to end ---------------------------------------------------------------------

def load_stage(name: str) -> Any:
    spec = importlib.util.spec_from_file_location(f"stage_{name}", ROOT / "stages" / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_seed(seed: int, shift: float) -> None:
    """A pruned seed's four files at the real paths: weight (magnitude, random) and unit (l2)."""
    for method, names in (("weight", ("magnitude", "random")), ("unit", ("l2",))):
        rows = curve(method, [(name, k, 97.0 - 30 * k * k + shift - 5 * (name == "random"), k)
                              for name in names for k in (0.0, 0.5, 0.9)])
        path = paths.prune_curve(method, seed)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(csv_text(rows), encoding="utf-8")
        metrics = paths.prune_metrics(method, seed)
        metrics.parent.mkdir(parents=True, exist_ok=True)
        metrics.write_text(json.dumps({name: {"max_sparsity_within_1pt": 0.5 - 0.5 * shift,
                                              "accuracy_at_max_sparsity": 96.0}
                                       for name in names}), encoding="utf-8")


@pytest.fixture
def seeds_repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder with params.yaml (train.seeds: [0, 1]) and both seeds' files; no MLflow."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))
    params["train"]["seeds"] = [0, 1]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params), encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PRUNELAB_TRACKING", "off")
    write_seed(0, 0.0)
    write_seed(1, 1.0)
    return tmp_path


OUTPUTS = (paths.aggregate_curve("weight"), paths.aggregate_curve("unit"),
           paths.AGGREGATE_METRICS)


def test_the_stage_aggregates_the_listed_seeds(seeds_repo: Path) -> None:
    write_seed(7, 50.0)  # a seed since removed from train.seeds: ignored
    paths.prune_curve("unit", 7).write_text("damaged", encoding="utf-8")
    result = CliRunner().invoke(load_stage("aggregate").main, [])
    assert result.exit_code == 0, result.output
    assert result.stderr.startswith("aggregate: 2 seeds; weight (magnitude) within 1 point of "
                                    "dense up to k = 0.25 +- 0.35")
    weight = list(csv.DictReader(paths.aggregate_curve("weight").open(encoding="utf-8")))
    assert tuple(weight[0]) == AGGREGATE_COLUMNS and len(weight) == 6
    assert {r["seeds"] for r in weight} == {"2"}
    # magnitude at k = 0.5: 97 - 7.5 = 89.5 and 90.5 -> mean 90, s = 0.7071068;
    # t(0.975, 1) = 12.7062047, half = 12.7062047 * 0.7071068 / sqrt(2) = 6.3531024
    assert weight[1]["accuracy"] == "90.0" and weight[1]["accuracy_ci_low"] == "83.6469"
    metrics = json.loads(paths.AGGREGATE_METRICS.read_text(encoding="utf-8"))
    assert metrics["seeds"] == [0, 1] and metrics["n"] == 2
    assert metrics["unit"]["l2"]["max_sparsity_within_1pt"]["mean"] == 0.25
    assert metrics["weight"]["magnitude"]["dense_accuracy"]["mean"] == 97.5
    assert metrics["unit"]["l2"]["max_sparsity_within_1pt"] == {
        "n": 2, "mean": 0.25, "std": 0.353553, "ci_low": None, "ci_high": None, "min": 0.0,
        "max": 0.5}
    assert set(metrics["study_coverage"]) == {"weight", "unit"}
    # magnitude, 2 seeds: (97, 98), (89.5, 90.5), (72.7, 73.7) at k = 0, 0.5, 0.9; s = 0.7071068,
    # CI half 6.3531024, PI half 12.7062047 * 0.7071068 * sqrt(1.5) = 11.0039. The notebook's
    # 97.15, 97.00, 82.43: inside every PI, inside the CI at k = 0 only
    assert metrics["study_coverage"]["weight"] == {"points": 3, "inside_ci": 1, "inside_pi": 3}

    plotted = CliRunner().invoke(load_stage("plot").main, [])
    assert plotted.exit_code == 0, plotted.output
    assert paths.FIGURE.read_bytes().startswith(b"\x89PNG")


def test_another_set_up_has_no_notebook_comparison(seeds_repo: Path) -> None:
    params = yaml.safe_load(Path("params.yaml").read_text(encoding="utf-8"))
    params["train"]["epochs"] = 5  # not the notebook's 3
    Path("params.yaml").write_text(yaml.safe_dump(params), encoding="utf-8")
    result = CliRunner().invoke(load_stage("aggregate").main, [])
    assert result.exit_code == 0, result.output
    metrics = json.loads(paths.AGGREGATE_METRICS.read_text(encoding="utf-8"))
    assert metrics["study_coverage"] == {}
    assert "notebook" not in result.stderr
    plotted = CliRunner().invoke(load_stage("plot").main, [])
    assert plotted.exit_code == 0, plotted.output


def test_a_missing_seed_file_fails_with_one_line_and_writes_nothing(seeds_repo: Path) -> None:
    paths.prune_metrics("unit", 1).unlink()
    result = CliRunner().invoke(load_stage("aggregate").main, [])
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "metrics/seeds/1/prune_unit.json" in lines[0] and "seed 1" in lines[0]
    assert "dvc repro" in lines[0]
    assert not any(p.exists() for p in OUTPUTS)
    assert not list(Path().rglob("*.tmp"))  # no half-written file left behind
