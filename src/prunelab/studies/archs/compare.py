"""Architectures side by side: the table, the figure and the section's sentences, from the rows
the archs stage measured (nothing here trains or times)."""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from typing import Any

from prunelab.reporting.intervals import stats
from prunelab.reporting.verdicts import paired

TITLES = {"mlp": "MLP", "cnn": "LeNet-5", "resnet": "ResNet", "lstm": "LSTM"}
DATA_TITLES = {"mnist": "MNIST", "mnist1d": "MNIST-1D"}


K_FIELDS = ("weight.magnitude.layer.k_within_1pt", "weight.random.layer.k_within_1pt",
            "weight.magnitude.layer.effective_at_k", "unit.l2.layer.k_within_1pt",
            "unit.random.layer.k_within_1pt")
FIELDS = ("dense_accuracy", "train_seconds", *K_FIELDS, "compact_accuracy", "speedup_b100")


def _f(row: Mapping[str, Any], key: str) -> float:
    return float(row[key])


def aggregate(table: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row per (dataset, arch): each field's mean over the seeds and its 95% interval
    (the widths at the compaction's k are the same for every seed: layer scope)."""
    out = []
    for ds, arch in dict.fromkeys((r["dataset"], r["arch"]) for r in table):
        rows = [r for r in table if (r["dataset"], r["arch"]) == (ds, arch)]
        agg: dict[str, Any] = {"dataset": ds, "arch": arch, "seeds": len(rows),
                               "epochs": rows[0]["epochs"],
                               "shift": int(rows[0].get("shift") or 0), "compact_widths":
                               rows[0]["compact_widths"],
                               "compact_sparsity": rows[0]["compact_sparsity"]}
        for f in FIELDS:
            st = stats([_f(r, f) for r in rows])
            agg[f], agg[f"{f}.ci_low"], agg[f"{f}.ci_high"] = st.mean, st.ci_low, st.ci_high
        out.append(agg)
    return out


def _plus_minus(mean: float, lo: float | None, hi: float | None, spec: str) -> str:
    """mean ± half the 95% interval (the mean alone for one seed)."""
    text = format(mean, spec)
    return text if lo is None or hi is None else f"{text} ± {format((hi - lo) / 2, spec)}"


def _pm(row: Mapping[str, Any], key: str, spec: str) -> str:
    """An aggregated row's field as mean ± half its 95% interval."""
    return _plus_minus(_f(row, key), row.get(f"{key}.ci_low"), row.get(f"{key}.ci_high"), spec)


def shifts(row: Mapping[str, Any]) -> str:
    """" (shifts ±n px)" when the row's training images were shifted, else ""."""
    return f" (shifts ±{row['shift']} px)" if row.get("shift") else ""


def table_md(agg: Sequence[Mapping[str, Any]]) -> list[str]:
    lines = ["| dataset | arch | seeds | epochs | train s | dense % | weight k (magnitude / "
             "random) | effective sparsity there | unit k (l2 / random) | compacted at unit k: "
             "widths | accuracy % | speed-up b100 |", "|---" * 12 + "|"]
    for r in agg:
        lines.append(
            f"| {DATA_TITLES[r['dataset']]} | {TITLES[r['arch']]} | {r['seeds']} | "
            f"{r['epochs']}{shifts(r)} | "
            f"{_f(r, 'train_seconds'):.0f} | {_pm(r, 'dense_accuracy', '.2f')} | "
            f"{_pm(r, 'weight.magnitude.layer.k_within_1pt', '.2f')} / "
            f"{_pm(r, 'weight.random.layer.k_within_1pt', '.2f')} | "
            f"{_pm(r, 'weight.magnitude.layer.effective_at_k', '.3f')} | "
            f"{_pm(r, 'unit.l2.layer.k_within_1pt', '.2f')} / "
            f"{_pm(r, 'unit.random.layer.k_within_1pt', '.2f')} | {r['compact_widths']} "
            f"(k {_f(r, 'compact_sparsity'):g}) | {_pm(r, 'compact_accuracy', '.2f')} | "
            f"{_f(r, 'speedup_b100'):.2f}x |")
    return lines


def _k(table: Sequence[Mapping[str, Any]], ds: str, arch: str, key: str) -> dict[int, float]:
    """``key`` of (ds, arch) by seed."""
    return {int(r["seed"]): _f(r, key) for r in table if (r["dataset"], r["arch"]) == (ds, arch)}


def _paired(a: Mapping[int, float], b: Mapping[int, float]) -> dict[str, Any]:
    """``a`` minus ``b``, seed by seed (the seeds both have), and what its interval says."""
    return paired([v - b[s] for s, v in a.items() if s in b], "higher, beyond the 95% interval",
                  "lower, beyond the 95% interval", "no difference beyond the 95% interval")


def criteria_of(table: Sequence[Mapping[str, Any]]) -> dict[str, list[str]]:
    """The criteria the rows were pruned by, per granularity, in their order."""
    out: dict[str, list[str]] = {}
    for key in table[0] if table else ():
        parts = key.split(".")
        if len(parts) == 4 and parts[3] == "k_within_1pt" and parts[1] not in out.get(
                parts[0], []):
            out.setdefault(parts[0], []).append(parts[1])
    return out


def criteria_md(table: Sequence[Mapping[str, Any]]) -> list[str]:
    """Every criterion's highest k within 1 point of dense, layer / global scope, mean ± half
    the 95% interval over the seeds."""
    crit = criteria_of(table)
    cols = [(gr, c) for gr, cs in crit.items() for c in cs]
    lines = ["| dataset | arch | " + " | ".join(f"{gr}: {c}" for gr, c in cols) + " |",
             "|---" * (2 + len(cols)) + "|"]
    for r in aggregate(table):
        ds, arch = r["dataset"], r["arch"]
        cells = []
        for gr, c in cols:
            pair = []
            for scope in ("layer", "global"):
                st = stats(list(_k(table, ds, arch, f"{gr}.{c}.{scope}.k_within_1pt").values()))
                pair.append(_plus_minus(st.mean, st.ci_low, st.ci_high, ".2f"))
            cells.append(" / ".join(pair))
        lines.append(f"| {DATA_TITLES[ds]} | {TITLES[arch]} | " + " | ".join(cells) + " |")
    return lines


def criteria_sentences(table: Sequence[Mapping[str, Any]]) -> list[str]:
    """Per dataset and architecture, the criterion holding furthest (layer scope) of each
    granularity, against its random control seed by seed."""
    crit, out = criteria_of(table), []
    for r in aggregate(table):
        ds, arch, said = r["dataset"], r["arch"], []
        for gr, cs in crit.items():
            methods = [c for c in cs if c != "random"]
            if not methods:
                continue
            ks = {c: _k(table, ds, arch, f"{gr}.{c}.layer.k_within_1pt") for c in methods}
            means = {c: stats(list(ks[c].values())).mean for c in methods}
            best = max(methods, key=means.__getitem__)
            text = f"{gr}: {best} (k = {means[best]:.2f})"
            if "random" in cs:
                v = _paired(ks[best], _k(table, ds, arch, f"{gr}.random.layer.k_within_1pt"))
                text += f", minus random's {v['difference']:+.2f} ({v['verdict']})"
            said.append(text)
        if said:
            out.append(f"- {DATA_TITLES[ds]}, {TITLES[arch]}: the furthest-holding criterion, "
                       + "; ".join(said) + ".")
    return out


def sentences(table: Sequence[Mapping[str, Any]]) -> list[str]:
    """What the numbers say, computed from them (intervals: 95%, across the seeds)."""
    agg, out = aggregate(table), []
    for ds in dict.fromkeys(r["dataset"] for r in agg):
        rows = [r for r in agg if r["dataset"] == ds]
        best = max(rows, key=lambda r: _f(r, "dense_accuracy"))
        worst = min(rows, key=lambda r: _f(r, "dense_accuracy"))
        out.append(f"- {DATA_TITLES[ds]}: dense accuracy from {_f(worst, 'dense_accuracy'):.2f}% "
                   f"({TITLES[worst['arch']]}) to {_f(best, 'dense_accuracy'):.2f}% "
                   f"({TITLES[best['arch']]}), a spread of "
                   f"{_f(best, 'dense_accuracy') - _f(worst, 'dense_accuracy'):.1f} points.")
        if any(r["arch"] == "mlp" for r in rows):
            for r in rows:
                if r["arch"] == "mlp":
                    continue
                w, u = (_paired(_k(table, ds, r["arch"], key), _k(table, ds, "mlp", key))
                        for key in ("weight.magnitude.layer.k_within_1pt",
                                    "unit.l2.layer.k_within_1pt"))
                out.append(f"  - {TITLES[r['arch']]}: weight pruning holds to k = "
                           f"{_f(r, 'weight.magnitude.layer.k_within_1pt'):.2f} (minus the "
                           f"MLP's: {w['difference']:+.2f}, {w['verdict']}); unit pruning to k = "
                           f"{_f(r, 'unit.l2.layer.k_within_1pt'):.2f} (minus the MLP's: "
                           f"{u['difference']:+.2f}, {u['verdict']}).")
        beaten = [r for r in rows if _f(r, "weight.magnitude.layer.k_within_1pt")
                  < _f(r, "weight.random.layer.k_within_1pt")]
        out.append(f"  - Random weight pruning (the control) holds further than magnitude, on "
                   f"average, for {len(beaten)} of {len(rows)} architectures"
                   + (": " + ", ".join(TITLES[r["arch"]] for r in beaten) if beaten else "")
                   + ".")
    mnist = [r for r in agg if r["dataset"] == "mnist"]
    mlp = next((r for r in mnist if r["arch"] == "mlp"), None)
    if mlp is not None:
        base = _f(mlp, "train_seconds")
        ratios = ", ".join(f"{TITLES[r['arch']]} {_f(r, 'train_seconds') / base:.1f}x"
                           for r in mnist if r is not mlp)
        out.append(f"- Training time on MNIST against the MLP's ({base:.0f} s, mean over "
                   f"seeds): {ratios}.")
    one_d = [r for r in agg if r["dataset"] == "mnist1d"]
    if one_d:
        out.append(f"- MNIST-1D, all {len(one_d)} architectures trained in "
                   f"{sum(_f(r, 'train_seconds') for r in one_d):.0f} s per seed (mean).")
    return out


def section(table: Sequence[Mapping[str, Any]], figure: str) -> str:
    seeds = sorted({int(r["seed"]) for r in table})
    lines = ["## Architectures: MLP, LeNet-5, ResNet, LSTM on MNIST and MNIST-1D", "",
             "Each architecture is a graph of prunable parts (src/prunelab/models/graph.py): "
             "unit pruning removes a whole coupling group's unit (a ResNet stage's channel from "
             "every block and the projection; an LSTM unit's four gate rows and its recurrent "
             "and output columns), weight pruning ranks each part's |w| (layer scope). "
             f"Seeds {', '.join(map(str, seeds))} (each its own init and data order): means "
             "± half their 95% interval. `k` is the highest grid value within 1 point of the "
             "net's own dense accuracy; the effective sparsity there (the share of weights "
             "zero or no longer reaching the output) is where its cliff starts. Compacted nets "
             "are timed at batch 100 with the stage's threads (median of 15; mean over seeds). "
             "Generated by `dvc repro stages/retrain/dvc.yaml:archs` (docs/architectures.md).",
             "", f"![accuracy against effective sparsity per architecture]({figure})", "",
             *table_md(aggregate(table)), "", *sentences(table), "",
             "### Every criterion on every architecture", "",
             "The highest k within 1 point of dense per criterion (layer / global scope; "
             "the graph criteria of src/prunelab/pruning/graph_criteria.py, with calibration "
             "inputs from the training split; `random` is every method's control). `obs` and "
             "`l2_refit` re-fit a chain layer by layer and are refused on graph nets (one "
             "line, before anything runs); the main study runs them on the MLP and LeNet-5.",
             "", *criteria_md(table), "", *criteria_sentences(table)]
    return "\n".join(lines) + "\n"


def mean_curve(curve: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The curve averaged over seeds: per (dataset, arch, arm, k), mean accuracy and mean
    effective sparsity."""
    keys = ("dataset", "arch", "granularity", "criterion", "scope", "sparsity")
    out = []
    for key in dict.fromkeys(tuple(r[k] for k in keys) for r in curve):
        rows = [r for r in curve if tuple(r[k] for k in keys) == key]
        out.append({**dict(zip(keys, key, strict=True)),
                    "accuracy": stats([_f(r, "accuracy") for r in rows]).mean,
                    "effective_sparsity": stats([_f(r, "effective_sparsity")
                                                 for r in rows]).mean})
    return out


def figure(curve: Sequence[Mapping[str, Any]]) -> bytes:
    """The figure as PNG bytes (see :func:`draw`)."""
    import matplotlib.pyplot as plt

    fig = draw(curve)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, metadata={"Software": None})
    plt.close(fig)
    return buf.getvalue()


def draw(curve: Sequence[Mapping[str, Any]]) -> Any:
    """Accuracy against effective sparsity (means over the seeds): one row per dataset, weight
    (magnitude) and unit (l2) pruning in layer scope, one colour per architecture, the random
    controls dotted."""
    curve = mean_curve(curve)
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
