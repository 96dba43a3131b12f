"""The at-init study's declaration: its params section, stages, outputs and figure.

The notebook's questions: can a winning ticket be found before training the dense net, or
directly from the objective? Each seed's arms (:mod:`.arms`) train the masked init with the
study's recipe at the IMP study's own weight counts, so the points overlay the ticket curve;
the compare stage (:mod:`.compare`) puts every arm beside dense, the IMP tickets and one-shot
magnitude + fine-tuning, and says per method whether it beats its own layer-shuffled control.
Page: docs/atinit.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prunelab import paths
from prunelab.config import (
    MAX_EPOCHS,
    MAX_SAMPLES,
    Params,
    Section,
    check_keys,
    fail,
    integer,
    names,
    seeds_of,
)
from prunelab.runtime.declare import Plot, Stage, Study
from prunelab.studies.atinit.scores import METHODS
from prunelab.studies.atinit.supermask import INITS
from prunelab.studies.imp_outputs import MAX_ROUNDS
from prunelab.studies.imp_outputs import STUDY as IMP

CONTROLS: tuple[str, ...] = ("shuffled", "reinit", "inverted")  # the sanity checks

# Outputs: this study's paths, defined here (the only module that writes them).
FOLDER = paths.MODELS_DIR / "atinit"  # finished arms, one JSON each (persist: resumable)
SEED_CURVES = paths.PLOTS_DIR / "atinit"  # one CSV per seed: every arm's accuracy
CURVE = paths.PLOTS_DIR / "atinit.csv"  # across seeds: mean and interval per arm
METRICS = paths.METRICS_DIR / "atinit.json"
HEADLINE = paths.METRICS_DIR / "atinit_headline.json"
FIGURE = paths.PLOTS_DIR / "atinit.png"
SECTION = paths.report_section("atinit")


def seed_curve(seed: int | str) -> Path:
    return SEED_CURVES / f"{seed}.csv"


def seed_store(seed: int | str) -> Path:
    return FOLDER / str(seed)


@dataclass(frozen=True)
class AtInitConfig:
    """params.yaml `atinit`: the replicates' ``seeds`` (each seed's init and data order are
    train's for that seed, drawn again: no trained net needed); which at-init ``methods`` to
    train at the weight counts of which IMP ``rounds``; the sanity ``controls`` at
    ``control_rounds``; ``batches`` training mini-batches for the data-dependent scores; the
    supermasks' frozen ``supermask_inits``, kept shares, score-training epochs and learning
    rate."""

    seeds: tuple[int, ...] = (0, 1, 2)
    methods: tuple[str, ...] = tuple(METHODS)
    rounds: tuple[int, ...] = (3, 7, 10, 13, 15)
    control_rounds: tuple[int, ...] = (7, 13)
    controls: tuple[str, ...] = CONTROLS
    batches: int = 10
    eval_every: int = 600
    supermask_inits: tuple[str, ...] = INITS
    supermask_keep: tuple[float, ...] = (0.1, 0.3, 0.5, 0.7)
    supermask_epochs: int = 3
    supermask_lr: float = 0.001


KEYS = ("seeds", "methods", "rounds", "control_rounds", "controls", "batches", "eval_every",
        "supermask_inits", "supermask_keep", "supermask_epochs", "supermask_lr")


def _rounds(raw: Any, key: str, empty: bool) -> tuple[int, ...]:
    values = raw[key]
    allowed = (f"a list of distinct IMP rounds from 1 to {MAX_ROUNDS}"
               + (" (may be empty)" if empty else ""))
    if not isinstance(values, list) or (not values and not empty):
        raise fail(f"atinit.{key}", values, allowed)
    for i, r in enumerate(values):
        if isinstance(r, bool) or not isinstance(r, int) or not 1 <= r <= MAX_ROUNDS \
                or r in values[:i]:
            raise fail(f"atinit.{key}[{i}]", r, allowed)
    return tuple(sorted(values))


def _shares(raw: Any) -> tuple[float, ...]:
    values, allowed = raw["supermask_keep"], "a list of distinct shares in (0, 1] (may be empty)"
    if not isinstance(values, list):
        raise fail("atinit.supermask_keep", values, allowed)
    for i, k in enumerate(values):
        # distinct as the arms are named (0.1 and 0.1000001 would share one arm)
        if isinstance(k, bool) or not isinstance(k, (int, float)) or not 0 < k <= 1 \
                or f"{k:g}" in [f"{v:g}" for v in values[:i]]:
            raise fail(f"atinit.supermask_keep[{i}]", k, allowed)
    return tuple(sorted(float(k) for k in values))


def parse(raw: Any, core: Params) -> AtInitConfig:
    """Validate the atinit section (one line naming the key, the value and what is allowed)."""
    raw = check_keys(raw, "atinit", KEYS)
    lr = raw["supermask_lr"]
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not 0 < lr <= 10:
        raise fail("atinit.supermask_lr", lr, "a finite number in (0, 10]")
    chosen = {k: raw[k] for k in ("controls", "supermask_inits")}
    rounds, checked = _rounds(raw, "rounds", empty=False), _rounds(raw, "control_rounds", True)
    for i, r in enumerate(raw["control_rounds"]):
        if r not in rounds:  # a control is compared with its method at the same round
            raise fail(f"atinit.control_rounds[{i}]", r, "one of atinit.rounds: "
                       + ", ".join(map(str, rounds)))
    return AtInitConfig(
        seeds=seeds_of(raw["seeds"], "atinit.seeds"),
        methods=names(raw, "methods", tuple(METHODS), "atinit"),
        rounds=rounds,
        control_rounds=checked,
        controls=() if chosen["controls"] == [] else names(raw, "controls", CONTROLS, "atinit"),
        batches=integer(raw, "atinit", "batches", 1, MAX_SAMPLES),
        eval_every=integer(raw, "atinit", "eval_every", 1, MAX_SAMPLES * MAX_EPOCHS),
        supermask_inits=(() if chosen["supermask_inits"] == []
                         else names(raw, "supermask_inits", INITS, "atinit")),
        supermask_keep=_shares(raw),
        supermask_epochs=integer(raw, "atinit", "supermask_epochs", 1, MAX_EPOCHS),
        supermask_lr=float(lr),
    )


# A seed's stage does not read atinit.seeds: adding a seed runs only that seed's arms.
PARAMS = ("data.train_size", "data.test_size", "model.arch", "train.epochs", "train.lr",
          "train.batch_size", "train.device", "imp.rate", "imp.output_rate",
          *(f"atinit.{k}" for k in KEYS if k != "seeds"))

STUDY = Study(
    name="atinit",
    description="tickets without a trained net: pruning at initialisation with its sanity "
                "checks, and supermasks",
    pipeline=paths.RETRAIN_PIPELINE,
    params=Section("atinit", parse),
    figure=FIGURE,
    report_section="Tickets without a trained net",
    stages=(
        Stage("atinit", "masks from the untrained net (each method at the IMP study's weight "
              "counts, with its sanity checks) and supermasks, each trained or scored on the "
              "seed's init (train's init for that seed, drawn again)", "stages/atinit.py",
              args=("train", paths.ITEM), params=PARAMS,
              reads=(paths.PARAMS_CHECKED, paths.DATA_DIR), in_git=(seed_curve(paths.ITEM),),
              sections=(IMP.params,) if IMP.params else (), per_seed=True,
              seeds="atinit.seeds", chain_only=True,
              note="models/atinit/<seed>/ (not an output: the study's working state, ignored "
                   "by git) keeps\nevery finished arm, so a killed run resumes after its last "
                   "finished training."),
        Stage("atinit_compare", "every at-init arm beside dense, the IMP tickets and one-shot "
              "magnitude + fine-tuning; whether each method beats its shuffled control",
              "stages/atinit.py", args=("compare",),
              params=("model.arch", *(f"atinit.{k}" for k in KEYS)),
              reads=(SEED_CURVES, paths.IMP_CURVE, paths.IMP_METRICS,
                     paths.finetune_curve("weight")),
              metrics=(HEADLINE,), figures=(FIGURE,),
              in_git=(CURVE, METRICS, SECTION)),
    ),
    plots=(Plot("atinit", "scatter", "Tickets without a trained net: accuracy against "
                "weights remaining", "weights_remaining", {str(CURVE): "accuracy"},
                "weights remaining (%)", "test accuracy (%)"),),
)
