"""Fine-tuning after one-shot pruning: each k pruned once, then trained with its mask held
(the computation: :mod:`prunelab.studies.retraining`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from prunelab import paths
from prunelab.config import (
    MAX_EPOCHS,
    STUDY_CRITERIA,
    Params,
    Section,
    TrainConfig,
    check_keys,
    fail,
    integer,
    names,
)
from prunelab.pruning.criteria.registry import CRITERIA
from prunelab.runtime.declare import Plot, Stage, Study


@dataclass(frozen=True)
class FinetuneConfig:
    """params.yaml `finetune`: each k of prune.sparsities, pruned with each listed criterion,
    then trained ``epochs`` more with its mask held, at ``lr`` (None: train.lr / 10, as Han et
    al. 2015)."""

    epochs: int = 1
    lr: float | None = None
    weight_criteria: tuple[str, ...] = ("magnitude", "random")
    unit_criteria: tuple[str, ...] = ("l2", "random")

    def criteria(self, granularity: str) -> tuple[str, ...]:
        """The criteria fine-tuned for ``granularity`` (weight or unit)."""
        return self.weight_criteria if granularity == "weight" else self.unit_criteria

    def learning_rate(self, train: TrainConfig) -> float:
        return train.lr / 10 if self.lr is None else self.lr


def parse(raw: Any, core: Params) -> FinetuneConfig:
    """Validate the finetune section (its lr's default is quoted from train.lr)."""
    raw = check_keys(raw, "finetune", ("epochs", "lr", "weight_criteria", "unit_criteria"))
    lr = raw["lr"]
    if lr is not None and (isinstance(lr, bool) or not isinstance(lr, (int, float))
                           or not 0 < lr <= 10):
        raise fail("finetune.lr", lr, f"null (train.lr / 10 = {core.train.lr / 10:g}) or a "
                   "finite number in (0, 10]")
    return FinetuneConfig(
        epochs=integer(raw, "finetune", "epochs", 1, MAX_EPOCHS),
        lr=None if lr is None else float(lr),
        weight_criteria=names(raw, "weight_criteria", tuple(CRITERIA["weight"]), "finetune"),
        unit_criteria=names(raw, "unit_criteria", tuple(CRITERIA["unit"]), "finetune"),
    )


def finetune_stage(method: str) -> Stage:
    """finetune_weight / finetune_unit on the first seed's net."""
    return Stage(
        f"finetune_{method}", f"{method} pruning over the sparsity grid, then fine-tuning with "
        "the mask held (the first seed's net)", "stages/finetune.py", args=(method,),
        params=("data.train_size", "data.test_size", "train.lr", "train.batch_size",
                "train.device", "prune.sparsities", "prune.scope", "prune.calibration_size",
                "finetune.epochs", "finetune.lr", f"finetune.{method}_criteria"),
        reads=(paths.PARAMS_CHECKED, paths.model(paths.FIRST_SEED), paths.DATA_DIR),
        metrics=(paths.finetune_headline(method),),
        in_git=(paths.finetune_curve(method), paths.finetune_metrics(method),
                paths.finetune_timing(method)), chain_only=True)


CURVES = tuple(paths.finetune_curve(m) for m in ("weight", "unit"))

STUDY = Study(
    name="finetune",
    description="one-shot pruning, then fine-tuning with the mask held",
    pipeline=paths.RETRAIN_PIPELINE,
    params=Section("finetune", parse),
    figure=paths.FINETUNE_FIGURE,
    report_section="Retraining: fine-tuning and lottery tickets",
    stages=(
        finetune_stage("weight"),
        finetune_stage("unit"),
        Stage("finetune_plot", "one-shot against fine-tuned curves, both granularities",
              "stages/finetune_plot.py",
              params=("model.arch", "train.lr", "finetune.epochs", "finetune.lr"),
              reads=CURVES,
              figures=(paths.FINETUNE_FIGURE,)),
    ),
    plots=(Plot("finetune_vs_one_shot", "training_curves",
                "Test accuracy against sparsity, one-shot and fine-tuned", "sparsity",
                {str(c): "accuracy" for c in CURVES}, "sparsity k",
                "test accuracy (%)"),),
)


def headline(summary: Mapping[str, Any], method: str) -> dict[str, float | None]:
    """The `dvc exp show` column of one granularity: how far the study's criterion stays within
    0.5 point of dense once fine-tuned (the rest is in metrics/finetune_<method>.json)."""
    name = STUDY_CRITERIA[method]
    return {f"{name}.fine_tuned_k_within_0.5pt":
            summary.get(name, {}).get("fine-tuned.max_sparsity_within_0.5pt")}
