"""Pipeline-level benchmarks of the replicated study (issue 12): `python bench/pipeline.py`.

Each figure runs real `dvc` commands in a throwaway git + DVC copy of the project with its own
DVC cache (so no run-cache entry of an earlier run can stand in for a computation), MNIST
already in place, MLflow tracking on as for a user:

* `study`: a replicated study of the default params on N seeds from cached data -- every
  seed's train and both prune stages, the aggregate, and the report (target <= 3 min for 5);
* `report`: the report stage alone, median of several runs (target <= 10 s);
* `default`: the default `dvc repro` (one seed, every stage) from cached data;
* `queue`: two experiments run one after the other (`dvc exp run --temp`, twice) against two
  others of the same size run by `dvc queue start -j 2` (target: parallel <= 0.9x sequential).

A study takes minutes, so each figure is one run unless --repeats says otherwise (medians
then). Results: bench/results/pipeline.json; `--readme README.md` writes the
`pipeline-bench` block, in whichever of README.md and docs/*.md holds it (docs/bench.md).
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import click
import yaml

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
OWN = RESULTS / "pipeline_own_processes.json"  # the baseline: --own-processes
sys.path.insert(0, str(ROOT / "src"))
from prunelab import paths  # noqa: E402
from prunelab.reporting.tables import fill_blocks  # noqa: E402
from prunelab.runtime.machine import describe  # noqa: E402

STUDY_TARGET_S = 180.0  # 5 seeds: train + both prune stages + aggregate + report
REPORT_TARGET_S = 10.0
DEFAULT_TARGET_S = 60.0  # the default `dvc repro` from cached data (issue: the hardware's pace)
QUEUE_TARGET_RATIO = 0.9  # two experiments under `dvc queue start -j 2` vs one after another
QUEUE_TARGET = "aggregate"  # what each of those experiments reproduces


def log(msg: str) -> None:
    click.echo(f"bench: {msg}", err=True)


def workspace(tmp: Path, params: dict[str, Any]) -> tuple[Path, dict[str, str]]:
    """A git + DVC copy of the project (code, pipeline, params) with its own cache, MNIST
    recorded as the download stage's output, and one commit (experiments need a baseline)."""
    repo = tmp / "repo"
    repo.mkdir()
    for name in ("dvc.yaml", "stages", "src"):
        src = ROOT / name
        ignore = shutil.ignore_patterns("__pycache__", "dvc.lock", "node_modules")
        shutil.copytree(src, repo / name, ignore=ignore) if src.is_dir() else \
            shutil.copy(src, repo / name)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    # its own stage server (stages/_launch.py), started by its first stage: nothing reused
    (tmp / "launcher").mkdir(mode=0o700)
    env = {**os.environ, "PYTHONPATH": str(repo / "src"), "DVC_NO_ANALYTICS": "1",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "PRUNELAB_LAUNCHER_DIR": str(tmp / "launcher")}
    for name in ("DVC_ROOT", "OMP_NUM_THREADS", "PRUNELAB_JOBS", "PRUNELAB_TRACKING",
                 "MLFLOW_TRACKING_URI"):  # PRUNELAB_LAUNCHER=0 is kept: a baseline run
        env.pop(name, None)

    def run(*cmd: str) -> None:
        subprocess.run(cmd, cwd=repo, env=env, check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)

    run("git", "init", "-q")
    run("git", "config", "user.email", "bench@prunelab")
    run("git", "config", "user.name", "bench")
    run("dvc", "init", "-q")
    run("dvc", "config", "core.analytics", "false")
    shutil.copytree(ROOT / ".dvc" / "plots", repo / ".dvc" / "plots",  # the plot templates
                    ignore=shutil.ignore_patterns("node_modules"))
    shutil.copytree(ROOT / paths.DATA_DIR, repo / paths.DATA_DIR)
    run("dvc", "repro", "-q", "validate")
    run("dvc", "commit", "-q", "-f", "download")  # the verified files, as if just downloaded
    (repo / ".gitignore").write_text("mlflow.db*\nmlartifacts/\n")
    run("git", "add", "-A")
    run("git", "commit", "-q", "-m", "baseline")
    stop_server(repo, env)  # the timed runs include the server's start
    return repo, env


def stop_server(repo: Path, env: dict[str, str]) -> None:
    """Stop the workspace's stage server (it would otherwise idle 10 minutes)."""
    subprocess.run([sys.executable, "stages/_launch.py", "stop", "--all"], cwd=repo, env=env,
                   capture_output=True, check=False)


def timed(cmd: Sequence[str], repo: Path, env: dict[str, str]) -> float:
    """Wall seconds of one command (which must succeed)."""
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise click.ClickException(f"{' '.join(cmd)} failed:\n{done.stdout[-2000:]}"
                                   f"{done.stderr[-2000:]}")
    return seconds


def with_seeds(params: dict[str, Any], seeds: Sequence[int]) -> dict[str, Any]:
    return {**params, "train": {**params["train"], "seeds": list(seeds)}}


def arithmetic_floor(params: dict[str, Any]) -> dict[str, Any]:
    """What one seed's train and weight-sweep arithmetic alone costs on this machine, without
    a process, a file or a criterion's own work: the training's matrix multiplies and fused
    Adam steps (`bench/run.py`'s GEMM floor, times the recipe's steps) plus one dense pass over
    the test set per weight criterion and sparsity, the unpruned net once for them all (the
    sweep tests every pruned net on every test image, as a dense matrix). Unit sweeps test
    compacted nets and are left out, so this is a lower bound for a seed of the study."""
    sys.path.insert(0, str(ROOT / "bench"))
    import torch
    from run import gemm_step_floor, median_time  # noqa: PLC0415 (bench/run.py, beside)

    from prunelab.models.layers import mlp_layers
    from prunelab.models.networks import accuracy, layer_sizes

    data, train, prune = params["data"], params["train"], params["prune"]
    hidden, batch = tuple(params["model"]["mlp"]["hidden"]), train["batch_size"]
    steps = train["epochs"] * -(-int(data.get("train_size") or 60000) // batch)
    step = gemm_step_floor(hidden, batch)
    sizes = layer_sizes(hidden)
    net = mlp_layers([torch.randn(o, i) * 0.05 for i, o in zip(sizes, sizes[1:])])
    n_test = int(data.get("test_size") or 10000)
    x, y = torch.rand(n_test, sizes[0]), torch.randint(0, sizes[-1], (n_test,))
    test_pass = median_time(lambda: accuracy(net, x, y), 5, warmup=1)
    # every weight criterion at every sparsity, but the dense net (k = 0) once for them all
    grid, n_criteria = prune["sparsities"], len(prune["weight_criteria"])
    passes = n_criteria * len(grid) - (n_criteria - 1 if 0.0 in grid else 0)
    return {"train_steps": steps, "train_floor_seconds": round(step * steps, 3),
            "test_pass_seconds": round(test_pass, 4), "weight_test_passes": passes,
            "per_seed_seconds": round(step * steps + passes * test_pass, 3)}


def bench_study(params: dict[str, Any], seeds: int, report_repeats: int) -> dict[str, Any]:
    """N seeds from cached data: `dvc repro aggregate` (every seed's train and prune stages,
    then the aggregate), the single-net stages untimed, then `dvc repro report`; and the
    report stage alone, repeated."""
    with tempfile.TemporaryDirectory(prefix="prunelab-bench-") as tmp:
        repo, env = workspace(Path(tmp), with_seeds(params, range(seeds)))
        log(f"{seeds}-seed study: train, prune_weight, prune_unit per seed, aggregate")
        seeds_s = timed(["dvc", "repro", "-q", "aggregate"], repo, env)
        timed(["dvc", "repro", "-q", "plot", "sensitivity", "speed"], repo, env)  # untimed
        report_s = timed(["dvc", "repro", "-q", "report"], repo, env)
        log("the report stage alone")
        alone = [timed([sys.executable, "stages/report.py"], repo, env)
                 for _ in range(report_repeats)]
        stop_server(repo, env)
    total = seeds_s + report_s
    log("the arithmetic floor of one seed")
    return {"seeds": seeds, "floor": arithmetic_floor(params),
            "seeds_and_aggregate_seconds": round(seeds_s, 1),
            "report_in_repro_seconds": round(report_s, 1), "total_seconds": round(total, 1),
            "per_seed_seconds": round(seeds_s / seeds, 1),
            "report_stage_seconds": round(statistics.median(alone), 2),
            "report_repeats": report_repeats}


def bench_default(params: dict[str, Any]) -> dict[str, Any]:
    """The default `dvc repro` (one seed, every stage) from cached data, and a no-op rerun."""
    with tempfile.TemporaryDirectory(prefix="prunelab-bench-") as tmp:
        repo, env = workspace(Path(tmp), params)
        log("the default dvc repro (one seed, every stage)")
        full = timed(["dvc", "repro", "-q"], repo, env)
        noop = timed(["dvc", "repro", "-q"], repo, env)
        stop_server(repo, env)
    log("the arithmetic floor of one seed")
    return {"seeds": len(params["train"]["seeds"]), "repro_seconds": round(full, 1),
            "noop_seconds": round(noop, 2), "floor": arithmetic_floor(params)}


def wait_for_queue(repo: Path, env: dict[str, str], timeout: float = 3600) -> None:
    """Until `dvc queue status` shows nothing queued or running; a failed task is an error."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = subprocess.run(["dvc", "queue", "status"], cwd=repo, env=env,
                             capture_output=True, text=True).stdout
        if "Failed" in out:
            raise click.ClickException(f"a queued experiment failed:\n{out}")
        if not any(word in out for word in ("Queued", "Running")):
            return
        time.sleep(1)
    raise click.ClickException("the queue did not finish in time")


def bench_queue(params: dict[str, Any]) -> dict[str, Any]:
    """Two experiments one after the other, then two more of the same size (other seeds, so
    nothing is reused) queued and run by `dvc queue start -j 2`; total wall time of each
    pair. Each experiment is one seed's study up to the aggregate (train, both prune stages,
    aggregate): the speed stage times inference, which two jobs at once would distort."""
    with tempfile.TemporaryDirectory(prefix="prunelab-bench-") as tmp:
        repo, env = workspace(Path(tmp), params)
        log("two experiments one after the other (dvc exp run --temp)")
        sequential = sum(timed(["dvc", "exp", "run", "--temp", "-q", "-S",
                                f"train.seeds=[{seed}]", QUEUE_TARGET], repo, env)
                         for seed in (11, 12))
        log("two experiments at once (dvc queue start -j 2)")
        for seed in (13, 14):
            timed(["dvc", "exp", "run", "--queue", "-q", "-S", f"train.seeds=[{seed}]",
                   QUEUE_TARGET], repo, env)
        start = time.perf_counter()
        timed(["dvc", "queue", "start", "-j", "2"], repo, env)
        wait_for_queue(repo, env)
        parallel = time.perf_counter() - start
        subprocess.run(["dvc", "queue", "stop"], cwd=repo, env=env, capture_output=True)
        stop_server(repo, env)
        threads = thread_counts(repo, ("[13]", "[14]"))
    return {"sequential_seconds": round(sequential, 1), "parallel_seconds": round(parallel, 1),
            "ratio": round(parallel / sequential, 3), "threads_in_queue": threads}


def thread_counts(repo: Path, seeds: Sequence[str]) -> list[str]:
    """The `machine.threads` tags of the stage runs of the experiments whose train.seeds is
    one of ``seeds`` (the queued ones), from the copy's MLflow store."""
    db = repo / "mlflow.db"
    if not db.exists():
        return []
    import sqlite3

    marks = ",".join("?" * len(seeds))
    with sqlite3.connect(db) as con:
        rows = con.execute(
            "SELECT DISTINCT t.value FROM tags t JOIN params p ON p.run_uuid = t.run_uuid "
            f"WHERE t.key = 'machine.threads' AND p.key = 'train.seeds' AND p.value IN ({marks})",
            tuple(seeds))
        return sorted(str(r[0]) for r in rows)


def markdown(r: dict[str, Any], own: dict[str, Any] | None = None) -> str:
    """The pipeline-bench table; ``own``: the same figures with every stage in its own process
    (--own-processes), shown beside the study and the default repro."""
    m = r["machine"]
    lines = [f"Measured {m['date']} on {m['cores']} cores "
             f"({m['cpu']}, {m.get('simd', 'SIMD unknown')}), "
             "`python bench/pipeline.py`, MLflow tracking on, each in a fresh copy with its "
             "own DVC cache and its own stage server, started by the first stage (nothing "
             "reused).", "",
             "| figure | measured | target |", "|---|---|---|"]

    def when(figure: dict[str, Any]) -> str:  # a figure kept from an earlier --only run
        return measured(figure.get("machine"), m)

    s = r.get("study")
    if s:
        lines.append(f"| {s['seeds']}-seed study from cached data (every seed's train and "
                     f"prune stages, aggregate, report) | {s['total_seconds']:.0f} s "
                     f"({s['per_seed_seconds']:.0f} s per seed){when(s)} | "
                     f"≤ {STUDY_TARGET_S:.0f} s: "
                     f"{_met(s['total_seconds'] <= STUDY_TARGET_S)} |")
        lines += own_row(own, "study", "total_seconds", m)
        lines += floor_row(s, STUDY_TARGET_S, when(s), "leaves {left:.0f} s for everything else")
        lines.append(f"| the report stage alone (median of {s['report_repeats']}) | "
                     f"{s['report_stage_seconds']:.1f} s{when(s)} | ≤ {REPORT_TARGET_S:.0f} s: "
                     f"{_met(s['report_stage_seconds'] <= REPORT_TARGET_S)} |")
    d = r.get("default")
    if d:
        lines.append(f"| the default `dvc repro` from cached data ({d['seeds']} seed, every "
                     f"stage), then a no-op rerun | {d['repro_seconds']:.0f} s, "
                     f"{d['noop_seconds']:.1f} s{when(d)} | ≤ {DEFAULT_TARGET_S:.0f} s: "
                     f"{_met(d['repro_seconds'] <= DEFAULT_TARGET_S)} |")
        lines += own_row(own, "default", "repro_seconds", m)
        lines += floor_row(d, DEFAULT_TARGET_S, when(d),
                           "the sensitivity sweeps and the speed stage's timings come on top")
    q = r.get("queue")
    if q:
        lines.append(f"| two one-seed experiments (train, prune, aggregate), `dvc queue start "
                     f"-j 2` against one after the other | {q['parallel_seconds']:.0f} s against "
                     f"{q['sequential_seconds']:.0f} s = {q['ratio']:.2f}x{when(q)} | ≤ "
                     f"{QUEUE_TARGET_RATIO}x: {_met(q['ratio'] <= QUEUE_TARGET_RATIO)} |")
    return "\n".join(lines)


def own_row(own: dict[str, Any] | None, name: str, key: str,
            table: dict[str, Any]) -> list[str]:
    """The row of the same figure with every stage in its own process, if measured."""
    if not own or name not in own:
        return []
    figure = own[name]
    return [f"| the same, every stage in its own process (`--own-processes`: "
            f"`PRUNELAB_LAUNCHER=0`) | {figure[key]:.0f} s"
            f"{measured(figure.get('machine', own['machine']), table)} | |"]


def measured(machine: dict[str, Any] | None, table: dict[str, Any]) -> str:
    """' (measured <date>, <SIMD>)' for a figure from another run than the table's (``table``:
    its machine), the SIMD level only where it differs; '' for the table's own run."""
    if not machine or machine.get("date") == table["date"]:
        return ""
    simd = machine.get("simd") or "SIMD unknown"
    return f" (measured {machine['date']}{f', {simd}' if simd != table.get('simd') else ''})"


def floor_row(figure: dict[str, Any], target: float, when: str, rest: str) -> list[str]:
    """The table row of a figure's arithmetic floor (none when it was not measured); ``rest``
    fills the target column, ``{left}`` being the seconds the floor leaves of the target."""
    f = figure.get("floor")
    if not f:
        return []
    floor = figure["seeds"] * f["per_seed_seconds"]
    return [f"| its arithmetic floor: {figure['seeds']} × (the training's GEMMs and Adam steps, "
            f"{f['train_steps']} steps: {f['train_floor_seconds']:.1f} s, + "
            f"{f['weight_test_passes']} dense test passes of the weight sweeps × "
            f"{f['test_pass_seconds']:.2f} s) | {floor:.0f} s = {floor / target:.0%} of the "
            f"target{when} | {rest.format(left=target - floor)} |"]


def _met(ok: bool) -> str:
    return "met" if ok else "**missed**"


@click.command(help=__doc__)
@click.option("--only", type=click.Choice(("study", "default", "queue")), multiple=True,
              help="Run only these figures (the report stage is timed with the study).")
@click.option("--seeds", default=5, show_default=True, help="Seeds of the replicated study.")
@click.option("--report-repeats", default=5, show_default=True)
@click.option("--readme", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Also write the table into the pipeline-bench block of this README or of "
                   "the docs/*.md page beside it that holds it.")
@click.option("--render", is_flag=True,
              help="Run nothing: the table of the saved bench/results/pipeline.json.")
@click.option("--own-processes", is_flag=True,
              help="The baseline: every stage in its own process (PRUNELAB_LAUNCHER=0), into "
                   f"bench/results/{OWN.name}; the table shows it beside the default run.")
def main(only: tuple[str, ...], seeds: int, report_repeats: int, readme: Path | None,
         render: bool, own_processes: bool) -> None:
    if render:
        _publish(json.loads((RESULTS / "pipeline.json").read_text()), readme)
        return
    if own_processes:
        os.environ["PRUNELAB_LAUNCHER"] = "0"
    if not (ROOT / paths.DATA_DIR).is_dir():
        raise click.ClickException(f"{paths.DATA_DIR} missing: run `dvc repro download` first")
    params = yaml.safe_load((ROOT / paths.PARAMS).read_text())
    wanted = set(only or ("study", "default", "queue"))
    machine = {"date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
               **describe().as_dict()}
    # --only keeps the other figures of the last run, each with the machine and date it ran on
    saved = OWN if own_processes else RESULTS / "pipeline.json"
    results: dict[str, Any] = json.loads(saved.read_text()) if only and saved.is_file() else {}
    for name in ("study", "default", "queue"):
        if name in results and name not in wanted:
            results[name].setdefault("machine", results.get("machine"))
    results["machine"] = machine
    results["launcher"] = os.environ.get("PRUNELAB_LAUNCHER", "1") != "0"
    if "study" in wanted:
        results["study"] = bench_study(params, seeds, report_repeats)
    if "default" in wanted:
        results["default"] = bench_default(params)
    if "queue" in wanted:
        results["queue"] = bench_queue(params)
    RESULTS.mkdir(parents=True, exist_ok=True)
    saved.write_text(json.dumps(results, indent=2) + "\n")
    _publish(json.loads((RESULTS / "pipeline.json").read_text()), readme)


def _publish(results: dict[str, Any], readme: Path | None) -> None:
    own = json.loads(OWN.read_text()) if OWN.is_file() else None
    table = markdown(results, own)
    click.echo(table)
    if readme is not None:
        for page, text in fill_blocks(readme, {"pipeline-bench": table}).items():
            page.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
