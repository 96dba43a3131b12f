"""The architectures study's declaration: its params section, stages, outputs and section.

The notebook's "do CNNs, RNNs and ResNets show the same relationship between pruning and
accuracy as the vanilla NN?", on MNIST and on MNIST-1D (built to separate architectures): the
MLP, LeNet-5, a small ResNet and an LSTM, each a graph of prunable parts
(:mod:`prunelab.models.graph`), trained with the study's recipe, pruned over the grid with every
criterion and scope their graph supports, compacted at ``compact_sparsity``. Page:
docs/architectures.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from prunelab import paths
from prunelab.config import Params, Section, check_keys, fail, integer, names
from prunelab.data import mnist1d
from prunelab.models.archs import ARCHS
from prunelab.models.archs.base import Widths
from prunelab.pruning import graph_criteria
from prunelab.runtime.declare import Plot, Stage, Study

DATASETS: tuple[str, ...] = ("mnist", "mnist1d")
SCHEDULES: tuple[str, ...] = ("constant", "cosine", "onecycle")
DATA = mnist1d.DIR  # data/mnist1d: the generated arrays (working state, see the stage's note)
CURVES = paths.PLOTS_DIR / "archs.csv"  # every (dataset, arch, criterion, scope, k)
TABLE = paths.PLOTS_DIR / "archs_table.csv"  # one row per (dataset, arch)
METRICS = paths.METRICS_DIR / "archs.json"
FIGURE = paths.PLOTS_DIR / "archs.png"
SECTION = paths.report_section("archs")


@dataclass(frozen=True)
class ArchsConfig:
    """params.yaml `archs`: which ``archs`` on which ``datasets``, one training per seed of
    ``seeds`` (its init and data order; intervals across them); epochs per dataset (MNIST-1D has
    40 batches an epoch: 3 epochs are 120 steps) -- the ResNet's on MNIST are
    ``resnet_mnist_epochs``, its training images randomly shifted by up to ``resnet_shift``
    pixels (0: none; chosen on a validation split, docs/architectures.md); the ResNet's stage
    widths and blocks per stage and the LSTM's hidden units (the MLP's and LeNet-5's widths are
    ``model``'s); the unit sparsity at which each net is compacted and timed. Learning rates:
    the study's (train.lr, constant) for the MLP and LeNet-5; ``resnet_lr`` and ``lstm_lr`` on
    ``schedule`` for the others (chosen on a validation split carved from the training set:
    docs/architectures.md). ``weight_criteria`` and ``unit_criteria``: the graph criteria
    (:mod:`prunelab.pruning.graph_criteria`) each net is pruned by, in both scopes."""

    archs: tuple[str, ...] = tuple(ARCHS)
    datasets: tuple[str, ...] = DATASETS
    seeds: tuple[int, ...] = (0, 1, 2)
    mnist_epochs: int = 3
    mnist1d_epochs: int = 100
    resnet_mnist_epochs: int = 5
    resnet_shift: int = 2
    resnet_widths: tuple[int, ...] = (16, 32, 64)
    resnet_blocks: int = 1
    lstm_hidden: int = 128
    resnet_lr: float = 0.006
    lstm_lr: float = 0.006
    schedule: str = "onecycle"
    compact_sparsity: float = 0.5
    weight_criteria: tuple[str, ...] = ("magnitude", "random", "wanda", "obd")
    unit_criteria: tuple[str, ...] = ("l2", "random", "activation")

    def epochs(self, dataset: str, arch: str) -> int:
        if (dataset, arch) == ("mnist", "resnet"):
            return self.resnet_mnist_epochs
        return self.mnist_epochs if dataset == "mnist" else self.mnist1d_epochs

    def shift(self, dataset: str, arch: str) -> int:
        """Pixels of random shift of the training images: the ResNet's on MNIST, else 0."""
        return self.resnet_shift if (dataset, arch) == ("mnist", "resnet") else 0

    def lr(self, arch: str, study_lr: float) -> float:
        """The ResNet's and the LSTM's own learning rates; the study's for the others."""
        return {"resnet": self.resnet_lr, "lstm": self.lstm_lr}.get(arch, study_lr)

    def schedule_of(self, arch: str) -> str:
        """``schedule`` for the ResNet and the LSTM; the study's constant lr for the others."""
        return self.schedule if arch in ("resnet", "lstm") else "constant"

    @property
    def criteria(self) -> dict[str, tuple[str, ...]]:
        return {"weight": self.weight_criteria, "unit": self.unit_criteria}


KEYS = ("archs", "datasets", "seeds", "mnist_epochs", "mnist1d_epochs", "resnet_mnist_epochs",
        "resnet_shift", "resnet_widths", "resnet_blocks", "lstm_hidden", "resnet_lr", "lstm_lr",
        "schedule", "compact_sparsity", "weight_criteria", "unit_criteria")


def criteria(raw: Any, granularity: str) -> tuple[str, ...]:
    """A criteria list of the graph criteria; a criterion the graph nets cannot run is named
    with the reason (one line)."""
    key = f"{granularity}_criteria"
    for i, name in enumerate(raw[key] if isinstance(raw[key], list) else []):
        if name in graph_criteria.REFUSED:
            raise fail(f"archs.{key}[{i}]", name, graph_criteria.REFUSED[name] + "; allowed: "
                       + ", ".join(graph_criteria.CRITERIA[granularity]))
    return names(raw, key, tuple(graph_criteria.CRITERIA[granularity]), "archs")


def parse(raw: Any, core: Params) -> ArchsConfig:
    """Validate the archs section (one line naming the key, the value and what is allowed)."""
    raw = check_keys(raw, "archs", KEYS)
    widths, allowed = raw["resnet_widths"], "a list of 1 to 4 integers from 1 to 512"
    if not isinstance(widths, list) or not 1 <= len(widths) <= 4:
        raise fail("archs.resnet_widths", widths, allowed)
    for i, w in enumerate(widths):
        if isinstance(w, bool) or not isinstance(w, int) or not 1 <= w <= 512:
            raise fail(f"archs.resnet_widths[{i}]", w, allowed)
    lrs = {}
    for key in ("resnet_lr", "lstm_lr"):
        v = raw[key]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v <= 1:
            raise fail(f"archs.{key}", v, "a learning rate in (0, 1]")
        lrs[key] = float(v)
    seeds, allowed = raw["seeds"], "a list of 1 to 10 distinct seeds from 0 to 2**32 - 1"
    if not isinstance(seeds, list) or not 1 <= len(seeds) <= 10:
        raise fail("archs.seeds", seeds, allowed)
    for i, v in enumerate(seeds):
        if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < 2**32 or v in seeds[:i]:
            raise fail(f"archs.seeds[{i}]", v, allowed)
    if raw["schedule"] not in SCHEDULES:
        raise fail("archs.schedule", raw["schedule"], "one of " + ", ".join(SCHEDULES))
    k = raw["compact_sparsity"]
    if isinstance(k, bool) or not isinstance(k, (int, float)) or not 0 < k < 1:
        raise fail("archs.compact_sparsity", k, "a number in (0, 1)")
    return ArchsConfig(
        archs=names(raw, "archs", tuple(ARCHS), "archs"),
        datasets=names(raw, "datasets", DATASETS, "archs"), seeds=tuple(seeds),
        mnist_epochs=integer(raw, "archs", "mnist_epochs", 1, 1000),
        mnist1d_epochs=integer(raw, "archs", "mnist1d_epochs", 1, 10000),
        resnet_mnist_epochs=integer(raw, "archs", "resnet_mnist_epochs", 1, 1000),
        resnet_shift=integer(raw, "archs", "resnet_shift", 0, 8),
        resnet_widths=tuple(widths),
        resnet_blocks=integer(raw, "archs", "resnet_blocks", 1, 8),
        lstm_hidden=integer(raw, "archs", "lstm_hidden", 1, 4096), **lrs,
        schedule=raw["schedule"], compact_sparsity=float(k),
        weight_criteria=criteria(raw, "weight"), unit_criteria=criteria(raw, "unit"))


def widths(cfg: Params) -> Widths:
    """Every architecture's widths: the MLP's and LeNet-5's from ``model``, the rest from
    ``archs``."""
    a = cfg.archs
    return Widths(cfg.model.mlp.hidden, cfg.model.lenet5.channels, cfg.model.lenet5.fc,
                  a.resnet_widths, a.resnet_blocks, a.lstm_hidden)


STUDY = Study(
    name="archs",
    description="the MLP, LeNet-5, a ResNet and an LSTM on MNIST and MNIST-1D: each a graph "
                "of prunable parts, pruned over the grid, compacted and timed",
    pipeline=paths.RETRAIN_PIPELINE,
    params=Section("archs", parse),
    figure=FIGURE,
    report_section="Architectures: MLP, LeNet-5, ResNet, LSTM on MNIST and MNIST-1D",
    plots=(Plot("archs_curves", "scatter", "Architectures: accuracy vs effective sparsity",
                {str(CURVES): "effective_sparsity"}, {str(CURVES): "accuracy"},
                "effective sparsity", "test accuracy (%)"),),
    stages=(
        Stage("mnist1d", "MNIST-1D generated by the mnist1d package (default arguments, seed "
              "42), each array's SHA-256 checked", "stages/generate_mnist1d.py",
              reads=(paths.PARAMS_CHECKED,), in_git=(DATA,),
              note="Like every output of this pipeline, not in the DVC cache (a clone has no DVC "
                   "remote);\nnor in git (data/.gitignore): generated in 2 s and checked by "
                   "SHA-256 on every read,\nit is this clone's working state."),
        Stage("archs", "each architecture on each dataset: trained with the study's recipe, "
              "pruned over the grid by every criterion and scope its graph supports, compacted "
              "at archs.compact_sparsity and timed", "stages/archs.py",
              params=("data.train_size", "data.test_size", "model.mlp.hidden",
                      "model.lenet5.channels", "model.lenet5.fc", "train.lr",
                      "train.batch_size", "train.device", "prune.sparsities",
                      "prune.calibration_size", *(f"archs.{k}" for k in KEYS)),
              reads=(paths.PARAMS_CHECKED, paths.DATA_DIR, DATA),
              in_git=(CURVES, TABLE, METRICS, FIGURE, SECTION)),
    ),
)
