"""The at-init study across seeds: each arm's mean and 95% interval, the comparison figure
against dense, the IMP tickets and one-shot magnitude + fine-tuning, the sanity-check verdicts
computed from the numbers, the headline and the report section."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

from prunelab.reporting.figures import png, pyplot
from prunelab.reporting.intervals import stats
from prunelab.reporting.verdicts import paired

TICKET = "ticket"
VERDICT_ROUNDS_NOTE = "(seeds' 95% intervals of the difference)"


def aggregate(per_seed: Mapping[int, Sequence[Mapping[str, str]]]) -> list[dict[str, Any]]:
    """plots/atinit.csv: one row per arm, mean accuracy across seeds and its 95% interval."""
    by_arm: dict[str, list[Mapping[str, str]]] = defaultdict(list)
    for rows in per_seed.values():
        for row in rows:
            by_arm[row["arm"]].append(row)
    out = []
    for arm, rows in by_arm.items():
        acc = stats([float(r["accuracy"]) for r in rows if r["accuracy"] not in ("", None)])
        first = rows[0]
        out.append({"arm": arm, "method": first["method"], "control": first["control"],
                    "round": first["round"], "keep": first["keep"],
                    "weights_remaining": float(first["weights_remaining"]),
                    "accuracy": round(acc.mean, 4), "ci_low": _r(acc.ci_low),
                    "ci_high": _r(acc.ci_high), "seeds": acc.n})
    return out


def _r(x: float | None) -> float | None:
    return None if x is None else round(x, 4)


def _by_seed(per_seed: Mapping[int, Sequence[Mapping[str, str]]]) -> dict[str, dict[int, float]]:
    """Arm -> seed -> accuracy."""
    out: dict[str, dict[int, float]] = defaultdict(dict)
    for seed, rows in per_seed.items():
        for row in rows:
            if row["accuracy"] not in ("", None):
                out[row["arm"]][seed] = float(row["accuracy"])
    return out


def verdicts(per_seed: Mapping[int, Sequence[Mapping[str, str]]]) -> list[dict[str, Any]]:
    """Per method, round and control: the method's accuracy minus its control's, paired by seed,
    with the 95% interval of that difference and the verdict it supports."""
    acc = _by_seed(per_seed)
    out = []
    for arm, values in sorted(acc.items()):
        head, _, control = arm.partition("/")
        if not control or head.startswith("supermask") or head not in acc:
            continue
        diffs = [acc[head][s] - v for s, v in values.items() if s in acc[head]]
        if not diffs:
            continue
        method, _, rnd = head.partition("@")
        out.append({"method": method, "round": int(rnd), "control": control,
                    **paired(diffs, "beats it", "loses to it",
                             "no difference beyond the interval")})
    return out


def _point(rows: Sequence[Mapping[str, Any]], arm: str) -> Mapping[str, Any] | None:
    return next((r for r in rows if r["arm"] == arm), None)


def summary(rows: Sequence[Mapping[str, Any]], checks: Sequence[Mapping[str, Any]],
            imp_rows: Sequence[Mapping[str, str]], dense: float | None) -> dict[str, Any]:
    """metrics/atinit.json: every arm, the verdicts, the supermasks' best and each method's
    gap to the IMP ticket of the same round."""
    tickets = {int(r["round"]): float(r["accuracy"]) for r in imp_rows
               if r["variant"] == TICKET}
    gaps = {r["arm"]: round(r["accuracy"] - tickets[int(r["round"])], 4) for r in rows
            if not r["control"] and r["method"] != "supermask" and r["round"] not in ("", None)
            and int(r["round"]) in tickets}
    masks = [r for r in rows if r["method"] == "supermask" and not r["control"]]
    best = max(masks, key=lambda r: r["accuracy"], default=None)
    baseline = _point(rows, f"{best['arm']}/random") if best else None
    return {"dense_accuracy": dense, "arms": {r["arm"]: r for r in rows},
            "gap_to_ticket": gaps, "sanity_checks": list(checks),
            "supermask_best": None if best is None else {
                "arm": best["arm"], "accuracy": best["accuracy"],
                "random_mask_accuracy": baseline["accuracy"] if baseline else None}}


def headline(result: Mapping[str, Any]) -> dict[str, float | None]:
    """The `dvc exp show` columns: the best supermask, and the best at-init method's gap to the
    IMP ticket at the sparsest round both ran."""
    best = result["supermask_best"]
    gaps = result["gap_to_ticket"]
    last = max((int(a.split("@")[1]) for a in gaps), default=None)
    at_last = [v for a, v in gaps.items() if int(a.split("@")[1]) == last]
    return {"supermask.best_accuracy": best["accuracy"] if best else None,
            "at_init.best_gap_to_ticket": max(at_last) if at_last else None}


def sentences(result: Mapping[str, Any]) -> list[str]:
    """The findings, computed from the numbers, whichever way they come out."""
    out = []
    by_method: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for check in result["sanity_checks"]:
        by_method[check["method"]].append(check)
    for method, checks in by_method.items():  # the question asked: vs its shuffled mask
        parts = [f"round {c['round']}: {c['difference']:+.2f} points"
                 + (f" [{c['ci_low']:+.2f}, {c['ci_high']:+.2f}]" if c["ci_low"] is not None
                    else "") + f", {c['verdict']}" for c in checks if c["control"] == "shuffled"]
        if parts:
            out.append(f"- **{method}** minus its layer-shuffled mask: {'; '.join(parts)}.")
    best = result["supermask_best"]
    if best:
        tried = sum(1 for a in result["arms"] if a.startswith("supermask/")
                    and not a.endswith("/random"))
        out.append(f"- The best supermask ({best['arm']}, weights never trained) reaches "
                   f"{best['accuracy']:.2f}%: the highest of {tried} configurations, picked on "
                   "the test set, so optimistic by that choice (every configuration is in "
                   "metrics/atinit.json); a random mask of the same counts on the same weights: "
                   f"{best['random_mask_accuracy']:.2f}%.")
    rounds = {r["round"] for r in result["arms"].values() if r["method"] != "supermask"}
    missing = sorted(int(r) for r in rounds if r not in ("", None) and not any(
        a.endswith(f"@{r}") for a in result["gap_to_ticket"]))
    if missing:
        out.append(f"- No IMP ticket to compare with at round(s) {missing}: imp.rounds stops "
                   "before.")
    return out


def gap_table(result: Mapping[str, Any]) -> list[str]:
    """Each method's accuracy minus the IMP ticket's with the same weight count, per round."""
    gaps = result["gap_to_ticket"]
    rounds = sorted({int(a.split("@")[1]) for a in gaps})
    methods = list(dict.fromkeys(a.split("@")[0] for a in gaps))
    left = {int(a.split("@")[1]): result["arms"][a]["weights_remaining"] for a in gaps}
    head = [f"round {r} ({left[r]:.3g}%)" for r in rounds]
    lines = ["| method minus IMP ticket (points) | " + " | ".join(head) + " |",
             "|---|" + "---|" * len(rounds)]
    for m in methods:
        cells = [f"{gaps[f'{m}@{r}']:+.2f}" if f"{m}@{r}" in gaps else "" for r in rounds]
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return lines


MARKERS = {"shuffled": "x", "reinit": "+", "inverted": "v", "": "o"}
METHOD_COLOURS = {"random": "tab:gray", "magnitude": "tab:blue", "snip": "tab:green",
                  "grasp": "tab:purple", "synflow": "tab:red", "supermask": "black"}


def figure(rows: Sequence[Mapping[str, Any]], imp_rows: Sequence[Mapping[str, str]],
           tuned: Sequence[Mapping[str, str]], dense: float | None, arch: str) -> bytes:
    """:func:`draw`, as PNG bytes."""
    return png(draw(rows, imp_rows, tuned, dense, arch))


def draw(rows: Sequence[Mapping[str, Any]], imp_rows: Sequence[Mapping[str, str]],
         tuned: Sequence[Mapping[str, str]], dense: float | None, arch: str) -> Any:
    """Accuracy against weights remaining (log): dense, the IMP tickets, one-shot magnitude +
    fine-tuning, each at-init method (lines, with the seeds' interval) and its controls
    (markers), the supermasks (squares) and their random masks (hollow)."""
    fig, ax = pyplot().subplots(figsize=(10, 6))
    if dense is not None:
        ax.axhline(dense, color="gray", lw=0.8, ls=":", label=f"dense ({dense:.2f}%)")
    ticket = sorted((float(r["weights_remaining"]), float(r["accuracy"])) for r in imp_rows
                    if r["variant"] == TICKET)
    if ticket:
        ax.plot(*zip(*ticket, strict=True), color="tab:orange", lw=2.2, label="IMP ticket")
    ft = sorted((100 * (1 - float(r["nominal_sparsity"])), float(r["accuracy"])) for r in tuned
                if r["criterion"] == "magnitude" and r["training"] == "fine-tuned")
    if ft:
        ax.plot(*zip(*ft, strict=True), color="tab:brown", lw=1.5, ls="--",
                label="one-shot magnitude + fine-tune")
    _methods(ax, rows)
    ax.set_xscale("log")
    ax.invert_xaxis()
    ax.set_xlabel("weights remaining (% of all weights, log scale)")
    ax.set_ylabel("test accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2, loc="lower left")
    ax.set_title(f"MNIST {arch}: tickets without a trained net (markers: x shuffled, + reinit, "
                 "v inverted)", fontsize=10)
    fig.tight_layout()
    return fig


def _methods(ax: Any, rows: Sequence[Mapping[str, Any]]) -> None:
    """Each method's line (with its interval) and control markers; the supermasks."""
    for method, colour in METHOD_COLOURS.items():
        mine = sorted((r for r in rows if r["method"] == method),
                      key=lambda r: r["weights_remaining"])
        main = [r for r in mine if not r["control"]]
        xs = [r["weights_remaining"] for r in main]
        if method == "supermask":
            ax.scatter(xs, [r["accuracy"] for r in main], marker="s", color=colour,
                       label="supermask (weights never trained)", zorder=4)
            rand = [r for r in mine if r["control"] == "random"]
            ax.scatter([r["weights_remaining"] for r in rand], [r["accuracy"] for r in rand],
                       marker="s", facecolors="none", edgecolors=colour,
                       label="random mask, same frozen weights", zorder=4)
            continue
        if main:
            ax.plot(xs, [r["accuracy"] for r in main], marker="o", ms=4, color=colour,
                    label=f"{method} at init")
            band = [r for r in main if r["ci_low"] is not None]
            if band:
                ax.fill_between([r["weights_remaining"] for r in band],
                                [r["ci_low"] for r in band], [r["ci_high"] for r in band],
                                color=colour, alpha=0.15)
        for control in ("shuffled", "reinit", "inverted"):
            pts = [r for r in mine if r["control"] == control]
            ax.scatter([r["weights_remaining"] for r in pts], [r["accuracy"] for r in pts],
                       marker=MARKERS[control], color=colour, s=40, zorder=3)


def section(result: Mapping[str, Any], seeds: int) -> str:
    """reports/sections/atinit.md: the figure, the findings and the sanity-check table."""
    lines = ["## Tickets without a trained net", "",
             "![Tickets without a trained net](../../plots/atinit.png)", "",
             f"Masks from the untrained net (`random`, `magnitude`, `snip`, `grasp`, `synflow`) "
             f"trained with the study's recipe at the IMP study's weight counts, their sanity "
             f"checks (shuffled within each layer, re-initialised, inverted scores) and "
             f"supermasks (scores trained, weights frozen), on {seeds} seed(s); generated by "
             "`dvc repro stages/retrain/dvc.yaml` (docs/atinit.md).", "",
             *sentences(result), "", *gap_table(result), "",
             "| method | round | control | method minus control (points) | 95% interval | "
             "verdict |", "|---|---|---|---|---|---|"]
    for c in result["sanity_checks"]:
        interval = ("" if c["ci_low"] is None
                    else f"[{c['ci_low']:+.2f}, {c['ci_high']:+.2f}]")
        lines.append(f"| {c['method']} | {c['round']} | {c['control']} | "
                     f"{c['difference']:+.2f} | {interval} | {c['verdict']} |")
    return "\n".join(lines) + "\n"
