"""A study's stages as data: what each DVC stage runs, reads, writes and which params it uses.

A study module (``prunelab.studies.*``) declares a :class:`Study`; ``studies/registry.py`` lists
them; ``dvc.yaml`` and ``stages/retrain/dvc.yaml`` are rendered from that list by
:mod:`prunelab.studies.dvc_files`. Kept small and free of logic: every stage script imports
its declaration, so this file is a code dep of every stage.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from prunelab.config import Section

MAIN = Path("dvc.yaml")


@dataclass(frozen=True)
class Stage:
    """One DVC stage. Its name is its params section's or study's, its command's, its output
    files' stem and its MLflow run name (``name@<seed>`` for a per-seed stage)."""

    name: str
    summary: str  # one line: what it computes (--help, `python -m prunelab stages`, dvc.yaml)
    script: str  # stages/<x>.py: a thin click command
    args: tuple[str, ...] = ()  # after the script, e.g. ("weight", paths.ITEM)
    params: tuple[str, ...] = ()  # params.yaml keys it reads ("params.yaml:" = the whole file)
    reads: tuple[Path, ...] = ()  # data it reads: other stages' outputs, or inputs
    outs: tuple[Path, ...] = ()  # DVC-cached outputs (curves, models)
    metrics: tuple[Path, ...] = ()  # headline numbers: the `dvc exp show` columns (in git)
    details: tuple[Path, ...] = ()  # per-k, per-seed, per-round and timing numbers (JSON, in
    #                                  the DVC cache like the curves: not `dvc exp show` columns)
    figures: tuple[Path, ...] = ()  # PNG figures (in git)
    in_git: tuple[Path, ...] = ()  # plain outputs kept in git, not cached (a stamp, the report):
    #                                never restored from DVC's run-cache, so such a stage reruns
    persist: tuple[Path, ...] = ()  # outputs DVC keeps across runs (resumable or ordering)
    per_seed: bool = False  # one stage per seed (`foreach`, ${item}) ...
    seeds: str = "train.seeds"  # ... of this params key (a study may replicate on its own list)
    note: str = ""  # why it is declared the way it is: a comment above it in dvc.yaml
    sections: tuple[Section, ...] = ()  # other studies' params sections it loads (its own
    #                                      study's is added by the Study)
    chain_only: bool = False  # trains or prunes chain nets only (model.arch mlp, lenet5): a
    #                           graph-family arch is one error line before any work

    @property
    def writes(self) -> tuple[Path, ...]:
        return self.outs + self.details + self.metrics + self.figures + self.in_git

    @property
    def cmd(self) -> str:
        return " ".join(["python", self.script, *self.args])


@dataclass(frozen=True)
class Plot:
    """One `dvc plots` entry: a template drawing columns of CSV outputs.

    ``in_git``: the plot draws one CSV that a clone's DVC cache cannot supply for another
    revision: a timing (no rerun reproduces it byte for byte) or a curve (a clone has no DVC
    remote, and another CPU type writes other bytes), so `dvc plots diff HEAD <exp>` could not
    draw HEAD. Such a CSV is kept in git as its stage's own `plots:` output, with the plot
    declared there; its id is its path. Not a `cache: false` plain output: DVC saves no
    run-cache entry for a stage with one, and the stage would rerun instead of being restored.
    """

    name: str
    template: str
    title: str
    x: str | dict[str, str]  # one column, or {csv path: column}
    y: dict[str, str]  # {csv path: column}
    x_label: str
    y_label: str
    in_git: bool = False

    def __post_init__(self) -> None:
        if self.in_git and (len(self.y) != 1 or not isinstance(self.x, str)):
            raise ValueError(f"plot {self.name}: in_git draws one CSV (one y file, x a column)")


@dataclass(frozen=True)
class Study:
    """A unit of the study: its stages, the pipeline file they live in, its own section of
    params.yaml (validated by its parser; None: it reads only the core sections), its figure
    and its section of reports/study.md."""

    name: str
    description: str
    stages: tuple[Stage, ...]
    pipeline: Path = MAIN
    params: Section | None = None
    figure: Path | None = None
    report_section: str | None = None  # its heading in reports/study.md (after the ##)
    plots: tuple[Plot, ...] = field(default=())

    def __post_init__(self) -> None:
        # Each stage loads the core sections, its study's own and any other study's it names.
        if self.params is not None:
            stages = tuple(replace(s, sections=(*s.sections, self.params)) for s in self.stages)
            object.__setattr__(self, "stages", stages)

    def stage(self, name: str) -> Stage:
        """The stage called ``name`` (KeyError naming the study's stages otherwise)."""
        for stage in self.stages:
            if stage.name == name:
                return stage
        raise KeyError(f"{self.name} has no stage {name!r}: {[s.name for s in self.stages]}")
