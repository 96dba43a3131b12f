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
METRICS_DIR = Path("metrics")
PLOTS_DIR = Path("plots")
REPORTS_DIR = Path("reports")

# Replicates: each seed of train.seeds trains and prunes its own net, as its own DVC stages
# (train@<seed>, prune_weight@<seed>, ...), into its own folder under these three.
SEED_MODELS = MODELS_DIR / "seeds"
SEED_METRICS = METRICS_DIR / "seeds"
SEED_CURVES = PLOTS_DIR / "seeds"  # the aggregate stage's input: every seed's curves


def model(seed: int | str) -> Path:
    """models/seeds/<seed>/model.pt: the trained net of one replicate."""
    return SEED_MODELS / str(seed) / "model.pt"


def init_model(seed: int | str) -> Path:
    """models/seeds/<seed>/init.pt: its weights before training (lottery-ticket rewinding)."""
    return SEED_MODELS / str(seed) / "init.pt"


def train_run(seed: int | str) -> Path:
    """models/seeds/<seed>/train_run.json: the MLflow run that trained it."""
    return SEED_MODELS / str(seed) / "train_run.json"


def train_metrics(seed: int | str) -> Path:
    return SEED_METRICS / str(seed) / "train.json"


def train_timing(seed: int | str) -> Path:
    return SEED_METRICS / str(seed) / "train_timing.json"


def train_loss(seed: int | str) -> Path:
    return SEED_CURVES / str(seed) / "train_loss.csv"


def prune_metrics(method: str, seed: int | str) -> Path:
    """metrics/seeds/<seed>/prune_<method>.json: the headline summaries of one pruning sweep."""
    return SEED_METRICS / str(seed) / f"prune_{method}.json"


def prune_curve(method: str, seed: int | str) -> Path:
    """plots/seeds/<seed>/prune_<method>.csv: one row per criterion and sparsity."""
    return SEED_CURVES / str(seed) / f"prune_{method}.csv"


def aggregate_curve(method: str) -> Path:
    """plots/aggregate_<method>.csv: mean, std and 95% CI across seeds per criterion and k
    (what `dvc plots` draws; distinct basenames for plots diff)."""
    return PLOTS_DIR / f"aggregate_{method}.csv"


AGGREGATE_METRICS = METRICS_DIR / "aggregate.json"
FIGURE = PLOTS_DIR / "accuracy_vs_sparsity.png"  # mean curves with 95% bands
SPEED_METRICS = METRICS_DIR / "speed.json"
SPEED_CURVE = PLOTS_DIR / "speed.csv"
TRADEOFF_FIGURE = PLOTS_DIR / "tradeoff.png"
SENSITIVITY_CURVE = PLOTS_DIR / "sensitivity.csv"
SENSITIVITY_METRICS = METRICS_DIR / "sensitivity.json"
SENSITIVITY_FIGURE = PLOTS_DIR / "sensitivity.png"
REPORT = REPORTS_DIR / "study.md"
REPORT_HTML = REPORTS_DIR / "study.html"
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


@dataclass(frozen=True)
class StageFiles:
    """What one DVC stage reads and writes (besides its code)."""

    summary: str
    reads: tuple[Path, ...]
    writes: tuple[Path, ...]


# How dvc.yaml names a seed: `${item}` in the per-seed (foreach) stages, the first seed of the
# list in the single-net stages downstream. The STAGES table holds these templates, as dvc.yaml
# does; the stages call the functions above with a real seed.
ITEM = "${item}"
FIRST_SEED = "${train.seeds[0]}"
PER_SEED_STAGES = ("train", "prune_weight", "prune_unit")  # dvc.yaml: foreach train.seeds

STAGES: dict[str, StageFiles] = {
    "validate": StageFiles("check the whole params.yaml before any stage touches an output",
                           (PARAMS,), (PARAMS_CHECKED,)),
    "download": StageFiles("MNIST's four IDX files, verified against the official MD5s",
                           (PARAMS, PARAMS_CHECKED), (DATA_DIR,)),
    "train": StageFiles("train one seed's net (model.arch: the study's MLP or LeNet-5)",
                        (PARAMS, DATA_DIR),
                        (model(ITEM), init_model(ITEM), train_run(ITEM), train_metrics(ITEM),
                         train_timing(ITEM), train_loss(ITEM))),
    **{f"prune_{m}": StageFiles(f"{m} pruning of one seed's net over the sparsity grid, no "
                                "retraining", (PARAMS, model(ITEM), train_run(ITEM), DATA_DIR),
                                (prune_metrics(m, ITEM), prune_curve(m, ITEM)))
       for m in ("weight", "unit")},
    "aggregate": StageFiles("mean, std and 95% CI across the seeds, per criterion and k",
                            (PARAMS, SEED_CURVES, SEED_METRICS),
                            (AGGREGATE_METRICS, aggregate_curve("weight"),
                             aggregate_curve("unit"))),
    "plot": StageFiles("the study's figure: mean curves with 95% bands, the notebook's points",
                       (PARAMS, aggregate_curve("weight"), aggregate_curve("unit")), (FIGURE,)),
    "sensitivity": StageFiles("prune one layer at a time (the others dense), first seed's net",
                              (PARAMS, model(FIRST_SEED), DATA_DIR),
                              (SENSITIVITY_CURVE, SENSITIVITY_METRICS, SENSITIVITY_FIGURE)),
    "speed": StageFiles("realise every pruned model (compacted / CSR) and time it",
                        (PARAMS, model(FIRST_SEED), DATA_DIR),
                        (SPEED_METRICS, SPEED_CURVE, TRADEOFF_FIGURE)),
    "report": StageFiles("reports/study.md: every figure, table and computed conclusion",
                         (PARAMS, AGGREGATE_METRICS, aggregate_curve("weight"),
                          aggregate_curve("unit"), FIGURE, SENSITIVITY_METRICS,
                          SENSITIVITY_FIGURE, SPEED_METRICS, SPEED_CURVE, TRADEOFF_FIGURE),
                         (REPORT, REPORT_HTML)),
}
RETRAIN_STAGES: dict[str, StageFiles] = {
    **{f"finetune_{m}": StageFiles(f"{m} pruning over the sparsity grid, then fine-tuning with "
                                   "the mask held (the first seed's net)",
                                   (PARAMS, PARAMS_CHECKED, model(FIRST_SEED), DATA_DIR),
                                   (finetune_metrics(m), finetune_timing(m), finetune_curve(m)))
       for m in ("weight", "unit")},
    "finetune_plot": StageFiles("one-shot against fine-tuned curves, both granularities",
                                (PARAMS, finetune_curve("weight"), finetune_curve("unit")),
                                (FINETUNE_FIGURE,)),
    "imp": StageFiles("iterative magnitude pruning with rewinding (lottery tickets) and its "
                      "controls, round by round (the first seed's init)",
                      (PARAMS, PARAMS_CHECKED, init_model(FIRST_SEED), DATA_DIR),
                      (IMP_DIR, IMP_CURVE, IMP_METRICS, IMP_TIMING, LOTTERY_FIGURE)),
}
STAGES.update(RETRAIN_STAGES)  # --help and `python -m prunelab stages` cover both pipelines
