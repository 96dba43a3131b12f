"""A stage's opening without nets or data: params.yaml loaded and checked, errors as one line,
the stage's MLflow run started. Stages that load nets use :mod:`prunelab.studies.opening`,
which builds on this; stages that only read files (aggregate, plot, report) use it as is, so
their code deps stay free of torch models."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from prunelab import paths
from prunelab.config import Params, parse_params, parse_yaml, read_bounded
from prunelab.errors import PrunelabError
from prunelab.runtime.declare import Stage
from prunelab.runtime.machine import seconds_since_start, stage_process
from prunelab.runtime.stage import stage_errors
from prunelab.tracking.runs import StageRun, track


def run_name(stage: Stage, seed: int | None) -> str:
    """The MLflow run name: the stage's name, ``name@seed`` for a per-seed stage."""
    return f"{stage.name}@{seed}" if stage.per_seed else stage.name


@contextmanager
def open_run(stage: Stage, seed: int | None = None, *,
             kept: str = "nothing of this stage was kept",
             params: Path = paths.PARAMS) -> Iterator[tuple[Params, StageRun]]:
    """(params for ``seed``, the stage's MLflow run); one error line and a non-zero exit for
    any PrunelabError or SIGTERM inside (``kept``: what survives a kill)."""
    with stage_errors(kept):
        document = parse_yaml(read_bounded(params), params)  # read once: validated, then
        cfg = parse_params(document, stage.sections)  # logged whole to MLflow
        cfg = cfg.for_seed(seed, stage.seeds) if seed is not None else cfg
        if stage.chain_only and cfg.model.graph:
            raise PrunelabError(
                f"params.yaml: model.arch = {cfg.model.arch} is not allowed for stage "
                f"{stage.name}: it runs chain nets only (mlp, lenet5); resnet and lstm run in "
                "the one-shot study (train, prune, sensitivity, speed) and the archs study")
        with track(run_name(stage, seed), cfg, document) as run:
            probe(stage)
            yield cfg, run


PROBE = "PRUNELAB_STARTUP_PROBE"


def probe(stage: Stage) -> None:
    """With PRUNELAB_STARTUP_PROBE set (bench/startup.py), stop where the stage's own work would
    begin: print the seconds since the process started (params read and checked, the MLflow run
    open) and exit 0, writing nothing."""
    if os.environ.get(PROBE):
        since = seconds_since_start(stage_process())
        print(f"{PROBE} {stage.name} {since:.3f}", file=sys.stderr)
        raise SystemExit(0)
