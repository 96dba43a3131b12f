"""reports/study.md is computed from the metrics: its sentences follow the numbers (no frozen
text), sections appear for the studies that ran, and the stage writes both pages together."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner

from prunelab import paths
from prunelab.reporting.aggregate import aggregate_metrics, aggregate_rows, headline_stats
from prunelab.reporting.tables import fill_blocks
from prunelab.runtime.files import write_bytes, write_csv, write_json
from prunelab.studies import report as study_report
from prunelab.studies.registry import load_params

ROOT = Path(__file__).resolve().parents[1]
GRID = (0.0, 0.5, 0.7, 0.9)
PNG = b"\x89PNG\r\n\x1a\n"


def curve(method: str, name: str, dense: float, drop: float) -> list[dict[str, str]]:
    """One seed's curve: accuracy falls by ``drop`` points per 0.1 of k above 0.5."""
    return [{"method": method, "criterion": name, "scope": "layer", "sparsity": str(k),
             "accuracy": str(dense - max(0.0, k - 0.5) * 10 * drop),
             "effective_sparsity": str(k)} for k in GRID]


def within(rows: list[dict[str, str]]) -> float:
    dense = float(rows[0]["accuracy"])
    return max(float(r["sparsity"]) for r in rows if float(r["accuracy"]) >= dense - 1)


def metrics_for(drops: dict[int, float]) -> tuple[dict[str, Any], dict[str, list]]:
    """Aggregate metrics and rows of seeds whose magnitude / l2 curves fall by ``drops``."""
    curves = {m: {s: curve(m, name, 97.0 + 0.1 * s, d) for s, d in drops.items()}
              for m, name in (("weight", "magnitude"), ("unit", "l2"))}
    summaries = {m: {s: {rows[0]["criterion"]: {
        "max_sparsity_within_1pt": within(rows),
        "accuracy_at_max_sparsity": float(rows[0]["accuracy"])}}
        for s, rows in by_seed.items()} for m, by_seed in curves.items()}
    headlines = {m: headline_stats(summaries[m], curves[m], str) for m in curves}
    rows = {m: aggregate_rows(curves[m], str) for m in curves}
    return aggregate_metrics(list(drops), headlines, {}), rows


def test_the_headline_follows_the_metrics() -> None:
    """Other numbers, other sentences: the k, its spread and the seed count are computed."""
    steep, _ = metrics_for({0: 2.0, 1: 2.0, 2: 2.0})
    gentle, _ = metrics_for({0: 0.4, 1: 0.6, 2: 0.9})
    one, _ = metrics_for({0: 2.0})
    steep_text, gentle_text = study_report.headline(steep), study_report.headline(gentle)
    assert "Weight pruning (magnitude) stays within 1 point of dense up to k = 0.5**" \
        in steep_text  # three equal seeds: no spread to show
    assert "3 seeds (0, 1, 2), mean ± std" in steep_text
    assert "up to k = 0.57 ± 0.12" in gentle_text  # 0.7, 0.5, 0.5: mean 0.567, std 0.115
    assert "one seed, 0" in study_report.headline(one)
    assert steep_text != gentle_text


def test_one_seed_says_there_are_no_intervals() -> None:
    cfg = load_params(ROOT / paths.PARAMS)
    one, _ = metrics_for({0: 1.0})
    three, _ = metrics_for({0: 1.0, 1: 1.0, 2: 1.5})
    assert "**One seed**" in study_report.header(cfg, one)
    assert "**One seed**" not in study_report.header(cfg, three)
    assert "Replicates: 3 seeds" in study_report.header(cfg, three)


def test_the_criteria_table_shows_the_spread_only_with_seeds() -> None:
    _, one = metrics_for({0: 1.0})
    _, three = metrics_for({0: 1.0, 1: 1.2, 2: 1.4})
    as_text = {n: {m: [{k: "" if v is None else str(v) for k, v in r.items()} for r in rows]
                   for m, rows in case.items()} for n, case in (("one", one), ("three", three))}
    assert "| **magnitude** | 97.00 | 97.00 |" in study_report.criteria_table(as_text["one"])
    assert "97.10 ± 0.10" in study_report.criteria_table(as_text["three"])  # k = 0: 97.0-97.2


def test_coverage_counts_are_sentences() -> None:
    points = [{"method": "weight", "criterion": "magnitude", "sparsity": k, "study": 97.0,
               "mean": 96.9, "ci_low": 96.8, "ci_high": 97.05 if k < 0.5 else 96.95,
               "pi_low": 96.5, "pi_high": 97.3, "inside_ci": k < 0.5, "inside_pi": True}
              for k in (0.0, 0.25, 0.5)]
    text = study_report.coverage_section(points, {"weight": {"points": 3, "inside_ci": 2,
                                                             "inside_pi": 3}})
    assert "**3 of the notebook's 3** numbers lie where one more run" in text
    assert "2 inside the 95% interval of our mean" in text
    assert ("| weight (magnitude) | 0.5 | 97.00 | 96.90 | 96.80–96.95 | **no** | 96.50–97.30 "
            "| yes |") in text
    none = study_report.coverage_section([], {})
    assert "nothing to compare" in none


def test_the_layer_that_breaks_first_is_read_from_the_metrics() -> None:
    def section(first: str, ks: dict[str, float]) -> str:
        return study_report.sensitivity_section(
            {"weight": {"breaks_first": first, **{n: {"max_sparsity_within_1pt": k}
                                                  for n, k in ks.items()}}})

    a = section("fc3", {"fc1": 0.9, "fc2": 0.8, "fc3": 0.5})
    b = section("fc1", {"fc1": 0.6, "fc2": 0.8, "fc3": 0.9})
    assert "**fc3 breaks first**" in a and "fc1 0.9, fc2 0.8, fc3 0.5" in a
    assert "**fc1 breaks first**" in b and "fc1 0.6, fc2 0.8, fc3 0.9" in b
    output = study_report.sensitivity_section({"weight": {
        "breaks_first": "fc3", "output_layer": "fc3", "breaks_first_hidden": "fc2",
        "fc1": {"max_sparsity_within_1pt": 0.9}, "fc2": {"max_sparsity_within_1pt": 0.8},
        "fc3": {"max_sparsity_within_1pt": 0.5}}})
    assert "the output layer (which the study's sweep keeps dense)" in output
    assert "among the hidden layers, **fc2**" in output
    held = study_report.sensitivity_section({"unit": {"breaks_first": None,
                                                      "fc1": {"max_sparsity_within_1pt": 0.9}}})
    assert "no layer loses a point alone" in held


def test_speed_sentence_ranks_the_measured_speedups() -> None:
    text = study_report._fastest_within({"weight_magnitude_layer": {"speedup_b100_at_max": 1.1},
                                         "unit_l2_refit_layer": {"speedup_b100_at_max": 6.0},
                                         "unit_l2_layer": {"speedup_b100_at_max": 2.5}})
    assert text.index("unit / l2_refit (layer scope) 6.0x") < text.index("unit / l2 (layer")
    # the comparison is between the study's own criteria, same scope
    assert "unit pruning buys more speed within that budget than weight pruning (2.5x against " \
        "1.1x)" in text
    slower = study_report._fastest_within({"weight_magnitude_layer": {"speedup_b100_at_max": 3.0},
                                           "unit_l2_layer": {"speedup_b100_at_max": 2.0},
                                           "unit_l2_refit_layer": {"speedup_b100_at_max": 9.0}})
    assert "weight pruning buys more speed within that budget than unit pruning" in slower
    assert "buys more" not in study_report._fastest_within(
        {"weight_obs_layer": {"speedup_b100_at_max": 3.0},
         "unit_l2_layer": {"speedup_b100_at_max": 2.0}})


# --- the stage, end to end in a temporary checkout ------------------------------------------

def load_stage() -> Any:
    spec = importlib.util.spec_from_file_location("report_stage", ROOT / "stages" / "report.py")
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


@pytest.fixture
def checkout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder with the files the report stage reads (the default study only)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PRUNELAB_TRACKING", "off")
    shutil.copy(ROOT / paths.PARAMS, tmp_path / paths.PARAMS)
    metrics, rows = metrics_for({0: 0.3, 1: 0.45, 2: 0.6})
    write_json(paths.AGGREGATE_METRICS, metrics)
    for m, method_rows in rows.items():
        write_csv(paths.aggregate_curve(m), method_rows)
    write_json(paths.SENSITIVITY_METRICS, {"dense_accuracy": 97.0, "weight": {
        "breaks_first": "fc2", "fc1": {"max_sparsity_within_1pt": 0.9},
        "fc2": {"max_sparsity_within_1pt": 0.5}}})
    write_json(paths.SPEED_METRICS, {"unit_l2_layer": {"speedup_b100_at_max": 2.5}})
    write_csv(paths.SPEED_CURVE, [{"method": "unit", "criterion": "l2", "scope": "layer",
                                   "sparsity": 0.5, "accuracy": 96.5, "speedup_b1": 2.0,
                                   "speedup_b100": 2.5, "bytes_compressed": 1e6,
                                   "flops_per_sample": 1e6, "formats": "dense,dense"}])
    for figure in (paths.FIGURE, paths.SENSITIVITY_FIGURE, paths.TRADEOFF_FIGURE):
        write_bytes(figure, PNG)
    return tmp_path


def test_the_stage_writes_markdown_and_html_from_the_files(checkout: Path) -> None:
    done = CliRunner().invoke(load_stage().main, [])
    assert done.exit_code == 0, done.output
    text = paths.REPORT.read_text(encoding="utf-8")
    assert "up to k = 0.63 ± 0.12" in text  # within 1 point: 0.7, 0.7, 0.5 over 3 seeds
    assert "**fc2 breaks first**" in text
    assert "](../plots/accuracy_vs_sparsity.png)" in text
    # studies that did not run here say how to run them
    assert "`make retrain`" in text and "Not run in this checkout yet: `make compare`" in text
    html = paths.REPORT_HTML.read_text(encoding="utf-8")
    assert html.startswith("<!DOCTYPE html>") and "<table>" in html
    assert 'src="../plots/accuracy_vs_sparsity.png"' in html


def test_the_same_files_give_the_same_report(checkout: Path) -> None:
    """No clock, no machine name: DVC sees the same output for the same inputs."""
    stage = load_stage()
    CliRunner().invoke(stage.main, [])
    first = paths.REPORT.read_bytes(), paths.REPORT_HTML.read_bytes()
    CliRunner().invoke(stage.main, [])
    assert (paths.REPORT.read_bytes(), paths.REPORT_HTML.read_bytes()) == first


def test_a_missing_input_is_one_line_and_nothing_is_written(checkout: Path) -> None:
    paths.SENSITIVITY_METRICS.unlink()
    done = CliRunner().invoke(load_stage().main, [])
    assert done.exit_code != 0
    assert str(paths.SENSITIVITY_METRICS) in done.output
    assert not paths.REPORT.exists() and not paths.REPORT_HTML.exists()


def test_publish_copies_the_pages_and_their_figures(checkout: Path) -> None:
    CliRunner().invoke(load_stage().main, [])
    copies = dict(study_report.publish(Path("out")))
    assert set(copies) == {Path("out/study.md"), Path("out/study.html"),
                           Path("out/accuracy_vs_sparsity.png"), Path("out/sensitivity.png"),
                           Path("out/tradeoff.png")}
    assert b"](accuracy_vs_sparsity.png)" in copies[Path("out/study.md")]
    assert b"../plots/" not in copies[Path("out/study.html")]


# The generated blocks: each writer (`report`, `compare`, bench/run.py, bench/pipeline.py, ...)
# writes a block into whichever of README.md and docs/*.md holds its markers.
WRITTEN_ELSEWHERE = ("architectures", "bench", "pipeline-bench",  # compare, bench, pipeline,
                     "startup-bench", "atinit-bench",  # bench/startup.py, bench/atinit.py
                     "during-bench",  # bench/during.py
                     "archs-resnet")  # bench/archs.py --resnet


def block(name: str, body: str = "old") -> str:
    return f"<!-- {name}:start -->\n{body}\n<!-- {name}:end -->\n"


def test_every_generated_block_has_exactly_one_home_in_the_repository() -> None:
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    for name in (*study_report.BLOCKS, *WRITTEN_ELSEWHERE):
        homes = [p.name for p in pages if f"<!-- {name}:start -->" in p.read_text("utf-8")]
        assert len(homes) == 1, (name, homes)
    readme = (ROOT / "README.md").read_text("utf-8")
    assert "<!-- results:start -->" in readme  # the headline results stay on the front page
    assert len(readme.splitlines()) <= 300


def test_fill_blocks_writes_each_block_where_its_markers_are(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text("# intro\n" + block("results") + "tail\n")
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "savings.md").write_text("# savings\n" + block("savings") + "end\n")
    (tmp_path / "docs" / "other.md").write_text("no blocks\n")
    new = fill_blocks(readme, {"results": "R", "savings": "S"})
    assert new == {readme: "# intro\n" + block("results", "R") + "tail\n",
                   tmp_path / "docs" / "savings.md": "# savings\n" + block("savings", "S")
                   + "end\n"}
    assert readme.read_text() == "# intro\n" + block("results") + "tail\n"  # nothing written


@pytest.mark.parametrize("pages", [{}, {"README.md": "x", "docs/a.md": "x"}])
def test_fill_blocks_refuses_a_block_with_no_home_or_two(tmp_path: Path,
                                                         pages: dict[str, str]) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "README.md").write_text("# intro\n")
    for page in pages:
        (tmp_path / page).write_text(block("criteria"))
    with pytest.raises(click.ClickException, match="block 'criteria'"):
        fill_blocks(tmp_path / "README.md", {"criteria": "C"})


def test_report_writes_its_blocks_into_the_docs_pages(checkout: Path) -> None:
    """`python -m prunelab report --readme README.md` fills README's results block and the
    blocks of the docs pages that hold the others, all from the same run."""
    CliRunner().invoke(load_stage().main, [])
    Path("docs").mkdir(exist_ok=True)
    Path("README.md").write_text("# r\n" + block("results"))
    Path("docs/study.md").write_text("# d\n" + "".join(
        block(name) for name in study_report.BLOCKS if name != "results"))
    done = CliRunner().invoke(study_report.main, ["--readme", "README.md"])
    assert done.exit_code == 0, done.output
    tables = study_report.readme_blocks()
    assert Path("README.md").read_text() == "# r\n" + block("results", tables["results"])
    docs = Path("docs/study.md").read_text()
    for name in study_report.BLOCKS:
        if name != "results":
            assert block(name, tables[name].strip()) in docs


def test_a_study_section_links_its_figures_from_the_report_folder(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A section in reports/sections/ links ../../plots/x.png; inside reports/study.md the same
    figure is ../plots/x.png (the link must resolve from where the text sits)."""
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / paths.REPORT_SECTIONS
    folder.mkdir(parents=True)
    (folder / "during.md").write_text("## Pruning while training\n\n![x](../../plots/during.png)\n")
    (text,) = study_report.study_sections()
    assert "![x](../plots/during.png)" in text
    assert (tmp_path / "reports" / "../plots/during.png").resolve() == \
        (folder / "../../plots/during.png").resolve()
