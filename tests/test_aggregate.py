"""Replicates: mean, sample std and t-interval across seeds (prunelab.aggregate), the band
figure, and the aggregate stage end to end on fake seeds."""

from __future__ import annotations

import csv
import importlib.util
import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from prunelab import paths
from prunelab.aggregate import (
    AGGREGATE_COLUMNS,
    aggregate_metrics,
    aggregate_rows,
    flat_metrics,
    headline_stats,
    stats,
    study_coverage,
)
from prunelab.errors import DataError
from prunelab.files import csv_text
from prunelab.plot import STUDY_ACCURACY, STUDY_GRID, band_figure

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
    # 0.7, 0.6, 0.7: mean 0.6666667, s = 0.0577350; half = 4.3026527 * 0.0577350 / sqrt(3)
    # = 0.1434218
    assert k == {"n": 3, "mean": 0.666667, "std": 0.057735, "ci_low": 0.523245,
                 "ci_high": 0.810088}
    assert got["magnitude"]["dense_accuracy"] == {"n": 3, "mean": 97.0, "std": 0.0,
                                                  "ci_low": 97.0, "ci_high": 97.0}
    # random's curve has no k = 0 point: no dense accuracy to average
    assert got["random"]["dense_accuracy"]["n"] == 0
    assert got["random"]["max_sparsity_within_1pt"]["std"] == 0.0


def test_a_k_of_none_is_left_out_of_its_stats() -> None:
    summaries = {0: summary(None, 0.25), 1: summary(0.6, 0.25), 2: summary(0.7, 0.25)}
    got = headline_stats(summaries, three_seeds(), lambda s: f"x{s}.json")
    assert got["magnitude"]["max_sparsity_within_1pt"]["n"] == 2


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
                                {"weight": {"points": 3, "inside_ci": 2, "inside_2std": 3}})
    assert metrics["seeds"] == [0, 1] and metrics["n"] == 2
    flat = flat_metrics(metrics)
    assert flat["weight.magnitude.max_sparsity_within_1pt.mean"] == 0.65
    assert flat["study_coverage.weight.inside_ci"] == 2
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


def test_coverage_classifies_each_notebook_point() -> None:
    # the notebook: 97.15 at k = 0, 82.43 at k = 0.9, 72.03 at k = 0.95
    rows = study_rows({0.0: (97.0, 0.1, 96.8, 97.2),     # inside the CI and within 2 std
                       0.9: (85.0, 2.0, 83.0, 87.0),     # outside the CI, inside 85 +- 4
                       0.95: (60.0, 1.0, 58.0, 62.0)})   # outside both
    points, counts = study_coverage(rows, "mlp")
    assert [(p["sparsity"], p["study"], p["inside_ci"], p["inside_2std"]) for p in points] == [
        (0.0, 97.15, True, True), (0.9, 82.43, False, True), (0.95, 72.03, False, False)]
    assert counts == {"weight": {"points": 3, "inside_ci": 1, "inside_2std": 2}}


def test_coverage_is_undefined_with_one_seed_and_absent_elsewhere() -> None:
    one = study_rows({0.0: (97.15, None, None, None)})
    points, counts = study_coverage(one, "mlp")
    assert points[0]["inside_ci"] is None and points[0]["inside_2std"] is None
    assert counts == {"weight": {"points": 1, "inside_ci": None, "inside_2std": None}}
    assert study_coverage(one, "lenet5") == ([], {})
    assert study_coverage(study_rows({0.0: (97.0, 0.1, 96.8, 97.2)}, scope="global"),
                          "mlp") == ([], {})
    assert study_coverage(study_rows({0.0: (97.0, 0.1, 96.8, 97.2)}, criterion="random"),
                          "mlp") == ([], {})
    # read back from the CSV (text, '' for None) the classification is the same
    rows = study_rows({0.9: (85.0, 2.0, 83.0, 87.0)})
    assert study_coverage(as_csv(rows), "mlp") == study_coverage(rows, "mlp")


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


@pytest.mark.parametrize("seeds", [1, 3])
def test_band_figure_draws_a_png(seeds: int) -> None:
    blob = band_figure(both_methods(seeds), "layer", 3, "mlp")
    assert blob.startswith(b"\x89PNG")


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
    assert set(metrics["study_coverage"]) == {"weight", "unit"}
    assert metrics["study_coverage"]["weight"]["points"] == 3  # k = 0, 0.5, 0.9

    plotted = CliRunner().invoke(load_stage("plot").main, [])
    assert plotted.exit_code == 0, plotted.output
    assert paths.FIGURE.read_bytes().startswith(b"\x89PNG")


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
