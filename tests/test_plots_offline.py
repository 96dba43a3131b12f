"""`dvc plots show` and `dvc plots diff` render offline, and the plots say what they are.

A tiny git + DVC repository holds only what the plots need: the project's top-level `plots:`
(its Vega plots; the PNG entries need no JavaScript and would colour the control page too),
.dvc/config, .dvc/plots (the templates and the page `make setup` builds) and hand-written CSVs in
two tagged commits, so no pipeline runs. Headless Chromium renders each page with every network
request failing (the `server` tests). DVC's own CDN page, rendered the same way, is the control
that stays blank. The first tests check the page builder and the configuration, quickly.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import yaml
from configobj import ConfigObj
from PIL import Image
from repo_helpers import MAIN, dvc, git, stop_process

from prunelab.reporting import plots_page as plots_html

pytestmark = pytest.mark.timeout(300)

CHROMIUM = Path("/usr/bin/chromium")
PAGE = MAIN / plots_html.PLOTS_DIR / plots_html.PAGE
METHODS = ("weight", "unit")  # legend order: weight first, as in the PNG figures
STUDY = {"weight": "magnitude", "unit": "l2"}  # the criterion each aggregate curve is of
# An accuracy curve's colour: its method column and, the aggregate having one, its criterion.
CURVES = tuple(f"{m} · {STUDY[m]}" for m in METHODS)
REVS = ("exp-a", "exp-b")  # the tags of the two commits
# Each accuracy plot (by the id vega-embed's container has: a stage's plot is its path) and
# the curves it draws: the study's criteria (plots/study.csv), every criterion of one method
# (here its study criterion only), every criterion against effective sparsity.
ACCURACY_PLOTS = {"plots_study_csv": CURVES, "plots_aggregate_weight_csv": CURVES[:1],
                  "plots_aggregate_unit_csv": CURVES[1:], "accuracy_vs_effective_sparsity": CURVES}
LOSS_PLOT = "plots_seeds_0_train_loss_csv"  # the train stage's plot of the first seed's loss
SPARSITIES = (0.0, 0.25, 0.5, 0.7, 0.9, 0.99)
# Every host unresolvable and every proxy connection refused: nothing loads from outside.
NO_NETWORK = ("--host-resolver-rules=MAP * ~NOTFOUND", "--proxy-server=127.0.0.1:9")


# --- the page builder and the configuration (fast) --------------------------------------------


def vega_plots_section() -> list[object]:
    """The project's top-level plots, without the PNG entries."""
    plots = yaml.safe_load((MAIN / "dvc.yaml").read_text(encoding="utf-8"))["plots"]
    return [p for p in plots if not (isinstance(p, str) and p.endswith(".png"))]


def stage_csv_plots(seed: int = 0) -> list[dict[str, dict[str, object]]]:
    """The CSV plots a stage declares on its own output (kept in git), with their properties:
    [{path: {template, x, y, ...}}]; a per-seed stage's for ``seed``."""
    stages = yaml.safe_load((MAIN / "dvc.yaml").read_text(encoding="utf-8"))["stages"]
    entries = [entry for stage in stages.values() for entry in stage.get("do", stage).get(
        "plots", []) if isinstance(entry, dict) and next(iter(entry)).endswith(".csv")]
    return yaml.safe_load(yaml.safe_dump(entries).replace("${item}", str(seed)))


def test_dvc_config_points_at_a_committed_page_and_setup_at_its_own() -> None:
    """DVC resolves plots.html_template against .dvc/: the repository's config names the
    committed copy of DVC's CDN page (every clone has it), and `make setup` points the clone's
    untracked config.local at the page it builds."""
    html_template = ConfigObj(str(MAIN / ".dvc" / "config"))["plots"]["html_template"]
    assert MAIN / ".dvc" / html_template == MAIN / plots_html.PLOTS_DIR / plots_html.CDN_PAGE_FILE
    tracked = git(MAIN, "ls-files", "--error-unmatch", f".dvc/{html_template}", check=False)
    assert tracked.returncode == 0, f".dvc/{html_template} is not in git"
    assert (MAIN / ".dvc" / html_template).read_text(encoding="utf-8") == plots_html.CDN_PAGE
    setup = subprocess.run(["make", "-n", "setup"], cwd=MAIN, capture_output=True, text=True)
    assert "dvc config --local plots.html_template plots/page.html" in setup.stdout


def test_every_plot_template_is_in_dvc_plots() -> None:
    """Each custom template dvc.yaml names is a JSON file where DVC looks (.dvc/plots)."""
    names = {spec["template"] for plot in [*vega_plots_section(), *stage_csv_plots()]
             if isinstance(plot, dict) for spec in plot.values() if "template" in spec}
    assert names == {"accuracy_curves", "loss_curve", "speedup_tradeoff"}
    for name in names:
        assert (MAIN / plots_html.PLOTS_DIR / f"{name}.json").is_file(), name


def test_without_vega_the_page_is_dvcs_cdn_page(tmp_path: Path) -> None:
    """No node_modules (no npm): DVC's own page, which loads Vega from its CDN."""
    assert not plots_html.build(tmp_path)
    page = (tmp_path / plots_html.PAGE).read_text(encoding="utf-8")
    assert "{scripts}" in page and "{plot_divs}" in page


def test_the_libraries_are_inlined_in_load_order(tmp_path: Path) -> None:
    """vega, vega-lite, vega-embed in that order; no {scripts}; no early </script>; no map."""
    for lib in plots_html.LIBRARIES:
        path = tmp_path / "node_modules" / lib
        path.parent.mkdir(parents=True)
        path.write_text(f'var s = "</script>"; // {lib}\n//# sourceMappingURL={path.name}.map\n')
    assert plots_html.build(tmp_path)
    page = (tmp_path / plots_html.PAGE).read_text(encoding="utf-8")
    assert "{scripts}" not in page and page.count("{plot_divs}") == 1
    starts = [page.index(f"/* {lib.split('/')[0]} */") for lib in plots_html.LIBRARIES]
    assert starts == sorted(starts)
    assert page.count("</script") == 3 and page.count("<\\/script") == 3
    assert "sourceMappingURL" not in page


def test_a_library_containing_a_dvc_placeholder_is_refused() -> None:
    """DVC would substitute the placeholder inside the library's code."""
    with pytest.raises(ValueError, match="plot_divs"):
        plots_html.inline_script("var t = '{plot_divs}';", "vega")


# --- the repository ---------------------------------------------------------------------------


def csv_text(header: Iterable[str], rows: Iterable[Iterable[object]]) -> str:
    return "\n".join(",".join(map(str, r)) for r in [list(header), *rows]) + "\n"


AGGREGATE_COLUMNS = ("method", "criterion", "scope", "sparsity", "seeds",
                     "accuracy", "accuracy_std", "accuracy_ci_low", "accuracy_ci_high",
                     "effective_sparsity", "effective_sparsity_std", "effective_sparsity_ci_low",
                     "effective_sparsity_ci_high")
SEEDS = [0, 1, 2]  # train.seeds: the aggregate's replicates; the loss curve is the first's


def write_curves(repo: Path, scope: str, loss: float) -> None:
    """The CSVs the plots read, in the stages' formats (the aggregate's mean over 3 seeds, the
    first seed's loss), with values that differ by ``scope``."""
    plots = repo / "plots"
    plots.mkdir(exist_ok=True)
    drop = {"layer": 0.0, "global": 8.0}[scope]
    study = []  # the study's criteria's rows of both: plots/study.csv, as the aggregate writes it
    for method, slope in (("weight", 30.0), ("unit", 90.0)):
        criterion = STUDY[method]
        rows = []
        for k in SPARSITIES:
            mean, effective = round(97 - slope * k**3 - drop * k, 2), min(1.3 * k, 0.999)
            rows.append((method, criterion, scope, k, len(SEEDS), mean, 0.2, round(mean - 0.5, 2),
                         round(mean + 0.5, 2), effective, 0.0, effective, effective))
        (plots / f"aggregate_{method}.csv").write_text(csv_text(AGGREGATE_COLUMNS, rows))
        study += rows
    (plots / "study.csv").write_text(csv_text(AGGREGATE_COLUMNS, study))
    speed = [(m, s, k, round(97 - slope * k**3, 2), round(1 + gain * k**2, 3))
             for m, slope, gain in (("weight", 30.0, 3.0), ("unit", 90.0, 20.0))
             for s in ("layer", "global") for k in SPARSITIES]
    (plots / "speed.csv").write_text(csv_text(
        ("method", "scope", "sparsity", "accuracy", "speedup_b100"), speed))
    first_seed = plots / "seeds" / str(SEEDS[0])
    first_seed.mkdir(parents=True, exist_ok=True)
    (first_seed / "train_loss.csv").write_text(csv_text(
        ("step", "loss"), [(s, round(loss / (1 + s / 5), 4)) for s in range(1, 61)]))


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two tagged commits of curves (layer scope, then global) and the plots configuration."""
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium)")
    if not PAGE.is_file() or "{scripts}" in PAGE.read_text(encoding="utf-8"):
        pytest.skip(f"{PAGE} is missing or loads Vega from a CDN: run `make setup` with npm")
    repo = tmp_path_factory.mktemp("plots_repo")
    git(repo, "init", "-q", "-b", "main")
    git(repo, "config", "user.name", "prunelab tests")
    git(repo, "config", "user.email", "tests@prunelab.invalid")
    git(repo, "config", "commit.gpgsign", "false")
    dvc(repo, "init", "-q")
    shutil.copy2(MAIN / ".dvc" / "config", repo / ".dvc" / "config")
    shutil.copytree(MAIN / plots_html.PLOTS_DIR, repo / plots_html.PLOTS_DIR, dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns("node_modules", "package*.json"))
    dvc(repo, "config", "--local", "plots.html_template", f"plots/{plots_html.PAGE}")  # setup's
    # the top-level plots, and a stage carrying the plots the project declares on its stages'
    # outputs (in git: the study's curves, the first seed's loss, the speed-up curve)
    (repo / "dvc.yaml").write_text(yaml.safe_dump({
        "stages": {"curves": {"cmd": "true", "plots": stage_csv_plots(SEEDS[0])}},
        "plots": vega_plots_section()}))
    # dvc.yaml names the loss curve's folder by the first seed: ${train.seeds[0]}
    (repo / "params.yaml").write_text(yaml.safe_dump({"train": {"seeds": SEEDS}}))
    for tag, scope, loss in ((REVS[0], "layer", 2.3), (REVS[1], "global", 1.6)):
        write_curves(repo, scope, loss)
        git(repo, "add", "-A")
        git(repo, "commit", "-q", "-m", f"curves, {scope} scope")
        git(repo, "tag", tag)
    return repo


# --- rendering ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rendered:
    """A DVC plots page: its HTML, the DOM Chromium built from it offline, its coloured pixels."""

    html: str
    dom: str
    coloured_pixels: int


def coloured_pixels(png: Path) -> int:
    """Pixels that are clearly coloured: curves and legend symbols, not text, axes or grid."""
    rgb = np.asarray(Image.open(png).convert("RGB"), dtype=np.int16)  # (H, W, 3)
    return int(((rgb.max(axis=2) - rgb.min(axis=2)) > 60).sum())


def render(page: Path, profile: Path) -> Rendered:
    """Open ``page`` in headless Chromium without network: screenshot and DOM in one run."""
    png = profile.with_suffix(".png")
    cmd = [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={profile}", *NO_NETWORK, "--window-size=1000,2000",
           "--virtual-time-budget=5000", f"--screenshot={png}", "--dump-dom", page.as_uri()]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        dom, err = proc.communicate(timeout=120)
    finally:
        stop_process(proc)
    assert proc.returncode == 0 and png.is_file(), err[-3000:]
    return Rendered(page.read_text(encoding="utf-8"), dom, coloured_pixels(png))


def plots_page(repo: Path, out: Path, *args: str) -> Rendered:
    """`dvc plots ARGS -o out`, rendered."""
    dvc(repo, "plots", *args, "-o", str(out))
    return render(out / "index.html", out.parent / f"{out.name}-profile")


@pytest.fixture(scope="module")
def show(repo: Path) -> Rendered:
    return plots_page(repo, repo.parent / "show", "show")


@pytest.fixture(scope="module")
def diff(repo: Path) -> Rendered:
    return plots_page(repo, repo.parent / "diff", "diff", *REVS)


@pytest.fixture(scope="module")
def cdn_diff(repo: Path) -> Rendered:
    """The control: the same diff in DVC's default page (what setup writes without npm)."""
    cdn = repo.parent / "cdn"
    assert not plots_html.build(cdn)
    return plots_page(repo, repo.parent / "cdn-diff", "diff", *REVS,
                      "--html-template", str(cdn / plots_html.PAGE))


# --- reading the rendered SVG (vega's ARIA labels) ----------------------------------------------


def sections(dom: str) -> dict[str, str]:
    """Each plot's part of the DOM, by plot id (vega-embed's container div)."""
    starts = list(re.finditer(r'<div id="([^"]+)" class="vega-embed', dom))
    ends = [m.start() for m in starts[1:]] + [len(dom)]
    return {m.group(1): dom[m.start():end] for m, end in zip(starts, ends)}


def legends(svg: str) -> dict[str, list[str]]:
    """Legend title -> its entries, as drawn."""
    found = re.findall(r"aria-label=\"Symbol legend titled '([^']*)' for [^\"]*? with \d+ "
                       r"values?: ([^\"]*)\"", svg)
    return {title: values.split(", ") for title, values in found}


def lines(svg: str) -> list[dict[str, str]]:
    """Every drawn line (one per series), as the fields of its ARIA label."""
    tags = re.findall(r'<path [^>]*aria-roledescription="line mark"[^>]*>', svg)
    labels = [m.group(1) for tag in tags if (m := re.search(r'aria-label="([^"]*)"', tag))]
    return [dict(part.split(": ", 1) for part in label.split("; ")) for label in labels]


def remote_scripts(html: str) -> list[str]:
    return re.findall(r"<script[^>]*\bsrc\s*=\s*[\"']?(https?:[^\"' >]*)", html, re.IGNORECASE)


# --- the tests ----------------------------------------------------------------------------------


@pytest.mark.server
def test_pages_load_no_remote_script(show: Rendered, diff: Rendered, cdn_diff: Rendered) -> None:
    """Vega is inlined: no http(s) script source (DVC's own page, the control, has three)."""
    assert remote_scripts(show.html) == []
    assert remote_scripts(diff.html) == []
    assert len(remote_scripts(cdn_diff.html)) == 3
    assert "vegaEmbed=" in diff.html.replace(" ", "")  # vega-embed's UMD build defines it


@pytest.mark.server
def test_curves_are_drawn_offline(show: Rendered, diff: Rendered, cdn_diff: Rendered) -> None:
    """Offline, our pages draw every plot in colour; DVC's CDN page stays blank."""
    assert cdn_diff.coloured_pixels < 100, cdn_diff.coloured_pixels
    assert lines(cdn_diff.dom) == []
    for page in (show, diff):
        assert page.coloured_pixels > 3_000, page.coloured_pixels  # legend symbols: ~600
        assert set(sections(page.dom)) == {*ACCURACY_PLOTS, LOSS_PLOT, "plots_speed_csv"}


@pytest.mark.server
def test_accuracy_legend_names_the_methods(show: Rendered) -> None:
    """Colour is the method column with the criterion: legend 'method' lists weight and unit
    (each with its criterion), not file names."""
    for plot, curves in ACCURACY_PLOTS.items():
        svg = sections(show.dom)[plot]
        assert legends(svg)["method"] == list(curves), plot
        assert {line["method"] for line in lines(svg)} == set(curves), plot
        assert ".csv" not in "".join(v for vs in legends(svg).values() for v in vs)


@pytest.mark.server
def test_diff_draws_one_line_per_method_and_revision(diff: Rendered) -> None:
    """In `dvc plots diff A B` each accuracy plot has a line per (method, revision)."""
    for plot, curves in ACCURACY_PLOTS.items():
        svg = sections(diff.dom)[plot]
        drawn = sorted((line["method"], line["revision"]) for line in lines(svg))
        assert drawn == sorted((c, r) for c in curves for r in REVS), plot
        assert legends(svg)["revision"] == list(REVS)


@pytest.mark.server
def test_speedup_separates_methods_and_scopes(diff: Rendered) -> None:
    """The speed-up scatter: colour = method, shape = scope."""
    shown = legends(sections(diff.dom)["plots_speed_csv"])  # its stage's own plot
    assert shown["method"] == list(METHODS)
    assert shown["scope"] == ["global", "layer"]


@pytest.mark.server
def test_training_loss_is_a_curve_per_revision(show: Rendered, diff: Rendered) -> None:
    """The training plot is loss against step, one line per revision, many points each."""
    for page, revs in ((show, ["workspace"]), (diff, list(REVS))):
        svg = sections(page.dom)[LOSS_PLOT]
        drawn = lines(svg)
        assert sorted(line["revision"] for line in drawn) == revs
        assert all(int(line["optimiser step"]) == 1 for line in drawn)  # the label: first point
        paths = re.findall(r'aria-roledescription="line mark" d="M([^"]*)"', svg)
        assert all(p.count("L") == 59 for p in paths), paths  # 60 steps, 59 segments
