"""Sparsity schedules: how much of each hidden layer is pruned at a given training step.

Gradual magnitude pruning (Zhu & Gupta 2017) prunes every ``every`` steps from ``start`` to
``end``, up to

    s_t = s_f + (s_i - s_f) (1 - p)^3,   p = (t - start) / (end - start)

-- fast at first, then slower: a *decreasing* pruning rate, the shape Navlakha et al. (2015)
measured in developing mouse cortex. The synaptic-pruning comparison holds the start, the end
and s_f and changes only the rate's shape: ``constant`` (linear in t) and ``increasing`` (the
cubic's mirror, s_i + (s_f - s_i) p^3). ``oneshot`` keeps the net dense until ``end`` and
prunes everything there: one-shot magnitude pruning + fine-tuning with the same total steps.
"""

from __future__ import annotations

SHAPES: tuple[str, ...] = ("decreasing", "constant", "increasing")
ONESHOT = "oneshot"


def sparsity_at(step: int, final: float, start: int, end: int, shape: str,
                initial: float = 0.0) -> float:
    """The scheduled sparsity at ``step``: 0 before ``start`` (dense), ``final`` from ``end``
    on, and in between the ``shape``'s curve from ``initial`` (at ``start``) to ``final``."""
    if step < start:
        return 0.0
    if step >= end:
        return final
    p = (step - start) / (end - start)
    if shape == "decreasing":
        return final + (initial - final) * (1 - p) ** 3
    if shape == "constant":
        return initial + (final - initial) * p
    if shape == "increasing":
        return initial + (final - initial) * p ** 3
    if shape == ONESHOT:
        return 0.0
    raise ValueError(f"shape {shape!r}: allowed {', '.join((*SHAPES, ONESHOT))}")


def update_steps(start: int, end: int, every: int) -> list[int]:
    """The steps a schedule prunes at: ``start``, every ``every`` steps after, and ``end``."""
    steps = list(range(start, end, every)) if every > 0 and end > start else []
    return [*steps, end] if end not in steps else steps


def bounds(total: int, start: float, end: float) -> tuple[int, int]:
    """The first and last pruning steps of a run of ``total`` steps, from their shares."""
    first = max(1, round(start * total))
    return first, max(first + 1, round(end * total))


def curve(shape: str, final: float, start: int, end: int, every: int,
          total: int) -> list[tuple[int, float]]:
    """(step, sparsity) at step 0, at every update step and at the run's end: the schedule a
    gradual arm follows (its masks change at these steps and hold in between)."""
    points = [(0, 0.0)]
    points += [(t, sparsity_at(t, final, start, end, shape))
               for t in update_steps(start, end, every)]
    return [*points, (total, final)]
