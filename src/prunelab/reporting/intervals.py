"""Intervals across replicates: the 95% t-interval of a mean, and the 95% prediction interval
of one more draw.

A small module with no plotting, no torch and no knowledge of files, so that the statistics
(reporting.aggregate) and the figures (reporting.figures) share one computation and every stage that
draws a figure does not depend on the aggregate stage's code.

Why a t-interval: with 3-5 seeds the normal quantile (1.96) is far too narrow; the t quantile
with n - 1 degrees of freedom is the textbook 95% interval for a mean of n draws. One draw has
no spread to measure, so its std and intervals are None, never 0.

Why a prediction interval: the study's notebook is ONE run, not a mean. A single run that
agrees with ours lands inside the 95% CI of our mean only ~68% of the time with 5 seeds (the
CI shrinks with sqrt(n), a run's own spread does not). The 95% range of one new run is the
prediction interval mean +- t(0.975, n - 1) * s * sqrt(1 + 1/n), sqrt(n + 1) times the CI.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

CONFIDENCE = 0.95
ACCURACY_DECIMALS = 4  # accuracies in %, as the curves


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


def prediction_interval(mean: float, std: float | None, n: int
                        ) -> tuple[float, float] | None:
    """The 95% prediction interval for ONE new draw, from a sample of ``n`` with this mean and
    sample std: mean +- t(0.975, n - 1) * std * sqrt(1 + 1/n). None when undefined (n < 2, or
    no std). A single run of the same set-up falls inside it 95% of the time (normal draws);
    the CI of the mean (``stats``) is sqrt(n + 1) times narrower and is not that range.
    """
    if std is None or n < 2:
        return None
    half = t_quantile(n - 1) * std * math.sqrt(1 + 1 / n)
    return mean - half, mean + half


def optional(value: Any) -> float | None:
    """A number from an aggregate row (computed, or read back from its CSV: '' is None)."""
    return None if value is None or value == "" else float(value)


def row_prediction_interval(row: Mapping[str, Any]) -> tuple[float, float] | None:
    """The 95% prediction interval of one run's accuracy at an aggregate row (computed, or read
    back from its CSV), rounded as the accuracies: from its mean, std and number of seeds; None
    with one seed. The coverage table and the band figure both use this one."""
    pi = prediction_interval(float(row["accuracy"]), optional(row["accuracy_std"]),
                             int(float(row["seeds"])))
    return None if pi is None else (round(pi[0], ACCURACY_DECIMALS),
                                    round(pi[1], ACCURACY_DECIMALS))
