"""The retraining pipeline (stages/retrain/dvc.yaml) end to end, in temporary git + DVC repos.

One module repository: the project with tiny params (1,500 training images, one epoch of 15
steps, a 784-32-16-10 MLP, 3 sparsities, 3 IMP rounds), MNIST committed as the `download`
stage's output (no network), then the default `dvc repro` and `dvc repro
stages/retrain/dvc.yaml`, committed. Each test that changes anything works on its own copy.
Tracking is off except in the MLflow test.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from reliability_helpers import (
    DVC,
    MAIN,
    dvc,
    env_for,
    error_lines,
    git,
    make_repo,
    wait_until,
    write_params,
)
from repo_helpers import mlflow_runs, sqlite_uri

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

PIPELINE = "stages/retrain/dvc.yaml"
RETRAIN_STAGES = {"finetune_weight", "finetune_unit", "finetune_plot", "imp", "atinit@0",
                  "atinit@2",
                  "atinit_compare", "during", "during_compare", "l0", "mnist1d", "archs"}
GRID = [0.0, 0.5, 0.9]
STEPS = 15  # 1,500 images in batches of 100, one epoch
PARAMS: dict[str, Any] = {
    "data": {"train_size": 1500, "test_size": 300},
    "model": {"arch": "mlp", "mlp": {"hidden": [32, 16]},
              "lenet5": {"channels": [6, 16], "fc": [120, 84]},
              "resnet": {"widths": [16, 32, 64], "blocks": 1}, "lstm": {"hidden": 128}},
    "train": {"epochs": 1, "lr": 0.001, "batch_size": 100, "seeds": [0], "device": "cpu"},
    "prune": {"sparsities": GRID, "scope": "layer", "weight_criteria": ["magnitude"],
              "unit_criteria": ["l2"], "calibration_size": 256},
    "finetune": {"epochs": 1, "lr": None, "weight_criteria": ["magnitude", "random"],
                 "unit_criteria": ["l2", "random"]},
    "imp": {"rounds": 3, "rate": 0.2, "output_rate": 0.1, "rewind": "init",
            "controls": ["reinit", "random_mask"], "eval_every": 5},
    # atinit's seed 2 is not a seed of train: the study draws the init, needs no trained net
    "atinit": {"seeds": [0, 2], "methods": ["random", "snip"], "rounds": [1, 2],
               "control_rounds": [2],
               "controls": ["shuffled"], "batches": 2, "eval_every": 5,
               "supermask_inits": ["signed_constant"], "supermask_keep": [0.5],
               "supermask_epochs": 1, "supermask_lr": 0.001},
    "during": {"method_seeds": [0], "schedule_seeds": [0, 1], "shapes": ["decreasing", "constant"],
               "final_sparsity": 0.9, "sparsities": [0.9], "start": 0.1, "end": 0.7, "every": 2,
               "dst_methods": ["rigl", "static"], "dst_sparsities": [0.9], "drop_fraction": 0.3,
               "earlybird": True, "earlybird_sparsity": 0.9, "earlybird_every": 1,
               "earlybird_threshold": 0.5, "earlybird_window": 2, "noise": [0.3],
               "delete": [0.3], "eval_every": 5},
    "l0": {"lambdas": [1.0]},
    "archs": {"archs": ["mlp", "lstm"], "datasets": ["mnist1d"], "seeds": [0, 1],
              "mnist_epochs": 1,
              "mnist1d_epochs": 1, "resnet_mnist_epochs": 1,
              "resnet_shift": 2, "resnet_widths": [4, 8, 8], "resnet_blocks": 1,
              "lstm_hidden": 8, "resnet_lr": 0.003, "lstm_lr": 0.003, "schedule": "onecycle",
              "compact_sparsity": 0.5,
              "weight_criteria": ["magnitude", "random", "wanda", "obd"],
              "unit_criteria": ["l2", "random", "activation"]},
}
RETRAIN_OUTPUTS = ("plots/finetune_weight.csv", "plots/finetune_unit.csv", "plots/finetune.png",
                   "plots/imp.csv", "metrics/imp.json", "metrics/imp_timing.json",
                   "plots/lottery_ticket.png", "metrics/finetune_weight.json",
                   "metrics/finetune_unit.json", "plots/during_arms.csv", "plots/during.csv",
                   "metrics/during.json", "plots/during.png", "plots/l0.csv", "metrics/l0.json",
                   "plots/archs.csv", "plots/archs_table.csv", "metrics/archs.json",
                   "plots/archs.png", "plots/atinit/0.csv", "plots/atinit/2.csv",
                   "plots/atinit.csv", "metrics/atinit.json")
ROUNDS = [f"round_{i:02d}.pt" for i in range(4)]


@dataclass(frozen=True)
class Built:
    root: Path
    env: dict[str, str]  # tracking off
    default_out: str  # what the default `dvc repro` printed
    retrain_out: str  # what `dvc repro stages/retrain/dvc.yaml` printed


def ran(output: str) -> set[str]:
    """Stage names `dvc repro` says it ran (without the pipeline file's prefix)."""
    return {name.rsplit(":", 1)[-1] for name in re.findall(r"Running stage '([^']+)'", output)}


def both(done: subprocess.CompletedProcess[str]) -> str:
    return done.stdout + done.stderr


def copy_repo(src: Path, dest: Path) -> Path:
    """An independent copy; the DVC cache's (read-only) objects are hard links."""
    def link_cache(a: str, b: str) -> None:
        if f"{os.sep}.dvc{os.sep}cache{os.sep}" in a:
            os.link(a, b)
        else:
            shutil.copy2(a, b)

    shutil.copytree(src, dest, symlinks=True, copy_function=link_cache)
    return dest


def set_params(root: Path, **changes: Any) -> None:
    """Change values of params.yaml: set_params(root, **{"imp.rounds": 4})."""
    doc = yaml.safe_load((root / "params.yaml").read_text(encoding="utf-8"))
    for dotted, value in changes.items():
        section, key = dotted.split(".")
        doc[section][key] = value
    write_params(root, doc)


def read_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def md5s(root: Path, rels: tuple[str, ...] | list[str]) -> dict[str, str]:
    return {rel: hashlib.md5((root / rel).read_bytes(), usedforsecurity=False).hexdigest()
            for rel in rels}


def round_files(root: Path) -> dict[str, tuple[str, int, int]]:
    """models/imp/*: name -> (sha256, mtime_ns, inode)."""
    folder = root / "models" / "imp"
    if not folder.is_dir():
        return {}
    out = {}
    for p in sorted(folder.iterdir()):
        st = p.stat()
        out[p.name] = (hashlib.sha256(p.read_bytes()).hexdigest(), st.st_mtime_ns, st.st_ino)
    return out


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, mnist_dir: Path) -> Built:
    root = tmp_path_factory.mktemp("retrain") / "repo"
    make_repo(root, mnist_dir, PARAMS)  # own cache; MNIST committed as `download`'s output
    shutil.copytree(MAIN / ".dvc" / "plots", root / ".dvc" / "plots", dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns("node_modules"))  # the plot templates
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "plot templates")
    env = env_for(root, PRUNELAB_TRACKING="off")
    default_out = both(dvc(root, "repro", env=env, timeout=800))
    for rel in RETRAIN_OUTPUTS:  # checked here, before the retraining pipeline writes them
        assert not (root / rel).exists(), (rel, default_out)
    assert not (root / "models" / "imp").exists()
    retrain_out = both(dvc(root, "repro", PIPELINE, env=env, timeout=800))
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "retraining results")
    return Built(root, env, default_out, retrain_out)


# --- 1. the pipeline runs, and only on request ------------------------------------------------


def test_default_repro_leaves_the_retraining_stages_alone(built: Built) -> None:
    """`dvc repro` runs the study's pipeline only (no retraining output appeared, checked in
    the fixture); after the retraining run, the default pipeline is up to date and stays so."""
    assert ran(built.default_out) == {"validate", "train@0", "prune_weight@0", "prune_unit@0",
                                      "aggregate", "plot", "sensitivity", "speed",
                                      "report"}, built.default_out
    again = both(dvc(built.root, "repro", env=built.env))
    assert "Running stage" not in again, again
    status = both(dvc(built.root, "status", PIPELINE, env=built.env))
    assert "up to date" in status, status


def test_retrain_pipeline_writes_every_output(built: Built) -> None:
    root = built.root
    assert ran(built.retrain_out) == RETRAIN_STAGES, built.retrain_out  # upstream up to date
    for rel in RETRAIN_OUTPUTS:
        assert (root / rel).is_file(), rel
    for png in ("plots/finetune.png", "plots/lottery_ticket.png"):
        assert (root / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png
    assert sorted(p.name for p in (root / "models" / "imp").iterdir()) == ROUNDS

    criteria = {"weight": ["magnitude", "random"], "unit": ["l2", "random"]}
    for method, names in criteria.items():
        rows = read_rows(root / f"plots/finetune_{method}.csv")
        assert len(rows) == len(names) * len(GRID) * 2
        assert {(r["method"], r["scope"]) for r in rows} == {(method, "layer")}
        assert list(dict.fromkeys(r["criterion"] for r in rows)) == names
        for name in names:
            for training in ("one-shot", "fine-tuned"):
                mine = [r for r in rows if r["criterion"] == name and r["training"] == training]
                assert [float(r["sparsity"]) for r in mine] == GRID, (method, name, training)
                assert all(0 <= float(r["accuracy"]) <= 100 for r in mine)
        summary = json.loads((root / f"metrics/finetune_{method}.json").read_text())
        assert {"dense_accuracy", *names} <= set(summary)
        for name in names:
            assert summary[name]["one-shot.max_sparsity_within_1pt"] in (*GRID, None)

    rows = read_rows(root / "plots/imp.csv")
    assert [(r["round"], r["variant"]) for r in rows] == [("0", "ticket")] + [
        (str(r), v) for r in (1, 2, 3) for v in ("ticket", "reinit", "random_mask")]
    remaining = [float(r["weights_remaining"]) for r in rows if r["variant"] == "ticket"]
    assert remaining[0] == 100.0 and remaining == sorted(remaining, reverse=True)
    assert len(set(remaining)) == 4
    assert all(1 <= int(r["best_step"]) <= STEPS for r in rows)
    metrics = json.loads((root / "metrics/imp.json").read_text())
    assert metrics["dense_accuracy"] == float(rows[0]["accuracy"])
    assert set(metrics["rounds"]) == {"1", "2", "3"}
    for r in rows[1:]:
        assert metrics["rounds"][r["round"]][r["variant"]] == float(r["accuracy"])
    assert "imp: 3 rounds (3 run now)" in built.retrain_out
    # the studies start from the first seed's net (train.seeds [0]: models/seeds/0/)
    lock = yaml.safe_load((root / "stages" / "retrain" / "dvc.lock").read_text(encoding="utf-8"))
    deps = {name: {d["path"] for d in stage["deps"]} for name, stage in lock["stages"].items()}
    for name in ("finetune_weight", "finetune_unit"):
        assert "models/seeds/0/model.pt" in deps[name], deps[name]
    assert "models/seeds/0/init.pt" in deps["imp"], deps["imp"]


def test_the_during_study_trains_every_arm_and_compares_them(built: Built) -> None:
    """Every arm of both seeds is a row; the comparison has the schedule's verdicts, the
    early-bird tickets and the costs; the figure's PNG is written; the stage said each arm."""
    root = built.root
    rows = read_rows(root / "plots/during_arms.csv")
    got = {(r["seed"], r["arm"]) for r in rows}
    assert got >= {("0", "dense/earlybird"), ("0", "earlybird/late@0.9"),
                   ("0", "gradual/decreasing@0.9"), ("0", "oneshot@0.9"), ("0", "rigl@0.9"),
                   ("0", "static@0.9"), ("0", "gradual/constant@0.9"),
                   ("1", "gradual/decreasing@0.9"), ("1", "gradual/constant@0.9")}, got
    assert len(got) == len(rows)
    for r in rows:
        assert 0 <= float(r["accuracy"]) <= 100 and 0 <= float(r["delete_0.3"]) <= 100
        left = float(r["weights_remaining"])
        assert left == 100.0 if r["arm"] == "dense/earlybird" else 8 < left < 13, r
    metrics = json.loads((root / "metrics/during.json").read_text())
    assert {v["measure"] for v in metrics["schedule"]} == {"accuracy", "noise_0.3",
                                                          "delete_0.3"}
    assert all(v["seeds"] == 2 and v["against"] == "constant" for v in metrics["schedule"])
    assert metrics["earlybird"]["0"]["late_accuracy"] is not None
    assert (root / "plots/during.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    section = (root / "reports/sections/during.md").read_text()
    assert "## Pruning while training" in section and "| accuracy | constant |" in section
    assert "during: seed 1 gradual/constant@0.9:" in built.retrain_out
    (gated,) = read_rows(root / "plots/l0.csv")
    widths = [int(w) for w in gated["widths"].split("-")]
    assert len(widths) == 2 and all(0 <= w <= n for w, n in zip(widths, (32, 16), strict=True))
    assert 0 <= float(gated["l2_refit_accuracy"]) <= 100 and float(gated["speedup_b100"]) > 0
    assert "| 1 |" in (root / "reports/sections/l0.md").read_text()
    table = read_rows(root / "plots/archs_table.csv")
    assert [(r["arch"], r["seed"]) for r in table] == [("mlp", "0"), ("mlp", "1"), ("lstm", "0"),
                                                       ("lstm", "1")]
    for r in table:  # the LSTM's hidden group compacted to half its units, all four gates
        assert 0 <= float(r["compact_accuracy"]) <= 100 and float(r["speedup_b100"]) > 0
    assert next(r for r in table if r["arch"] == "lstm")["compact_widths"] == "4"
    curve = read_rows(root / "plots/archs.csv")
    assert len(curve) == 2 * 2 * 14 * len(GRID)  # archs x seeds x (7 criteria x 2 scopes)
    assert {r["scope"] for r in curve} == {"layer", "global"}
    assert {r["criterion"] for r in curve} == {"magnitude", "random", "wanda", "obd", "l2",
                                               "activation"}
    archs_md = (root / "reports/sections/archs.md").read_text()
    assert "| MNIST-1D | LSTM | 2 |" in archs_md and "| weight: wanda |" in archs_md


def test_second_retrain_repro_runs_nothing(built: Built) -> None:
    out = both(dvc(built.root, "repro", PIPELINE, env=built.env))
    assert "Running stage" not in out, out


# --- 2. resuming -------------------------------------------------------------------------------


def test_killed_imp_resumes_after_its_last_finished_round(built: Built, tmp_path: Path) -> None:
    """SIGTERM to `dvc repro` once round 2 is saved (20,000 images: a round takes about a
    second); the rerun keeps every round file that existed at the kill (same bytes, same file)
    and says where it resumes."""
    root = copy_repo(built.root, tmp_path / "repo")
    set_params(root, **{"data.train_size": 20000, "imp.rounds": 6})
    shutil.rmtree(root / "models" / "imp")  # the 3-round run's files: wait for new ones
    log = tmp_path / "killed.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([DVC, "repro", f"{PIPELINE}:imp"], cwd=root, env=built.env,
                                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
    try:
        wait_until(lambda: (root / "models/imp/round_02.pt").exists(), 600, "round 2", proc,
                   log, poll=0.05)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=120)
    wait_until(lambda: not _group_alive(proc.pid), 60, "the killed group to end")
    assert proc.returncode != 0, log.read_text()
    before = round_files(root)
    done = sorted(int(n[6:8]) for n in before)
    assert done == list(range(len(done))) and 3 <= len(done) < 7, (before, log.read_text())
    assert not [n for n in before if not re.fullmatch(r"round_\d\d\.pt", n)], before  # no tmp

    out = both(dvc(root, "repro", f"{PIPELINE}:imp", env=built.env, timeout=800))
    last = done[-1]
    assert f"imp: resuming after round {last} (rounds 0-{last} kept" in out, out
    assert "discarded" not in out, out
    assert f"imp: 6 rounds ({6 - last} run now)" in out, out
    after = round_files(root)
    assert sorted(after) == [f"round_{i:02d}.pt" for i in range(7)]
    for name, info in before.items():
        assert after[name] == info, name  # not rewritten: bytes, mtime and inode
    assert len(read_rows(root / "plots/imp.csv")) == 1 + 6 * 3


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def test_more_rounds_compute_only_the_new_ones(built: Built, tmp_path: Path) -> None:
    """`dvc exp run stages/retrain/dvc.yaml -S imp.rounds=4` after a 3-round run trains round 4
    only: rounds 0-3 are the committed files, unchanged; the finetune stages do not run."""
    root = copy_repo(built.root, tmp_path / "repo")
    before = round_files(root)
    out = both(dvc(root, "exp", "run", PIPELINE, "-S", "imp.rounds=4", env=built.env,
                   timeout=800))
    # validate: params.yaml changed; atinit_compare, during_compare: they read the IMP curve
    assert ran(out) == {"validate", "imp", "atinit_compare", "during_compare"}, out
    assert "imp: resuming after round 3 (rounds 0-3 kept" in out, out
    assert "imp: 4 rounds (1 run now)" in out, out
    after = round_files(root)
    assert sorted(after) == [*ROUNDS, "round_04.pt"]
    for name, (digest, _, _) in before.items():
        assert after[name][0] == digest, name
    rows = read_rows(root / "plots/imp.csv")
    assert [r["round"] for r in rows][-3:] == ["4", "4", "4"]
    # the rows of rounds 0-3 are the first run's
    assert rows[:10] == read_rows(built.root / "plots/imp.csv")


def test_fewer_rounds_keep_the_first_ones(built: Built, tmp_path: Path) -> None:
    """imp.rounds 3 -> 2: nothing is trained; round 3's file goes, the others stay."""
    root = copy_repo(built.root, tmp_path / "repo")
    before = round_files(root)
    set_params(root, **{"imp.rounds": 2})
    out = both(dvc(root, "repro", f"{PIPELINE}:imp", env=built.env, timeout=800))
    assert "resuming after round 2" in out, out
    after = round_files(root)
    assert sorted(after) == ROUNDS[:3]
    for name in ROUNDS[:3]:
        assert after[name][0] == before[name][0]
    assert len(read_rows(root / "plots/imp.csv")) == 1 + 2 * 3
    # the summary line counts the rounds run now: none were
    line = next(x for x in out.splitlines() if x.startswith("imp: 2 rounds"))
    assert "(0 run now)" in line, line


# --- 3. bad params ------------------------------------------------------------------------------


@pytest.mark.parametrize(("key", "value", "allowed"), [
    ("imp.rate", 1.5, "a number in (0, 1)"),
    ("imp.rewind", STEPS + 1, f"from 0 to {STEPS}"),
    ("imp.rounds", 0, "an integer from 1 to 100"),
    ("finetune.lr", -1, "(0, 10]"),
    ("during.end", 0.05, "a share of the training steps in (0.1, 1): after during.start"),
])
def test_bad_params_stop_the_retrain_pipeline_and_keep_its_outputs(
        built: Built, tmp_path: Path, key: str, value: Any, allowed: str) -> None:
    root = copy_repo(built.root, tmp_path / "repo")
    kept = [*RETRAIN_OUTPUTS, *(f"models/imp/{n}" for n in ROUNDS), "dvc.lock",
            "stages/retrain/dvc.lock", "data/params.checked"]
    before = md5s(root, kept)
    set_params(root, **{key: value})
    done = dvc(root, "repro", PIPELINE, env=built.env, check=False)
    assert done.returncode != 0
    lines = error_lines(done.stderr) + error_lines(done.stdout)
    assert len(lines) == 1, both(done)
    assert f"{key} = {value}" in lines[0] and allowed in lines[0], lines[0]
    assert "Traceback" not in both(done)
    assert ran(both(done)) == {"validate"}, both(done)
    assert md5s(root, kept) == before
    assert sorted(p.name for p in (root / "models" / "imp").iterdir()) == ROUNDS


# --- 4. MLflow ------------------------------------------------------------------------------------


def test_imp_logs_one_child_run_per_round(built: Built, tmp_path: Path) -> None:
    """Tracking on (the repository's SQLite store): the imp stage's run has one finished child
    per round, tagged with its round, holding the ticket's and the controls' accuracies (those
    of metrics/imp.json) and the weights remaining."""
    root = copy_repo(built.root, tmp_path / "repo")
    shutil.rmtree(root / "models" / "imp")  # every round computed now (none resumed)
    env = env_for(root)  # no PRUNELAB_TRACKING: on
    dvc(root, "repro", "--force", "-s", f"{PIPELINE}:imp", env=env, timeout=800)
    runs = mlflow_runs(sqlite_uri(root))
    stage = [r for r in runs if r.data.tags.get("prunelab_role") == "stage"
             and r.data.tags.get("stage") == "imp"]
    assert len(stage) == 1, [r.data.tags for r in runs]
    stage_id = stage[0].info.run_id
    assert stage[0].info.status == "FINISHED"
    parts = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == stage_id]
    assert all(r.data.tags.get("prunelab_role") == "part" for r in parts)
    by_round = {r.data.tags["imp_round"]: r for r in parts}
    assert sorted(by_round) == ["0", "1", "2", "3"] and len(parts) == 4
    metrics = json.loads((root / "metrics/imp.json").read_text())
    rows = read_rows(root / "plots/imp.csv")
    for index, child in by_round.items():
        m = child.data.metrics
        assert child.info.status == "FINISHED"
        assert child.info.run_name == f"round {index}"
        assert child.data.tags["resumed"] == "false"
        assert child.data.tags["stage"] == "imp"
        ticket = next(r for r in rows if r["round"] == index and r["variant"] == "ticket")
        assert m["ticket.accuracy"] == float(ticket["accuracy"])
        assert m["weights_remaining"] == pytest.approx(float(ticket["weights_remaining"]),
                                                       abs=1e-3)
        assert m["ticket.best_step"] == float(ticket["best_step"])
        if index == "0":
            assert m["ticket.accuracy"] == metrics["dense_accuracy"]
            assert m["weights_remaining"] == 100.0
            assert "reinit.accuracy" not in m
        else:
            for variant in ("ticket", "reinit", "random_mask"):
                assert m[f"{variant}.accuracy"] == metrics["rounds"][index][variant], variant
    import mlflow

    history = mlflow.MlflowClient(sqlite_uri(root)).get_metric_history(
        by_round["1"].info.run_id, "ticket.test_accuracy")
    assert sorted(h.step for h in history) == [5, 10, 15]


# --- 5. plots -----------------------------------------------------------------------------------


def test_dvc_plots_show_lists_the_retraining_plots(built: Built) -> None:
    done = dvc(built.root, "plots", "show", "--json", env=built.env)
    shown = json.loads(done.stdout)
    assert not shown.get("errors"), shown.get("errors")
    data = shown["data"]
    for name in ("finetune_vs_one_shot", "lottery_ticket", "early_stopping",
                 "plots/finetune.png", "plots/lottery_ticket.png", "during", "plots/during.png"):
        assert name in data, sorted(data)
    for name in ("finetune_vs_one_shot", "lottery_ticket"):
        (plot,) = data[name]
        assert plot["type"] == "vega" and plot["revisions"] == ["workspace"]
        content = json.dumps(plot["content"])
        assert "finetune" in content if name.startswith("finetune") else "imp.csv" in content
    lottery = json.dumps(data["lottery_ticket"][0]["content"])
    for variant in ("ticket", "reinit", "random_mask"):
        assert variant in lottery, variant
