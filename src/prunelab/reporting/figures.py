"""The study's figure: accuracy against sparsity, nominal and effective, both methods."""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from prunelab import paths  # noqa: E402

# The notebook's own numbers (reporting.notebook), drawn faintly for comparison when the run is
# the notebook's set-up; importable from here too (compare, report).
from prunelab.config import STUDY_CRITERIA  # noqa: E402
from prunelab.errors import DataError  # noqa: E402
from prunelab.reporting.intervals import row_prediction_interval  # noqa: E402
from prunelab.reporting.notebook import STUDY_ACCURACY, STUDY_GRID  # noqa: E402

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure


def pyplot() -> Any:
    """matplotlib.pyplot on the Agg backend (no display on servers and CI), imported on first
    use: half a second that a stage drawing nothing does not pay."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt

COLOURS = {"weight": "tab:blue", "unit": "tab:orange"}
# One colour per criterion; the study's two keep the colours the figure always had.
CRITERION_COLOURS = {"magnitude": "tab:blue", "l2": "tab:orange", "random": "tab:gray",
                     "largest": "tab:red", "wanda": "tab:green", "activation": "tab:green",
                     "obd": "tab:purple", "obs": "black", "l2_refit": "tab:brown"}

Curve = Sequence[Mapping[str, float]]


def png(fig: Figure) -> bytes:
    """The figure as PNG bytes (the stage writes them with its other outputs, atomically)."""
    plt = pyplot()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def by_criterion(rows: Sequence[Mapping[str, str]], method: str,
                 source: str) -> dict[str, list[dict[str, float]]]:
    """A curve CSV's rows grouped by criterion (a file without the column is the study's)."""
    grouped: dict[str, list[dict[str, float]]] = {}
    try:
        for row in rows:
            name = row.get("criterion") or STUDY_CRITERIA[method]
            grouped.setdefault(name, []).append(
                {k: float(row[k]) for k in ("sparsity", "accuracy", "effective_sparsity")}
                | ({"nominal_sparsity": float(row["nominal_sparsity"])}
                   if row.get("nominal_sparsity") else {}))
    except (KeyError, ValueError, TypeError) as exc:
        raise DataError(f"{source}: damaged ({exc!r}); rerun: dvc repro -f") from None
    if not grouped:
        raise DataError(f"{source}: damaged (no rows); rerun: dvc repro -f")
    return grouped


ARCH_TITLES = {"mlp": "MLP", "lenet5": "LeNet-5", "resnet": "ResNet", "lstm": "LSTM"}


# -- replicates: mean curves with 95% bands (the aggregate stage's CSVs) ------------------------

BAND_COLUMNS = ("sparsity", "seeds", "accuracy", "accuracy_std", "accuracy_ci_low",
                "accuracy_ci_high", "effective_sparsity")
Band = list[dict[str, float | None]]
CI_ALPHA, PI_ALPHA = 0.24, 0.10  # the CI of the mean dark, the range of one run light
INSIDE_WORDS = "the 95% range of a single run of ours"


def _band_curves(rows: Sequence[Mapping[str, str]]) -> dict[str, dict[str, Band]]:
    """The aggregate CSVs' rows by method, then criterion, sorted by k ('' cells: None), each
    point with the 95% prediction interval of one run (accuracy_pi_low, accuracy_pi_high;
    None with one seed)."""
    curves: dict[str, dict[str, Band]] = {}
    method = "?"
    try:
        for row in rows:
            method = row["method"]
            point = {c: float(row[c]) if row[c] != "" else None for c in BAND_COLUMNS}
            if None in (point["sparsity"], point["seeds"], point["accuracy"],
                        point["effective_sparsity"]):
                raise ValueError("an empty mean or k")
            pi = row_prediction_interval(row)
            point["accuracy_pi_low"], point["accuracy_pi_high"] = pi or (None, None)
            curves.setdefault(method, {}).setdefault(row["criterion"], []).append(point)
    except (KeyError, ValueError, TypeError) as exc:
        raise DataError(f"{paths.aggregate_curve(method)}: damaged ({exc!r}); rerun: dvc repro -f"
                        ) from None
    if not curves:
        raise DataError("the aggregate curves have no rows; rerun: dvc repro -f")
    return {m: {name: sorted(pts, key=lambda p: p["sparsity"])  # type: ignore[arg-type,return-value]
                for name, pts in by_name.items()} for m, by_name in curves.items()}


def _notebook_points(ax: Axes, method: str, ours: Band) -> None:
    """The notebook's accuracies at its grid: a faint dotted line, and where we have a range, a
    filled diamond inside the 95% prediction interval of a single run of ours (the notebook is
    one run), a hollow one outside it."""
    colour = COLOURS[method]
    band = {round(p["sparsity"], 6): (p["accuracy_pi_low"], p["accuracy_pi_high"])  # type: ignore[arg-type]
            for p in ours}
    sides: dict[bool, list[tuple[float, float]]] = {True: [], False: []}
    for k, value in zip(STUDY_GRID, STUDY_ACCURACY[method], strict=True):
        low, high = band.get(round(k, 6), (None, None))
        if low is not None and high is not None:
            sides[low <= value <= high].append((k, value))
    banded = len(sides[True]) + len(sides[False])
    ax.plot(STUDY_GRID, STUDY_ACCURACY[method], ":", color=colour, alpha=0.6, lw=1,
            marker="" if banded else ".",
            label=f"the study's notebook ({STUDY_CRITERIA[method]}, one run)"
            + ("" if banded else "; one seed: no range to compare"))
    for inside, face, word in ((True, colour, "inside"), (False, "white", "outside")):
        if sides[inside]:
            ax.scatter([k for k, _ in sides[inside]], [v for _, v in sides[inside]], s=30,
                       marker="D", facecolors=face, edgecolors="black", linewidths=1.0, zorder=4,
                       label=f"notebook {word} {INSIDE_WORDS} ({len(sides[inside])} of "
                             f"{banded})")


def _bands(ax: Axes, xs: Sequence[float], pts: Band, colour: str, name: str | None
           ) -> None:
    """The 95% CI of the mean, and (``name``: the study's criterion, labelled) the lighter 95%
    prediction interval of a single run; nothing where a point has none (one seed)."""
    low, high = [p["accuracy_ci_low"] for p in pts], [p["accuracy_ci_high"] for p in pts]
    if None in low or None in high:
        return
    pi_low = [p["accuracy_pi_low"] for p in pts]
    pi_high = [p["accuracy_pi_high"] for p in pts]
    if name is not None and None not in pi_low and None not in pi_high:
        ax.fill_between(xs, pi_low, pi_high, color=colour,  # type: ignore[arg-type]
                        alpha=PI_ALPHA, lw=0,
                        label=f"{name}: 95% range of a single run (prediction interval)")
    ax.fill_between(xs, low, high, color=colour, alpha=CI_ALPHA, lw=0,  # type: ignore[arg-type]
                    label=None if name is None else f"{name}: 95% CI of our mean")


def band_figure(rows: Sequence[Mapping[str, str]], scope: str, epochs: int,
                arch: str = "mlp", *, notebook: bool = False) -> bytes:
    """Replicates: accuracy against the grid's k (left) and the mean effective sparsity
    (right), one row of panels per granularity, the mean over the seeds per criterion with its
    95% CI shaded (two seeds or more) and, lighter, for the study's criteria (magnitude / l2),
    the 95% prediction interval of a single run. ``notebook`` (reporting.notebook.notebook_applies:
    this run is the notebook's set-up): the notebook's accuracies as diamonds, filled inside the
    prediction interval, hollow outside. ``rows``: both aggregate CSVs. PNG."""
    plt = pyplot()
    curves = _band_curves(rows)
    seeds = sorted({int(p["seeds"]) for by_name in curves.values()  # type: ignore[arg-type]
                    for pts in by_name.values() for p in pts})
    fig, axes = plt.subplots(len(curves), 2, figsize=(11, 4.2 * len(curves)), sharey=True,
                             squeeze=False)
    for (method, by_name), (left, right) in zip(curves.items(), axes, strict=True):
        for name, pts in by_name.items():
            acc = [p["accuracy"] for p in pts]
            study = name == STUDY_CRITERIA.get(method)
            for ax, column in ((left, "sparsity"), (right, "effective_sparsity")):
                xs = [p[column] for p in pts]
                (line,) = ax.plot(xs, acc, color=CRITERION_COLOURS.get(name), marker="o", ms=3,
                                  lw=2 if study else 1.2, label=f"{method}: {name}")
                _bands(ax, xs, pts, line.get_color(), name if study else None)  # type: ignore[arg-type]
        if notebook and method in STUDY_ACCURACY:
            _notebook_points(left, method, by_name.get(STUDY_CRITERIA[method], []))
        left.set_xlabel("sparsity k (share pruned per layer)" if scope == "layer"
                        else "sparsity k (share pruned, ranked globally)")
        right.set_xlabel("effective sparsity" + (", mean over seeds" if seeds[-1] > 1 else "")
                         + " (share of weights zero or cut off)")
        left.set_ylabel(f"{method} pruning: test accuracy (%)")
        for ax in (left, right):
            ax.set_xlim(-0.02, 1.0)
            ax.set_ylim(0, 100)
            ax.grid(alpha=0.3)
            ax.legend(loc="lower left", fontsize=6.5)
    # every row has the same number of seeds (the aggregate stage checks); say so if not
    count = str(seeds[0]) if len(seeds) == 1 else f"{seeds[0]}-{seeds[-1]}"
    if seeds[-1] < 2:
        spread = "one seed: no confidence band (list more in train.seeds)"
    else:
        spread = (f"mean of {count} seeds; dark: 95% CI of the mean (t); light (study "
                  f"criteria): 95% range of a single run (prediction interval)")
    if not notebook:
        spread += "; the notebook's points only for its own set-up"
    fig.suptitle(f"MNIST {ARCH_TITLES.get(arch, arch)} pruned without retraining: "
                 f"{scope}-wise ranking, {epochs} training epoch{'s' if epochs != 1 else ''}\n"
                 f"{spread}")
    fig.tight_layout()
    return png(fig)


def tradeoff_figure(rows: Sequence[Mapping[str, object]]) -> bytes:
    """Accuracy against measured speed-up (batch 100) and against compressed size; PNG bytes."""
    plt = pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    keys = sorted({(str(r["method"]), str(r.get("criterion", STUDY_CRITERIA[str(r["method"])])),
                    str(r["scope"])) for r in rows})
    for method, name, scope in keys:
        mine = [r for r in rows if (r["method"], r.get("criterion", name), r["scope"])
                == (method, name, scope)]
        colour = COLOURS.get(method) if name == STUDY_CRITERIA.get(method) else \
            CRITERION_COLOURS.get(name)
        style = dict(color=colour, ls="-" if scope == "layer" else "--",
                     marker="o", ms=4, label=f"{method}: {name}, {scope}")
        acc = [float(r["accuracy"]) for r in mine]  # type: ignore[arg-type]
        left.plot([float(r["speedup_b100"]) for r in mine], acc, **style)  # type: ignore
        right.plot([float(r["bytes_compressed"]) / 1e6 for r in mine], acc, **style)  # type: ignore
    left.set_xscale("log")
    right.set_xscale("log")
    left.set_xlabel("measured speed-up over the dense net (CPU, batch 100)")
    right.set_xlabel("model size, compressed (MB)")
    left.set_ylabel("test accuracy (%)")
    for ax in (left, right):
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    fig.suptitle("What pruning buys: compacted unit-pruned nets, CSR weight-pruned nets")
    fig.tight_layout()
    return png(fig)


ARCH_STYLES = ("-", "--", ":", "-.")


def arch_figure(runs: Sequence[tuple[str, Mapping[str, Mapping[str, Curve]]]]) -> bytes:
    """Several architectures' curves side by side: one row per granularity, accuracy against
    nominal sparsity (left; share of weights that are zero) and effective sparsity (right;
    zero or cut off), colour = criterion, line style = run (``label``, curves). More than two
    runs: the study's criteria only (every criterion is in the comparison's table), colour =
    run. PNG bytes."""
    plt = pyplot()
    methods = list(dict.fromkeys(m for _, curves in runs for m in curves))
    by_run = len(runs) > 2  # then one colour per run too
    if by_run:
        runs = [(label, {m: {n: c for n, c in cs.items() if n == STUDY_CRITERIA.get(m)}
                         for m, cs in curves.items()}) for label, curves in runs]
    fig, axes = plt.subplots(len(methods), 2, figsize=(11, 4.2 * len(methods)), sharey=True,
                             squeeze=False)
    for method, (left, right) in zip(methods, axes, strict=True):
        for i, ((label, curves), dash) in enumerate(zip(runs, ARCH_STYLES * len(runs))):
            for name, rows in curves.get(method, {}).items():
                study = name == STUDY_CRITERIA.get(method)
                colour = f"C{i}" if by_run else CRITERION_COLOURS.get(name)
                style = dict(color=colour, ls=dash, marker="o", ms=2.5,
                             lw=2.2 if study else 1.0, alpha=1.0 if study else 0.55,
                             label=f"{label}: {name}")
                acc = [r["accuracy"] for r in rows]
                left.plot([r.get("nominal_sparsity", r["sparsity"]) for r in rows], acc,
                          **style)  # type: ignore[arg-type]
                right.plot([r["effective_sparsity"] for r in rows], acc, **style)  # type: ignore
        left.set_ylabel(f"{method} pruning: test accuracy (%)")
        left.set_xlabel("nominal sparsity (share of all weights that are zero)")
        right.set_xlabel("effective sparsity (share of weights zero or cut off)")
        for ax in (left, right):
            ax.set_xlim(-0.02, 1.0)
            ax.set_ylim(0, 100)
            ax.grid(alpha=0.3)
            ax.legend(loc="lower left", fontsize=6.5, ncol=2)
    fig.suptitle("Do the architectures prune alike? No retraining; line style = run")
    fig.tight_layout()
    return png(fig)


# -- the retraining studies (stages/retrain/dvc.yaml) -------------------------------------------

TRAINING_STYLES = {"fine-tuned": "-", "one-shot": "--"}
ZOOM_BELOW, ZOOM_ABOVE = 3.0, 0.5  # points around dense: fine-tuning's 0.1-point differences


def _finetune_curves(rows: Sequence[Mapping[str, str]], source: str
                     ) -> dict[str, dict[str, list[tuple[float, float]]]]:
    """A fine-tuning CSV's (k, accuracy) points by criterion, then training, sorted by k."""
    curves: dict[str, dict[str, list[tuple[float, float]]]] = {}
    try:
        for row in rows:
            training = row["training"]
            if training not in TRAINING_STYLES:
                raise ValueError(f"training {training!r} is not one-shot or fine-tuned")
            curves.setdefault(row["criterion"], {}).setdefault(training, []).append(
                (float(row["sparsity"]), float(row["accuracy"])))
    except (KeyError, ValueError, TypeError) as exc:
        raise DataError(f"{source}: damaged ({exc!r}); rerun: dvc repro -f") from None
    if not curves:
        raise DataError(f"{source}: damaged (no rows); rerun: dvc repro -f")
    return {name: {t: sorted(pts) for t, pts in by_training.items()}
            for name, by_training in curves.items()}


def _dense(curves: Mapping[str, Mapping[str, Sequence[tuple[float, float]]]]) -> float | None:
    """The unpruned net's accuracy: a one-shot point at k = 0 (every criterion has the same)."""
    return next((acc for by_training in curves.values()
                 for k, acc in by_training.get("one-shot", ()) if k == 0.0), None)


def finetune_figure(curves: Mapping[str, Sequence[Mapping[str, str]]], epochs: int, lr: float,
                    arch: str = "mlp") -> bytes:
    """Accuracy against k, one-shot (dashed) and fine-tuned (solid), one column per granularity
    (curves: its CSV's rows); the bottom row zooms on [dense - 3, best fine-tuned + 0.5], where
    fine-tuning buys its tenths of a point. Dense accuracy dotted. PNG bytes."""
    plt = pyplot()
    if not curves:
        raise DataError("finetune figure: no granularity's curves to draw")
    parsed = {m: _finetune_curves(rows, str(paths.finetune_curve(m))) for m, rows in curves.items()}
    fig, axes = plt.subplots(2, len(parsed), figsize=(max(6.0 * len(parsed), 8.0), 8.5),
                             squeeze=False)
    for (method, by_criterion), top, zoom in zip(parsed.items(), axes[0], axes[1], strict=True):
        dense = _dense(by_criterion)
        tuned = [acc for bt in by_criterion.values() for _, acc in bt.get("fine-tuned", ())]
        anchor = dense if dense is not None else max(
            tuned or [acc for bt in by_criterion.values() for pts in bt.values() for _, acc in pts])
        for name, by_training in by_criterion.items():
            for training in ("fine-tuned", "one-shot"):  # legend: each criterion's pair together
                pts = by_training.get(training)
                if not pts:
                    continue
                style = dict(color=CRITERION_COLOURS.get(name), ls=TRAINING_STYLES[training],
                             marker="o", ms=3, lw=1.8 if training == "fine-tuned" else 1.1,
                             label=f"{name}, {training}")
                for ax in (top, zoom):
                    ax.plot([k for k, _ in pts], [a for _, a in pts], **style)  # type: ignore
        for ax in (top, zoom):
            if dense is not None:
                ax.axhline(dense, color="black", ls=":", lw=0.9, label=f"dense ({dense:.2f}%)")
            ax.set_xlim(-0.02, 1.0)
            ax.grid(alpha=0.3)
        # The zoom reaches up to the best fine-tuned point: extra training can lift the pruned
        # nets (and the dense one, k = 0 fine-tuned) above the dense net as trained.
        high = max([anchor, *tuned]) + ZOOM_ABOVE
        top.set_ylim(0, 100)
        top.axhspan(anchor - ZOOM_BELOW, high, color="gold", alpha=0.25, lw=0)
        zoom.set_ylim(anchor - ZOOM_BELOW, high)
        top.set_title(f"{method} pruning", fontsize=10)
        top.set_ylabel("test accuracy (%)")
        zoom.set_ylabel("test accuracy (%), zoomed (shaded band above)")
        scope = next((r.get("scope") for r in curves[method]), None)
        zoom.set_xlabel({"layer": "sparsity k (share pruned per layer)",
                         "global": "sparsity k (share pruned, ranked globally)"}.get(
                             str(scope), "sparsity k (share pruned)"))
        top.legend(loc="lower left", fontsize=7)
    fig.suptitle(f"MNIST {ARCH_TITLES.get(arch, arch)} pruned once (dashed), then fine-tuned "
                 f"with the mask held (solid)\n{epochs} epoch{'s' if epochs != 1 else ''} "
                 f"at lr {lr:g}")
    fig.tight_layout()
    return png(fig)


VARIANTS = {"ticket": ("winning ticket (rewound)", "tab:blue", 2.6),
            "reinit": ("random re-init (control)", "tab:orange", 1.3),
            "random_mask": ("random mask (control)", "tab:gray", 1.3)}
TICKET_BAND = 0.1  # points either side of dense: "matches the dense net" (imp.TICKET_TOLERANCE)
INSET_BELOW = 4.0  # points: a control this far below dense squeezes the band; zoom on it
ImpPoint = tuple[int, str, float, float, int | None]  # round, variant, remaining %, acc, step


def _imp_rows(rows: Sequence[Mapping[str, str]], source: str) -> list[ImpPoint]:
    """plots/imp.csv as (round, variant, weights remaining %, accuracy, best step), by round."""
    try:
        parsed = [(int(r["round"]), r["variant"], float(r["weights_remaining"]),
                   float(r["accuracy"]), int(r["best_step"]) if r["best_step"] else None)
                  for r in rows]
    except (KeyError, ValueError, TypeError) as exc:
        raise DataError(f"{source}: damaged ({exc!r}); rerun: dvc repro -f") from None
    if not parsed:
        raise DataError(f"{source}: damaged (no rows); rerun: dvc repro -f")
    if any(v is None or v == "" for _, v, *_ in parsed):
        raise DataError(f"{source}: damaged (a row without a variant); rerun: dvc repro -f")
    return sorted(parsed, key=lambda p: p[0])


def _remaining_ticks(ax: Axes, remaining: Sequence[float], apart: float = 1.45) -> None:
    """Tick the log x axis at the rounds' own percentages, thinned so the labels never touch."""
    ticks: list[float] = []
    for x in sorted(set(remaining), reverse=True):
        if not ticks or ticks[-1] / x >= apart:
            ticks.append(x)
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:.3g}"))
    ax.xaxis.set_minor_locator(NullLocator())
    lo, hi = min(remaining), max(remaining)
    ax.set_xlim(hi * 1.12, lo / 1.12)  # inverted: pruning proceeds left to right


def lottery_figure(rows: Sequence[Mapping[str, str]], arch: str = "mlp") -> bytes:
    """Iterative magnitude pruning: test accuracy (left) and early-stopping step (right) against
    the weights remaining, log axis running down from 100% as in Frankle & Carbin; the rewound
    ticket against its two controls, which start from the dense net (round 0). PNG bytes."""
    plt = pyplot()
    parsed = _imp_rows(rows, str(paths.IMP_CURVE))
    start = next((p for p in parsed if p[0] == 0 and p[1] == "ticket"), None)
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 5.2))
    inset = None  # the controls fall far: the 0.1-point band needs a zoom of its own
    if start is not None and min(p[3] for p in parsed) < start[3] - INSET_BELOW:
        inset = left.inset_axes((0.07, 0.07, 0.46, 0.42), zorder=5)
    accuracy_axes = (left, inset) if inset is not None else (left,)
    steps_drawn = _lottery_curves(parsed, start, accuracy_axes, right)
    if start is not None:
        _dense_band(accuracy_axes, start[3])
    if inset is not None and start is not None:
        _zoom_near_dense(inset, start[3], [p[2] for p in parsed])
    if not steps_drawn:
        right.text(0.5, 0.5, "no early-stopping step recorded", transform=right.transAxes,
                   ha="center", va="center", color="gray")
        right.set_yticks([])
    for ax in (left, right):
        ax.set_xscale("log")
        _remaining_ticks(ax, [p[2] for p in parsed])
        ax.set_xlabel("weights remaining (% of all weights, log scale)")
        ax.grid(alpha=0.3)
    left.set_ylabel("test accuracy (%)")
    right.set_ylabel("early-stopping step (optimizer step of the best test pass)")
    # one legend under both panels: the left panel's lower left is the inset's
    fig.legend(*left.get_legend_handles_labels(), loc="lower center", ncol=5, fontsize=8,
               frameon=False)
    fig.suptitle(f"MNIST {ARCH_TITLES.get(arch, arch)}: lottery tickets by iterative magnitude "
                 f"pruning with rewinding, against random re-initialisation and random masks")
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    return png(fig)


def _lottery_curves(parsed: Sequence[ImpPoint], start: ImpPoint | None,
                    accuracy_axes: Sequence[Axes], steps_ax: Axes) -> bool:
    """One line per variant (the known ones first): accuracy on each of ``accuracy_axes``, the
    early-stopping step on ``steps_ax``; the controls begin at the dense round ``start``.
    Whether any step was drawn."""
    variants = list(VARIANTS) + sorted({p[1] for p in parsed} - set(VARIANTS))
    steps_drawn = False
    for variant in variants:
        mine = [p for p in parsed if p[1] == variant]
        if not mine:
            continue
        if start is not None and variant != "ticket":
            mine = [start, *mine]
        label, colour, lw = VARIANTS.get(variant, (variant, None, 1.3))
        style = dict(color=colour, lw=lw, marker="o", ms=4 if variant == "ticket" else 3,
                     label=label, zorder=3 if variant == "ticket" else 2)
        xs = [p[2] for p in mine]
        for ax in accuracy_axes:
            ax.plot(xs, [p[3] for p in mine], **style)  # type: ignore[arg-type]
        steps = [(x, p[4]) for x, p in zip(xs, mine) if p[4] is not None]
        if steps:
            steps_ax.plot([x for x, _ in steps], [s for _, s in steps], **style)  # type: ignore
            steps_drawn = True
    return steps_drawn


def _dense_band(axes: Sequence[Axes], dense: float) -> None:
    """The dense net's accuracy dotted, with the band a ticket must stay in to match it."""
    for ax in axes:
        ax.axhline(dense, color="black", ls=":", lw=0.9, label=f"dense ({dense:.2f}%)")
        ax.axhspan(dense - TICKET_BAND, dense + TICKET_BAND, color="black", alpha=0.12,
                   lw=0, label=f"dense ± {TICKET_BAND:g} point")


def _zoom_near_dense(inset: Axes, dense: float, remaining: Sequence[float]) -> None:
    """The inset's view: from INSET_BELOW / 2 points under ``dense`` to half a point above."""
    inset.set_ylim(dense - INSET_BELOW / 2, dense + 0.5)
    inset.set_xscale("log")
    _remaining_ticks(inset, remaining, apart=2.4)
    inset.tick_params(labelsize=6.5)
    inset.grid(alpha=0.3)
    inset.set_title("zoom near dense", fontsize=7, pad=2)


def sensitivity_figure(rows: Sequence[Mapping[str, object]], dense: float | None = None,
                       tolerance: float = 1.0) -> bytes:
    """Per-layer sensitivity: one panel per granularity, one line per layer (accuracy against
    the k of that layer alone, the others dense); the dense accuracy (default: the rows' k = 0)
    and ``tolerance`` points below it (prune.TOLERANCE_POINTS) dashed. ``rows``: the
    sensitivity CSV's. PNG."""
    plt = pyplot()
    curves: dict[str, dict[str, list[tuple[float, float]]]] = {}
    for row in rows:
        by_layer = curves.setdefault(str(row["method"]), {})
        by_layer.setdefault(f"{row['name']} ({row['shape']})", []).append(
            (float(row["sparsity"]), float(row["accuracy"])))  # type: ignore[arg-type]
    if not curves:
        raise DataError(f"{paths.SENSITIVITY_CURVE}: no rows; rerun: dvc repro -f sensitivity")
    if dense is None:
        dense = next((a for by_layer in curves.values() for pts in by_layer.values()
                      for k, a in pts if k == 0.0), None)
    fig, axes = plt.subplots(1, len(curves), figsize=(5.5 * len(curves), 4.2), sharey=True,
                             squeeze=False)
    for (method, by_layer), ax in zip(curves.items(), axes[0], strict=True):
        for name, pts in by_layer.items():
            pts = sorted(pts)
            ax.plot([k for k, _ in pts], [a for _, a in pts], marker="o", ms=3, label=name)
        if dense is not None:
            ax.axhline(dense, color="black", ls="--", lw=0.9, label=f"dense ({dense:.2f}%)")
            ax.axhline(dense - tolerance, color="gray", ls="--", lw=0.9,
                       label=f"dense − {tolerance:g} point")
        ax.set_title(f"{method} pruning, one layer at a time")
        ax.set_xlabel("sparsity k of that layer (the others dense)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower left")
    axes[0][0].set_ylabel("test accuracy (%)")
    fig.suptitle("Per-layer sensitivity: which layer breaks first")
    fig.tight_layout()
    return png(fig)
