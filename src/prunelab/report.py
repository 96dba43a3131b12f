"""The README's results table from the metrics files: `python -m prunelab.report`."""

from __future__ import annotations

from pathlib import Path

import click

from prunelab import paths
from prunelab.config import METHODS
from prunelab.files import read_csv, read_json, write_text
from prunelab.plot import STUDY_ACCURACY, STUDY_GRID


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
        s = read_json(paths.prune_metrics(m))
        summary.append(f"{m} pruning stays within 1 point of dense up to k = "
                       f"{s['max_sparsity_within_1pt']:g} ({s['scope']} scope).")
    return "\n".join(lines) + "\n\n" + " ".join(summary)


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
    table = results_table()
    if readme is None:
        click.echo(table)
    else:
        write_text(readme, replace_block(readme.read_text(encoding="utf-8"), "results", table))


if __name__ == "__main__":
    main()
