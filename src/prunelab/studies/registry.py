"""Every study, in pipeline order: the one list dvc.yaml, stages/retrain/dvc.yaml, `python -m
prunelab stages` and the report's sections come from. Adding a study is one line here."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prunelab import config, paths
from prunelab.config import Params, Section
from prunelab.pruning.criteria.registry import check_prune
from prunelab.runtime.declare import Stage, Study
from prunelab.studies import (
    dense,
    finetune,
    imp_outputs,
    oneshot,
    report,
    sensitivity,
    speed,
)
from prunelab.studies.archs import study as archs
from prunelab.studies.atinit import study as atinit
from prunelab.studies.during import study as during
from prunelab.studies.l0 import study as l0

STUDIES: tuple[Study, ...] = (
    dense.STUDY,
    oneshot.STUDY,
    sensitivity.STUDY,
    speed.STUDY,
    report.STUDY,
    finetune.STUDY,
    imp_outputs.STUDY,
    atinit.STUDY,
    during.STUDY,
    l0.STUDY,
    archs.STUDY,
)


def stages() -> dict[str, Stage]:
    """Every stage of every study, by name, in pipeline order."""
    return {stage.name: stage for study in STUDIES for stage in study.stages}



def sections() -> tuple[Section, ...]:
    """Every study's own section of params.yaml, in pipeline order."""
    return tuple(study.params for study in STUDIES if study.params is not None)


def parse_params(raw: Any) -> Params:
    """A whole parsed params.yaml, every study's section included, checked as the pipeline's
    first stage checks it: no unknown or missing section, criteria that are registered."""
    params = config.parse_params(raw, sections(), complete=True)
    check_prune(params.prune)
    return params


def load_params(path: Path = paths.PARAMS) -> Params:
    """Read params.yaml and check it whole (:func:`parse_params`)."""
    return parse_params(config.parse_yaml(config.read_bounded(path), path))
