"""The criteria by granularity and name: the names in params.yaml, metrics, plots and MLflow."""

from __future__ import annotations

from prunelab.config import PruneConfig, names
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


def check_prune(prune: PruneConfig) -> None:
    """prune.weight_criteria and prune.unit_criteria name registered criteria (one line naming
    the key, the name and the known ones otherwise): the pipeline's first stage checks it."""
    for granularity, known in CRITERIA.items():
        key = f"{granularity}_criteria"
        names({key: list(prune.criteria(granularity))}, key, tuple(known))


def criterion(granularity: Granularity, name: str) -> Criterion:
    """The registered criterion ``name`` of ``granularity``; KeyError names what exists."""
    try:
        return CRITERIA[granularity][name]
    except KeyError:
        known = ", ".join(CRITERIA.get(granularity, {}))
        raise KeyError(f"no {granularity} criterion {name!r}; known: {known}") from None
