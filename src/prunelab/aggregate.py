"""Replicates: every seed's curves and headlines as mean, sample std and 95% t-interval.

Each seed of train.seeds trains and prunes its own net; this module turns their curve rows and
summaries into one row per (method, criterion, scope, k) and one summary per criterion, and says
where the study's notebook falls in those intervals. Pure functions on parsed rows: the
aggregate stage reads and writes the files.

Why a t-interval: with 3-5 seeds the normal quantile (1.96) is far too narrow; the t quantile
with n - 1 degrees of freedom is the textbook 95% interval for a mean of n draws. One seed has
no spread to measure, so its std and interval are None (an empty cell), never 0.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from prunelab.config import grid_step
from prunelab.errors import DataError
from prunelab.plot import STUDY_ACCURACY, STUDY_CRITERION, STUDY_GRID

CONFIDENCE = 0.95
ACCURACY_DECIMALS = 4  # accuracies in %, as the curves
SPARSITY_DECIMALS = 6  # shares, as the curves
COVERAGE_SPREAD = 2.0  # "inside the range of single runs": mean +- 2 std
HEADLINES = ("max_sparsity_within_1pt", "accuracy_at_max_sparsity")  # prune.summarise's keys
AGGREGATE_COLUMNS = (
    "method", "criterion", "scope", "sparsity", "seeds",
    "accuracy", "accuracy_std", "accuracy_ci_low", "accuracy_ci_high",
    "effective_sparsity", "effective_sparsity_std", "effective_sparsity_ci_low",
    "effective_sparsity_ci_high",
)
COVERAGE_COLUMNS = ("method", "criterion", "sparsity", "study", "mean", "ci_low", "ci_high",
                    "inside_ci", "inside_2std")
FIX = "rerun the seeds' stages: dvc repro"

Source = Callable[[int], Path | str]  # seed -> the file its rows came from (error messages)
Key = tuple[str, str, str, float]  # method, criterion, scope, sparsity


@dataclass(frozen=True)
class Stats:
    """A sample of n values: mean, sample std (ddof 1), 95% t-interval of the mean.

    std, ci_low and ci_high are None when n = 1: one draw has no spread to measure.
    """

    n: int
    mean: float
    std: float | None
    ci_low: float | None
    ci_high: float | None

    def rounded(self, decimals: int) -> dict[str, int | float | None]:
        """{n, mean, std, ci_low, ci_high} rounded for a metrics file (None stays None)."""
        def r(x: float | None) -> float | None:
            return None if x is None else round(x, decimals)

        return {"n": self.n, "mean": r(self.mean), "std": r(self.std),
                "ci_low": r(self.ci_low), "ci_high": r(self.ci_high)}


@cache
def t_quantile(df: int) -> float:
    """The two-sided 95% quantile of Student's t with ``df`` degrees of freedom."""
    from scipy.stats import t  # scipy.stats takes ~0.3 s to import: only when asked

    return float(t.ppf(0.5 + CONFIDENCE / 2, df))


def stats(values: Sequence[float]) -> Stats:
    """Mean, sample std and 95% t-interval of ``values`` (at least one finite number).

    Sums are exact (math.fsum), so the order of the seeds cannot change a single bit.
    """
    n = len(values)
    if n == 0:
        raise ValueError("stats of no values")
    mean = math.fsum(values) / n
    if n == 1:
        return Stats(1, mean, None, None, None)
    std = math.sqrt(math.fsum((x - mean) ** 2 for x in values) / (n - 1))
    half = t_quantile(n - 1) * std / math.sqrt(n)
    return Stats(n, mean, std, mean - half, mean + half)


def stats_dict(values: Sequence[float], decimals: int) -> dict[str, int | float | None]:
    """``stats(values).rounded(decimals)``, or n = 0 and Nones when there are no values."""
    if not values:
        return {"n": 0, "mean": None, "std": None, "ci_low": None, "ci_high": None}
    return stats(values).rounded(decimals)


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
    the accuracy there, and the dense accuracy (the curve's k = 0), each as {n, mean, std,
    ci_low, ci_high}. ``summaries``: seed -> its prune metrics JSON; ``source``: seed -> that
    file. A seed whose summary lacks a criterion is a DataError naming the seed.

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
            "max_sparsity_within_1pt": stats_dict(
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

def _optional(value: Any) -> float | None:
    """A number from an aggregate row (computed, or read back from its CSV: '' is None)."""
    return None if value is None or value == "" else float(value)


def study_coverage(rows: Sequence[Mapping[str, Any]], arch: str
                   ) -> tuple[list[dict[str, Any]], dict[str, dict[str, int | None]]]:
    """Where the notebook's numbers fall in our intervals, per notebook point we also have.

    ``rows``: aggregate rows of both methods. The notebook used layer scope, the MLP and
    magnitude / l2; other rows and architectures have no notebook points. Per point: the
    notebook's accuracy, our mean and CI, whether it is inside the 95% CI and inside mean +- 2
    std (the range single runs spread over); both None with one seed. Summary per method:
    {points, inside_ci, inside_2std} (counts; None with one seed).
    """
    if arch != "mlp":
        return [], {}
    ours = {(str(r["method"]), grid_step(float(r["sparsity"]))): r for r in rows
            if r["scope"] == "layer" and r["criterion"] == STUDY_CRITERION.get(str(r["method"]))}
    found: list[dict[str, Any]] = []
    for method, notebook in STUDY_ACCURACY.items():
        for k, study in zip(STUDY_GRID, notebook, strict=True):
            row = ours.get((method, grid_step(k)))
            if row is None:
                continue
            mean, std = float(row["accuracy"]), _optional(row["accuracy_std"])
            low, high = _optional(row["accuracy_ci_low"]), _optional(row["accuracy_ci_high"])
            spread = None if std is None else COVERAGE_SPREAD * std
            found.append({
                "method": method, "criterion": STUDY_CRITERION[method], "sparsity": k,
                "study": study, "mean": mean, "ci_low": low, "ci_high": high,
                "inside_ci": None if low is None or high is None else low <= study <= high,
                "inside_2std": None if spread is None else
                mean - spread <= study <= mean + spread})
    return found, coverage_counts(found)


def coverage_counts(points: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, int | None]]:
    """Per method: how many notebook points, how many inside the CI and inside mean +- 2 std
    (None when undefined: one seed)."""
    counts: dict[str, dict[str, int | None]] = {}
    for method in dict.fromkeys(p["method"] for p in points):
        mine = [p for p in points if p["method"] == method]
        counts[method] = {"points": len(mine)} | {
            test: None if any(p[test] is None for p in mine) else sum(p[test] for p in mine)
            for test in ("inside_ci", "inside_2std")}
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
            value = _optional(row[column])
            if value is not None:
                series.setdefault(f"{row['method']}.{row['criterion']}.{column}", []).append(
                    (grid_step(float(row["sparsity"])), value))
    return series


def summary_line(metrics: Mapping[str, Any]) -> str:
    """The stage's one line: the study criteria's highest k within 1 point of dense (mean +- std
    over the seeds) and how many notebook points fall inside our 95% CI."""
    parts = []
    for method, name in STUDY_CRITERION.items():
        k = metrics.get(method, {}).get(name, {}).get("max_sparsity_within_1pt")
        if not k or k["mean"] is None:
            continue
        spread = f" +- {k['std']:.2f}" if k["std"] is not None else ""
        cover = metrics.get("study_coverage", {}).get(method)
        inside = (f", notebook inside our 95% CI at {cover['inside_ci']} of {cover['points']} k"
                  if cover and cover["inside_ci"] is not None else "")
        parts.append(f"{method} ({name}) within 1 point of dense up to k = {k['mean']:.2f}"
                     f"{spread}{inside}")
    n = metrics["n"]
    return "; ".join([f"{n} seed{'s' if n != 1 else ''}", *parts])
