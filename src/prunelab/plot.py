"""The study's figure: accuracy against sparsity, nominal and effective, both methods."""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")  # no display on servers and CI
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from prunelab.errors import DataError  # noqa: E402

# The notebook's own numbers (layer-wise, 3 epochs; ../shared/REFERENCES.md), drawn faintly
# for comparison when the run uses the study's scope.
STUDY_GRID = (0.0, 0.25, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.97, 0.99)
STUDY_ACCURACY = {
    "weight": (97.15, 97.12, 97.00, 96.90, 96.77, 94.84, 82.43, 72.03, 64.28, 31.88),
    "unit": (97.15, 97.14, 96.98, 96.76, 94.63, 72.66, 36.67, 19.29, 13.07, 10.12),
}
COLOURS = {"weight": "tab:blue", "unit": "tab:orange"}
# One colour per criterion; the study's two keep the colours the figure always had.
CRITERION_COLOURS = {"magnitude": "tab:blue", "l2": "tab:orange", "random": "tab:gray",
                     "largest": "tab:red", "wanda": "tab:green", "activation": "tab:green",
                     "obd": "tab:purple", "obs": "black", "l2_refit": "tab:brown"}
STUDY_CRITERION = {"weight": "magnitude", "unit": "l2"}

Curve = Sequence[Mapping[str, float]]


def _png(fig: Figure) -> bytes:
    """The figure as PNG bytes (the stage writes them with its other outputs, atomically)."""
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
            name = row.get("criterion") or STUDY_CRITERION[method]
            grouped.setdefault(name, []).append(
                {k: float(row[k]) for k in ("sparsity", "accuracy", "effective_sparsity")}
                | ({"nominal_sparsity": float(row["nominal_sparsity"])}
                   if row.get("nominal_sparsity") else {}))
    except (KeyError, ValueError, TypeError) as exc:
        raise DataError(f"{source}: damaged ({exc!r}); rerun: dvc repro -f") from None
    if not grouped:
        raise DataError(f"{source}: damaged (no rows); rerun: dvc repro -f")
    return grouped


ARCH_TITLES = {"mlp": "MLP", "lenet5": "LeNet-5"}


def accuracy_figure(curves: Mapping[str, Mapping[str, Curve]], scope: str, epochs: int,
                    arch: str = "mlp") -> bytes:
    """Accuracy against the grid's k (left) and effective sparsity (right), one row of panels
    per granularity, one line per criterion; the notebook's curves (its MLP) dotted. PNG."""
    fig, axes = plt.subplots(len(curves), 2, figsize=(11, 4.0 * len(curves)), sharey=True,
                             squeeze=False)
    for (method, by_criterion), (left, right) in zip(curves.items(), axes, strict=True):
        for name, rows in by_criterion.items():
            style = dict(color=CRITERION_COLOURS.get(name), marker="o", ms=3,
                         lw=2 if name == STUDY_CRITERION.get(method) else 1.2,
                         label=f"{method}: {name}")
            acc = [r["accuracy"] for r in rows]
            left.plot([r["sparsity"] for r in rows], acc, **style)  # type: ignore[arg-type]
            right.plot([r["effective_sparsity"] for r in rows], acc, **style)  # type: ignore
        if scope == "layer" and method in STUDY_ACCURACY and arch == "mlp":
            left.plot(STUDY_GRID, STUDY_ACCURACY[method], ":", color=COLOURS[method], alpha=0.7,
                      label=f"{method}: the study's notebook")
        left.set_xlabel("sparsity k (share pruned per layer)" if scope == "layer"
                        else "sparsity k (share pruned, ranked globally)")
        right.set_xlabel("effective sparsity (share of weights zero or cut off)")
        left.set_ylabel(f"{method} pruning: test accuracy (%)")
        for ax in (left, right):
            ax.set_xlim(-0.02, 1.0)
            ax.set_ylim(0, 100)
            ax.grid(alpha=0.3)
            ax.legend(loc="lower left", fontsize=7)
    fig.suptitle(f"MNIST {ARCH_TITLES.get(arch, arch)} pruned without retraining: "
                 f"{scope}-wise ranking, "
                 f"{epochs} training epoch{'s' if epochs != 1 else ''}")
    fig.tight_layout()
    return _png(fig)


def tradeoff_figure(rows: Sequence[Mapping[str, object]]) -> bytes:
    """Accuracy against measured speed-up (batch 100) and against compressed size; PNG bytes."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    keys = sorted({(str(r["method"]), str(r.get("criterion", STUDY_CRITERION[str(r["method"])])),
                    str(r["scope"])) for r in rows})
    for method, name, scope in keys:
        mine = [r for r in rows if (r["method"], r.get("criterion", name), r["scope"])
                == (method, name, scope)]
        colour = COLOURS.get(method) if name == STUDY_CRITERION.get(method) else \
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
    return _png(fig)


ARCH_STYLES = ("-", "--", ":", "-.")


def arch_figure(runs: Sequence[tuple[str, Mapping[str, Mapping[str, Curve]]]]) -> bytes:
    """Several architectures' curves side by side: one row per granularity, accuracy against
    nominal sparsity (left; share of weights that are zero) and effective sparsity (right;
    zero or cut off), colour = criterion, line style = run (``label``, curves). PNG bytes."""
    methods = list(dict.fromkeys(m for _, curves in runs for m in curves))
    fig, axes = plt.subplots(len(methods), 2, figsize=(11, 4.2 * len(methods)), sharey=True,
                             squeeze=False)
    for method, (left, right) in zip(methods, axes, strict=True):
        for (label, curves), dash in zip(runs, ARCH_STYLES * len(runs)):
            for name, rows in curves.get(method, {}).items():
                study = name == STUDY_CRITERION.get(method)
                style = dict(color=CRITERION_COLOURS.get(name), ls=dash, marker="o", ms=2.5,
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
    return _png(fig)
