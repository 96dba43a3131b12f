"""Every artefact path, defined once. dvc.yaml's deps and outs match these (tests check).

Paths are relative to the repository root, where DVC runs every stage's command.
"""

from pathlib import Path

PARAMS = Path("params.yaml")

DATA_DIR = Path("data/mnist")

MODELS_DIR = Path("models")
MODEL = MODELS_DIR / "model.pt"
INIT_MODEL = MODELS_DIR / "init.pt"
TRAIN_RUN = MODELS_DIR / "train_run.json"  # the MLflow run that produced MODEL

METRICS_DIR = Path("metrics")
TRAIN_METRICS = METRICS_DIR / "train.json"
TRAIN_TIMING = METRICS_DIR / "train_timing.json"

PLOTS_DIR = Path("plots")
TRAIN_HISTORY = PLOTS_DIR / "train_history.csv"
FIGURE = PLOTS_DIR / "accuracy_vs_sparsity.png"
SPEED_METRICS = METRICS_DIR / "speed.json"
SPEED_CURVE = PLOTS_DIR / "speed.csv"
TRADEOFF_FIGURE = PLOTS_DIR / "tradeoff.png"


def prune_metrics(method: str) -> Path:
    """metrics/prune_<method>.json: accuracy per sparsity and the summaries."""
    return METRICS_DIR / f"prune_{method}.json"


def prune_curve(method: str) -> Path:
    """plots/prune_<method>.csv: one row per sparsity (distinct basenames for plots diff)."""
    return PLOTS_DIR / f"prune_{method}.csv"
