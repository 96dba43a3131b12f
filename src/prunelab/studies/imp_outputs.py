"""What the `imp` stage reports from its rounds: the curve CSV, the metrics and the timing.

Kept apart from :mod:`studies.imp`, whose code is part of every round's fingerprint: a change
here re-reports the saved rounds instead of recomputing them.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from prunelab import paths
from prunelab.config import (
    MAX_EPOCHS,
    MAX_SAMPLES,
    Params,
    Section,
    check_keys,
    fail,
    integer,
    rate,
    train_steps,
)
from prunelab.runtime.declare import Plot, Stage, Study
from prunelab.studies.imp import CONTROLS, VARIANTS, Round

MAX_ROUNDS = 100


@dataclass(frozen=True)
class ImpConfig:
    """params.yaml `imp`: iterative magnitude pruning (Frankle & Carbin 2019), ``rounds``
    rounds, each pruning ``rate`` of every hidden layer's remaining weights (``output_rate`` of
    the output layer's), rewinding the survivors (to the init, or to step ``rewind`` of the
    dense run) and retraining for train.epochs; ``controls`` trained on every round's mask
    sizes too; a test pass every ``eval_every`` steps finds the early-stopping step."""

    rounds: int = 15
    rate: float = 0.2
    output_rate: float = 0.1
    rewind: int | Literal["init"] = "init"
    controls: tuple[str, ...] = tuple(CONTROLS)
    eval_every: int = 200


def parse(raw: Any, core: Params) -> ImpConfig:
    """Validate the imp section; rewind is checked against the dense run's length."""
    raw = check_keys(raw, "imp", ("rounds", "rate", "output_rate", "rewind", "controls",
                                  "eval_every"))
    steps, rewind = train_steps(core.data, core.train), raw["rewind"]
    if rewind != "init" and (isinstance(rewind, bool) or not isinstance(rewind, int)
                             or not 0 <= rewind <= steps):
        raise fail("imp.rewind", rewind, f"init, or an optimizer step from 0 to {steps} (the "
                   "dense run's length: train.epochs x batches per epoch)")
    controls = raw["controls"]
    allowed = "a list of distinct names from: " + ", ".join(CONTROLS) + " (may be empty)"
    if not isinstance(controls, list) or len(controls) > len(CONTROLS):
        raise fail("imp.controls", controls, allowed)
    for i, name in enumerate(controls):
        if not isinstance(name, str) or name not in CONTROLS or name in controls[:i]:
            raise fail(f"imp.controls[{i}]", name, allowed)
    return ImpConfig(
        rounds=integer(raw, "imp", "rounds", 1, MAX_ROUNDS),
        rate=rate(raw, "imp", "rate"),
        output_rate=rate(raw, "imp", "output_rate"),
        rewind=rewind,
        controls=tuple(controls),
        eval_every=integer(raw, "imp", "eval_every", 1, MAX_SAMPLES * MAX_EPOCHS),
    )

IMP_COLUMNS = ("round", "variant", "weights_remaining", "accuracy", "best_step")
TICKET_TOLERANCE = 0.1  # points: "matches dense" for tickets (the and paper's bar)


def rows(rounds: Sequence[Round]) -> list[dict[str, Any]]:
    """plots/imp.csv: one row per round and trained net (round 0: the dense net, as ticket)."""
    return [{"round": r.index, "variant": name,
             "weights_remaining": round(r.remaining_percent(), 4),
             "accuracy": o.accuracy, "best_step": o.best_step}
            for r in rounds for name, o in r.outcomes.items()]


def within_down_to(rounds: Sequence[Round], variant: str, dense: float,
                   tolerance: float = TICKET_TOLERANCE) -> float | None:
    """The fewest weights remaining (%) down to which ``variant`` stays within ``tolerance``
    points of dense (or above) in every round from the first; None if it misses at round 1."""
    best = None
    for r in rounds[1:]:
        o = r.outcomes.get(variant)
        if o is None or o.accuracy < dense - tolerance:
            break
        best = round(r.remaining_percent(), 4)
    return best


def below(rounds: Sequence[Round], variant: str, dense: float,
          tolerance: float = TICKET_TOLERANCE) -> list[int]:
    """The rounds at which ``variant`` is more than ``tolerance`` points below dense."""
    return [r.index for r in rounds[1:] if variant in r.outcomes
            and r.outcomes[variant].accuracy < dense - tolerance]


def summary(rounds: Sequence[Round]) -> dict[str, Any]:
    """metrics/imp.json: dense accuracy; per round the weights remaining and every net's
    accuracy; per variant how far it stays within 0.1 point of dense without a miss, the
    fewest weights remaining at which it is within 0.1 point, and the rounds that miss (one
    seed moves a round by a tenth or two, so a single miss is told apart from a trend)."""
    dense = rounds[0].outcomes["ticket"].accuracy
    variants = [v for v in VARIANTS if v in rounds[-1].outcomes]

    def lowest(variant: str) -> float | None:
        ok = [r.remaining_percent() for r in rounds[1:] if variant in r.outcomes
              and r.outcomes[variant].accuracy >= dense - TICKET_TOLERANCE]
        return round(min(ok), 4) if ok else None

    return {
        "dense_accuracy": dense,
        "within_0.1pt_down_to_percent": {v: within_down_to(rounds, v, dense) for v in variants},
        "lowest_within_0.1pt_percent": {v: lowest(v) for v in variants},
        "rounds_below_0.1pt": {v: below(rounds, v, dense) for v in variants},
        "rounds": {str(r.index): {"weights_remaining": round(r.remaining_percent(), 4),
                                  **{v: o.accuracy for v, o in r.outcomes.items()}}
                   for r in rounds[1:]},
    }


def timing(rounds: Sequence[Round]) -> dict[str, Any]:
    """metrics/imp_timing.json: the rounds' wall time (every training and test pass, including
    rounds resumed from an earlier run), optimisation seconds per round and net, and the masked
    trainings' median over the dense round's (issue 11's 1.2x; the benchmark measures it with
    both runs side by side)."""
    dense = rounds[0].outcomes["ticket"].seconds
    masked = [o.seconds for r in rounds[1:] for o in r.outcomes.values()]
    median = round(statistics.median(masked), 3) if masked else None
    return {"wall_seconds": round(sum(r.wall_seconds for r in rounds), 3),
            "resumed_rounds": sum(r.resumed for r in rounds),
            "dense_seconds": dense,
            "masked_median_seconds": median,
            "masked_over_dense": round(median / dense, 3) if median and dense else None,
            "rounds": {str(r.index): {v: o.seconds for v, o in r.outcomes.items()}
                       for r in rounds}}


STUDY = Study(
    name="imp",
    description="iterative magnitude pruning with rewinding (lottery tickets) and controls",
    pipeline=paths.RETRAIN_PIPELINE,
    params=Section("imp", parse),
    figure=paths.LOTTERY_FIGURE,
    report_section="Retraining: fine-tuning and lottery tickets",
    stages=(Stage(
        "imp", "iterative magnitude pruning with rewinding (lottery tickets) and its controls, "
        "round by round (the first seed's init)", "stages/imp.py",
        params=("data.train_size", "data.test_size", "model.arch", "train.epochs", "train.lr",
                "train.batch_size", "train.device", "imp.rounds", "imp.rate",
                "imp.output_rate", "imp.rewind", "imp.controls", "imp.eval_every"),
        reads=(paths.PARAMS_CHECKED, paths.init_model(paths.FIRST_SEED), paths.DATA_DIR),
        metrics=(paths.IMP_HEADLINE,), figures=(paths.LOTTERY_FIGURE,), chain_only=True,
        in_git=(paths.IMP_DIR, paths.IMP_CURVE, paths.IMP_METRICS, paths.IMP_TIMING),
        persist=(paths.IMP_DIR,),
        note="models/imp/ (the round checkpoints, ignored by git) is persistent: each finished\n"
             "round is a file there, and a killed or extended run continues after the last\n"
             "finished round."),),
    plots=(
        Plot("lottery_ticket", "lottery",
             "Iterative magnitude pruning, rewound (ticket) against its controls",
             "weights_remaining", {str(paths.IMP_CURVE): "accuracy"},
             "weights remaining (%, log scale)", "test accuracy (%)"),
        Plot("early_stopping", "lottery", "Step of the best test pass, per round",
             "weights_remaining", {str(paths.IMP_CURVE): "best_step"},
             "weights remaining (%, log scale)", "optimizer step of the best test pass"),
    ),
)


def headline(summary: Mapping[str, Any]) -> dict[str, float | None]:
    """The `dvc exp show` column: the fewest weights remaining (%) at which the ticket is
    within 0.1 point of dense (every round's numbers stay in metrics/imp.json)."""
    return {"ticket_lowest_within_0.1pt_percent":
            summary["lowest_within_0.1pt_percent"].get("ticket")}


def resume_lines(done: Sequence[Round], stale: int) -> list[str]:
    """What a rerun says about the round files it found."""
    lines = []
    if stale:
        lines.append(f"imp: discarded {stale} round file(s) made with other settings or code")
    if done:
        lines.append(f"imp: resuming after round {done[-1].index} (rounds 0-"
                     f"{done[-1].index} kept from an earlier run)")
    return lines


def round_line(rnd: Round) -> str:
    """One finished round, as the stage prints it."""
    accs = ", ".join(f"{v} {o.accuracy:.2f}" for v, o in rnd.outcomes.items())
    return f"imp: round {rnd.index}: {rnd.remaining_percent():.2f}% of weights remaining: {accs}"


def log_round(run: Any, rnd: Round) -> None:
    """One round as a child MLflow run: per-layer weights remaining, every net's accuracy,
    best step and seconds, and its test-accuracy history."""
    metrics = {"weights_remaining": rnd.remaining_percent(),
               **{f"remaining.layer{i}": n for i, n in enumerate(rnd.remaining)},
               **{f"{v}.accuracy": o.accuracy for v, o in rnd.outcomes.items()},
               **{f"{v}.best_step": o.best_step for v, o in rnd.outcomes.items()},
               **{f"{v}.train_seconds": o.seconds for v, o in rnd.outcomes.items()}}
    series = {f"{v}.test_accuracy": list(o.evals) for v, o in rnd.outcomes.items()}
    run.log_child(f"round {rnd.index}", metrics, series,
                  {"imp_round": str(rnd.index), "resumed": str(rnd.resumed).lower()})


def log_study(run: Any, rounds: Sequence[Round], summary: Mapping[str, Any],
              timing: Mapping[str, Any]) -> None:
    """Every round as a child run, and the study's summary and cost on the parent."""
    for rnd in rounds:
        log_round(run, rnd)
    run.log_metrics({f"{v}.within_0.1pt_down_to_percent": p for v, p in
                     summary["within_0.1pt_down_to_percent"].items()}, parent_prefix="imp.")
    run.log_metrics({k: timing[k] for k in ("wall_seconds", "dense_seconds",
                                             "masked_median_seconds", "masked_over_dense")},
                    parent_prefix="imp.")
