"""What the `imp` stage reports from its rounds: the curve CSV, the metrics and the timing.

Kept apart from :mod:`studies.imp`, whose code is part of every round's fingerprint: a change
here re-reports the saved rounds instead of recomputing them.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any

from prunelab.studies.imp import VARIANTS, Round

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
