"""The criteria by granularity and name: the names in params.yaml, metrics, plots and MLflow."""

from __future__ import annotations

from prunelab.config import UNIT_CRITERIA, WEIGHT_CRITERIA
from prunelab.pruning.criteria import calibrated, magnitude, reconstruct
from prunelab.pruning.criteria.base import Criterion, Granularity

CRITERIA: dict[Granularity, dict[str, Criterion]] = {
    "weight": {c.name: c for c in (
        magnitude.MAGNITUDE,
        magnitude.RANDOM_WEIGHT,
        magnitude.LARGEST_WEIGHT,
        calibrated.WANDA,
        calibrated.OBD,
        reconstruct.OBS,
    )},
    "unit": {c.name: c for c in (
        magnitude.L2,
        magnitude.RANDOM_UNIT,
        magnitude.LARGEST_UNIT,
        calibrated.ACTIVATION,
        reconstruct.L2_REFIT,
    )},
}
# params.yaml is validated without importing torch, so prunelab.config keeps the names too;
# tests/test_criteria.py checks that both lists agree.
KNOWN = {"weight": WEIGHT_CRITERIA, "unit": UNIT_CRITERIA}


def criterion(granularity: Granularity, name: str) -> Criterion:
    """The registered criterion ``name`` of ``granularity``; KeyError names what exists."""
    try:
        return CRITERIA[granularity][name]
    except KeyError:
        known = ", ".join(CRITERIA.get(granularity, {}))
        raise KeyError(f"no {granularity} criterion {name!r}; known: {known}") from None
