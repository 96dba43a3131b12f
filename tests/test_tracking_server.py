"""The pipeline against a real MLflow tracking server: REST read-back, failures, UI, PostgreSQL.

Every server runs on a free loopback port and is stopped in teardown. The module's one server
stores runs in PostgreSQL (the team set-up) when it is installed, else in SQLite; the
PostgreSQL and Chromium checks skip without those programs (.ci/run installs both). The
module's one pipeline run gives MLFLOW_TRACKING_URI a user:password (the server, without
authentication, ignores the header), so the same run shows that the password leaks nowhere.
"""

from __future__ import annotations

import contextlib
import csv
import json
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from repo_helpers import (
    SMALL_PARAMS,
    SMALL_STEPS,
    VENV_BIN,
    env_for,
    error_lines,
    free_port,
    git,
    make_repo,
    mlflow_server,
    pipeline_stages,
    read_json,
    repro_output,
    rest_history,
    rest_params,
    rest_runs,
    rest_tags,
    run,
    stage_script,
    stop_process,
    write_params,
)
from server_helpers import Backend, pg_driver, postgres_missing, server_backend

from prunelab import paths
from prunelab.runtime.machine import cpu_model
from prunelab.tracking.runs import redact

pytestmark = [pytest.mark.server, pytest.mark.timeout(600)]

CHROMIUM = Path("/usr/bin/chromium")
# In the pipeline's MLFLOW_TRACKING_URI; must appear nowhere. Built from pieces, like every
# user:password here, so that no tracked file holds credential-looking text
# (test_reliability.py::test_no_credentials_in_tracked_files).
PASSWORD = "-".join(["s3cret", "in", "the", "uri"])
# Stages without an MLflow run: download is restored from the run-cache, validate only reads.
UNTRACKED = {"download", "validate"}
STUDY = {"weight": "magnitude", "unit": "l2"}  # the study's criterion per granularity
# SMALL_PARAMS' one seed: DVC's per-seed stages are train@0, prune_weight@0, prune_unit@0.
SEED = SMALL_PARAMS["train"]["seeds"][0]
TRAIN = f"train@{SEED}"


def with_credentials(url: str) -> str:
    """``url`` with a user:password, as a team's server behind basic auth would need."""
    return url.replace("http://", "http://" + f"ci-user:{PASSWORD}@", 1)


@dataclass(frozen=True)
class TrackedRepo:
    """A temp repo whose pipeline logged to the MLflow server at ``url``."""

    repo: Path
    url: str
    exp_id: str
    runs: list[dict[str, Any]]
    output: str  # everything `dvc repro` printed

    def parent_of_train(self) -> dict[str, Any]:
        train = self.stage_run(TRAIN)
        parent_id = rest_tags(train)["mlflow.parentRunId"]
        return next(r for r in self.runs if r["info"]["run_id"] == parent_id)

    def children(self, parent_id: str) -> dict[str, dict[str, Any]]:
        """The stage runs under a pipeline run, by stage name."""
        return {rest_tags(r)["stage"]: r for r in self.runs
                if rest_tags(r).get("mlflow.parentRunId") == parent_id
                and rest_tags(r).get("prunelab_role") == "stage"}

    def parts(self, stage_run_id: str) -> list[dict[str, Any]]:
        """The runs nested under a stage run (the aggregate's one per seed)."""
        return [r for r in self.runs if rest_tags(r).get("mlflow.parentRunId") == stage_run_id
                and rest_tags(r).get("prunelab_role") == "part"]

    def stage_run(self, stage: str) -> dict[str, Any]:
        found = [r for r in self.runs if rest_tags(r).get("stage") == stage
                 and rest_tags(r).get("prunelab_role") == "stage"]
        assert len(found) == 1, f"{len(found)} runs of stage {stage}"
        return found[0]


def run_pipeline_against(url: str, repo: Path) -> TrackedRepo:
    output = repro_output(repo, env=env_for(repo, MLFLOW_TRACKING_URI=with_credentials(url)))
    exp_id, runs = rest_runs(url)
    return TrackedRepo(repo, url, exp_id, runs, output)


@pytest.fixture(scope="module")
def backend(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Backend]:
    """The team set-up's database when this machine can run one (CI installs PostgreSQL), else
    a SQLite file: every test of this module talks to the one server in front of it, so the
    pipeline runs against a server once."""
    with server_backend(tmp_path_factory.mktemp("mlflow-backend")) as found:
        yield found


@pytest.fixture(scope="module")
def server(backend: Backend, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`mlflow server` on the module's backend, loopback, free port."""
    work = tmp_path_factory.mktemp("mlflow-server")
    with mlflow_server(backend.store_uri, work, artifact_root=backend.artifact_root,
                       timeout=180) as url:
        yield url


@pytest.fixture(scope="module")
def tracked(server: str, tmp_path_factory: pytest.TempPathFactory, dvc_cache: Path
            ) -> TrackedRepo:
    repo = make_repo(tmp_path_factory.mktemp("server-repo") / "repo", cache_dir=dvc_cache)
    return run_pipeline_against(server, repo)


def assert_pipeline_arrived(tracked: TrackedRepo) -> None:
    """One parent 'workspace HH:MM <params hash>' run with a FINISHED child per stage; the
    grid as history, one per criterion."""
    parent = tracked.parent_of_train()
    digest = rest_tags(parent)["params_hash"]
    assert re.fullmatch(rf"workspace \d\d:\d\d {digest[:6]}", parent["info"]["run_name"])
    assert parent["info"]["status"] == "FINISHED"
    assert rest_tags(parent)["prunelab_role"] == "pipeline"
    stages = tracked.children(parent["info"]["run_id"])
    assert set(stages) == pipeline_stages(tracked.repo) - UNTRACKED
    for name, child in stages.items():
        assert child["info"]["run_name"] == name
        assert child["info"]["status"] == "FINISHED", name
        assert rest_params(child)["prune.sparsities"] == "[0.0, 0.5, 0.9]"
    for method in ("weight", "unit"):
        child = stages[f"prune_{method}@{SEED}"]
        with (tracked.repo / paths.prune_curve(method, SEED)).open(encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        criteria = SMALL_PARAMS["prune"][f"{method}_criteria"]
        assert {r["criterion"] for r in rows} == set(criteria)
        for criterion in criteria:
            history = rest_history(tracked.url, child["info"]["run_id"], f"{criterion}.accuracy")
            assert sorted(int(m["step"]) for m in history) == SMALL_STEPS, criterion
            # the curve DVC keeps (plots/seeds/0/prune_<method>.csv), point for point
            expected = {round(float(r["sparsity"]) * 1000): float(r["accuracy"])
                        for r in rows if r["criterion"] == criterion}
            assert {int(m["step"]): m["value"] for m in history} == expected, criterion
            # on the parent, the first seed's series keep their names from before replicates
            parent_history = rest_history(tracked.url, parent["info"]["run_id"],
                                          f"prune_{method}.{criterion}.accuracy")
            assert sorted(int(m["step"]) for m in parent_history) == SMALL_STEPS, criterion
        # the unpruned net's accuracy, once per stage: the study's k = 0 point
        dense = rest_history(tracked.url, child["info"]["run_id"], "dense_accuracy")
        assert [m["value"] for m in dense] == [
            float(r["accuracy"]) for r in rows
            if r["criterion"] == STUDY[method] and float(r["sparsity"]) == 0.0]
        assert rest_tags(child)["train_run_id"] == stages[TRAIN]["info"]["run_id"]
    train_run = read_json(tracked.repo / paths.train_run(SEED))
    assert train_run == {"mlflow_run_id": stages[TRAIN]["info"]["run_id"],
                         "tracking_uri": redact(with_credentials(tracked.url))}
    # the aggregate: headlines and mean curves on the parent, every statistic on its own run,
    # and one finished run per seed under its run
    aggregate = stages["aggregate"]["info"]["run_id"]
    parts = tracked.parts(aggregate)
    assert [(rest_tags(r)["seed"], r["info"]["status"]) for r in parts] == [
        (str(SEED), "FINISHED")]
    assert rest_tags(parts[0])["train_run_id"] == stages[TRAIN]["info"]["run_id"]
    parent_metrics = {m["key"] for m in parent["data"].get("metrics", [])
                      if m["key"].startswith("aggregate.")}
    criteria = [(m, c) for m in ("weight", "unit") for c in SMALL_PARAMS["prune"][f"{m}_criteria"]]
    assert parent_metrics == {"aggregate.seeds", "aggregate.dense_accuracy",
                              "aggregate.weight.magnitude.k_within_1pt",
                              "aggregate.unit.l2.k_within_1pt",
                              *(f"aggregate.{m}.{c}.accuracy" for m, c in criteria)}
    own = {m["key"] for m in stages["aggregate"]["data"].get("metrics", [])}
    assert {"n", "weight.magnitude.max_sparsity_within_1pt.mean",
            "weight.magnitude.accuracy", "unit.l2.effective_sparsity",
            "unit.l2.dense_accuracy.mean"} <= own, sorted(own)


# --- the pipeline on a server ------------------------------------------------------------------


def test_pipeline_runs_read_back_through_rest(tracked: TrackedRepo) -> None:
    """Runs, params, tags and the accuracy histories come back through MLflow's REST API."""
    import requests

    assert_pipeline_arrived(tracked)
    # the artifacts went through the server too
    prune_run = tracked.stage_run(f"prune_weight@{SEED}")["info"]["run_id"]
    answer = requests.get(f"{tracked.url}/api/2.0/mlflow/artifacts/list",
                          params={"run_id": prune_run}, timeout=30)
    answer.raise_for_status()
    names = {Path(f["path"]).name for f in answer.json().get("files", [])}
    assert {"prune_weight.csv", "prune_weight.json"} <= names
    assert not (tracked.repo / "mlflow.db").exists()  # nothing fell back to the local store


def test_password_in_the_uri_reaches_no_output_or_record(tracked: TrackedRepo,
                                                        backend: Backend) -> None:
    """A user and password in MLFLOW_TRACKING_URI (basic auth in the URI): the password is in
    no line `dvc repro` printed, no param, tag or name, no file of the repository or of the
    server's artifacts; MLflow's "View run" links (which quoted it), its pickle warning and its
    progress bars are gone from the output."""
    assert PASSWORD not in tracked.output
    assert PASSWORD not in json.dumps(tracked.runs)  # params, tags, run names
    for root in (tracked.repo, backend.artifact_root):
        leaked = [p for p in root.rglob("*") if p.is_file() and p.stat().st_size < 5_000_000
                  and PASSWORD.encode() in p.read_bytes()]
        assert leaked == []
    for noise in ("View run", "View experiment", "Saving pytorch model by Pickle",
                  "Uploading artifacts", "Downloading artifacts"):
        assert noise not in tracked.output, noise


def test_runs_name_their_source_machine_and_owner(tracked: TrackedRepo) -> None:
    """The Source column's tags (script or dvc command, git commit, user), the machine, and
    the process that owned each run; nothing was closed as an orphan."""
    from importlib.metadata import version

    parent = tracked.parent_of_train()
    tags = rest_tags(parent)
    head = git(tracked.repo, "rev-parse", "HEAD").stdout.strip()
    assert (tags["mlflow.source.name"], tags["mlflow.source.type"]) == ("dvc repro", "LOCAL")
    torch = version("torch").split("+")[0]
    stages = tracked.children(parent["info"]["run_id"])
    for name, record in [("(pipeline)", parent), *stages.items()]:
        tags = rest_tags(record)
        assert tags["mlflow.source.git.commit"] == head, name
        assert tags["mlflow.user"], name
        assert tags["machine.cpu"] == cpu_model() and int(tags["machine.cores"]) >= 1, name
        assert tags["prunelab_host"] and int(tags["prunelab_pid"]) > 0, name
        assert "prunelab_closed" not in tags, name
        if name != "(pipeline)":
            assert tags["mlflow.source.name"] == stage_script(tracked.repo, name)
            assert tags["prunelab_pid"] != rest_tags(parent)["prunelab_pid"]  # stage vs dvc
    # stages that load torch, and the parent
    for name in ("(pipeline)", TRAIN, f"prune_weight@{SEED}"):
        tags = rest_tags(parent if name == "(pipeline)" else stages[name])
        assert tags["machine.torch"].split("+")[0] == torch, name
        assert tags["machine.blas"] and tags["machine.gpu"], name


# --- an unreachable server ---------------------------------------------------------------------


def closed_port() -> int:
    """A loopback port nothing listens on."""
    port = free_port()
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", port)) != 0
    return port


def run_stage(repo: Path, script: str, **env: str) -> tuple[subprocess.CompletedProcess[str],
                                                             float]:
    """``python stages/<script>``; ``script`` may carry the stage's arguments ("train.py 0")."""
    started = time.monotonic()
    name, *args = script.split()
    done = run([str(VENV_BIN / "python"), f"stages/{name}", *args], repo,
               env=env_for(repo, **env), timeout=120, check=False)
    return done, time.monotonic() - started


@pytest.mark.parametrize("script", ["plot.py", f"train.py {SEED}"])
def test_unreachable_server_fails_fast_with_one_error_line(tracked: TrackedRepo,
                                                           script: str) -> None:
    """A closed port: the stage stops within seconds, before any work, naming the URI."""
    uri = f"http://127.0.0.1:{closed_port()}"
    model = (tracked.repo / paths.model(SEED)).read_bytes()
    done, seconds = run_stage(tracked.repo, script, MLFLOW_TRACKING_URI=uri)
    assert done.returncode == 1, done.stderr
    assert seconds < 30, f"took {seconds:.1f} s"
    lines = error_lines(done.stderr)
    assert len(lines) == 1, done.stderr
    assert uri in lines[0] and "PRUNELAB_TRACKING=off" in lines[0], lines[0]
    assert "Traceback" not in done.stderr
    assert (tracked.repo / paths.model(SEED)).read_bytes() == model  # no work was done


def test_unreachable_server_error_does_not_leak_credentials(tracked: TrackedRepo) -> None:
    """user:password in MLFLOW_TRACKING_URI never reaches the error line."""
    port = closed_port()
    uri = "http://" + f"alice:s3cret-pw@127.0.0.1:{port}"
    done, seconds = run_stage(tracked.repo, "plot.py", MLFLOW_TRACKING_URI=uri)
    assert done.returncode == 1 and seconds < 30, done.stderr
    lines = error_lines(done.stderr)
    assert len(lines) == 1, done.stderr
    assert f"http://***@127.0.0.1:{port}" in lines[0]  # the URI is named, redacted
    assert "s3cret-pw" not in done.stderr + done.stdout


def test_tracking_off_runs_without_the_server(tracked: TrackedRepo) -> None:
    """PRUNELAB_TRACKING=off: the same stage works with the server unreachable."""
    uri = f"http://127.0.0.1:{closed_port()}"
    before = len(rest_runs(tracked.url)[1])
    done, _ = run_stage(tracked.repo, "plot.py", MLFLOW_TRACKING_URI=uri, PRUNELAB_TRACKING="off")
    assert done.returncode == 0, done.stderr
    assert error_lines(done.stderr) == []
    assert (tracked.repo / "plots" / "accuracy_vs_sparsity.png").is_file()
    assert not (tracked.repo / "mlflow.db").exists()
    assert len(rest_runs(tracked.url)[1]) == before


def test_silent_server_fails_within_a_minute(tracked: TrackedRepo) -> None:
    """A server that accepts connections and never answers: an error within a minute."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)  # connections queue up in the backlog; nothing ever answers
        uri = f"http://127.0.0.1:{listener.getsockname()[1]}"
        done, seconds = run_stage(tracked.repo, "plot.py", MLFLOW_TRACKING_URI=uri)
    assert done.returncode == 1, done.stderr
    assert seconds < 60, f"took {seconds:.1f} s"
    lines = error_lines(done.stderr)
    assert len(lines) == 1 and uri in lines[0], done.stderr


# --- the UI in headless Chromium -----------------------------------------------------------------


def chromium(args: list[str], profile: Path, timeout: float = 120,
             budget_ms: int = 15000) -> subprocess.CompletedProcess:
    cmd = [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
           "--no-first-run", "--disable-background-networking", "--disable-component-update",
           "--disable-sync", f"--user-data-dir={profile}", f"--virtual-time-budget={budget_ms}",
           *args]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        stop_process(proc)
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def rendered(url: str, work: Path, name: str, size: str = "1600,1000",
             budget_ms: int = 15000, timeout: float = 120) -> tuple[str, Path]:
    """(the DOM after MLflow's scripts ran, a PNG screenshot) of ``url``, each in a fresh
    browser profile (nothing remembered from an earlier page), ``budget_ms`` of virtual time
    for the page's scripts."""
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium)")
    dom = chromium([f"--window-size={size}", "--dump-dom", url], work / f"profile-{name}-dom",
                   timeout=timeout, budget_ms=budget_ms)
    assert dom.returncode == 0, dom.stderr[-3000:]
    png = work / f"{name}.png"
    shot = chromium([f"--window-size={size}", f"--screenshot={png}", url],
                    work / f"profile-{name}-png", timeout=timeout, budget_ms=budget_ms)
    assert shot.returncode == 0, shot.stderr[-3000:]
    assert_not_blank(png)
    return dom.stdout, png


def assert_not_blank(png: Path) -> None:
    """A real page: a PNG where no single colour covers 97% of the pixels."""
    from PIL import Image

    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(png) as image:
        rgb = image.convert("RGB")
        pixels = rgb.width * rgb.height
        counts = rgb.getcolors(maxcolors=pixels) or []
    assert len(counts) > 50 and max(n for n, _ in counts) < 0.97 * pixels, png


def page_text(dom: str) -> str:
    """The DOM's text, tags and scripts removed, whitespace collapsed."""
    body = re.sub(r"<(script|style)\b.*?</\1>", " ", dom, flags=re.DOTALL)
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", body))


def runs_page(tracked: TrackedRepo, mode: str = "TABLE") -> str:
    """The experiment's runs, as the README links them. MLflow 3.17's UI picks its GenAI or
    its model-training view from the `workflowType` query (or the switch the browser last
    used), not from the experiment's tag: the link names the view."""
    return (f"{tracked.url}/#/experiments/{tracked.exp_id}/runs"
            f"?workflowType=machine_learning&compareRunsMode={mode}")


def test_ui_opens_the_experiment_on_its_runs(tracked: TrackedRepo, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    """The experiment page shows the runs table (pipeline runs by name, their source), not
    MLflow's GenAI onboarding; the experiment carries the kind that asks for that view."""
    import requests

    experiment = requests.get(f"{tracked.url}/api/2.0/mlflow/experiments/get",
                              params={"experiment_id": tracked.exp_id}, timeout=30).json()
    kinds = {t["key"]: t["value"] for t in experiment["experiment"]["tags"]}
    assert kinds["mlflow.experimentKind"] == "custom_model_development"
    dom, png = rendered(runs_page(tracked), tmp_path, "runs")
    text = page_text(dom)
    assert "Run Name" in text and "Source" in text, text[:2000]
    assert tracked.parent_of_train()["info"]["run_name"] in text
    assert "dvc repro" in text  # the parent's Source
    for genai in ("Detect Issues", "Token Usage", "Evaluation runs", "GenAI apps"):
        assert genai not in text, genai
    with capsys.disabled():
        print(f"\nMLflow runs page screenshot: {png}")


def chart_cards(dom: str) -> dict[str, str]:
    """The chart view's cards by title (metric name) -> the card's HTML."""
    cards = {}
    for card in dom.split('data-testid="experiment-view-compare-runs-card"')[1:]:
        words = [w for w in re.sub(r"<[^>]+>", "\n", card[:5000]).split("\n")
                 if w.strip() and "=" not in w]
        if words:
            cards[words[0].strip()] = card
    return cards


def test_chart_view_overlays_every_runs_accuracy_curve(tracked: TrackedRepo, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]
                                                       ) -> None:
    """The runs page's chart view (compareRunsMode=CHART) draws prune_unit.l2.accuracy (the
    unit study's curve) as one line per pipeline run: a second run (global scope, by hand in a
    copy) adds a second line."""
    copy = tmp_path / "copy"
    shutil.copytree(tracked.repo, copy, symlinks=True)
    curve = "prune_unit.l2.accuracy"
    write_params(copy, {**SMALL_PARAMS, "prune": {**SMALL_PARAMS["prune"], "scope": "global"}})
    run([str(VENV_BIN / "python"), stage_script(copy, f"prune_unit@{SEED}"), "unit",
         str(SEED)], copy, env=env_for(copy, MLFLOW_TRACKING_URI=tracked.url), timeout=120)
    _, runs = rest_runs(tracked.url)
    pipelines = {r["info"]["run_name"] for r in runs
                 if rest_tags(r).get("prunelab_role") == "pipeline"
                 and any(m["key"] == curve for m in r["data"].get("metrics", []))}
    assert len(pipelines) == 2, pipelines
    # The view renders only the cards on screen, three to a row (at any width), in metric-name
    # order: the window is tall enough to reach this card, with a row to spare. Every card on
    # screen fetches its histories and draws: with the aggregate stage's every statistic on the
    # pipeline's run, the study's cards sat behind ~120 others (a 1600x19,050 window a loaded
    # machine did not finish in two minutes); the pipeline's run now holds headlines and
    # curves. 15 s of virtual time sometimes ended before any card was drawn.
    keys = sorted({m["key"] for r in runs if rest_tags(r).get("prunelab_role") == "pipeline"
                   for m in r["data"].get("metrics", [])})
    assert keys.index(curve) < 45, keys[: keys.index(curve)]  # the study's card near the top
    height = 600 + 450 * (keys.index(curve) // 3 + 2)
    dom, png = rendered(runs_page(tracked, "CHART"), tmp_path, "chart", size=f"1600,{height}",
                        budget_ms=40000, timeout=240)
    card = chart_cards(dom).get(curve)
    assert card is not None, sorted(chart_cards(dom))
    for name in pipelines:
        assert f"{name} ({curve})" in card, name
    # one opaque line per run (MLflow draws a faint unsmoothed copy behind each). Not two
    # colours: MLflow picks a run's colour from its id, and two ids can land on the same one.
    lines = re.findall(r'class="js-line" d="(M[^"]+)" style="[^"]*stroke: rgb\([^)]*\); '
                       r'stroke-opacity: 1;', card)
    assert len(lines) == 2 and lines[0] != lines[1], lines
    with capsys.disabled():
        print(f"\nMLflow chart view screenshot: {png}")


def test_compare_page_renders_both_runs(tracked: TrackedRepo, tmp_path: Path) -> None:
    """The UI's compare-runs page, rendered by headless Chromium, shows both runs."""
    names = (f"prune_weight@{SEED}", f"prune_unit@{SEED}")
    runs = [tracked.stage_run(s)["info"] for s in names]
    ids = [r["run_id"] for r in runs]
    # MLflow 3's hash route: #/compare-runs?runs=[...]&experiments=[...] (JSON lists)
    query = (f"runs={quote(json.dumps(ids, separators=(',', ':')))}"
             f"&experiments={quote(json.dumps([tracked.exp_id], separators=(',', ':')))}")
    dom, _ = rendered(f"{tracked.url}/#/compare-runs?{query}", tmp_path, "compare",
                      size="1400,1000")
    for run_id in ids:
        assert run_id in dom, f"{run_id} not in the rendered compare page"
    for name in names:
        assert name in dom
    assert "Comparing 2 Runs" in dom


# --- PostgreSQL behind the server ----------------------------------------------------------------


def test_postgres_backed_server_receives_the_pipeline(backend: Backend,
                                                      tracked: TrackedRepo) -> None:
    """PostgreSQL -> mlflow server -> the pipeline: the runs are rows of the database, the
    artifacts are files under the server's artifact root."""
    if backend.libpq_uri is None:
        pytest.skip(f"the server ran on SQLite: {postgres_missing()}")
    assert_pipeline_arrived(tracked)
    driver = __import__(pg_driver())  # type: ignore[arg-type]
    with contextlib.closing(driver.connect(backend.libpq_uri)) as conn, conn.cursor() as cur:
        cur.execute("SELECT name, status FROM runs")
        rows = cur.fetchall()
    stages = pipeline_stages(tracked.repo) - UNTRACKED
    assert {name for name, _ in rows} >= stages | {tracked.parent_of_train()["info"]["run_name"]}
    assert {status for _, status in rows} == {"FINISHED"}
    assert len(rows) == len(rest_runs(tracked.url)[1])  # other tests may have added runs
    assert any(backend.artifact_root.rglob("prune_weight.csv"))
