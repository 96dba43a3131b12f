"""The retraining studies' figures: fine-tuning against one-shot, and lottery tickets (IMP).

Fast: hand-made rows shaped like the stages' CSVs (as `read_rows` returns them, all strings),
no DVC and no training.
"""

from __future__ import annotations

import pytest

from prunelab.errors import DataError
from prunelab.reporting.figures import finetune_figure, lottery_figure

PNG = b"\x89PNG"
GRID = (0.0, 0.25, 0.5, 0.7, 0.8, 0.9, 0.95, 0.99)
DENSE = 97.92
# (one-shot, fine-tuned) accuracy drop below dense per k, per granularity and criterion
DROPS = {
    "weight": {"magnitude": ((0, 0), (0.02, -0.05), (0.3, -0.04), (1.2, 0.03), (3.1, 0.08),
                             (15.5, 0.2), (25.9, 0.6), (66.0, 4.1)),
               "random": ((0, 0), (1.4, 0.1), (8.0, 0.3), (31.0, 0.9), (52.0, 1.6),
                          (75.0, 3.2), (80.0, 6.0), (82.0, 30.0))},
    "unit": {"l2": ((0, 0), (0.1, 0.02), (1.0, 0.1), (3.2, 0.4), (25.0, 0.9), (61.0, 2.4),
                    (78.6, 5.0), (87.8, 42.0)),
             "random": ((0, 0), (2.5, 0.2), (11.0, 0.6), (38.0, 1.5), (60.0, 2.8),
                        (80.0, 7.0), (85.0, 15.0), (88.0, 60.0))},
}


def finetune_rows(method: str) -> list[dict[str, str]]:
    """A plots/finetune_<method>.csv's rows: a one-shot and a fine-tuned row per k."""
    rows = []
    for criterion, drops in DROPS[method].items():
        for k, (shot, tuned) in zip(GRID, drops, strict=True):
            for training, drop in (("one-shot", shot), ("fine-tuned", tuned)):
                row = {"method": method, "criterion": criterion, "scope": "layer",
                       "training": training, "sparsity": str(k),
                       "accuracy": f"{DENSE - drop:.2f}", "nominal_sparsity": str(k * 0.98),
                       "effective_sparsity": str(min(1.0, k * 1.01)),
                       "nonzero_params": str(int(266610 * (1 - k))),
                       "live_params": str(int(266610 * (1 - k)))}
                if method == "unit":
                    row["speedup_b100"] = f"{1 / (1 - k * 0.9):.2f}" \
                        if training == "fine-tuned" else ""
                rows.append(row)
    return rows


def imp_rows(rounds: int = 12, variants: tuple[str, ...] = ("ticket", "reinit", "random_mask"),
             best_step: bool = True) -> list[dict[str, str]]:
    """plots/imp.csv's rows: 20% of the remaining weights pruned per round; tickets hold on
    (and stop early), the controls fall away."""
    rows = [{"round": "0", "variant": "ticket", "weights_remaining": "100.0",
             "accuracy": str(DENSE), "best_step": "5400" if best_step else ""}]
    for r in range(1, rounds + 1):
        remaining = 100 * 0.8 ** r
        for variant in variants:
            acc = {"ticket": DENSE + min(0.15, 0.03 * r) - 0.04 * max(0, r - 8) ** 2,
                   "reinit": DENSE - 0.12 * r - 0.02 * r * r,
                   "random_mask": DENSE - 0.2 * r - 0.03 * r * r}[variant]
            step = {"ticket": 5400 - 250 * min(r, 8) + 300 * max(0, r - 8),
                    "reinit": 5400 + 150 * r, "random_mask": 5400 + 200 * r}[variant]
            rows.append({"round": str(r), "variant": variant,
                         "weights_remaining": f"{remaining:.4f}", "accuracy": f"{acc:.2f}",
                         "best_step": str(step) if best_step else ""})
    return rows


def test_finetune_figure_is_png_and_deterministic() -> None:
    curves = {m: finetune_rows(m) for m in ("weight", "unit")}
    png = finetune_figure(curves, epochs=2, lr=0.001)
    assert png.startswith(PNG)
    assert finetune_figure(curves, epochs=2, lr=0.001) == png


def test_finetune_figure_one_granularity_without_dense_row() -> None:
    """A grid without k = 0: no dense line, the zoom anchors on the best fine-tuned point."""
    rows = [r for r in finetune_rows("unit") if r["sparsity"] != "0.0"]
    assert finetune_figure({"unit": rows}, epochs=1, lr=0.01, arch="lenet5").startswith(PNG)


@pytest.mark.parametrize("damage", [
    lambda r: r.pop("accuracy"),                       # a missing column
    lambda r: r.update(sparsity="n/a"),                # not a number
    lambda r: r.update(accuracy=None),                 # a short line (csv.DictReader's None)
    lambda r: r.update(training="retrained"),          # neither one-shot nor fine-tuned
])
def test_finetune_figure_damaged_row_is_one_line(damage) -> None:
    rows = finetune_rows("weight")
    damage(rows[3])
    with pytest.raises(DataError, match="finetune_weight.csv: damaged") as err:
        finetune_figure({"weight": rows, "unit": finetune_rows("unit")}, epochs=2, lr=0.001)
    assert "\n" not in str(err.value)


def test_finetune_figure_no_rows() -> None:
    with pytest.raises(DataError, match="finetune_unit.csv: damaged \\(no rows\\)"):
        finetune_figure({"weight": finetune_rows("weight"), "unit": []}, epochs=2, lr=0.001)
    with pytest.raises(DataError):
        finetune_figure({}, epochs=2, lr=0.001)


def test_lottery_figure_is_png_and_deterministic() -> None:
    rows = imp_rows()
    png = lottery_figure(rows)
    assert png.startswith(PNG)
    assert lottery_figure(rows) == png


def test_lottery_figure_ticket_only() -> None:
    assert lottery_figure(imp_rows(variants=("ticket",)), arch="lenet5").startswith(PNG)


def test_lottery_figure_dense_round_only() -> None:
    """imp.rounds = 0: one point, still a figure (the log axis needs no range)."""
    assert lottery_figure(imp_rows(rounds=0)).startswith(PNG)


def test_lottery_figure_empty_best_step() -> None:
    rows = imp_rows()
    rows[4]["best_step"] = ""
    assert lottery_figure(rows).startswith(PNG)
    assert lottery_figure(imp_rows(best_step=False)).startswith(PNG)


@pytest.mark.parametrize("damage", [
    lambda r: r.pop("weights_remaining"),              # a missing column
    lambda r: r.update(accuracy="97.x"),               # not a number
    lambda r: r.update(best_step="12.5"),              # a step is a whole number
    lambda r: r.update(round=None),                    # a short line (csv.DictReader's None)
    lambda r: r.update(variant=""),                    # no variant
])
def test_lottery_figure_damaged_row_is_one_line(damage) -> None:
    rows = imp_rows()
    damage(rows[5])
    with pytest.raises(DataError, match="imp.csv: damaged") as err:
        lottery_figure(rows)
    assert "\n" not in str(err.value)


def test_lottery_figure_no_rows() -> None:
    with pytest.raises(DataError, match="imp.csv: damaged \\(no rows\\)"):
        lottery_figure([])
