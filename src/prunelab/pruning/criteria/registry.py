"""The criteria by granularity and name: the names in params.yaml, metrics, plots and MLflow."""

from __future__ import annotations

from collections.abc import Sequence

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


def checked_names(granularity: Granularity, chosen: Sequence[str],
                  section: str = "prune") -> tuple[str, ...]:
    """``chosen`` if each names a registered criterion of ``granularity``; otherwise one line
    naming the key (``prune.weight_criteria[1]``), the name and the known ones."""
    key = f"{granularity}_criteria"
    return names({key: list(chosen)}, key, tuple(CRITERIA[granularity]), section)


def check_prune(prune: PruneConfig) -> None:
    """prune.weight_criteria and prune.unit_criteria name registered criteria: the pipeline's
    first stage checks it."""
    for granularity in CRITERIA:
        checked_names(granularity, prune.criteria(granularity))


def criterion(granularity: Granularity, name: str) -> Criterion:
    """The registered criterion ``name`` of ``granularity``; KeyError names what exists."""
    try:
        return CRITERIA[granularity][name]
    except KeyError:
        known = ", ".join(CRITERIA.get(granularity, {}))
        raise KeyError(f"no {granularity} criterion {name!r}; known: {known}") from None
