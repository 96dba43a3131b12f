"""The during-training study across seeds: each arm's mean and 95% interval on every measure,
the synaptic-schedule verdicts and the other findings computed from the numbers, the figure
beside dense, the IMP tickets, the at-init methods and one-shot magnitude + fine-tuning, the
headline and the report section."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

from prunelab.reporting.figures import png, pyplot
from prunelab.reporting.intervals import stats
from prunelab.reporting.verdicts import paired

REFERENCE = "decreasing"  # the brain's shape (Navlakha et al. 2015), against each other shape
TICKET = "ticket"
EARLYBIRD = "dense/earlybird"


def _r(x: float | None) -> float | None:
    return None if x is None else round(x, 4)


def measures(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """The measured columns: clean accuracy, then each noise and deletion level."""
    keys = {k for r in rows for k in r if k.startswith(("noise_", "delete_"))
            and not k.endswith(("_ci_low", "_ci_high"))}
    return ["accuracy", *sorted(keys, key=lambda k: (k.split("_")[0] != "noise",
                                                     float(k.split("_")[1])))]


def _value(row: Mapping[str, Any], key: str) -> float | None:
    v = row.get(key)
    return None if v in ("", None) else float(v)


def aggregate(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """plots/during.csv: one row per arm, each measure's mean across seeds and its 95%
    interval, the weights remaining and the training seconds (means)."""
    by_arm: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for row in rows:
        by_arm[str(row["arm"])].append(row)
    out = []
    for arm, mine in by_arm.items():
        first = mine[0]
        line: dict[str, Any] = {"arm": arm, "method": first["method"], "shape": first["shape"],
                                "sparsity": float(first["sparsity"]),
                                "weights_remaining": round(stats(
                                    [float(r["weights_remaining"]) for r in mine]).mean, 4),
                                "seconds": round(stats([float(r["seconds"])
                                                        for r in mine]).mean, 3)}
        for key in measures(rows):
            values = [v for r in mine if (v := _value(r, key)) is not None]
            if not values:
                continue
            s = stats(values)
            line[key] = round(s.mean, 4)
            line[f"{key}_ci_low"], line[f"{key}_ci_high"] = _r(s.ci_low), _r(s.ci_high)
        line["seeds"] = len(mine)
        out.append(line)
    return out


def _paired(rows: Sequence[Mapping[str, Any]], a: str, b: str, key: str) -> dict[str, Any] | None:
    """``a`` minus ``b`` on ``key``, paired by seed, with the 95% interval and its verdict."""
    by = {(str(r["arm"]), int(r["seed"])): _value(r, key) for r in rows}
    diffs = [va - vb for (arm, seed), va in by.items() if arm == a and va is not None
             and (vb := by.get((b, seed))) is not None]
    return paired(diffs, "wins", "loses", "ties") if diffs else None


def schedule_verdicts(rows: Sequence[Mapping[str, Any]], final: float) -> list[dict[str, Any]]:
    """Per measure and other shape: the decreasing rate's value minus the other's (paired by
    seed) and whether it wins, ties or loses beyond the seeds' 95% interval."""
    head = f"gradual/{REFERENCE}@{final:g}"
    shapes = sorted({str(r["shape"]) for r in rows if r["method"] == "gradual"
                     and str(r["arm"]).endswith(f"@{final:g}") and r["shape"] != REFERENCE})
    out = []
    for key in measures(rows):
        for shape in shapes:
            found = _paired(rows, head, f"gradual/{shape}@{final:g}", key)
            if found:
                out.append({"measure": key, "against": shape, **found})
    return out


def _dense(rows: Sequence[Mapping[str, Any]]) -> dict[int, float]:
    return {int(r["seed"]): float(r["accuracy"]) for r in rows if r["arm"] == EARLYBIRD}


def _mean(values: Sequence[float]) -> float | None:
    return round(stats(values).mean, 4) if values else None


def costs(rows: Sequence[Mapping[str, Any]]) -> dict[str, float | None]:
    """Each method's training time over the dense run's of the same seed (median over its arms
    and seeds), and the early-bird tracking's share of the dense run's time."""
    dense = {int(r["seed"]): float(r["seconds"]) for r in rows if r["arm"] == EARLYBIRD}
    ratios: dict[str, list[float]] = defaultdict(list)
    for r in rows:
        seed = int(r["seed"])
        if seed in dense and r["arm"] != EARLYBIRD:
            ratios[str(r["method"])].append(float(r["seconds"]) / dense[seed])
    out: dict[str, float | None] = {f"{m}_over_dense": round(sorted(v)[len(v) // 2], 3)
                                    for m, v in sorted(ratios.items())}
    tracking = [float(r["tracking_seconds"]) / float(r["seconds"]) for r in rows
                if r["arm"] == EARLYBIRD and _value(r, "tracking_seconds") is not None]
    out["earlybird_tracking_share"] = round(sorted(tracking)[len(tracking) // 2], 4) \
        if tracking else None
    out["training_seconds"] = round(sum(float(r["seconds"]) for r in rows), 1)
    return out


def summary(rows: Sequence[Mapping[str, Any]], curve: Sequence[Mapping[str, Any]],
            final: float, total_steps: int) -> dict[str, Any]:
    """metrics/during.json: every arm, the schedule verdicts, gradual pruning's gap to dense,
    each dynamic method against its static mask, the early-bird tickets and the costs."""
    dense = _dense(rows)
    gaps = {}
    for arm in sorted({str(r["arm"]) for r in rows if r["method"] in ("gradual", "oneshot")}):
        diffs = [float(r["accuracy"]) - dense[int(r["seed"])] for r in rows
                 if r["arm"] == arm and int(r["seed"]) in dense]
        if diffs:
            gaps[arm] = _mean(diffs)
    dynamic = {}
    for r in curve:
        if r["method"] in ("set", "rigl"):
            found = _paired(rows, r["arm"], f"static@{r['sparsity']:g}", "accuracy")
            if found:
                dynamic[r["arm"]] = found
    early = [r for r in rows if r["method"] == "earlybird"]
    birds = {}
    for seed in sorted({int(r["seed"]) for r in early}):
        mine = {str(r["arm"]): r for r in early if int(r["seed"]) == seed}
        e = next((r for a, r in mine.items() if not a.startswith("earlybird/late")), None)
        late = next((r for a, r in mine.items() if a.startswith("earlybird/late")), None)
        birds[str(seed)] = {
            "drawn_at": None if e is None else int(float(e["drawn_at"])),
            "steps_saved_share": None if e is None else round(
                1 - float(e["drawn_at"]) / total_steps, 4),
            "accuracy": None if e is None else float(e["accuracy"]),
            "late_accuracy": None if late is None else float(late["accuracy"])}
    return {"dense_accuracy": _mean(list(dense.values())), "final_sparsity": final,
            "arms": {r["arm"]: r for r in curve},
            "schedule": schedule_verdicts(rows, final), "gap_to_dense": gaps,
            "dynamic_vs_static": dynamic, "earlybird": birds, "costs": costs(rows)}


def headline(result: Mapping[str, Any]) -> dict[str, float | None]:
    """The `dvc exp show` columns: gradual pruning's gap to dense at the final sparsity, and
    the decreasing rate's clean-accuracy difference to the constant rate."""
    final = result["final_sparsity"]
    versus = next((v for v in result["schedule"] if v["measure"] == "accuracy"
                   and v["against"] == "constant"), None)
    return {"gradual.gap_to_dense": result["gap_to_dense"].get(
                f"gradual/{REFERENCE}@{final:g}"),
            "schedule.decreasing_minus_constant": versus["difference"] if versus else None}


def _interval(v: Mapping[str, Any]) -> str:
    return "" if v["ci_low"] is None else f" [{v['ci_low']:+.2f}, {v['ci_high']:+.2f}]"


def sentences(result: Mapping[str, Any]) -> list[str]:
    """The findings, computed from the numbers, whichever way they come out."""
    out, final = [], result["final_sparsity"]
    schedule = result["schedule"]
    if schedule:
        by_measure: dict[str, list[str]] = defaultdict(list)
        for v in schedule:
            by_measure[v["measure"]].append(f"{v['verdict']} against {v['against']} "
                                            f"({v['difference']:+.2f}{_interval(v)})")
        n = max(v["seeds"] for v in schedule)
        out.append(f"- **The synaptic-pruning schedule** (final sparsity {final:g}, {n} seeds; "
                   "decreasing rate minus the other, points, 95% interval): "
                   + "; ".join(f"{m.replace('_', ' ')}: {', '.join(p)}"
                               for m, p in by_measure.items()) + ".")
        wins = sum(v["verdict"] == "wins" for v in schedule)
        loses = sum(v["verdict"] == "loses" for v in schedule)
        out.append(f"- Navlakha et al.'s claim on this net: the decreasing rate wins {wins}, "
                   f"loses {loses} and ties {len(schedule) - wins - loses} of "
                   f"{len(schedule)} comparisons beyond the seeds' interval.")
    gap = result["gap_to_dense"].get(f"gradual/{REFERENCE}@{final:g}")
    if gap is not None and result["dense_accuracy"] is not None:
        out.append(f"- Gradual magnitude pruning to {final:g} in the dense run's steps: "
                   f"{gap:+.2f} points from dense ({result['dense_accuracy']:.2f}%); "
                   + ("within" if gap >= -0.5 else "not within") + " 0.5 point.")
    for arm, v in result["dynamic_vs_static"].items():
        out.append(f"- {arm} minus its static random mask: {v['difference']:+.2f} points"
                   f"{_interval(v)} ({v['verdict']}).")
    for seed, b in result["earlybird"].items():
        if b["drawn_at"] is None:
            out.append(f"- Seed {seed}: the dense run's masks never settled: no early-bird "
                       "ticket.")
            continue
        out.append(f"- Early-bird ticket (seed {seed}): drawn at step {b['drawn_at']} "
                   f"({100 * b['steps_saved_share']:.0f}% of the dense run's steps saved), "
                   f"{b['accuracy']:.2f}% after retraining, against {b['late_accuracy']:.2f}% for "
                   "the ticket drawn after full training.")
    return out


COLOURS = {"gradual": "tab:blue", "oneshot": "tab:brown", "set": "tab:green",
           "rigl": "tab:red", "static": "tab:gray", "earlybird": "tab:purple"}
SHAPE_COLOURS = {"decreasing": "tab:blue", "constant": "tab:olive", "increasing": "tab:pink"}


def figure(curve: Sequence[Mapping[str, Any]],
           schedules: Mapping[str, Sequence[tuple[int, float]]],
           refs: Mapping[str, Sequence[Mapping[str, str]]], result: Mapping[str, Any],
           arch: str) -> bytes:
    """:func:`draw`, as PNG bytes."""
    return png(draw(curve, schedules, refs, result, arch))


def draw(curve: Sequence[Mapping[str, Any]],
         schedules: Mapping[str, Sequence[tuple[int, float]]],
         refs: Mapping[str, Sequence[Mapping[str, str]]], result: Mapping[str, Any],
         arch: str) -> Any:
    """Three panels: accuracy against weights remaining (log) for every method beside the
    references; the three schedules' sparsity against step; each robustness measure for the
    three shapes with the seeds' 95% intervals."""
    fig, (left, mid, right) = pyplot().subplots(1, 3, figsize=(17, 5.5),
                                                gridspec_kw={"width_ratios": [2.2, 1, 1.6]})
    _methods(left, curve, refs, result.get("dense_accuracy"))
    left.set_title(f"MNIST {arch}: pruned while training vs after", fontsize=10)
    for shape, points in schedules.items():
        mid.step([t for t, _ in points], [100 * s for _, s in points], where="post",
                 color=SHAPE_COLOURS.get(shape, "gray"), label=f"{shape} rate")
    mid.set_xlabel("training step")
    mid.set_ylabel("each hidden layer's sparsity (%)")
    mid.set_title("the schedules (same start, end, final)", fontsize=10)
    mid.grid(alpha=0.3)
    mid.legend(fontsize=8)
    _robustness(right, curve, result["final_sparsity"])
    fig.tight_layout()
    return fig


def _references(ax: Any, refs: Mapping[str, Sequence[Mapping[str, str]]],
                dense: float | None) -> None:
    """Dense, the IMP tickets, one-shot magnitude + fine-tuning, SNIP and SynFlow at init."""
    if dense is not None:
        ax.axhline(dense, color="gray", lw=0.8, ls=":", label=f"dense ({dense:.2f}%)")
    ticket = sorted((float(r["weights_remaining"]), float(r["accuracy"]))
                    for r in refs.get("imp", ()) if r["variant"] == TICKET)
    if ticket:
        ax.plot(*zip(*ticket, strict=True), color="tab:orange", lw=2.2, label="IMP ticket")
    tuned = sorted((100 * (1 - float(r["nominal_sparsity"])), float(r["accuracy"]))
                   for r in refs.get("finetune", ()) if r["criterion"] == "magnitude"
                   and r["training"] == "fine-tuned")
    if tuned:
        ax.plot(*zip(*tuned, strict=True), color="tan", lw=1.2, ls="--",
                label="one-shot magnitude after training + 1 epoch fine-tune")
    for method in ("snip", "synflow"):
        pts = sorted((float(r["weights_remaining"]), float(r["accuracy"]))
                     for r in refs.get("atinit", ()) if r["method"] == method
                     and not r["control"])
        if pts:
            ax.plot(*zip(*pts, strict=True), lw=0.9, ls=":", marker=".",
                    color="tab:cyan" if method == "snip" else "tab:pink",
                    label=f"{method} at init")
    gated = [(float(r["weights_remaining"]), float(r["accuracy"]),
              float(r["l2_refit_accuracy"])) for r in refs.get("l0", ())]
    if gated:
        xs = [g[0] for g in gated]
        ax.scatter(xs, [g[1] for g in gated], marker="^", s=50, color="tab:olive", zorder=4,
                   label="L0 gates on units (compacted)")
        ax.scatter(xs, [g[2] for g in gated], marker="^", s=50, color="none", zorder=4,
                   edgecolors="tab:olive", label="l2_refit at the same widths")


def _methods(ax: Any, curve: Sequence[Mapping[str, Any]],
             refs: Mapping[str, Sequence[Mapping[str, str]]], dense: float | None) -> None:
    """Every during-training method's line (with the seeds' interval) beside the references."""
    _references(ax, refs, dense)
    labels = {"gradual": "gradual magnitude (decreasing rate)",
              "oneshot": "one-shot magnitude + fine-tune, same steps", "set": "SET",
              "rigl": "RigL", "static": "static random mask", "earlybird": "early-bird ticket"}
    for method, colour in COLOURS.items():
        mine = sorted((r for r in curve if r["method"] == method
                       and (method != "gradual" or r["shape"] == REFERENCE)),
                      key=lambda r: r["weights_remaining"])
        if not mine:
            continue
        xs, ys = [r["weights_remaining"] for r in mine], [r["accuracy"] for r in mine]
        style = {"marker": "o", "ms": 4, "color": colour}
        if method == "earlybird":
            for late in (False, True):
                pts = [r for r in mine if str(r["arm"]).startswith("earlybird/late") == late]
                ax.scatter([r["weights_remaining"] for r in pts], [r["accuracy"] for r in pts],
                           marker="*", s=110, zorder=4, color="none" if late else colour,
                           edgecolors=colour, label="ticket drawn after full training" if late
                           else "early-bird ticket (drawn where the masks settle)")
            continue
        ax.plot(xs, ys, label=labels[method], **style)
        band = [r for r in mine if r.get("accuracy_ci_low") not in (None, "")]
        if band:
            ax.fill_between([r["weights_remaining"] for r in band],
                            [r["accuracy_ci_low"] for r in band],
                            [r["accuracy_ci_high"] for r in band], color=colour, alpha=0.15)
    ax.set_xscale("log")
    ax.invert_xaxis()
    lows = [float(r["accuracy"]) for r in curve] + ([dense] if dense is not None else [])
    ax.set_ylim(max(0.0, min(lows, default=3.0) - 3), 100)  # this study's range; refs clip
    from matplotlib.ticker import FuncFormatter  # matplotlib is loaded by pyplot() above

    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.set_xlabel("weights remaining (% of all weights, log scale)")
    ax.set_ylabel("test accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower left")


def _robustness(ax: Any, curve: Sequence[Mapping[str, Any]], final: float) -> None:
    shapes = [r for r in curve if r["method"] == "gradual"
              and str(r["arm"]).endswith(f"@{final:g}")]
    keys = measures(shapes)
    width = 0.8 / max(1, len(shapes))
    for j, row in enumerate(sorted(shapes, key=lambda r: list(SHAPE_COLOURS).index(
            r["shape"]) if r["shape"] in SHAPE_COLOURS else 9)):
        xs = [i + (j - (len(shapes) - 1) / 2) * width for i in range(len(keys))]
        ys = [row.get(k) or 0 for k in keys]
        err = [[max(0.0, y - (row.get(f"{k}_ci_low") or y)) for k, y in zip(keys, ys)],
               [max(0.0, (row.get(f"{k}_ci_high") or y) - y) for k, y in zip(keys, ys)]]
        ax.bar(xs, ys, width, yerr=err, capsize=2, label=f"{row['shape']} rate",
               color=SHAPE_COLOURS.get(row["shape"], "gray"))
    ax.set_xticks(range(len(keys)))
    ax.set_xticklabels([k.replace("noise_", "noise σ=").replace("delete_", "delete ")
                        .replace("accuracy", "clean") for k in keys], fontsize=8)
    ax.set_ylabel("test accuracy (%), mean and 95% interval")
    low = min((row.get(k) or 100 for row in shapes for k in keys), default=0)
    ax.set_ylim(max(0, low - 10), 100)
    ax.set_title(f"robustness at sparsity {final:g}", fontsize=10)
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=8)


def rows_of(result: Mapping[str, Any]) -> list[int]:
    """One entry per training the summary covers (an arm's seeds)."""
    return [1 for a in result["arms"].values() for _ in range(int(a["seeds"]))]


def section(result: Mapping[str, Any], seeds: str) -> str:
    """reports/sections/during.md: the figure, the findings and the tables."""
    lines = ["## Pruning while training", "",
             "![Pruning while training](../../plots/during.png)", "",
             "Nets pruned *while* they train with the study's recipe (3 epochs): gradual "
             "magnitude pruning (Zhu & Gupta 2017) on three pruning-rate shapes, one-shot "
             "magnitude + fine-tuning in the same steps, early-bird tickets (You et al. 2020), "
             f"SET and RigL beside their static random mask; {seeds}; generated by "
             "`dvc repro stages/retrain/dvc.yaml` (docs/during.md).", "",
             *sentences(result), "",
             "| schedule: measure | against | decreasing minus other (points) | 95% interval "
             "| verdict |", "|---|---|---|---|---|"]
    for v in result["schedule"]:
        lines.append(f"| {v['measure']} | {v['against']} | {v['difference']:+.2f} | "
                     f"{_interval(v).strip()} | {v['verdict']} |")
    lines += ["", "| arm | weights remaining (%) | accuracy (%) | seeds | training s |",
              "|---|---|---|---|---|"]
    for arm, r in result["arms"].items():
        lines.append(f"| {arm} | {r['weights_remaining']:.3g} | {r['accuracy']:.2f} | "
                     f"{r['seeds']} | {r['seconds']:.1f} |")
    c, final = result["costs"], result["final_sparsity"]
    schedule = [a for a in result["arms"].values() if a["method"] == "gradual"
                and str(a["arm"]).endswith(f"@{final:g}")]
    lines += ["", f"Training time: {c['training_seconds']:.0f} s over all {len(rows_of(result))} "
              f"trainings; the schedule comparison's {sum(a['seeds'] for a in schedule)}: "
              f"{sum(a['seconds'] * a['seeds'] for a in schedule):.0f} s (test passes and "
              "robustness tests excluded). Cost over the dense run of the same seed (training "
              "time, median; the dense run includes the early-bird tracking): "
              + ", ".join(f"{k.replace('_over_dense', '')} {v:.2f}x" for k, v in c.items()
                          if k.endswith("_over_dense") and v is not None)
              + (f"; early-bird mask tracking {100 * c['earlybird_tracking_share']:.1f}% of "
                 "the dense run" if c.get("earlybird_tracking_share") is not None else "")
              + "."]
    return "\n".join(lines) + "\n"
