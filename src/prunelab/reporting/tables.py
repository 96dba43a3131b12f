"""The README's and the docs pages' generated tables and sentences, from the metrics files
(`python -m prunelab report`, in prunelab.studies.report, writes them), and the one function
that writes a block into whichever page holds its markers."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import click

from prunelab import paths
from prunelab.config import METHODS, STUDY_CRITERIA, load_params
from prunelab.errors import DataError
from prunelab.pruning.savings import REPEATS, THREADS
from prunelab.pruning.sweep import TOLERANCE_POINTS
from prunelab.reporting.figures import STUDY_ACCURACY, STUDY_GRID, by_criterion
from prunelab.runtime.files import read_json, read_rows

DOCS = "docs"  # the study pages, beside the README


def fmt_k(stat: Mapping[str, Any] | None) -> str:
    """A k across seeds: 'k = 0.7' (one seed or no spread), 'k = 0.72 ± 0.045 (0.7–0.8)' (mean
    ± std, and the seeds' range)."""
    if not stat or stat.get("mean") is None:
        return "no k"
    if not stat.get("std"):
        return f"k = {stat['mean']:g}"
    spread = (f" ({stat['min']:g}–{stat['max']:g})"
              if stat.get("min") is not None and stat.get("max") is not None else "")
    return f"k = {stat['mean']:.2f} ± {stat['std']:.2g}{spread}"


def fmt_acc(stat: Mapping[str, Any] | None, ci: bool = True) -> str:
    """An accuracy across seeds: '96.84%' or '96.71 ± 0.12% (95% CI 96.56–96.86)'."""
    if not stat or stat.get("mean") is None:
        return "–"
    if stat.get("std") is None:
        return f"{stat['mean']:.2f}%"
    text = f"{stat['mean']:.2f} ± {stat['std']:.2f}%"
    if ci and stat.get("ci_low") is not None:
        text += f" (95% CI {stat['ci_low']:.2f}–{stat['ci_high']:.2f})"
    return text


def results_table() -> str:
    """Accuracy per sparsity for every criterion, the study's notebook beside its own two,
    plus the study criteria's effective sparsity; then the headline sentences."""
    rows = {m: read_rows(paths.aggregate_curve(m)) for m in METHODS}
    curves = {m: by_criterion(rows[m], m, str(paths.aggregate_curve(m))) for m in METHODS}
    grid = [row["sparsity"] for row in curves["weight"][STUDY_CRITERIA["weight"]]]
    lines = ["| k | " + " | ".join(f"{k:g}" for k in grid) + " |",
             "|---|" + "---|" * len(grid)]

    def row(label: str, values: dict[float, float], fmt: str) -> str:
        return f"| {label} | " + " | ".join(
            format(values[k], fmt) if k in values else "–" for k in grid) + " |"

    for m in METHODS:
        study_name = STUDY_CRITERIA[m]
        lines.append(row(f"{m}: study ({study_name})",
                         dict(zip(STUDY_GRID, STUDY_ACCURACY[m], strict=True)), ".2f"))
        for name, points in curves[m].items():
            lines.append(row(f"{m}: **{name}**" if name == study_name else f"{m}: {name}",
                             {p["sparsity"]: p["accuracy"] for p in points}, ".2f"))
        if study_name in curves[m]:
            effective = {p["sparsity"]: p["effective_sparsity"] for p in curves[m][study_name]}
            lines.append(row(f"{m}: {study_name}, effective sparsity", effective, ".3f"))
    metrics = read_json(paths.AGGREGATE_METRICS)
    dense = metrics.get("weight", {}).get(STUDY_CRITERIA["weight"], {}).get("dense_accuracy")
    n = metrics.get("n", 1)
    seeds = "one seed" if n == 1 else f"mean over {n} seeds, ± their std"
    summary = [f"Dense test accuracy {fmt_acc(dense)} (study: 97.15%)."]
    for m in METHODS:
        study_name = STUDY_CRITERIA[m]
        scope = rows[m][0].get("scope", "?")
        best = metrics.get(m, {}).get(study_name, {}).get("max_sparsity_within_1pt")
        summary.append(f"{m.capitalize()} pruning ({study_name}) stays within 1 point of dense "
                       f"up to {fmt_k(best)} ({scope} scope)." if best and best.get("n") else
                       f"{m.capitalize()} pruning ({study_name}) loses more than 1 point at "
                       f"every k ({scope} scope).")
    return ("\n".join(lines) + f"\n\nAccuracies: {seeds} (the table shows means; the "
            "study report has them with their std). " + " ".join(summary))


def _curves() -> dict[str, dict[str, list[dict[str, float]]]]:
    """Both pruning curves, grouped by criterion."""
    return {m: by_criterion(read_rows(paths.aggregate_curve(m)), m,
                            str(paths.aggregate_curve(m))) for m in METHODS}


def _at(points: list[dict[str, float]], k: float) -> float | None:
    return next((p["accuracy"] for p in points if p["sparsity"] == k), None)


def _within(points: list[dict[str, float]]) -> float | None:
    """The highest k whose accuracy is within 1 point of the k = 0 accuracy."""
    dense = _at(points, 0.0)
    ok = [p["sparsity"] for p in points
          if dense is not None and p["accuracy"] >= dense - TOLERANCE_POINTS]
    return max(ok) if ok else None


def findings() -> str:
    """The study's three questions about criteria, answered from the curve files: sentences
    computed from the numbers (nothing typed by hand)."""
    curves = _curves()
    lines = []
    for m in METHODS:
        study = STUDY_CRITERIA[m]
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


# The papers' figures the retraining results are read against (../shared/REFERENCES.md).
HAN_SPARSITY = 0.92  # Han et al. 2015: LeNet-300-100 with 12x fewer weights, no accuracy lost
UNIT_TARGET_K = 0.8  # issue 11: unit pruning fine-tuned within 0.5 point up to k = 0.8
TICKET_PERCENT = 5.0  # issue 11: tickets within 0.1 point down to <= 5% remaining
PAPER_TICKET_PERCENT, PAPER_REINIT_PERCENT = 3.6, 21.1  # Frankle & Carbin, LeNet-300-100


def _met(ok: bool) -> str:
    return "**met**" if ok else "**missed**"


def _finetune_lines() -> list[str]:
    """The fine-tuning table (one-shot -> fine-tuned accuracy per k) and computed sentences."""
    lines: list[str] = []
    for m in METHODS:
        rows = read_rows(paths.finetune_curve(m))
        grid = sorted({float(r["sparsity"]) for r in rows})
        if not lines:
            lines += ["| pruning | criterion | " + " | ".join(f"k = {k:g}" for k in grid) + " |",
                      "|---|---|" + "---|" * len(grid)]
        acc: dict[tuple[str, str, float], float] = {
            (r["criterion"], r["training"], float(r["sparsity"])): float(r["accuracy"])
            for r in rows}
        for name in dict.fromkeys(r["criterion"] for r in rows):
            cells = [f"{acc[(name, 'one-shot', k)]:.2f} → **{acc[(name, 'fine-tuned', k)]:.2f}**"
                     for k in grid]
            lines.append(f"| {m} | {name} | " + " | ".join(cells) + " |")
    lines += ["", "Each cell: one-shot → **fine-tuned** test accuracy (%)."]
    return lines


def _reach(metrics: dict, training: str, tol: float, suffix: str = "") -> str:
    """'k = 0.9 (89.9% of weights zero)' or 'no k' from a finetune metrics entry."""
    k = metrics.get(f"{training}.max_sparsity_within_{tol:g}pt{suffix}")
    nominal = metrics.get(f"{training}.nominal_sparsity_within_{tol:g}pt{suffix}")
    return "no k" if k is None else f"k = {k:g} ({100 * nominal:.1f}% of all weights zero)"


def _finetune_findings() -> list[str]:
    weight, unit = (read_json(paths.finetune_metrics(m)) for m in METHODS)
    dense, tuned = weight["dense_accuracy"], weight.get("dense_fine_tuned_accuracy")
    out = []
    for m, metrics, tol in (("weight", weight, 0.1), ("unit", unit, 0.5)):
        name = STUDY_CRITERIA[m]
        mine = metrics.get(name)
        if not mine:
            continue
        k = mine[f"fine-tuned.max_sparsity_within_{tol:g}pt"]
        nominal = mine[f"fine-tuned.nominal_sparsity_within_{tol:g}pt"]
        target = (f"target ≥ {100 * HAN_SPARSITY:.0f}% of weights zero (Han et al.'s 12x): "
                  f"{_met(nominal is not None and nominal >= HAN_SPARSITY)}" if m == "weight"
                  else f"target k = {UNIT_TARGET_K:g}: "
                       f"{_met(k is not None and k >= UNIT_TARGET_K)}")
        line = (f"- **{m.capitalize()} pruning ({name}), fine-tuned, stays within {tol:g} point "
                f"of dense ({dense:.2f}%) up to {_reach(mine, 'fine-tuned', tol)}**; one-shot: "
                f"{_reach(mine, 'one-shot', tol)}; {target}.")
        if tuned is not None:
            line += (f" Against the dense net trained on the same way ({tuned:.2f}%): up to "
                     f"{_reach(mine, 'fine-tuned', tol, '_of_tuned_dense')}.")
        if m == "unit" and k is not None:
            speed = read_json(paths.finetune_timing("unit")).get("speedup_b100", {}).get(
                name, {}).get(repr(float(k)))
            if speed:
                line += f" Compacted, the fine-tuned net at k = {k:g} is {speed:.1f}x faster " \
                        "than dense (batch 100, one thread)."
        out.append(line)
        ctrl = metrics.get("random")
        if ctrl:
            out.append(f"- Control, {m} / random, fine-tuned: within {tol:g} point of dense up "
                       f"to {_reach(ctrl, 'fine-tuned', tol)}.")
    if tuned is not None:
        epochs = load_params(paths.PARAMS).train.epochs
        line = (f"- The dense net alone, trained on the same way, moves {tuned - dense:+.2f} "
                "points")
        if tuned - dense > 0.1:
            line += (f": after {epochs} epoch{'s' if epochs != 1 else ''} it is short of "
                     "converged, so part of what fine-tuning recovers is training the dense "
                     "net would get too; hence both references above")
        out.append(line + ".")
    return out


def _imp_lines() -> list[str]:
    """The IMP table and its computed sentences (the paper's numbers beside ours)."""
    rows = read_rows(paths.IMP_CURVE)
    metrics = read_json(paths.IMP_METRICS)
    dense = metrics["dense_accuracy"]
    variants = list(dict.fromkeys(r["variant"] for r in rows if r["round"] != "0"))
    by = {(int(r["round"]), r["variant"]): r for r in rows}
    rounds = sorted({int(r["round"]) for r in rows})
    lines = ["| round | weights remaining | " + " | ".join(variants)
             + " | best test pass at step (" + " / ".join(variants) + ") |",
             "|---|---|" + "---|" * len(variants) + "---|"]
    for i in rounds:
        first = by[(i, "ticket")]
        cells = [f"{float(by[(i, v)]['accuracy']):.2f}" if (i, v) in by else "–"
                 for v in variants]
        steps = [by[(i, v)]["best_step"] or "–" if (i, v) in by else "–" for v in variants]
        lines.append(f"| {i} | {float(first['weights_remaining']):.1f}% | " + " | ".join(cells)
                     + " | " + " / ".join(steps) + " |")
    lines += ["", f"Round 0 is the dense net ({dense:.2f}%). Best test pass: the step of the "
              "highest of the test passes every `imp.eval_every` steps (the paper's "
              "early-stopping measure; a diagnostic, not used to pick any number above)."]
    for v in variants:
        lines.append(_imp_sentence(v, metrics, by, rounds, dense))
    if "reinit" in variants:
        gaps = [(float(by[(i, "ticket")]["weights_remaining"]),
                 float(by[(i, "ticket")]["accuracy"]) - float(by[(i, "reinit")]["accuracy"]))
                for i in rounds[1:] if (i, "reinit") in by]
        from_here = _suffix_where(gaps, lambda gap: gap > 0.5)
        lines.append("- Ticket minus re-init: "
                     + (f"more than 0.5 point at every round from {from_here:.1f}% remaining "
                        "down" if from_here is not None else "never above 0.5 point for good")
                     + f" (largest gap {max(g for _, g in gaps):+.2f}; the paper: re-init "
                     f"falls below dense from {PAPER_REINIT_PERCENT:g}%, tickets only from 2.9%).")
    pruned = [float(by[(i, "ticket")]["accuracy"]) for i in rounds[1:]]
    if pruned:
        lines.append(f"- The tickets' highest accuracy over the {len(pruned)} rounds is "
                     f"{max(pruned) - dense:+.2f} points from dense (a maximum of {len(pruned)} "
                     "test-set numbers, so read it as an upper estimate; the paper: up to "
                     "+0.35).")
    return lines


def _suffix_where(points: list[tuple[float, float]],
                  ok: Callable[[float], bool]) -> float | None:
    """The highest x from which ``ok`` holds at every later (smaller-x) point, in order."""
    found = None
    for x, value in reversed(points):
        if not ok(value):
            break
        found = x
    return found


def _imp_sentence(variant: str, metrics: dict, by: dict, rounds: list[int],
                  dense: float) -> str:
    """One variant's reading against dense: how far it stays within 0.1 point, and where not."""
    down = metrics["within_0.1pt_down_to_percent"].get(variant)
    lowest = metrics.get("lowest_within_0.1pt_percent", {}).get(variant)
    misses = metrics.get("rounds_below_0.1pt", {}).get(variant, [])
    last = rounds[-1]
    name = {"ticket": "**Tickets**", "reinit": "Control `reinit`",
            "random_mask": "Control `random_mask`"}.get(variant, variant)
    end = (f"at {float(by[(last, variant)]['weights_remaining']):.1f}% remaining "
           f"{float(by[(last, variant)]['accuracy']):.2f}% "
           f"({float(by[(last, variant)]['accuracy']) - dense:+.2f})")
    if not misses:
        text = f"within 0.1 point of dense or above it at every round, down to {down:.1f}%"
    else:
        def miss(i: int) -> str:
            return (f"round {i} ({float(by[(i, variant)]['weights_remaining']):.1f}%: "
                    f"{float(by[(i, variant)]['accuracy']) - dense:+.2f})")

        gaps = (", ".join(map(miss, misses)) if len(misses) <= 3
                else f"from {miss(misses[0])} to {miss(misses[-1])}")
        text = f"more than 0.1 point below dense at {len(misses)} of {len(rounds) - 1} rounds: " \
               + gaps
        if lowest is not None and lowest != down:
            text += f"; within it at others down to {lowest:.1f}%"
        if down is not None:
            text += f"; without a miss down to {down:.1f}%"
    line = f"- {name}: {text}; {end}."
    if variant == "ticket":
        ok = lowest is not None and lowest <= TICKET_PERCENT
        line += (f" Target within 0.1 point down to ≤ {TICKET_PERCENT:g}% remaining: "
                 + ("**met at every round**" if ok and not misses else
                    f"**met below {TICKET_PERCENT:g}%, missed at {len(misses)} round(s) "
                    "above it**" if ok else "**missed**")
                 + f" (the paper: within it down to {PAPER_TICKET_PERCENT:g}%).")
    return line


def retraining() -> str:
    """The retraining results (fine-tuning, lottery tickets), computed from the retraining
    pipeline's files; a note naming the command when they do not exist yet."""
    needed = [*(paths.finetune_curve(m) for m in METHODS), paths.IMP_CURVE]
    if not all(p.exists() for p in needed):
        return ("Not run in this checkout yet: `make retrain` (= `dvc repro "
                f"{paths.RETRAIN_PIPELINE}`), then `make report`.")
    return "\n".join(["**Fine-tuning after one-shot pruning**", "", *_finetune_lines(), "",
                      *_finetune_findings(), "", "**Iterative magnitude pruning: lottery "
                      "tickets and their controls**", "", *_imp_lines(), "", _cost()])


def _cost() -> str:
    """What the retraining took, from the stages' own timing files (this run, this machine)."""
    walls = [read_json(paths.finetune_timing(m))["wall_seconds"] for m in METHODS]
    imp = read_json(paths.IMP_TIMING)
    rounds = len(imp["rounds"]) - 1
    fine = sum(walls)
    text = ("**Cost** (this run, on the machine that ran it: its MLflow runs' `machine.*` tags "
            f"say which): the fine-tuning study {fine / 60:.1f} min "
            f"(weight {walls[0]:.0f} s, unit {walls[1]:.0f} s; target ≤ 5 min: "
            f"{_met(fine <= 300)}); IMP {imp['wall_seconds'] / 60:.1f} min for {rounds} rounds "
            "with their controls")
    if rounds == 15:  # each round's wall time is saved with it, so resumed rounds count too
        text += f" (target ≤ 15 min: {_met(imp['wall_seconds'] <= 900)})"  # issue 23's
    ratio = imp.get("masked_over_dense")
    if ratio is not None:
        text += (f"; a masked training took {ratio:.2f}x the dense round's (median over the "
                 "rounds; `python bench/run.py --only masked` times both side by side)")
    return text + "."


def replace_block(text: str, name: str, block: str) -> str:
    """Replace what stands between <!-- name:start --> and <!-- name:end --> in ``text``."""
    start, end = _markers(name)
    head, _, rest = text.partition(start)
    _, _, tail = rest.partition(end)
    if not rest or end not in rest:
        raise click.ClickException(f"no {start} ... {end} block")
    return f"{head}{start}\n{block.strip()}\n{end}{tail}"


def _markers(name: str) -> tuple[str, str]:
    return f"<!-- {name}:start -->", f"<!-- {name}:end -->"


def block_pages(readme: Path) -> list[Path]:
    """Where generated blocks may live: the README and the docs/*.md pages beside it."""
    return [readme, *sorted((readme.parent / DOCS).glob("*.md"))]


def fill_blocks(readme: Path, blocks: Mapping[str, str]) -> dict[Path, str]:
    """The new text of every page that holds one of ``blocks``, each block written between
    its markers in whichever of :func:`block_pages` holds them. A block whose markers are in
    no page, or in two, is an error naming it: a block is never silently dropped."""
    texts = {page: page.read_text(encoding="utf-8") for page in block_pages(readme)}
    changed: dict[Path, str] = {}
    for name, block in blocks.items():
        homes = [page for page, text in texts.items() if _markers(name)[0] in text]
        if len(homes) != 1:
            where = ", ".join(map(str, homes)) if homes else "none of them"
            raise click.ClickException(
                f"block {name!r}: its <!-- {name}:start --> marker must be in exactly one of "
                f"{readme} and {readme.parent / DOCS}/*.md; found in {where}")
        texts[homes[0]] = changed[homes[0]] = replace_block(texts[homes[0]], name, block)
    return changed
