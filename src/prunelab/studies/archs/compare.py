"""Architectures side by side: the table, the figure and the section's sentences, from the rows
the archs stage measured (nothing here trains or times)."""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from typing import Any

TITLES = {"mlp": "MLP", "cnn": "LeNet-5", "resnet": "ResNet", "lstm": "LSTM"}
DATA_TITLES = {"mnist": "MNIST", "mnist1d": "MNIST-1D"}


def _f(row: Mapping[str, Any], key: str) -> float:
    return float(row[key])


def table_md(table: Sequence[Mapping[str, Any]]) -> list[str]:
    lines = ["| dataset | arch | epochs | train s | dense % | weight k (magnitude / random) | "
             "effective sparsity there | unit k (l2 / random) | compacted at unit k: widths | "
             "accuracy % | speed-up b100 |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in table:
        lines.append(
            f"| {DATA_TITLES[r['dataset']]} | {TITLES[r['arch']]} | {r['epochs']} | "
            f"{_f(r, 'train_seconds'):.0f} | {_f(r, 'dense_accuracy'):.2f} | "
            f"{_f(r, 'weight.magnitude.layer.k_within_1pt'):g} / "
            f"{_f(r, 'weight.random.layer.k_within_1pt'):g} | "
            f"{_f(r, 'weight.magnitude.layer.effective_at_k'):.3f} | "
            f"{_f(r, 'unit.l2.layer.k_within_1pt'):g} / {_f(r, 'unit.random.layer.k_within_1pt'):g}"
            f" | {r['compact_widths']} (k {_f(r, 'compact_sparsity'):g}) | "
            f"{_f(r, 'compact_accuracy'):.2f} | {_f(r, 'speedup_b100'):.2f}x |")
    return lines


def sentences(table: Sequence[Mapping[str, Any]]) -> list[str]:
    """What the numbers say, computed from them."""
    out = []
    for ds in dict.fromkeys(r["dataset"] for r in table):
        rows = [r for r in table if r["dataset"] == ds]
        best = max(rows, key=lambda r: _f(r, "dense_accuracy"))
        worst = min(rows, key=lambda r: _f(r, "dense_accuracy"))
        out.append(f"- {DATA_TITLES[ds]}: dense accuracy from {_f(worst, 'dense_accuracy'):.2f}% "
                   f"({TITLES[worst['arch']]}) to {_f(best, 'dense_accuracy'):.2f}% "
                   f"({TITLES[best['arch']]}), a spread of "
                   f"{_f(best, 'dense_accuracy') - _f(worst, 'dense_accuracy'):.1f} points.")
        mlp = next((r for r in rows if r["arch"] == "mlp"), None)
        for r in rows:
            if mlp is None or r is mlp:
                continue
            kw, ku = (_f(r, "weight.magnitude.layer.k_within_1pt"),
                      _f(r, "unit.l2.layer.k_within_1pt"))
            mw, mu = (_f(mlp, "weight.magnitude.layer.k_within_1pt"),
                      _f(mlp, "unit.l2.layer.k_within_1pt"))
            verb = lambda a, b: "the same as" if a == b else ("more than" if a > b  # noqa: E731
                                                              else "less than")
            out.append(f"  - {TITLES[r['arch']]}: weight pruning holds to k = {kw:g} "
                       f"({verb(kw, mw)} the MLP's {mw:g}), unit pruning to k = {ku:g} "
                       f"({verb(ku, mu)} the MLP's {mu:g}).")
        beaten = [r for r in rows if _f(r, "weight.magnitude.layer.k_within_1pt")
                  < _f(r, "weight.random.layer.k_within_1pt")]
        out.append(f"  - Random weight pruning (the control) holds further than magnitude for "
                   f"{len(beaten)} of {len(rows)} architectures"
                   + (": " + ", ".join(TITLES[r["arch"]] for r in beaten) if beaten else "")
                   + ".")
    mnist = [r for r in table if r["dataset"] == "mnist"]
    mlp = next((r for r in mnist if r["arch"] == "mlp"), None)
    if mlp is not None:
        base = _f(mlp, "train_seconds")
        ratios = ", ".join(f"{TITLES[r['arch']]} {_f(r, 'train_seconds') / base:.1f}x"
                           for r in mnist if r is not mlp)
        out.append(f"- Training time on MNIST against the MLP's "
                   f"({_f(mlp, 'train_seconds'):.0f} s): {ratios}.")
    one_d = [r for r in table if r["dataset"] == "mnist1d"]
    if one_d:
        out.append(f"- MNIST-1D, all {len(one_d)} architectures trained in "
                   f"{sum(_f(r, 'train_seconds') for r in one_d):.0f} s.")
    return out


def section(table: Sequence[Mapping[str, Any]], seed: int, figure: str) -> str:
    lines = ["## Architectures: MLP, LeNet-5, ResNet, LSTM on MNIST and MNIST-1D", "",
             "Each architecture is a graph of prunable parts (src/prunelab/models/graph.py): "
             "unit pruning removes a whole coupling group's unit (a ResNet stage's channel from "
             "every block and the projection; an LSTM unit's four gate rows and its recurrent "
             "and output columns), weight pruning ranks each part's |w| (layer scope). "
             f"One seed ({seed}): a single run, no interval. `k` is the highest grid value "
             "within 1 point of the architecture's own dense accuracy; the effective sparsity "
             "there (the share of weights zero or no longer reaching the output) is where its "
             "cliff starts. Compacted nets are timed at batch 100 with the stage's threads "
             "(median of 15). "
             "Generated by `dvc repro stages/retrain/dvc.yaml:archs` (docs/architectures.md).",
             "", f"![accuracy against effective sparsity per architecture]({figure})", "",
             *table_md(table), "", *sentences(table)]
    return "\n".join(lines) + "\n"


def figure(curve: Sequence[Mapping[str, Any]]) -> bytes:
    """The figure as PNG bytes (see :func:`draw`)."""
    import matplotlib.pyplot as plt

    fig = draw(curve)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, metadata={"Software": None})
    plt.close(fig)
    return buf.getvalue()


def draw(curve: Sequence[Mapping[str, Any]]) -> Any:
    """Accuracy against effective sparsity: one row per dataset, weight (magnitude) and unit
    (l2) pruning in layer scope, one colour per architecture, the random controls dotted."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = list(dict.fromkeys(r["dataset"] for r in curve))
    fig, axes = plt.subplots(len(datasets), 2, figsize=(10, 3.6 * len(datasets)), squeeze=False)
    colours = dict(zip(TITLES, ("tab:blue", "tab:orange", "tab:green", "tab:red")))
    for row, ds in enumerate(datasets):
        for col, (gr, crit) in enumerate((("weight", "magnitude"), ("unit", "l2"))):
            ax = axes[row][col]
            for arch in dict.fromkeys(r["arch"] for r in curve if r["dataset"] == ds):
                for c, style in ((crit, "-"), ("random", ":")):
                    pts = [r for r in curve if (r["dataset"], r["arch"], r["granularity"],
                                                r["criterion"], r["scope"]) ==
                           (ds, arch, gr, c, "layer")]
                    ax.plot([float(p["effective_sparsity"]) for p in pts],
                            [float(p["accuracy"]) for p in pts], style, marker=".",
                            color=colours.get(arch), label=f"{TITLES[arch]} {c}")
            ax.set_title(f"{DATA_TITLES[ds]}: {gr} pruning ({crit}; dotted: random)")
            ax.set_xlabel("effective sparsity")
            ax.set_ylabel("test accuracy (%)")
            ax.set_xlim(0, 1)
            ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7, ncol=2)
    fig.tight_layout()
    return fig
