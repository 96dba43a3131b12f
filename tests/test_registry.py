"""The studies' registry is the one place a stage is declared: both pipeline files are
rendered from it, every study is complete, and a stage's code deps are what it imports."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from prunelab import paths
from prunelab.runtime.declare import MAIN, Stage, Study
from prunelab.studies.dvc_files import code_deps, differences, pipeline_files, render
from prunelab.studies.registry import STUDIES, load_params, stages

ROOT = Path(__file__).resolve().parents[1]


def test_the_pipeline_files_are_the_rendered_declarations() -> None:
    """dvc.yaml and stages/retrain/dvc.yaml are exactly what the studies render; a difference
    is shown as the diff lines naming the missing or extra line (fix: `python -m prunelab
    pipeline --write`)."""
    diff = differences(STUDIES, ROOT)
    assert not diff, "\n".join(["dvc.yaml differs from the studies' declarations:", *diff])


def test_a_hand_edit_is_named_by_the_check(tmp_path: Path) -> None:
    for file, text in pipeline_files(STUDIES).items():
        (tmp_path / file).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / file).write_text(text.replace("      - prune.scope\n", "", 1))
    diff = differences(STUDIES, tmp_path)
    assert "-      - prune.scope" in diff or "+      - prune.scope" in diff, diff


def test_the_cli_check_fails_on_a_difference_and_passes_in_sync() -> None:
    done = subprocess.run([sys.executable, "-m", "prunelab", "pipeline"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "match" in done.stdout


def test_stage_names_are_unique_and_every_study_is_complete() -> None:
    names = [s.name for study in STUDIES for s in study.stages]
    assert len(names) == len(set(names))
    known_sections = set(load_params(ROOT / "params.yaml").flat()) | {"params.yaml:"}
    for study in STUDIES:
        assert study.stages and study.description
        assert study.pipeline in (MAIN, paths.RETRAIN_PIPELINE)
        if study.params is not None:
            assert any(k.startswith(study.params.name + ".") for k in known_sections)
            assert all(s.sections[-1] == study.params for s in study.stages)
        for stage in study.stages:
            assert (ROOT / stage.script).is_file(), stage.script
            assert stage.writes, stage.name
            assert set(stage.params) <= known_sections, stage.name
            assert set(stage.persist) <= set(stage.writes)
            assert (paths.ITEM in stage.args) == stage.per_seed, stage.name


def test_one_name_everywhere() -> None:
    """A stage's name is its MLflow run name and appears in its script's help; its figure is
    one of its outputs."""
    for study in STUDIES:
        produced = {p for s in study.stages for p in s.writes}
        if study.figure is not None:
            assert study.figure in produced, study.name
        for stage in study.stages:
            source = (ROOT / stage.script).read_text(encoding="utf-8")
            assert "open_stage(" in source or "open_run(" in source or \
                stage.name == "validate", stage.name


def test_code_deps_are_what_the_script_imports() -> None:
    """The train stage runs the training loop, so it depends on it; it does not run the
    pruning code or the figures, so editing those does not retrain."""
    deps = code_deps("stages/train.py")
    assert deps[0] == "stages/train.py"
    assert any(d.startswith("src/prunelab/training") for d in deps)
    assert not any(d.startswith(("src/prunelab/pruning", "src/prunelab/reporting"))
                   for d in deps)
    prune = code_deps("stages/prune.py")
    # a whole sub-package is a folder dep (the prune stage imports all of pruning/ now)
    assert {"src/prunelab/pruning", "src/prunelab/pruning/criteria"} & set(prune)
    assert not any(d.startswith("src/prunelab/pruning/") for d in prune) or \
        "src/prunelab/pruning" not in prune
    assert not any(d.startswith("src/prunelab/training") for d in prune)


def test_a_new_study_is_one_declaration(tmp_path: Path) -> None:
    """A study declared in a few lines renders as a complete DVC stage (cmd, deps with its
    code, params, outs, metrics), in the pipeline file it names."""
    new = Study("example", "an example", (Stage(
        "example", "an example stage", "stages/plot.py", params=("prune.scope",),
        reads=(paths.aggregate_curve("weight"),), outs=(Path("plots/example.csv"),),
        metrics=(Path("metrics/example.json"),)),))
    doc = yaml.safe_load(render([*STUDIES, new], MAIN, "header"))
    stage = doc["stages"]["example"]
    assert stage["cmd"] == "python stages/plot.py"
    assert "stages/plot.py" in stage["deps"] and "plots/aggregate_weight.csv" in stage["deps"]
    assert stage["params"] == ["prune.scope"]
    assert stage["outs"] == ["plots/example.csv"]
    assert stage["metrics"] == [{"metrics/example.json": {"cache": False}}]


@pytest.mark.parametrize("name", sorted(stages()))
def test_stage_commands_are_thin(name: str) -> None:
    """A stage's click command (its `main`) stays within 40 lines: the logic lives in the
    library, the opening in prunelab.studies.opening."""
    import ast

    tree = ast.parse((ROOT / stages()[name].script).read_text(encoding="utf-8"))
    main = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "main")
    assert main.end_lineno - main.lineno + 1 <= 40  # type: ignore[operator]


def test_the_headline_is_the_study_criteria_means_and_survives_their_absence() -> None:
    """metrics/headline.json (the `dvc exp show` columns): seeds, dense accuracy, the study's
    criteria's reach as means; a run without the study's criterion has None there, not a
    KeyError."""
    from prunelab.studies.oneshot import headline, study_rows

    stat = {"max_sparsity_within_1pt": {"mean": 0.7}, "dense_accuracy": {"mean": 96.5}}
    metrics = {"n": 3, "weight": {"magnitude": stat, "obs": {**stat, "max_sparsity_within_1pt":
                                                              {"mean": 0.9}}},
               "unit": {"l2": {**stat, "max_sparsity_within_1pt": {"mean": 0.5}}}}
    assert headline(metrics) == {"seeds": 3, "dense_accuracy": 96.5,
                                 "weight.magnitude.k_within_1pt": 0.7,
                                 "unit.l2.k_within_1pt": 0.5}
    only_random = {"n": 1, "weight": {"random": stat}, "unit": {}}
    assert headline(only_random)["weight.magnitude.k_within_1pt"] is None
    assert headline(only_random)["dense_accuracy"] == 96.5
    rows = [{"method": "weight", "criterion": "magnitude"}, {"method": "weight",
            "criterion": "obs"}, {"method": "unit", "criterion": "l2"}]
    assert study_rows(rows) == [rows[0], rows[2]]


def test_folder_deps_ignore_bytecode() -> None:
    """A code folder is a dep of many stages; Python rewrites its __pycache__ on import after
    any edit or checkout (the .pyc embeds the source's mtime), so DVC must not hash it, or a
    stage whose code did not change would rerun."""
    ignored = (ROOT / ".dvcignore").read_text(encoding="utf-8").split()
    assert "__pycache__/" in ignored and "*.pyc" in ignored
    assert any(Path(d).suffix == "" for d in code_deps("stages/prune.py")[1:])  # a folder dep


def test_each_report_section_is_a_heading_the_report_writes() -> None:
    """A study's declared report section is a `## ` heading of reports/study.md, as
    prunelab.studies.report writes it (not a name that drifted from the page)."""
    studies = ROOT / "src/prunelab/studies"
    for study in STUDIES:
        if study.report_section is None:
            continue
        # written by the report, or by the study itself (reports/sections/<study>.md)
        writers = [studies / "report.py", *sorted((studies / study.name).glob("*.py"))]
        if any(paths.report_section(study.name) in s.writes for s in study.stages):
            assert len(writers) > 1, f"{study.name} writes its section: from which module?"
        source = "".join(w.read_text(encoding="utf-8") for w in writers)
        assert f'"## {study.report_section}"' in source, study.name


def test_the_committed_cdn_page_is_dvcs_own() -> None:
    """.dvc/plots/cdn.html (the template every clone has) is DVC's default page as installed,
    not a copy that drifted from it."""
    from dvc_render.html import PAGE_HTML

    assert (ROOT / ".dvc/plots/cdn.html").read_text(encoding="utf-8") == PAGE_HTML
