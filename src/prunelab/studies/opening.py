"""What every stage command opens with, written once: the config, the MLflow run, the device,
the net and the data splits (the criteria: :func:`prunelab.pruning.sweep.checked_criteria`).

A stage script is then::

    with open_stage(STUDY.stage("sensitivity")) as stage:
        x, y = stage.test
        points = layer_sweep(stage.net, ..., x, y)

Everything heavy is loaded on first use, so a stage that only reads files (aggregate, plot,
report) never loads a net or the data. Errors (a missing file, an unsupported criterion) are
one line and a non-zero exit (:func:`prunelab.runtime.stage.stage_errors`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import torch
from torch import Tensor

from prunelab import paths
from prunelab.config import Params
from prunelab.data.mnist import load_split
from prunelab.data.split import Split
from prunelab.errors import DataError
from prunelab.models.archs.base import GraphNet
from prunelab.models.layers import Net
from prunelab.models.networks import load_model, load_net, resolve_device, to_inputs, to_targets
from prunelab.runtime.declare import Stage
from prunelab.runtime.files import read_json
from prunelab.tracking.runs import StageRun
from prunelab.tracking.stage import open_run


@dataclass(frozen=True)
class Opened:
    """One stage's opening. ``seed`` is the net's seed: the stage's own for a per-seed stage,
    else the first of train.seeds (the net the single-net studies use)."""

    cfg: Params
    run: StageRun
    seed: int
    device_name: str | None = None  # None: train.device

    @cached_property
    def device(self) -> torch.device:
        return resolve_device(self.device_name or self.cfg.train.device)

    @cached_property
    def net(self) -> Net:
        """The seed's trained chain net (a graph-family net's file: one error line)."""
        return load_net(paths.model(self.seed), self.device)

    @cached_property
    def model(self) -> Net | GraphNet:
        """The seed's trained net of either family (model.arch: chain or graph)."""
        return load_model(paths.model(self.seed), self.device)

    @cached_property
    def test(self) -> tuple[Tensor, Tensor]:
        """The test split (data.test_size images), on the device."""
        images, labels = load_split(paths.DATA_DIR, "t10k", self.cfg.data.test_size)
        return to_inputs(images, self.device), to_targets(labels, self.device)

    @cached_property
    def split(self) -> Split:
        """Both splits (data.train_size, data.test_size), on the device."""
        images, labels = load_split(paths.DATA_DIR, "train", self.cfg.data.train_size)
        return Split(to_inputs(images, self.device), to_targets(labels, self.device),
                     *self.test)

    def initial_blob(self) -> bytes:
        """The seed's initial weights as saved by train (lottery-ticket rewinding)."""
        path = paths.init_model(self.seed)
        try:
            return path.read_bytes()
        except FileNotFoundError:
            raise DataError(f"{path}: missing; run: dvc repro") from None

    def train_run_id(self) -> str | None:
        """The MLflow run that trained the seed's net (DVC may have skipped training)."""
        link = paths.train_run(self.seed)
        run_id = read_json(link).get("mlflow_run_id") if link.is_file() else None
        return str(run_id) if run_id else None


@contextmanager
def open_stage(stage: Stage, seed: int | None = None, *, device: str | None = None,
               kept: str = "nothing of this stage was kept",
               params: Path = paths.PARAMS) -> Iterator[Opened]:
    """Load params.yaml (for ``seed``), start the stage's MLflow run, and hand over lazily
    loaded net and data; one error line and a non-zero exit for any PrunelabError."""
    with open_run(stage, seed, kept=kept, params=params) as (cfg, run):
        yield Opened(cfg, run, seed if seed is not None else cfg.first_seed, device)
