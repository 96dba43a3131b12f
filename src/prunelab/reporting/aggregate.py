"""Replicates: every seed's curves and headlines as mean, sample std and 95% t-interval.

Each seed of train.seeds trains and prunes its own net; this module turns their curve rows and
summaries into one row per (method, criterion, scope, k) and one summary per criterion, and says
where the study's notebook falls against them. Pure functions on parsed rows: the aggregate
stage reads and writes the files.

The intervals themselves live in prunelab.reporting.intervals (importable from here too): the 95%
t-interval of a mean, and the 95% prediction interval of one run, which is what the notebook,
itself one run, is tested against.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from prunelab.config import STUDY_CRITERIA, grid_step
from prunelab.errors import DataError
from prunelab.reporting.intervals import (  # noqa: F401  (CONFIDENCE, t_quantile: importable from here)
    ACCURACY_DECIMALS,
    CONFIDENCE,
    Stats,
    optional,
    prediction_interval,
    row_prediction_interval,
    stats,
    t_quantile,
)
from prunelab.reporting.notebook import STUDY_ACCURACY, STUDY_GRID

SPARSITY_DECIMALS = 6  # shares, as the curves
HEADLINES = ("max_sparsity_within_1pt", "accuracy_at_max_sparsity")  # prune.summarise's keys
AGGREGATE_COLUMNS = (
    "method", "criterion", "scope", "sparsity", "seeds",
    "accuracy", "accuracy_std", "accuracy_ci_low", "accuracy_ci_high",
    "effective_sparsity", "effective_sparsity_std", "effective_sparsity_ci_low",
    "effective_sparsity_ci_high",
)
COVERAGE_COLUMNS = ("method", "criterion", "sparsity", "study", "mean", "ci_low", "ci_high",
                    "pi_low", "pi_high", "inside_ci", "inside_pi")
COVERAGE_TESTS = ("inside_ci", "inside_pi")  # coverage_counts' counts, after "points"
FIX = "rerun the seeds' stages: dvc repro"

Source = Callable[[int], Path | str]  # seed -> the file its rows came from (error messages)
Key = tuple[str, str, str, float]  # method, criterion, scope, sparsity


def stats_dict(values: Sequence[float], decimals: int) -> dict[str, int | float | None]:
    """``stats(values).rounded(decimals)``, or n = 0 and Nones when there are no values."""
    if not values:
        return {"n": 0, "mean": None, "std": None, "ci_low": None, "ci_high": None}
    return stats(values).rounded(decimals)


def grid_stats_dict(values: Sequence[float], decimals: int) -> dict[str, int | float | None]:
    """A grid-valued number across seeds (a k of the sparsity grid): {n, mean, std, ci_low,
    ci_high, min, max} with no interval (ci_low, ci_high None) and the per-seed range instead.

    The mean of 0.8 and 0.9 is 0.85, off the grid, and a t-interval around it can leave
    [0, 1): for a number that only takes grid values the honest spread is min..max
    ("0.72 +- 0.04 (0.7-0.8)"). Nones everywhere, n = 0, when there are no values.
    """
    out = stats_dict(values, decimals) | {"ci_low": None, "ci_high": None}
    return out | ({"min": round(min(values), decimals), "max": round(max(values), decimals)}
                  if values else {"min": None, "max": None})


# -- curves ------------------------------------------------------------------------------------

def _number(row: Mapping[str, Any], column: str) -> float:
    value = float(row[column])
    if not math.isfinite(value):
        raise ValueError(f"{column} is {row[column]!r}")
    return value


def curve_points(rows: Sequence[Mapping[str, str]], source: str
                 ) -> dict[Key, tuple[float, float]]:
    """A seed's curve CSV rows as {(method, criterion, scope, k): (accuracy, effective
    sparsity)}, in file order; a damaged file (no rows, a missing column, a non-number, the
    same point twice) is a DataError naming ``source``."""
    points: dict[Key, tuple[float, float]] = {}
    try:
        for row in rows:
            key = (row["method"], row["criterion"], row["scope"], _number(row, "sparsity"))
            if key in points:
                raise ValueError(f"{_point(key)} appears twice")
            points[key] = (_number(row, "accuracy"), _number(row, "effective_sparsity"))
    except (KeyError, ValueError, TypeError) as exc:
        raise DataError(f"{source}: damaged ({exc!r}); rerun: dvc repro -f") from None
    if not points:
        raise DataError(f"{source}: damaged (no rows); rerun: dvc repro -f")
    return points


def _point(key: Key) -> str:
    method, name, scope, k = key
    return f"{method}/{name} ({scope}) at k = {k:g}"


def _some(keys: Iterable[Key], most: int = 3) -> str:
    """The first ``most`` points named, and how many more."""
    keys = list(keys)
    shown = ", ".join(_point(k) for k in keys[:most])
    return shown + (f" and {len(keys) - most} more" if len(keys) > most else "")


def check_same_points(points: Mapping[int, Mapping[Key, Any]], source: Source) -> None:
    """Every seed has the first seed's points, no more and no fewer; else one line naming the
    seed, what differs and the fix."""
    (first, reference), *others = points.items()
    for seed, mine in others:
        missing = [k for k in reference if k not in mine]
        extra = [k for k in mine if k not in reference]
        if missing or extra:
            what = "; ".join(
                ([f"lacks {len(missing)} of seed {first}'s points: {_some(missing)}"]
                 if missing else [])
                + ([f"has {len(extra)} that seed {first} lacks: {_some(extra)}"]
                   if extra else []))
            raise DataError(f"{source(seed)}: seed {seed} {what} (pruned with other params "
                            f"than seed {first}?); {FIX}")


def aggregate_rows(curves: Mapping[int, Sequence[Mapping[str, str]]], source: Source
                   ) -> list[dict[str, Any]]:
    """One row per (method, criterion, scope, k) across the seeds (``curves``: seed -> its
    curve CSV rows, in train.seeds order): the number of seeds, then mean, std and 95% CI of
    accuracy and of effective sparsity (None where undefined: one seed). ``accuracy`` is the
    mean, so the per-seed plot templates draw the aggregate unchanged. Rows in the first
    seed's order."""
    if not curves:
        raise DataError("no seeds to aggregate: train.seeds is empty")
    points = {seed: curve_points(rows, str(source(seed))) for seed, rows in curves.items()}
    check_same_points(points, source)
    reference = next(iter(points.values()))
    out = []
    for key in reference:
        method, name, scope, k = key
        row: dict[str, Any] = {"method": method, "criterion": name, "scope": scope,
                               "sparsity": round(k, SPARSITY_DECIMALS), "seeds": len(points)}
        for i, (column, decimals) in enumerate((("accuracy", ACCURACY_DECIMALS),
                                                ("effective_sparsity", SPARSITY_DECIMALS))):
            s = stats([mine[key][i] for mine in points.values()]).rounded(decimals)
            row |= {column: s["mean"], f"{column}_std": s["std"],
                    f"{column}_ci_low": s["ci_low"], f"{column}_ci_high": s["ci_high"]}
        out.append(row)
    return out


# -- headlines ---------------------------------------------------------------------------------

def dense_accuracies(points: Mapping[Key, tuple[float, float]]) -> dict[str, float]:
    """Each criterion's k = 0 accuracy (the unpruned net), where the grid has k = 0."""
    return {name: acc for (_, name, _, k), (acc, _) in points.items() if k == 0.0}


def _headline(summary: Mapping[str, Any], name: str, seed: int, source: Source
              ) -> dict[str, float | None]:
    """One criterion's headline numbers from a seed's metrics file, checked."""
    entry = summary.get(name)
    try:
        if not isinstance(entry, Mapping):
            raise ValueError(f"no summary for criterion {name!r}, which its curve has")
        values = {h: entry[h] for h in HEADLINES}
        for h, v in values.items():
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))
                                  or not math.isfinite(v)):
                raise ValueError(f"{name}.{h} is {v!r}")
    except (KeyError, ValueError) as exc:
        raise DataError(f"{source(seed)}: seed {seed}'s summary is damaged ({exc}); "
                        "rerun: dvc repro -f") from None
    return values


def headline_stats(summaries: Mapping[int, Mapping[str, Any]],
                   curves: Mapping[int, Sequence[Mapping[str, str]]], source: Source
                   ) -> dict[str, dict[str, dict[str, int | float | None]]]:
    """Per criterion of one method, across the seeds: the highest k within 1 point of dense,
    the accuracy there, and the dense accuracy (the curve's k = 0). The accuracies as {n,
    mean, std, ci_low, ci_high}; the k, a grid value, as {n, mean, std, ci_low: None,
    ci_high: None, min, max} (:func:`grid_stats_dict`). ``summaries``: seed -> its prune
    metrics JSON; ``source``: seed -> that file. A seed whose summary lacks a criterion is a
    DataError naming the seed.

    n counts the seeds with a value: a k is None when no grid point is within 1 point (a grid
    without k = 0), and then the dense accuracy has no value either.
    """
    points = {seed: curve_points(rows, f"seed {seed}'s curve") for seed, rows in curves.items()}
    names = list(dict.fromkeys(name for (_, name, _, _) in next(iter(points.values()))))
    dense = {seed: dense_accuracies(p) for seed, p in points.items()}
    out: dict[str, dict[str, dict[str, int | float | None]]] = {}
    for name in names:
        per_seed = {seed: _headline(summaries[seed], name, seed, source) for seed in summaries}
        ks = [h["max_sparsity_within_1pt"] for h in per_seed.values()]
        accs = [h["accuracy_at_max_sparsity"] for h in per_seed.values()]
        out[name] = {
            "max_sparsity_within_1pt": grid_stats_dict(
                [k for k in ks if k is not None], SPARSITY_DECIMALS),
            "accuracy_at_max_sparsity": stats_dict(
                [a for a in accs if a is not None], ACCURACY_DECIMALS),
            "dense_accuracy": stats_dict(
                [d[name] for d in dense.values() if name in d], ACCURACY_DECIMALS),
        }
    for seed, summary in summaries.items():
        extra = [name for name in summary if name not in names]
        if extra:
            raise DataError(f"{source(seed)}: seed {seed} summarises criteria its curves lack "
                            f"({', '.join(map(str, extra))}); rerun: dvc repro -f")
    return out


def seed_metrics(summaries: Mapping[str, Mapping[str, Any]],
                 curves: Mapping[str, Sequence[Mapping[str, str]]]) -> dict[str, float | None]:
    """One seed's headline numbers as flat MLflow names, {method: its summary} and {method:
    its curve rows} in: ``weight.magnitude.max_sparsity_within_1pt``, ...,
    ``weight.dense_accuracy``."""
    out: dict[str, float | None] = {}
    for method, summary in summaries.items():
        for name, entry in summary.items():
            for h in HEADLINES:
                out[f"{method}.{name}.{h}"] = entry.get(h) if isinstance(entry, Mapping) else None
        dense = dense_accuracies(curve_points(curves[method], f"{method} curve"))
        out[f"{method}.dense_accuracy"] = next(iter(dense.values()), None)
    return out


# -- the study's notebook ----------------------------------------------------------------------

def study_coverage(rows: Sequence[Mapping[str, Any]], notebook: bool
                   ) -> tuple[list[dict[str, Any]], dict[str, dict[str, int | None]]]:
    """Where the notebook's numbers fall against ours, per notebook point we also have.

    ``rows``: aggregate rows of both methods. ``notebook``: whether this run is the notebook's
    set-up (:func:`prunelab.reporting.notebook.notebook_applies`); when False there is nothing to
    compare. Only layer-scope rows of magnitude / l2 are compared. Per point: the notebook's
    accuracy, our mean, the 95% CI of our mean (``ci_low``, ``ci_high``), the 95% prediction
    interval of a single run of ours (``pi_low``, ``pi_high``), and whether the notebook's
    number is inside each (``inside_ci``, ``inside_pi``; None with one seed). The notebook is
    one run, so ``inside_pi`` is the test of agreement; ``inside_ci`` asks the stricter question
    whether it hits our mean. Summary per method: {points, inside_ci, inside_pi} (counts; None
    with one seed).
    """
    if not isinstance(notebook, bool):  # the old signature took model.arch: never truthy
        raise TypeError(f"study_coverage: notebook must be a bool (notebook_applies(cfg)), "
                        f"not {notebook!r}")
    if not notebook:
        return [], {}
    ours = {(str(r["method"]), grid_step(float(r["sparsity"]))): r for r in rows
            if r["scope"] == "layer" and r["criterion"] == STUDY_CRITERIA.get(str(r["method"]))}
    found: list[dict[str, Any]] = []
    for method, notebook_accuracy in STUDY_ACCURACY.items():
        for k, study in zip(STUDY_GRID, notebook_accuracy, strict=True):
            row = ours.get((method, grid_step(k)))
            if row is None:
                continue
            mean = float(row["accuracy"])
            low, high = optional(row["accuracy_ci_low"]), optional(row["accuracy_ci_high"])
            pi_low, pi_high = row_prediction_interval(row) or (None, None)
            found.append({
                "method": method, "criterion": STUDY_CRITERIA[method], "sparsity": k,
                "study": study, "mean": mean, "ci_low": low, "ci_high": high,
                "pi_low": pi_low, "pi_high": pi_high,
                "inside_ci": None if low is None or high is None else low <= study <= high,
                "inside_pi": None if pi_low is None or pi_high is None else
                pi_low <= study <= pi_high})
    return found, coverage_counts(found)


def coverage_counts(points: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, int | None]]:
    """Per method: {points, inside_ci, inside_pi}: how many notebook points, how many inside
    the 95% CI of our mean and inside the 95% prediction interval of one run (None when
    undefined: one seed)."""
    counts: dict[str, dict[str, int | None]] = {}
    for method in dict.fromkeys(p["method"] for p in points):
        mine = [p for p in points if p["method"] == method]
        counts[method] = {"points": len(mine)} | {
            test: None if any(p[test] is None for p in mine) else sum(p[test] for p in mine)
            for test in COVERAGE_TESTS}
    return counts


# -- outputs -----------------------------------------------------------------------------------

def aggregate_metrics(seeds: Sequence[int],
                      headlines: Mapping[str, Mapping[str, Mapping[str, Any]]],
                      coverage: Mapping[str, Mapping[str, int | None]]) -> dict[str, Any]:
    """metrics/aggregate.json: the seeds, then per method and criterion the headline stats,
    then the notebook coverage counts -- nested dicts of numbers only, which `dvc metrics
    diff` flattens to names like ``weight.magnitude.max_sparsity_within_1pt.mean``."""
    return {"seeds": list(seeds), "n": len(seeds), **{m: dict(h) for m, h in headlines.items()},
            "study_coverage": {m: dict(c) for m, c in coverage.items()}}


def flat_metrics(metrics: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """The metrics document's numbers under dotted names (MLflow), Nones and lists left out."""
    out: dict[str, float] = {}
    for key, value in metrics.items():
        if isinstance(value, Mapping):
            out |= flat_metrics(value, f"{prefix}{key}.")
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out[f"{prefix}{key}"] = float(value)
    return out


def curve_series(rows: Sequence[Mapping[str, Any]]) -> dict[str, list[tuple[int, float]]]:
    """The aggregate curves as MLflow histories over the grid (step = per-mille k):
    ``weight.magnitude.accuracy``, ``..._ci_low``, ...; undefined values left out."""
    series: dict[str, list[tuple[int, float]]] = {}
    for row in rows:
        for column in AGGREGATE_COLUMNS[5:]:
            value = optional(row[column])
            if value is not None:
                series.setdefault(f"{row['method']}.{row['criterion']}.{column}", []).append(
                    (grid_step(float(row["sparsity"])), value))
    return series


def summary_line(metrics: Mapping[str, Any]) -> str:
    """The stage's one line: the study criteria's highest k within 1 point of dense (mean +- std
    over the seeds, and the seeds' range) and how many notebook points fall inside the 95%
    range of a single run of ours (and inside the 95% CI of our mean)."""
    parts = []
    for method, name in STUDY_CRITERIA.items():
        k = metrics.get(method, {}).get(name, {}).get("max_sparsity_within_1pt")
        if not k or k["mean"] is None:
            continue
        spread = f" +- {k['std']:.2f}" if k["std"] is not None else ""
        if k.get("min") is not None and k["min"] != k["max"]:
            spread += f" ({k['min']:g}-{k['max']:g})"
        cover = metrics.get("study_coverage", {}).get(method)
        inside = (f", notebook inside the 95% range of one run of ours at {cover['inside_pi']} "
                  f"of {cover['points']} k (inside our mean's 95% CI at {cover['inside_ci']})"
                  if cover and cover.get("inside_pi") is not None else "")
        parts.append(f"{method} ({name}) within 1 point of dense up to k = {k['mean']:.2f}"
                     f"{spread}{inside}")
    n = metrics["n"]
    return "; ".join([f"{n} seed{'s' if n != 1 else ''}", *parts])
