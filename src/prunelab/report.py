"""The README's results table from the metrics files: `python -m prunelab.report`."""

from __future__ import annotations

from pathlib import Path

import click

from prunelab import paths
from prunelab.cli import stage_errors
from prunelab.config import METHODS
from prunelab.errors import DataError
from prunelab.files import read_json, read_rows, write_text
from prunelab.plot import STUDY_ACCURACY, STUDY_CRITERION, STUDY_GRID, by_criterion
from prunelab.savings import REPEATS, THREADS


def results_table() -> str:
    """Accuracy per sparsity for every criterion, the study's notebook beside its own two,
    plus the study criteria's effective sparsity; then the headline sentences."""
    rows = {m: read_rows(paths.prune_curve(m)) for m in METHODS}
    curves = {m: by_criterion(rows[m], m, str(paths.prune_curve(m))) for m in METHODS}
    grid = [row["sparsity"] for row in curves["weight"][STUDY_CRITERION["weight"]]]
    lines = ["| k | " + " | ".join(f"{k:g}" for k in grid) + " |",
             "|---|" + "---|" * len(grid)]

    def row(label: str, values: dict[float, float], fmt: str) -> str:
        return f"| {label} | " + " | ".join(
            format(values[k], fmt) if k in values else "–" for k in grid) + " |"

    for m in METHODS:
        study_name = STUDY_CRITERION[m]
        lines.append(row(f"{m}: study ({study_name})",
                         dict(zip(STUDY_GRID, STUDY_ACCURACY[m], strict=True)), ".2f"))
        for name, points in curves[m].items():
            lines.append(row(f"{m}: **{name}**" if name == study_name else f"{m}: {name}",
                             {p["sparsity"]: p["accuracy"] for p in points}, ".2f"))
        if study_name in curves[m]:
            effective = {p["sparsity"]: p["effective_sparsity"] for p in curves[m][study_name]}
            lines.append(row(f"{m}: {study_name}, effective sparsity", effective, ".3f"))
    train = read_json(paths.TRAIN_METRICS)
    summary = [f"Dense test accuracy {train['test_accuracy']:.2f}% (study: 97.15%)."]
    for m in METHODS:
        study_name = STUDY_CRITERION[m]
        scope = rows[m][0].get("scope", "?")
        best = read_json(paths.prune_metrics(m)).get(study_name, {}).get("max_sparsity_within_1pt")
        summary.append(f"{m.capitalize()} pruning ({study_name}) stays within 1 point of dense "
                       f"up to k = {best:g} ({scope} scope)." if best is not None else
                       f"{m.capitalize()} pruning ({study_name}) loses more than 1 point at "
                       f"every k ({scope} scope).")
    return "\n".join(lines) + "\n\n" + " ".join(summary)


def _curves() -> dict[str, dict[str, list[dict[str, float]]]]:
    """Both pruning curves, grouped by criterion."""
    return {m: by_criterion(read_rows(paths.prune_curve(m)), m, str(paths.prune_curve(m)))
            for m in METHODS}


def _at(points: list[dict[str, float]], k: float) -> float | None:
    return next((p["accuracy"] for p in points if p["sparsity"] == k), None)


def _within(points: list[dict[str, float]]) -> float | None:
    """The highest k whose accuracy is within 1 point of the k = 0 accuracy."""
    dense = _at(points, 0.0)
    ok = [p["sparsity"] for p in points if dense is not None and p["accuracy"] >= dense - 1]
    return max(ok) if ok else None


def findings() -> str:
    """The study's three questions about criteria, answered from the curve files: sentences
    computed from the numbers (nothing typed by hand)."""
    curves = _curves()
    lines = []
    for m in METHODS:
        study = STUDY_CRITERION[m]
        base = curves[m].get(study)
        if base is None:
            continue
        grid = [p["sparsity"] for p in base]
        first = next((k for k in grid if k > 0), None)
        for name, points in curves[m].items():
            if name == study:
                continue
            mine, theirs = _within(points), _within(base)
            where = (f"within 1 point of dense up to k = {mine:g}" if mine
                     else "more than 1 point below dense at every k > 0")
            line = (f"- **{m} / {name}**: {where} (the study's {study}: "
                    f"{'k = ' + format(theirs, 'g') if theirs is not None else 'never'})")
            extra = [f"{_at(points, k):.2f}% at k = {k:g} ({study}: {_at(base, k):.2f}%)"
                     for k in (first, 0.9, 0.95) if k in grid and _at(points, k) is not None]
            lines.append(line + ("; " + ", ".join(dict.fromkeys(extra)) if extra else "") + ".")
    return "\n".join(lines)


def savings_table() -> str:
    """Per pruned model (layer scope): accuracy, measured speed-up, size and FLOPs."""
    columns = ("sparsity", "accuracy", "speedup_b1", "speedup_b100", "bytes_compressed",
               "flops_per_sample")
    lines = [f"CPU, {THREADS} thread, median of {REPEATS} timed passes after "
             "warm-up; speed-up over the dense net timed in the same loop. Layer-wise scope; "
             f"both scopes are in `{paths.SPEED_CURVE}`.", "",
             "| method | criterion | k | accuracy % | speed-up, batch 1 | speed-up, batch 100 | "
             "size (zlib) | MFLOP/sample | stored as |",
             "|---|---|---|---|---|---|---|---|---|"]
    rows = [r for r in read_rows(paths.SPEED_CURVE) if r.get("scope") == "layer"]
    for r in rows:
        try:
            v = {c: float(r[c]) for c in columns}
        except (KeyError, ValueError, TypeError):
            raise DataError(f"{paths.SPEED_CURVE}: damaged; rerun: dvc repro -f speed") from None
        lines.append(f"| {r['method']} | {r.get('criterion', '')} | {v['sparsity']:g} | "
                     f"{v['accuracy']:.2f} | "
                     f"{v['speedup_b1']:.1f}x | {v['speedup_b100']:.1f}x | "
                     f"{v['bytes_compressed'] / 1e6:.2f} MB | {v['flops_per_sample'] / 1e6:.2f} | "
                     f"{r['formats']} |")
    return "\n".join(lines)


def replace_block(text: str, name: str, block: str) -> str:
    """Replace what stands between <!-- name:start --> and <!-- name:end --> in ``text``."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    head, _, rest = text.partition(start)
    _, _, tail = rest.partition(end)
    if not rest or end not in rest:
        raise click.ClickException(f"README has no {start} ... {end} block")
    return f"{head}{start}\n{block.strip()}\n{end}{tail}"


@click.command(help=__doc__)
@click.option("--readme", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Write the table into this README's results block instead of printing it.")
def main(readme: Path | None) -> None:
    with stage_errors():  # a missing or damaged metrics file is one `Error:` line
        tables = {"results": results_table(), "criteria": findings(),
                  "savings": savings_table()}
        if readme is None:
            click.echo("\n\n".join(tables.values()))
            return
        text = readme.read_text(encoding="utf-8")
        for name, table in tables.items():
            text = replace_block(text, name, table)
        write_text(readme, text)


if __name__ == "__main__":
    main()
