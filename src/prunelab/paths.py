"""Every artefact path, defined once. dvc.yaml's deps and outs match these (tests check).

Paths are relative to the repository root, where DVC runs every stage's command. ``STAGES``
says which artefacts each stage reads and writes: the stage commands' ``--help``,
``python -m prunelab stages`` and the dvc.yaml checks all come from it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

PARAMS = Path("params.yaml")
# The validate stage's output: constant text, in git. Its only job is to be the edge that
# makes `validate` run before `download` (and so before everything), so that a bad value in
# params.yaml stops `dvc repro` before DVC deletes any stage's outputs.
PARAMS_CHECKED = Path("data/params.checked")

DATA_DIR = Path("data/mnist")

MODELS_DIR = Path("models")
MODEL = MODELS_DIR / "model.pt"
INIT_MODEL = MODELS_DIR / "init.pt"
TRAIN_RUN = MODELS_DIR / "train_run.json"  # the MLflow run that produced MODEL

METRICS_DIR = Path("metrics")
TRAIN_METRICS = METRICS_DIR / "train.json"
TRAIN_TIMING = METRICS_DIR / "train_timing.json"

PLOTS_DIR = Path("plots")
TRAIN_LOSS = PLOTS_DIR / "train_loss.csv"
FIGURE = PLOTS_DIR / "accuracy_vs_sparsity.png"
SPEED_METRICS = METRICS_DIR / "speed.json"
SPEED_CURVE = PLOTS_DIR / "speed.csv"
TRADEOFF_FIGURE = PLOTS_DIR / "tradeoff.png"
# `python -m prunelab compare`: architectures side by side, from several runs (not a stage)
ARCH_FIGURE = PLOTS_DIR / "compare_arch.png"

# The retraining studies: a second pipeline file (`dvc repro stages/retrain/dvc.yaml`), so the
# default `dvc repro` stays within its time budget. Its stages run from the repository root
# (wdir), so every path below reads as in dvc.yaml.
RETRAIN_PIPELINE = Path("stages/retrain/dvc.yaml")
FINETUNE_FIGURE = PLOTS_DIR / "finetune.png"
IMP_DIR = MODELS_DIR / "imp"  # one file per finished round (persist: an interrupted run resumes)
IMP_CURVE = PLOTS_DIR / "imp.csv"
IMP_METRICS = METRICS_DIR / "imp.json"
IMP_TIMING = METRICS_DIR / "imp_timing.json"
LOTTERY_FIGURE = PLOTS_DIR / "lottery_ticket.png"


def prune_metrics(method: str) -> Path:
    """metrics/prune_<method>.json: the headline summaries of one pruning sweep."""
    return METRICS_DIR / f"prune_{method}.json"


def finetune_metrics(method: str) -> Path:
    """metrics/finetune_<method>.json: one-shot against fine-tuned, per criterion."""
    return METRICS_DIR / f"finetune_{method}.json"


def finetune_timing(method: str) -> Path:
    """metrics/finetune_<method>_timing.json: wall and training seconds, speed-ups (these vary
    run to run, so they are kept out of the curve)."""
    return METRICS_DIR / f"finetune_{method}_timing.json"


def finetune_curve(method: str) -> Path:
    """plots/finetune_<method>.csv: one row per criterion, sparsity and training."""
    return PLOTS_DIR / f"finetune_{method}.csv"


def prune_curve(method: str) -> Path:
    """plots/prune_<method>.csv: one row per sparsity (distinct basenames for plots diff)."""
    return PLOTS_DIR / f"prune_{method}.csv"


@dataclass(frozen=True)
class StageFiles:
    """What one DVC stage reads and writes (besides its code)."""

    summary: str
    reads: tuple[Path, ...]
    writes: tuple[Path, ...]


STAGES: dict[str, StageFiles] = {
    "validate": StageFiles("check the whole params.yaml before any stage touches an output",
                           (PARAMS,), (PARAMS_CHECKED,)),
    "download": StageFiles("MNIST's four IDX files, verified against the official MD5s",
                           (PARAMS, PARAMS_CHECKED), (DATA_DIR,)),
    "train": StageFiles("train the chosen architecture (model.arch: the study's MLP or LeNet-5)",
                        (PARAMS, DATA_DIR),
                        (MODEL, INIT_MODEL, TRAIN_RUN, TRAIN_METRICS, TRAIN_TIMING, TRAIN_LOSS)),
    **{f"prune_{m}": StageFiles(f"{m} pruning over the sparsity grid, no retraining",
                                (PARAMS, MODEL, TRAIN_RUN, DATA_DIR),
                                (prune_metrics(m), prune_curve(m)))
       for m in ("weight", "unit")},
    "plot": StageFiles("the study's figure from both pruning curves",
                       (PARAMS, prune_curve("weight"), prune_curve("unit")), (FIGURE,)),
    "speed": StageFiles("realise every pruned model (compacted / CSR) and time it",
                        (PARAMS, MODEL, DATA_DIR),
                        (SPEED_METRICS, SPEED_CURVE, TRADEOFF_FIGURE)),
}
RETRAIN_STAGES: dict[str, StageFiles] = {
    **{f"finetune_{m}": StageFiles(f"{m} pruning over the sparsity grid, then fine-tuning with "
                                   "the mask held", (PARAMS, PARAMS_CHECKED, MODEL, DATA_DIR),
                                   (finetune_metrics(m), finetune_timing(m), finetune_curve(m)))
       for m in ("weight", "unit")},
    "finetune_plot": StageFiles("one-shot against fine-tuned curves, both granularities",
                                (PARAMS, finetune_curve("weight"), finetune_curve("unit")),
                                (FINETUNE_FIGURE,)),
    "imp": StageFiles("iterative magnitude pruning with rewinding (lottery tickets) and its "
                      "controls, round by round", (PARAMS, PARAMS_CHECKED, INIT_MODEL, DATA_DIR),
                      (IMP_DIR, IMP_CURVE, IMP_METRICS, IMP_TIMING, LOTTERY_FIGURE)),
}
STAGES.update(RETRAIN_STAGES)  # --help and `python -m prunelab stages` cover both pipelines
