"""Every study, in pipeline order: the one list dvc.yaml, stages/retrain/dvc.yaml, `python -m
prunelab stages` and the report's sections come from. Adding a study is one line here."""

from __future__ import annotations

from prunelab.runtime.declare import Stage, Study
from prunelab.studies import dense, finetune, imp_outputs, oneshot, report, sensitivity, speed

STUDIES: tuple[Study, ...] = (
    dense.STUDY,
    oneshot.STUDY,
    sensitivity.STUDY,
    speed.STUDY,
    report.STUDY,
    finetune.STUDY,
    imp_outputs.STUDY,
)


def stages() -> dict[str, Stage]:
    """Every stage of every study, by name, in pipeline order."""
    return {stage.name: stage for study in STUDIES for stage in study.stages}
