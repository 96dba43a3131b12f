"""A paired comparison across seeds, and the verdict its 95% interval supports: the one rule
the studies' sentences share ("beats it" / "wins" when the whole interval is above zero, ...)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from prunelab.reporting.intervals import stats

ONE_SEED = "one seed: no interval"


def paired(diffs: Sequence[float], above: str, below: str, neither: str) -> dict[str, Any]:
    """The mean of ``diffs`` (one per seed: a method minus its comparison), the 95% interval of
    that mean, and ``above`` / ``below`` / ``neither`` as the interval lies above zero, below
    it, or across it (one seed: no interval, and the verdict says so)."""
    d = stats(diffs)
    if d.ci_low is None or d.ci_high is None:
        verdict = ONE_SEED
    elif d.ci_low > 0:
        verdict = above
    elif d.ci_high < 0:
        verdict = below
    else:
        verdict = neither
    return {"difference": round(d.mean, 4),
            "ci_low": None if d.ci_low is None else round(d.ci_low, 4),
            "ci_high": None if d.ci_high is None else round(d.ci_high, 4),
            "seeds": d.n, "verdict": verdict}
