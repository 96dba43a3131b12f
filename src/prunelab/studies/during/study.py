"""The during-training study's declaration: its params section, stages, outputs and figure.

The notebook's last questions: can the winning ticket be found *during* training, and does
pruning model synaptic pruning in brains? Gradual magnitude pruning, the synaptic-pruning
schedule (decreasing, constant and increasing rates) with its robustness, early-bird tickets
and dynamic sparse training, each arm one training of a seed's init (:mod:`.arms`); the compare
stage (:mod:`.compare`) puts them beside dense, the IMP tickets and one-shot magnitude +
fine-tuning, and says per robustness measure whether the decreasing rate wins, ties or loses.
Page: docs/during.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from prunelab import paths
from prunelab.config import (
    MAX_SAMPLES,
    MAX_SEEDS,
    Params,
    Section,
    check_keys,
    fail,
    integer,
    names,
)
from prunelab.runtime.declare import Plot, Stage, Study
from prunelab.studies.atinit.study import CURVE as ATINIT_CURVE
from prunelab.studies.during.schedule import SHAPES
from prunelab.studies.l0.study import CURVE as L0_CURVE

DST_METHODS: tuple[str, ...] = ("set", "rigl", "static")

# Outputs: this study's paths, defined here (the only module that writes them).
FOLDER = paths.MODELS_DIR / "during"  # finished arms, one JSON each (resumable; not in git)
ARMS = paths.PLOTS_DIR / "during_arms.csv"  # every arm of every seed
CURVE = paths.PLOTS_DIR / "during.csv"  # across seeds: mean and interval per arm
METRICS = paths.METRICS_DIR / "during.json"
HEADLINE = paths.METRICS_DIR / "during_headline.json"
FIGURE = paths.PLOTS_DIR / "during.png"
SECTION = paths.report_section("during")


@dataclass(frozen=True)
class DuringConfig:
    """params.yaml `during`: the methods' ``method_seeds`` and the schedule comparison's
    ``schedule_seeds`` (each seed's init and data order are train's for that seed); the
    schedule's ``shapes`` at ``final_sparsity``; gradual pruning and one-shot + fine-tuning at
    ``sparsities``; pruning from ``start`` to ``end`` (shares of the training steps), masks
    updated ``every`` steps; dynamic sparse training (``dst_methods`` at ``dst_sparsities``,
    ``drop_fraction`` cosine-decayed to 0 at ``end``); early-bird tickets at
    ``earlybird_sparsity`` (masks every ``earlybird_every`` steps, settled when
    ``earlybird_window`` distances in a row are below ``earlybird_threshold``); robustness
    under input ``noise`` and random ``delete``-ion; test passes every ``eval_every`` steps."""

    method_seeds: tuple[int, ...] = (0, 1, 2)
    schedule_seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    shapes: tuple[str, ...] = SHAPES
    final_sparsity: float = 0.9
    sparsities: tuple[float, ...] = (0.8, 0.9, 0.95, 0.98)
    start: float = 0.1
    end: float = 0.7
    every: int = 100
    dst_methods: tuple[str, ...] = DST_METHODS
    dst_sparsities: tuple[float, ...] = (0.9, 0.95, 0.98)
    drop_fraction: float = 0.3
    earlybird: bool = True
    earlybird_sparsity: float = 0.9
    earlybird_every: int = 50
    earlybird_threshold: float = 0.1
    earlybird_window: int = 5
    noise: tuple[float, ...] = (0.1, 0.3)
    delete: tuple[float, ...] = (0.1, 0.3)
    eval_every: int = 600


KEYS = ("method_seeds", "schedule_seeds", "shapes", "final_sparsity", "sparsities", "start", "end",
        "every", "dst_methods", "dst_sparsities", "drop_fraction", "earlybird",
        "earlybird_sparsity", "earlybird_every", "earlybird_threshold", "earlybird_window",
        "noise", "delete", "eval_every")


def _number(raw: Any, key: str, lo: float, hi: float, allowed: str) -> float:
    value = raw[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo < value < hi:
        raise fail(f"during.{key}", value, allowed)
    return float(value)


def _numbers(raw: Any, key: str, lo: float, hi: float, allowed: str,
             empty: bool = True) -> tuple[float, ...]:
    values, allowed = raw[key], f"a list of distinct {allowed}" + (" (may be empty)"
                                                                   if empty else "")
    if not isinstance(values, list) or (not values and not empty):
        raise fail(f"during.{key}", values, allowed)
    for i, v in enumerate(values):
        # distinct as the arms are named (0.9 and 0.9000001 would share one arm)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not lo < v < hi \
                or f"{v:g}" in [f"{u:g}" for u in values[:i]]:
            raise fail(f"during.{key}[{i}]", v, allowed)
    return tuple(sorted(float(v) for v in values))


def _seeds(raw: Any, key: str) -> tuple[int, ...]:
    values = raw[key]
    allowed = f"a list of at most {MAX_SEEDS} distinct seeds from 0 to 2**32 - 1 (may be empty)"
    if not isinstance(values, list) or len(values) > MAX_SEEDS:
        raise fail(f"during.{key}", values, allowed)
    for i, s in enumerate(values):
        if isinstance(s, bool) or not isinstance(s, int) or not 0 <= s < 2**32 \
                or s in values[:i]:
            raise fail(f"during.{key}[{i}]", s, allowed)
    return tuple(values)


def _optional_names(raw: Any, key: str, known: tuple[str, ...]) -> tuple[str, ...]:
    return () if raw[key] == [] else names(raw, key, known, "during")


def parse(raw: Any, core: Params) -> DuringConfig:
    """Validate the during section (one line naming the key, the value and what is allowed)."""
    raw = check_keys(raw, "during", KEYS)
    share = "a sparsity in (0, 1)"
    start = _number(raw, "start", 0, 1, "a share of the training steps in (0, 1)")
    end = _number(raw, "end", 0, 1, "a share of the training steps in (0, 1)")
    if end <= start:
        raise fail("during.end", raw["end"], f"a share of the training steps in ({start:g}, 1):"
                   " after during.start")
    if not isinstance(raw["earlybird"], bool):
        raise fail("during.earlybird", raw["earlybird"], "true or false")
    return DuringConfig(
        method_seeds=_seeds(raw, "method_seeds"),
        schedule_seeds=_seeds(raw, "schedule_seeds"),
        shapes=_optional_names(raw, "shapes", SHAPES),
        final_sparsity=_number(raw, "final_sparsity", 0, 1, share),
        sparsities=_numbers(raw, "sparsities", 0, 1, "sparsities in (0, 1)"),
        start=start,
        end=end,
        every=integer(raw, "during", "every", 1, MAX_SAMPLES),
        dst_methods=_optional_names(raw, "dst_methods", DST_METHODS),
        dst_sparsities=_numbers(raw, "dst_sparsities", 0, 1, "sparsities in (0, 1)"),
        drop_fraction=_number(raw, "drop_fraction", 0, 1, "a share of the active weights in "
                              "(0, 1)"),
        earlybird=raw["earlybird"],
        earlybird_sparsity=_number(raw, "earlybird_sparsity", 0, 1, share),
        earlybird_every=integer(raw, "during", "earlybird_every", 1, MAX_SAMPLES),
        earlybird_threshold=_number(raw, "earlybird_threshold", 0, 1, "a normalised Hamming "
                                    "distance in (0, 1)"),
        earlybird_window=integer(raw, "during", "earlybird_window", 1, 1000),
        noise=_numbers(raw, "noise", 0, 100, "standard deviations in (0, 100)"),
        delete=_numbers(raw, "delete", 0, 1, "shares of the surviving weights in (0, 1)"),
        eval_every=integer(raw, "during", "eval_every", 1, MAX_SAMPLES * 1000),
    )


PARAMS = ("data.train_size", "data.test_size", "model.arch", "model.mlp.hidden",
          "model.lenet5.channels", "model.lenet5.fc", "train.epochs", "train.lr",
          "train.batch_size", "train.device",
          *(f"during.{k}" for k in KEYS))

STUDY = Study(
    name="during",
    description="pruning while training: gradual pruning and the synaptic-pruning schedule, "
                "early-bird tickets, dynamic sparse training",
    pipeline=paths.RETRAIN_PIPELINE,
    params=Section("during", parse),
    figure=FIGURE,
    report_section="Pruning while training",
    stages=(
        Stage("during", "every seed's nets pruned while they train: gradual pruning on three "
              "rate shapes, one-shot + fine-tuning in the same steps, early-bird tickets, SET, "
              "RigL and their static mask; each tested clean, under input noise and after "
              "random deletion", "stages/during.py", args=("train",), params=PARAMS,
              reads=(paths.PARAMS_CHECKED, paths.DATA_DIR), in_git=(ARMS,), chain_only=True,
              note="models/during/<seed>/ (not an output: the study's working state, ignored "
                   "by git) keeps\nevery finished arm, so a killed run resumes after its last "
                   "finished training\nand adding a seed trains only that seed's arms."),
        Stage("during_compare", "every during-training arm beside dense, the IMP tickets, the "
              "at-init methods and one-shot magnitude + fine-tuning; whether the decreasing "
              "pruning rate wins per robustness measure", "stages/during.py", args=("compare",),
              params=("model.arch", *(f"during.{k}" for k in KEYS)),
              reads=(ARMS, paths.IMP_CURVE, ATINIT_CURVE, paths.finetune_curve("weight"),
                     L0_CURVE),
              metrics=(HEADLINE,), figures=(FIGURE,), in_git=(CURVE, METRICS, SECTION)),
    ),
    plots=(Plot("during", "scatter", "Pruning while training: accuracy against weights "
                "remaining", "weights_remaining", {str(CURVE): "accuracy"},
                "weights remaining (%)", "test accuracy (%)"),),
)
