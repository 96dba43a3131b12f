"""reports/study.md: every figure the pipeline makes, its tables, the notebook's numbers beside
ours, and conclusions computed from the metrics files -- never typed by hand.

Each section is a function of the files of one run (the workspace, where DVC runs the `report`
stage). A section whose study has not run in this checkout (the retraining pipeline, the
LeNet-5 comparison) says so and names the command, so the report grows with the project.
Nothing here depends on the time or the machine it runs on: the same files give the same
report, byte for byte.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

from prunelab import paths
from prunelab.config import METHODS, STUDY_CRITERIA, Params, load_params
from prunelab.errors import DataError
from prunelab.reporting.aggregate import study_coverage
from prunelab.reporting.notebook import notebook_applies
from prunelab.reporting.tables import (
    fill_blocks,
    findings,
    fmt_acc,
    fmt_k,
    results_table,
    retraining,
    savings_table,
)
from prunelab.runtime.declare import Stage, Study
from prunelab.runtime.files import Outputs, read_json, read_rows
from prunelab.runtime.stage import stage_errors

TITLE = "Experiments in Pruning, replicated: how much of a trained network can be deleted?"
# Figures are linked relative to the report (reports/ -> ../plots/...).
FIGURE_ROOT = Path("..")


def _figure(path: Path, caption: str) -> str:
    return f"![{caption}]({(FIGURE_ROOT / path).as_posix()})\n\n*{caption}.*"


def _seeds_phrase(metrics: Mapping[str, Any]) -> str:
    n = metrics["n"]
    return (f"one seed, {metrics['seeds'][0]}" if n == 1
            else f"{n} seeds ({', '.join(map(str, metrics['seeds']))}), mean ± std")


def header(cfg: Params, metrics: Mapping[str, Any]) -> str:
    m = cfg.model
    arch = {"mlp": "The study's MLP 784-" + "-".join(map(str, m.mlp.hidden)) + "-10",
            "lenet5": "LeNet-5",
            "resnet": f"A ResNet (stage widths {'-'.join(map(str, m.resnet.widths))}, "
                      f"{m.resnet.blocks} basic block{'s' if m.resnet.blocks != 1 else ''} per "
                      "stage, bias-free, no BatchNorm)",
            "lstm": f"An LSTM ({m.lstm.hidden} hidden units, bias-free) reading each image's 28 "
                    "rows"}[m.arch]
    lines = [f"# {TITLE}", "",
             f"{arch}, trained {cfg.train.epochs} epochs (Adam, lr {cfg.train.lr:g}, batch "
             f"{cfg.train.batch_size}) on MNIST, then pruned without retraining at k = "
             + ", ".join(f"{k:g}" for k in cfg.prune.sparsities)
             + f" ({cfg.prune.scope} scope). Replicates: {_seeds_phrase(metrics)}.", "",
             "Written by the `report` stage of `dvc repro` from this run's metrics and curves; "
             "every sentence with a number below is computed from those files. Rerun: "
             "`dvc repro`; the replicated study: `dvc exp run -S 'train.seeds=[0,1,2,3,4]'`."]
    if metrics["n"] == 1:
        lines += ["", "**One seed**: no spread to measure, so no bands and no intervals; read "
                  "every number as one draw."]
    return "\n".join(lines)


def headline(metrics: Mapping[str, Any]) -> str:
    """The figure with bands and, per granularity, how far its study criterion prunes within
    1 point of dense."""
    caption = ("Test accuracy against sparsity: mean over the seeds, 95% band of the mean, the "
               "study's notebook as points" if metrics["n"] > 1 else
               "Test accuracy against sparsity (one seed: no band), the study's notebook dotted")
    lines = ["## How much can be deleted without retraining", "",
             _figure(paths.FIGURE, caption), ""]
    for m in METHODS:
        name = STUDY_CRITERIA[m]
        entry = metrics.get(m, {}).get(name)
        if not entry:
            continue
        k = entry["max_sparsity_within_1pt"]
        line = (f"- **{m.capitalize()} pruning ({name}) stays within 1 point of dense up to "
                f"{fmt_k(k)}** ({_seeds_phrase(metrics)}); dense accuracy "
                f"{fmt_acc(entry['dense_accuracy'])}")
        if k.get("n") and k["n"] < metrics["n"]:
            line += f"; {metrics['n'] - k['n']} seed(s) lose more than 1 point at every k"
        lines.append(line + ".")
    best = _best_criteria(metrics)
    if best:
        lines.append(best)
    return "\n".join(lines)


def _best_criteria(metrics: Mapping[str, Any]) -> str:
    """The criteria of each granularity ordered by how far they prune within 1 point (mean k
    over the seeds); equal means share a place, and the first is called ahead only when it is
    ahead on every seed (its lowest k above the runner-up's highest)."""
    parts = []
    for m in METHODS:
        ks = {name: entry["max_sparsity_within_1pt"]
              for name, entry in metrics.get(m, {}).items()}
        if len(ks) < 2:
            continue
        places: dict[float | None, list[str]] = {}
        for name, k in sorted(ks.items(), key=lambda item: -(item[1].get("mean") or -1.0)):
            places.setdefault(k.get("mean"), []).append(name)
        order = [(" = ".join(names), mean) for mean, names in places.items()]
        text = ", ".join(f"{names} ({'none' if mean is None else format(mean, '.2g')})"
                         for names, mean in order)
        groups = list(places.values())
        if len(groups) > 1 and len(groups[0]) == 1:
            lead, runner = ks[groups[0][0]], ks[groups[1][0]]
            if (lead.get("n", 0) > 1 and lead.get("min") is not None
                    and runner.get("max") is not None and lead["min"] > runner["max"]):
                text += f"; {groups[0][0]} is ahead on every seed"
        parts.append(f"{m}: {text}")
    if not parts:
        return ""
    return ("- Criteria by how far they stay within 1 point (mean k over the seeds): "
            + "; ".join(parts) + ".")


def _cell(row: Mapping[str, str]) -> str:
    mean, std = float(row["accuracy"]), row.get("accuracy_std") or ""
    return f"{mean:.2f}" if std == "" else f"{mean:.2f} ± {float(std):.2f}"


def criteria_table(rows: Mapping[str, Sequence[Mapping[str, str]]]) -> str:
    """Accuracy per criterion and k (mean ± std over the seeds), both granularities."""
    grid = list(dict.fromkeys(float(r["sparsity"]) for m in METHODS for r in rows[m]))
    lines = ["## Every criterion", "",
             "Test accuracy (%) per criterion and k, mean ± std over the seeds; the study's "
             "own criteria in bold. `plots/aggregate_<granularity>.csv` has the 95% intervals "
             "and the effective sparsity.", "",
             "| pruning | criterion | " + " | ".join(f"{k:g}" for k in grid) + " |",
             "|---|---|" + "---|" * len(grid)]
    for m in METHODS:
        by_name: dict[str, dict[float, Mapping[str, str]]] = {}
        for r in rows[m]:
            by_name.setdefault(r["criterion"], {})[float(r["sparsity"])] = r
        for name, points in by_name.items():
            shown = f"**{name}**" if name == STUDY_CRITERIA[m] else name
            lines.append(f"| {m} | {shown} | " + " | ".join(
                _cell(points[k]) if k in points else "–" for k in grid) + " |")
    return "\n".join(lines)


def coverage_section(points: Sequence[Mapping[str, Any]],
                     counts: Mapping[str, Mapping[str, int | None]]) -> str:
    """The notebook's numbers beside our intervals: the 95% confidence interval of our mean,
    and the 95% prediction interval, where one more run of ours would fall (the notebook is one
    run, so that is the range to hold it against)."""
    lines = ["## The study's numbers beside ours", ""]
    if not points:
        return "\n".join(lines + ["The notebook's numbers are for its own set-up (its MLP, 3 "
                                  "epochs, Adam at 0.001, batch 100, layer scope): this run has "
                                  "another, so there is nothing to compare."])
    lines += ["| pruning | k | notebook | ours (mean) | 95% CI of the mean | inside | 95% range "
              "of one run | inside |", "|---|---|---|---|---|---|---|---|"]
    for p in points:  # accuracies: intervals shown within [0, 100]
        ci, pi = (("–" if p[f"{i}_low"] is None else
                   f"{max(0.0, p[f'{i}_low']):.2f}–{min(100.0, p[f'{i}_high']):.2f}")
                  for i in ("ci", "pi"))
        lines.append(f"| {p['method']} ({p['criterion']}) | {p['sparsity']:g} | "
                     f"{p['study']:.2f} | {p['mean']:.2f} | {ci} | {_yes(p['inside_ci'])} | "
                     f"{pi} | {_yes(p['inside_pi'])} |")
    lines.append("")
    for m, c in counts.items():
        if c["inside_pi"] is None:
            lines.append(f"- {m}: {c['points']} notebook numbers; one seed gives no interval "
                         "to hold them.")
            continue
        lines.append(f"- {m}: **{c['inside_pi']} of the notebook's {c['points']}** numbers lie "
                     "where one more run of ours would fall (95% prediction interval); "
                     f"{c['inside_ci']} inside the 95% interval of our mean.")
    lines.append("- The notebook is one run, on another machine and PyTorch version. A number "
                 "outside the prediction interval is farther from our mean than our own runs "
                 "spread (a difference of set-up or a rare draw), not a sign that either run "
                 "is wrong.")
    return "\n".join(lines)


def _yes(value: bool | None) -> str:
    return "–" if value is None else ("yes" if value else "**no**")


def sensitivity_section(metrics: Mapping[str, Any]) -> str:
    """Per-layer sensitivity: the figure, the highest k each layer takes alone, which layer
    breaks first (metrics/sensitivity.json: per granularity, per layer, ``breaks_first``,
    and, when the output layer is swept, the first hidden layer to break)."""
    lines = ["## Which layer breaks first", "",
             _figure(paths.SENSITIVITY_FIGURE, "One layer pruned at a time (the others dense), "
                     "the first seed's net"), ""]
    for m in METHODS:
        section = metrics.get(m)
        if not isinstance(section, Mapping):
            continue
        layers = {name: v for name, v in section.items() if isinstance(v, Mapping)}
        reach = ", ".join(f"{name} {_k(v.get('max_sparsity_within_1pt'))}"
                          for name, v in layers.items())
        first, output = section.get("breaks_first"), section.get("output_layer")
        hidden = section.get("breaks_first_hidden")
        if not first:
            verdict = "no layer loses a point alone anywhere on the grid"
        elif first == output:
            verdict = (f"**{first} breaks first**, the output layer (which the study's sweep "
                       "keeps dense)" + (f"; among the hidden layers, **{hidden}**"
                                         if hidden else ""))
        else:
            verdict = f"**{first} breaks first**"
        tied = section.get("tied")
        if tied and "," in str(tied):
            verdict += f" (tied with the same k: {tied})"
        lines.append(f"- {m.capitalize()} pruning, one layer at a time: {verdict}; the highest "
                     f"k each layer takes alone within 1 point of dense: {reach}. (Each layer "
                     "alone: layers pruned together need not add up, so this ranks the layers "
                     "for a per-layer budget without setting one.)")
    return "\n".join(lines)


def _k(value: float | None) -> str:
    return "none" if value is None else f"{value:g}"


def savings_section() -> str:
    speed = read_json(paths.SPEED_METRICS)
    lines = ["## What pruning buys: speed and size", "",
             _figure(paths.TRADEOFF_FIGURE, "Accuracy against measured speed-up (batch 100), "
                     "the first seed's net"), "", savings_table()]
    best = _fastest_within(speed)
    if best:
        lines += ["", best]
    return "\n".join(lines)


def _fastest_within(speed: Mapping[str, Any]) -> str:
    """A sentence from speed.json: the measured speed-up at each method's highest k within 1
    point of dense (keys ``<granularity>_<criterion>_<scope>``)."""
    parts = sorted(((v["speedup_b100_at_max"], _speed_name(key)) for key, v in speed.items()
                    if isinstance(v, Mapping) and v.get("speedup_b100_at_max") is not None),
                   reverse=True)
    if not parts:
        return ""
    text = ("- Measured speed-up over the dense net (the first seed's net, batch 100) at the "
            "highest k that stays within 1 point of dense: "
            + "; ".join(f"{name} {x:.1f}x" for x, name in parts) + ".")
    study = {m: speed.get(f"{m}_{STUDY_CRITERIA[m]}_layer", {}).get("speedup_b100_at_max")
             for m in METHODS}
    if study["weight"] is not None and study["unit"] is not None:
        more, less = sorted(METHODS, key=lambda m: study[m], reverse=True)
        text += (f" With the study's own criteria (layer scope), {more} pruning buys more speed "
                 f"within that budget than {less} pruning ({study[more]:.1f}x against "
                 f"{study[less]:.1f}x).")
    return text


def _speed_name(key: str) -> str:
    """'unit_l2_refit_layer' -> 'unit / l2_refit (layer scope)'."""
    granularity, _, rest = key.partition("_")
    criterion, _, scope = rest.rpartition("_")
    return f"{granularity} / {criterion} ({scope} scope)"


def retraining_section() -> str:
    needed = [*(paths.finetune_curve(m) for m in METHODS), paths.IMP_CURVE]
    lines = ["## Retraining: fine-tuning and lottery tickets", ""]
    if all(p.exists() for p in needed):
        lines += [_figure(paths.FINETUNE_FIGURE, "One-shot against fine-tuned, both "
                          "granularities"), "",
                  _figure(paths.LOTTERY_FIGURE, "Iterative magnitude pruning: tickets against "
                          "re-initialised and random-mask controls"), ""]
    lines.append(retraining())
    return "\n".join(lines)


def study_sections() -> list[str]:
    """The sections studies write themselves (reports/sections/<study>.md), in name order."""
    folder = paths.REPORT_SECTIONS
    files = sorted(folder.glob("*.md")) if folder.is_dir() else []
    # A section links its figures from reports/sections/ (../../plots/); here it sits one
    # folder up, in reports/.
    return [f.read_text(encoding="utf-8").strip().replace("](../../", "](../") for f in files]


def architectures_section() -> str:
    lines = ["## Architectures: the MLP and LeNet-5", ""]
    if paths.ARCH_FIGURE.exists():
        lines += [_figure(paths.ARCH_FIGURE, "The study on the MLP and on LeNet-5"), "",
                  "Drawn by `make compare` (the study as a DVC experiment with "
                  "`-S model.arch=lenet5`, beside this workspace's run)."]
    else:
        lines.append("Not run in this checkout yet: `make compare`.")
    return "\n".join(lines)


def reproduce(metrics: Mapping[str, Any]) -> str:
    return "\n".join([
        "## Reproduce", "",
        "```bash",
        "make pipeline                                   # dvc repro: this report, "
        f"{metrics['n']} seed(s)",
        "dvc exp run -S 'train.seeds=[0,1,2,3,4]'       # the replicated study",
        "make retrain                                    # fine-tuning, lottery tickets",
        "make compare                                    # LeNet-5 beside the MLP",
        "```", "",
        "Float results depend on the CPU type and on the number of math threads: every MLflow "
        "run records both (`machine.cpu`, `machine.threads`)."])


def study_markdown(cfg: Params) -> str:
    """The whole report from the workspace's files."""
    metrics = read_json(paths.AGGREGATE_METRICS)
    rows = {m: read_rows(paths.aggregate_curve(m)) for m in METHODS}
    points, counts = study_coverage([*rows["weight"], *rows["unit"]], notebook_applies(cfg))
    sections = [header(cfg, metrics), headline(metrics), coverage_section(points, counts),
                criteria_table(rows), sensitivity_section(read_json(paths.SENSITIVITY_METRICS)),
                savings_section(), retraining_section(), *study_sections(),
                architectures_section(), reproduce(metrics)]
    return "\n\n".join(s for s in sections if s) + "\n"


def study_html(markdown_text: str) -> str:
    """The same report as a standalone HTML page (tables rendered, figures linked)."""
    import markdown

    body = markdown.markdown(markdown_text, extensions=["tables"], output_format="html")
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{TITLE}</title><style>body{{font-family:sans-serif;max-width:70em;"
            "margin:auto;padding:1em}table{border-collapse:collapse}td,th{border:1px solid "
            "#ccc;padding:2px 6px;text-align:right}img{max-width:100%}</style></head><body>\n"
            f"{body}\n</body></html>\n")


def replicates_block() -> str:
    """The README's summary of the replicated study: the headline sentences with their spread,
    how many of the notebook's numbers the intervals contain, and which layer breaks first."""
    cfg = load_params(paths.PARAMS)
    metrics = read_json(paths.AGGREGATE_METRICS)
    rows = {m: read_rows(paths.aggregate_curve(m)) for m in METHODS}
    points, counts = study_coverage([*rows["weight"], *rows["unit"]], notebook_applies(cfg))
    lines = [line for line in headline(metrics).splitlines() if line.startswith("- ")]
    for m, c in counts.items():
        if c["inside_pi"] is not None:
            lines.append(f"- The notebook's {m} curve: {c['inside_pi']} of its {c['points']} "
                         "numbers lie where one more run of ours would fall (95% prediction "
                         f"interval); {c['inside_ci']} inside the 95% interval of our mean.")
    sensitivity = read_json(paths.SENSITIVITY_METRICS)
    first = {m: _first_to_break(s) for m, s in sensitivity.items() if isinstance(s, Mapping)}
    if first:
        lines.append("- One layer at a time (the first seed's net), the layer that breaks first: "
                     + "; ".join(f"{m} pruning {name}" for m, name in first.items()) + ".")
    return "\n".join(lines)


def _first_to_break(section: Mapping[str, Any]) -> str:
    """'fc2', or 'fc5 (the output layer; of the hidden layers fc1)', or 'none'."""
    first, hidden = section.get("breaks_first"), section.get("breaks_first_hidden")
    if not first:
        return "none"
    if first == section.get("output_layer") and hidden:
        return f"{first} (the output layer; of the hidden layers {hidden})"
    return str(first)


# The blocks `report` writes, by name; each lands in the README or the docs/*.md page that
# holds its markers (README: results; docs/criteria.md, savings.md, retraining.md,
# replicates.md: the others).
BLOCKS: dict[str, Callable[[], str]] = {
    "results": results_table, "criteria": findings, "savings": savings_table,
    "retraining": retraining, "replicates": replicates_block}


def readme_blocks() -> dict[str, str]:
    """Every generated block the metrics files fill, by block name."""
    return {name: block() for name, block in BLOCKS.items()}


# What the generated blocks and reports/study.md are made from: all a revision needs to be
# reported on from a temporary folder (`--rev`).
REPORT_INPUTS: tuple[Path, ...] = (
    paths.PARAMS, paths.AGGREGATE_METRICS, *(paths.aggregate_curve(m) for m in METHODS),
    paths.FIGURE, paths.SENSITIVITY_CURVE, paths.SENSITIVITY_METRICS, paths.SENSITIVITY_FIGURE,
    paths.SPEED_CURVE, paths.SPEED_METRICS, paths.TRADEOFF_FIGURE,
    *(f(m) for f in (paths.finetune_curve, paths.finetune_metrics, paths.finetune_timing)
      for m in METHODS),
    paths.FINETUNE_FIGURE, paths.IMP_CURVE, paths.IMP_METRICS, paths.IMP_TIMING,
    paths.LOTTERY_FIGURE, paths.ARCH_FIGURE, paths.REPORT, paths.REPORT_HTML)


@contextmanager
def files_of(rev: str) -> Iterator[None]:
    """Work inside a temporary folder holding ``rev``'s report inputs (a commit, branch or DVC
    experiment, through DVC's cache), or in place for the workspace."""
    from prunelab.reporting.compare import WORKSPACE, read_bytes

    if rev == WORKSPACE:
        yield
        return
    with tempfile.TemporaryDirectory(prefix="prunelab-report-") as tmp:
        for path in REPORT_INPUTS:
            blob = read_bytes(path, rev)
            if blob is not None:
                (Path(tmp) / path).parent.mkdir(parents=True, exist_ok=True)
                (Path(tmp) / path).write_bytes(blob)
        if not (Path(tmp) / paths.AGGREGATE_METRICS).is_file():
            raise DataError(f"{paths.AGGREGATE_METRICS} at {rev!r}: not found; is {rev!r} a "
                            "commit, branch or experiment (dvc exp list) of this repository?")
        here = Path.cwd()
        os.chdir(tmp)
        try:
            yield
        finally:
            os.chdir(here)


def publish(folder: Path) -> list[tuple[Path, bytes]]:
    """Copy reports/study.md (and .html) with the figures they show into ``folder``, links
    rewritten to the copies: a report that stays readable after the workspace moves on."""
    blobs: dict[Path, bytes] = {}
    for page in (paths.REPORT, paths.REPORT_HTML):
        text = page.read_text(encoding="utf-8")
        for figure in sorted(set(re.findall(r"\.\./(plots/[\w.-]+\.png)", text))):
            if Path(figure).is_file():
                blobs[folder / Path(figure).name] = Path(figure).read_bytes()
        blobs[folder / page.name] = text.replace("../plots/", "").encode("utf-8")
    return list(blobs.items())


@click.command(help="The README's and docs pages' generated blocks from the metrics files of a "
               "run (and a published copy of its study report): `python -m prunelab report`.")
@click.option("--readme", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Write each block into this README or the docs/*.md page beside it that "
                   "holds its markers, instead of printing them.")
@click.option("--rev", default="workspace", show_default=True,
              help="Report on this revision: a commit, branch or DVC experiment name.")
@click.option("--publish", "publish_to", type=click.Path(file_okay=False, path_type=Path),
              help="Also copy the revision's reports/study.md, .html and figures here.")
def main(readme: Path | None, rev: str, publish_to: Path | None) -> None:
    readme = readme.resolve() if readme else None
    publish_to = publish_to.resolve() if publish_to else None
    with stage_errors():  # a missing or damaged metrics file is one `Error:` line
        with files_of(rev):
            tables = readme_blocks()
            copies = publish(publish_to) if publish_to else []
        out = Outputs()
        for path, blob in copies:
            out.add_bytes(path, blob)
        if readme is None:
            click.echo("\n\n".join(tables.values()))
        else:
            for page, text in fill_blocks(readme, tables).items():
                out.add_text(page, text)
        out.commit()


if __name__ == "__main__":
    main()


STUDY = Study(
    name="report",
    description="reports/study.md and .html: every figure, table and computed conclusion",
    report_section=None,
    stages=(Stage(
        "report", "reports/study.md: every figure, table and computed conclusion",
        "stages/report.py",
        params=("model.arch", "model.mlp.hidden", "model.resnet.widths", "model.resnet.blocks",
                "model.lstm.hidden", "train.epochs", "train.lr", "train.batch_size",
                "prune.sparsities", "prune.scope", "data.train_size",
                "data.test_size"),
        reads=(paths.AGGREGATE_METRICS, paths.aggregate_curve("weight"),
               paths.aggregate_curve("unit"), paths.FIGURE, paths.SENSITIVITY_METRICS,
               paths.SENSITIVITY_FIGURE, paths.SPEED_METRICS, paths.SPEED_CURVE,
               paths.TRADEOFF_FIGURE),
        in_git=(paths.REPORT, paths.REPORT_HTML), persist=(paths.REPORT, paths.REPORT_HTML),
        note="The retraining pipeline and `make compare` add sections when their files exist;\n"
             "they are not deps (`dvc repro` would run them), so their make targets refresh\n"
             "the report, and the outputs are persist: DVC's run-cache never restores a\n"
             "report written with other optional sections."),),
)
