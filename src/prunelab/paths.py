"""Every artefact path, defined once. dvc.yaml's deps and outs match these (tests check).

Paths are relative to the repository root, where DVC runs every stage's command. Which stage
reads and writes which is declared by the studies (``prunelab.studies``), from these names.
"""

from __future__ import annotations

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


AGGREGATE_METRICS = METRICS_DIR / "aggregate.json"  # every criterion's statistics (detail)
# The headline numbers `dvc exp show` and `dvc metrics diff` compare (a handful of columns):
# dense accuracy and the study's criteria's highest k within 1 point, means over the seeds.
HEADLINE = METRICS_DIR / "headline.json"
STUDY_CURVE = PLOTS_DIR / "study.csv"  # the study's own criteria's mean curves: `dvc plots`
FIGURE = PLOTS_DIR / "accuracy_vs_sparsity.png"  # mean curves with 95% bands
SPEED_METRICS = METRICS_DIR / "speed.json"
SPEED_CURVE = PLOTS_DIR / "speed.csv"
TRADEOFF_FIGURE = PLOTS_DIR / "tradeoff.png"
SENSITIVITY_CURVE = PLOTS_DIR / "sensitivity.csv"
SENSITIVITY_METRICS = METRICS_DIR / "sensitivity.json"
SENSITIVITY_FIGURE = PLOTS_DIR / "sensitivity.png"
REPORT = REPORTS_DIR / "study.md"
REPORT_HTML = REPORTS_DIR / "study.html"
# A study's own section of the report, written by its stage (reports/sections/<study>.md): the
# report includes every one there, in name order, so a new study needs no edit of the report.
REPORT_SECTIONS = REPORTS_DIR / "sections"


def report_section(study: str) -> Path:
    return REPORT_SECTIONS / f"{study}.md"
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
IMP_HEADLINE = METRICS_DIR / "imp_headline.json"  # the ticket's sparsest point within 0.1 pt
IMP_TIMING = METRICS_DIR / "imp_timing.json"
LOTTERY_FIGURE = PLOTS_DIR / "lottery_ticket.png"


def finetune_headline(method: str) -> Path:
    """metrics/finetune_<method>_headline.json: the study's criterion's highest k within 0.5 pt
    of dense, one-shot and fine-tuned (the `dvc exp show` columns)."""
    return METRICS_DIR / f"finetune_{method}_headline.json"


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

# How dvc.yaml names a seed: `${item}` in the per-seed (foreach) stages, the first seed of the
# list in the single-net stages downstream (the studies declare their stages with these).
ITEM = "${item}"
FIRST_SEED = "${train.seeds[0]}"
