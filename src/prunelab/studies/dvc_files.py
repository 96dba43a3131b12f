"""dvc.yaml and stages/retrain/dvc.yaml, rendered from the studies' declarations.

`python -m prunelab pipeline` prints what differs from the files; `--write` rewrites them. Code
dependencies are never listed by hand: they are the stage script's prunelab imports, followed
through every module it uses (:func:`code_deps`), so a stage reruns exactly when code it runs
changed.
"""

from __future__ import annotations

import difflib
import json
import textwrap
from collections.abc import Iterable
from pathlib import Path

import yaml

from prunelab import paths
from prunelab.runtime.declare import MAIN, Plot, Stage, Study
from prunelab.runtime.fingerprint import ROOT as PACKAGE_DIR
from prunelab.runtime.fingerprint import imports_in, imports_of, module_file

REPO = PACKAGE_DIR.parents[1]  # the checkout: src/prunelab/../..


def script_modules(script: Path) -> set[str]:
    """Every prunelab module a stage script uses, directly or through other modules."""
    found: set[str] = set()
    for name in imports_in((REPO / script).read_text(encoding="utf-8")):
        found |= imports_of(name)
    return found


def code_deps(script: str) -> list[str]:
    """A stage's code deps: its script and the files of every prunelab module it uses, a whole
    folder where every module in it is used (so a new module there is covered too)."""
    files = {module_file(m).relative_to(REPO) for m in script_modules(Path(script))}  # type: ignore[union-attr]
    folders = sorted({f.parent for f in files if f.name == "__init__.py"},
                     key=lambda p: len(p.parts))
    kept: set[Path] = set(files)
    listed: set[Path] = set()
    for folder in folders:
        inside = {p.relative_to(REPO) for p in (REPO / folder).rglob("*.py")}
        if inside <= files and not any(parent in listed for parent in folder.parents):
            listed.add(folder)
            kept -= inside
    return [script, *sorted(str(p) for p in listed | kept)]


def _relative(pipeline: Path, path: str) -> str:
    """A path as the pipeline file's `plots:` section names it (relative to that file)."""
    up = len(pipeline.parent.parts)
    return "/".join([".."] * up + [path]) if up else path


def own_plots(stage: Stage, plots: Iterable[Plot]) -> dict[Path, Plot]:
    """The stage's outputs drawn by an ``in_git`` plot: {csv: plot}."""
    return {Path(next(iter(p.y))): p for p in plots
            if p.in_git and Path(next(iter(p.y))) in stage.outs}


def stage_yaml(stage: Stage, pipeline: Path, plots: Iterable[Plot] = ()) -> list[str]:
    """The stage's entry in its dvc.yaml, as lines; an ``in_git`` plot of one of its outputs
    is declared here, on that output (see :class:`Plot`)."""
    pad = "      " if stage.per_seed else "    "
    lines = [f"  {stage.name}:"]
    if stage.per_seed:
        lines += [f"    foreach: ${{{stage.seeds}}}", "    do:"]
    if pipeline != MAIN:
        lines.append(f"{pad}wdir: {'/'.join(['..'] * len(pipeline.parent.parts))}")
    lines.append(f"{pad}cmd: {stage.cmd}")
    lines.append(f"{pad}deps:")
    lines += [f"{pad}  - {d}" for d in [*code_deps(stage.script), *map(str, stage.reads)]]
    if stage.params:
        lines.append(f"{pad}params:")
        lines += [f"{pad}  - {p}" for p in stage.params]
    drawn = own_plots(stage, plots)
    groups = {"outs": [(p, ()) for p in stage.outs + stage.details if p not in drawn] +
              [(p, ("cache: false",)) for p in stage.in_git],
              "metrics": [(p, ("cache: false",)) for p in stage.metrics],
              "plots": [(p, ("cache: false",)) for p in stage.figures] +
              [(p, ("cache: false", *plot_options(plot))) for p, plot in drawn.items()]}
    for kind, items in groups.items():
        if items:
            lines.append(f"{pad}{kind}:")
        for path, options in items:
            opts = [*options, *(["persist: true"] if path in stage.persist else [])]
            lines.append(f"{pad}  - {path}" + (":" if opts else ""))
            lines += [f"{pad}      {o}" for o in opts]
    return lines


def _scalar(text: str) -> str:
    """``text`` as a YAML value: as is when YAML reads it back unchanged, else quoted."""
    try:
        plain = yaml.safe_load(f"k: {text}") == {"k": text}
    except yaml.YAMLError:
        plain = False
    return text if plain else json.dumps(text)


def plot_options(plot: Plot) -> tuple[str, ...]:
    """An ``in_git`` plot's properties, as its stage's `plots:` output carries them."""
    column = next(iter(plot.y.values()))
    return (f"template: {plot.template}", f"title: {_scalar(plot.title)}", f"x: {plot.x}",
            f"y: {column}", f"x_label: {_scalar(plot.x_label)}",
            f"y_label: {_scalar(plot.y_label)}")


def plot_yaml(plot: Plot, pipeline: Path) -> list[str]:
    """One entry of the pipeline file's top-level `plots:`."""
    lines = [f"  - {plot.name}:", f"      template: {plot.template}",
             f"      title: {_scalar(plot.title)}"]
    if isinstance(plot.x, str):
        lines.append(f"      x: {plot.x}")
    else:
        lines.append("      x:")
        lines += [f"        {_relative(pipeline, k)}: {v}" for k, v in plot.x.items()]
    lines.append("      y:")
    lines += [f"        {_relative(pipeline, k)}: {v}" for k, v in plot.y.items()]
    lines += [f"      x_label: {_scalar(plot.x_label)}", f"      y_label: {_scalar(plot.y_label)}"]
    return lines


def _comment(text: str, indent: str = "  ") -> list[str]:
    return [f"{indent}# {line}".rstrip() for line in text.splitlines()]


def render(studies: Iterable[Study], pipeline: Path, header: str) -> str:
    """The whole pipeline file ``pipeline`` for the studies that live in it."""
    mine = [s for s in studies if s.pipeline == pipeline]
    listed = "\n".join(f"  - {s.name}: {s.description}" for s in mine)
    lines = _comment(header.format(studies=listed), "")
    if pipeline != MAIN:  # DVC reads the foreach seeds (train.seeds, ...) from the root file
        root = f"{'/'.join(['..'] * len(pipeline.parent.parts))}/{paths.PARAMS}"
        sections = dict.fromkeys(["train", *(stage.seeds.split(".")[0] for s in mine
                                             for stage in s.stages if stage.per_seed)])
        lines += ["vars:", *(f"  - {root}:{section}" for section in sections)]
    lines.append("stages:")
    for study in mine:
        lines += ["", *_comment(f"=== {study.name}: {study.description}")]
        for stage in study.stages:
            summary = textwrap.fill(f"{stage.summary[0].upper()}{stage.summary[1:]}.", 96)
            lines += ["", *_comment(summary), *_comment(stage.note)]
            lines += stage_yaml(stage, pipeline, study.plots)
    plots = [p for s in mine for p in s.plots if not p.in_git]
    if plots:
        lines += ["", "# The curves (CSV outputs above) drawn with the templates in .dvc/plots/.",
                  "plots:"]
        for plot in plots:
            lines += plot_yaml(plot, pipeline)
    return "\n".join(lines) + "\n"


MAIN_HEADER = """\
The pruning study: validate -> download -> train@seed -> prune_weight@seed, prune_unit@seed ->
aggregate -> plot; sensitivity, speed -> report.

GENERATED from the studies' declarations (src/prunelab/studies/registry.py): edit a study,
then run `python -m prunelab pipeline --write`; tests/test_registry.py names any line that
differs. Each stage lists the params keys it reads and, as deps, the code it runs (its script
and every prunelab module it imports), so `dvc repro` reruns exactly what changed.

Headline numbers are `metrics:` in git (the `dvc exp show` columns); per-k, per-seed and timing
numbers (JSON), the per-seed curves (CSV) and models are in the DVC cache, so every stage can be
restored from DVC's run-cache; figures (PNG) and the curves `dvc plots` draws are `plots:` in
git (`dvc plots diff HEAD` then draws HEAD in any clone, whatever CPU wrote it)."""

RETRAIN_HEADER = """\
The studies that train pruned nets:
{studies}
A second pipeline file, so that the default `dvc repro` stays within its time budget:
  dvc repro stages/retrain/dvc.yaml                      (or: make retrain)
  dvc exp run stages/retrain/dvc.yaml -S imp.rounds=5    (an experiment; params.yaml at root)
Every stage runs from the repository root (wdir), so paths read as in ../../dvc.yaml; they
depend on data/params.checked, so `validate` runs first and a typo stops here.

Nothing of this pipeline is in the DVC cache (`cache: false`): a clone has no DVC remote and
seldom runs these tens of minutes, and `dvc exp apply`, `dvc checkout` and `dvc plots` fail on a
cached output whose cache the clone never had. So the curves and numbers are in git beside the
figures (these stages are then not restorable from the run-cache); models/imp/ (the round
checkpoints, ignored by git) is this clone's working state, not a versioned result.

GENERATED from the studies' declarations: `python -m prunelab pipeline --write`."""

HEADERS = {MAIN: MAIN_HEADER, paths.RETRAIN_PIPELINE: RETRAIN_HEADER}


def pipeline_files(studies: Iterable[Study]) -> dict[Path, str]:
    """Each pipeline file's text, rendered."""
    studies = tuple(studies)
    return {file: render(studies, file, header) for file, header in HEADERS.items()}


def differences(studies: Iterable[Study], root: Path = REPO) -> list[str]:
    """Unified-diff lines between the files in ``root`` and the rendered ones (none: in sync)."""
    lines: list[str] = []
    for file, text in pipeline_files(studies).items():
        path = root / file
        have = path.read_text(encoding="utf-8") if path.is_file() else ""
        lines += difflib.unified_diff(have.splitlines(), text.splitlines(), f"{file} (as is)",
                                      f"{file} (from the studies)", lineterm="")
    return lines
