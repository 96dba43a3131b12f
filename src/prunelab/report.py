"""The README's results table from the metrics files: `python -m prunelab.report`."""

from __future__ import annotations

from pathlib import Path

import click

from prunelab import paths
from prunelab.cli import stage_errors
from prunelab.config import METHODS
from prunelab.errors import DataError
from prunelab.files import read_csv, read_json, read_rows, write_text
from prunelab.plot import STUDY_ACCURACY, STUDY_GRID
from prunelab.savings import REPEATS, THREADS


def results_table() -> str:
    """Accuracy per sparsity, ours beside the study's notebook, plus effective sparsity."""
    curves = {m: read_csv(paths.prune_curve(m), ("sparsity", "accuracy", "effective_sparsity"))
              for m in METHODS}
    grid = [row["sparsity"] for row in curves["weight"]]
    lines = ["| k | " + " | ".join(f"{k:g}" for k in grid) + " |",
             "|---|" + "---|" * len(grid)]
    for m in METHODS:
        acc = {row["sparsity"]: row for row in curves[m]}
        lines.append(f"| {m}: ours | " + " | ".join(f"{acc[k]['accuracy']:.2f}" for k in grid)
                     + " |")
        study = dict(zip(STUDY_GRID, STUDY_ACCURACY[m], strict=True))
        lines.append(f"| {m}: study | " + " | ".join(
            f"{study[k]:.2f}" if k in study else "–" for k in grid) + " |")
        lines.append(f"| {m}: effective sparsity | " + " | ".join(
            f"{acc[k]['effective_sparsity']:.3f}" for k in grid) + " |")
    train = read_json(paths.TRAIN_METRICS)
    summary = [f"Dense test accuracy {train['test_accuracy']:.2f}% (study: 97.15%)."]
    for m in METHODS:
        best = read_json(paths.prune_metrics(m)).get("max_sparsity_within_1pt")
        scope = read_rows(paths.prune_curve(m))[0].get("scope", "?")
        summary.append(f"{m.capitalize()} pruning stays within 1 point of dense up to k = "
                       f"{best:g} ({scope} scope)." if best is not None else
                       f"{m.capitalize()} pruning loses more than 1 point at every k ({scope}).")
    return "\n".join(lines) + "\n\n" + " ".join(summary)


def savings_table() -> str:
    """Per pruned model (layer scope): accuracy, measured speed-up, size and FLOPs."""
    columns = ("sparsity", "accuracy", "speedup_b1", "speedup_b100", "bytes_compressed",
               "flops_per_sample")
    lines = [f"CPU, {THREADS} thread, median of {REPEATS} timed passes after "
             "warm-up; speed-up over the dense net timed in the same loop. Layer-wise scope; "
             f"both scopes are in `{paths.SPEED_CURVE}`.", "",
             "| method | k | accuracy % | speed-up, batch 1 | speed-up, batch 100 | "
             "size (zlib) | MFLOP/sample | stored as |",
             "|---|---|---|---|---|---|---|---|"]
    rows = [r for r in read_rows(paths.SPEED_CURVE) if r.get("scope") == "layer"]
    for r in rows:
        try:
            v = {c: float(r[c]) for c in columns}
        except (KeyError, ValueError, TypeError):
            raise DataError(f"{paths.SPEED_CURVE}: damaged; rerun: dvc repro -f speed") from None
        lines.append(f"| {r['method']} | {v['sparsity']:g} | {v['accuracy']:.2f} | "
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
        tables = {"results": results_table(), "savings": savings_table()}
        if readme is None:
            click.echo("\n\n".join(tables.values()))
            return
        text = readme.read_text(encoding="utf-8")
        for name, table in tables.items():
            text = replace_block(text, name, table)
        write_text(readme, text)


if __name__ == "__main__":
    main()
