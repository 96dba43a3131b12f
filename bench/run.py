"""The speed benchmark: `make bench` (or `python bench/run.py --quick` for a smoke run).

Every figure is a median over several runs, reported next to the floor or reference it is
compared with. Results go to bench/results/latest.json (and a dated copy) so that later runs
can be compared with earlier ones; a Markdown table is printed for the README.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import click
import numpy as np
import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import reference  # noqa: E402

from prunelab import paths  # noqa: E402
from prunelab.config import TrainConfig, load_params  # noqa: E402
from prunelab.data import load_split  # noqa: E402
from prunelab.machine import describe  # noqa: E402
from prunelab.model import MLP, layer_sizes, to_inputs, to_targets  # noqa: E402
from prunelab.prune import sweep  # noqa: E402
from prunelab.train import build_model, train  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
STUDY_GRID = (0.0, 0.25, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.97, 0.99)
CPU = torch.device("cpu")


def median_time(fn: Callable[[], Any], repeats: int, warmup: int = 0) -> float:
    """Median wall time of ``fn`` in seconds."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def gemm_step_floor(hidden: tuple[int, ...], batch: int, repeats: int = 50) -> float:
    """Seconds per training step spent in matrix multiplies alone (forward and backward)."""
    sizes = layer_sizes(hidden)
    ws = [torch.randn(o, i) for i, o in zip(sizes, sizes[1:])]
    xs = [torch.randn(batch, i) for i in sizes[:-1]]
    gs = [torch.randn(batch, o) for o in sizes[1:]]

    def step() -> None:
        for w, x, g in zip(ws, xs, gs, strict=True):
            x @ w.T  # forward
            g.T @ x  # weight gradient
        for w, g in zip(ws[1:], gs[1:], strict=True):
            g @ w  # input gradient (not needed for the first layer)

    return median_time(step, repeats, warmup=5)


def bench_training(data: dict[str, Any], cfg: TrainConfig, hidden: tuple[int, ...],
                   repeats: int) -> dict[str, Any]:
    """Our training loop for cfg.epochs against the GEMM floor at the net's shapes."""
    x, y, xt, yt = data["x"], data["y"], data["xt"], data["yt"]
    steps = cfg.epochs * -(-len(x) // cfg.batch_size)

    def run() -> None:
        train(build_model(hidden, cfg.seed, CPU), x, y, xt[:1000], yt[:1000], cfg, progress=False)

    seconds = median_time(run, repeats)
    floor = gemm_step_floor(hidden, cfg.batch_size) * steps
    return {"epochs": cfg.epochs, "samples": len(x), "seconds": seconds,
            "gemm_floor_seconds": floor, "ratio_to_floor": seconds / floor,
            "samples_per_second": len(x) * cfg.epochs / seconds}


def bench_batch_scaling(data: dict[str, Any], hidden: tuple[int, ...], n: int,
                        repeats: int) -> list[dict[str, Any]]:
    """One epoch over ``n`` samples at growing batch sizes."""
    rows = []
    for batch in (100, 200, 500, 1000):
        cfg = TrainConfig(epochs=1, batch_size=batch)
        x, y = data["x"][:n], data["y"][:n]

        def run(cfg: TrainConfig = cfg, x: torch.Tensor = x, y: torch.Tensor = y) -> None:
            train(build_model(hidden, 0, CPU), x, y, x[:100], y[:100], cfg, progress=False)

        seconds = median_time(run, repeats)
        rows.append({"batch_size": batch, "samples": n, "seconds": seconds,
                     "samples_per_second": n / seconds})
    return rows


def bench_sweeps(weights: list[torch.Tensor], xt: torch.Tensor, yt: torch.Tensor,
                 grid: tuple[float, ...], repeats: int) -> dict[str, Any]:
    """Both sweeps over ``grid`` against one dense evaluation of the test set."""
    from prunelab.model import accuracy

    per = {m: median_time(lambda m=m: sweep(weights, m, "layer", grid, xt, yt), repeats, 1)
           for m in ("weight", "unit")}
    dense = median_time(lambda: accuracy(weights, xt, yt), repeats, 1)
    return {"grid": len(grid), "test_samples": len(xt), "weight_seconds": per["weight"],
            "unit_seconds": per["unit"], "both_seconds": per["weight"] + per["unit"],
            "dense_eval_seconds": dense,
            "dense_evals_equivalent": (per["weight"] + per["unit"]) / dense}


def bench_criteria(weights: list[torch.Tensor], data: dict[str, Any], grid: tuple[float, ...],
                   calibration_size: int, repeats: int) -> list[dict[str, Any]]:
    """Each registered criterion's full sweep over ``grid`` (layer scope, the whole test set,
    calibration included), and its ratio to the study's criterion of the same granularity
    timed in the same run."""
    from prunelab.criteria.base import Context
    from prunelab.criteria.registry import CRITERIA
    from prunelab.data import calibration_indices

    idx = torch.from_numpy(calibration_indices(len(data["x"]), calibration_size, 0))
    rows = []
    for granularity, criteria in CRITERIA.items():
        for name, crit in criteria.items():
            def run(c=crit, g=granularity) -> None:  # a fresh context: calibration included
                cal = (data["x"][idx], data["y"][idx]) if c.needs_calibration else (None, None)
                sweep(weights, g, "layer", grid, data["xt"], data["yt"], c,
                      Context(tuple(weights), *cal, seed=0))
            rows.append({"granularity": granularity, "criterion": name,
                         "seconds": median_time(run, repeats, 1)})
    study = {r["granularity"]: r["seconds"] for r in rows
             if r["criterion"] in ("magnitude", "l2")}
    for r in rows:
        r["ratio_to_study"] = r["seconds"] / study[r["granularity"]]
    return rows


def bench_reference(data: dict[str, Any], weights: list[torch.Tensor], hidden: tuple[int, ...],
                    steps: int, repeats: int) -> dict[str, Any]:
    """The study's style against ours on equal slices of work."""
    from prunelab.model import accuracy
    from prunelab.prune import sweep as our_sweep

    imgs, labels = data["images"], data["labels"]
    cfg = TrainConfig(epochs=1)
    n = steps * cfg.batch_size
    ours_train = median_time(lambda: train(build_model(hidden, 0, CPU), data["x"][:n],
                                           data["y"][:n], data["xt"][:100], data["yt"][:100],
                                           cfg, progress=False), repeats)
    theirs_train = median_time(lambda: reference.train_steps(MLP(hidden), imgs, labels, steps),
                               repeats)
    np_weights = [w.numpy() for w in weights]
    timi, tlab = data["test_images"], data["test_labels"]
    out: dict[str, Any] = {"train_steps": steps, "train_ours_seconds": ours_train,
                           "train_reference_seconds": theirs_train,
                           "train_speedup": theirs_train / ours_train}
    for method, prune_fn in (("weight", reference.weight_prune), ("unit", reference.unit_prune)):
        theirs = median_time(lambda f=prune_fn: reference.test(
            reference.load_into(MLP(hidden), f(np_weights, 0.5)), timi, tlab), repeats)
        ours = median_time(lambda m=method: our_sweep(weights, m, "layer", (0.5,), data["xt"],
                                                      data["yt"]), repeats)
        out |= {f"{method}_k0.5_ours_seconds": ours, f"{method}_k0.5_reference_seconds": theirs,
                f"{method}_speedup": theirs / ours}
    assert accuracy(weights, data["xt"], data["yt"]) > 0  # the net is real, not a placeholder
    return out


def bench_profile(data_dir: Path, hidden: tuple[int, ...], batch: int,
                  repeats: int) -> dict[str, Any]:
    """Where a stage's time goes: interpreter and imports, data loading, one training step."""
    import torch.nn.functional as F

    imports = {}
    for name, stmt in (("python", "pass"), ("torch", "import torch"),
                       ("mlflow", "import mlflow"), ("matplotlib", "import matplotlib.pyplot"),
                       ("dvc", "import dvc.cli")):
        imports[name] = median_time(lambda s=stmt: subprocess.run(
            [sys.executable, "-c", s], check=True), repeats)
    loading = median_time(lambda: to_inputs(load_split(data_dir, "train")[0], CPU), repeats)
    model = build_model(hidden, 0, CPU)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, fused=True)
    x, y = torch.randn(batch, 784), torch.randint(0, 10, (batch,))
    parts = {"forward": [], "backward": [], "optimizer_step": []}
    for i in range(60):
        t0 = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x), y)
        t1 = time.perf_counter()
        loss.backward()
        t2 = time.perf_counter()
        optimizer.step()
        t3 = time.perf_counter()
        if i >= 10:
            for k, v in zip(parts, (t1 - t0, t2 - t1, t3 - t2), strict=True):
                parts[k].append(v)
    return {"import_seconds": imports, "load_train_set_seconds": loading,
            "step_ms": {k: statistics.median(v) * 1e3 for k, v in parts.items()}}


def peak_rss_mb(cmd: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, float, int]:
    """Run ``cmd`` in a fresh wrapper; return (seconds, peak RSS of the command in MB, rc)."""
    probe = ("import resource, subprocess, sys, time; t = time.perf_counter(); "
             "rc = subprocess.run(sys.argv[1:]).returncode; "
             "print(time.perf_counter() - t, resource.getrusage(resource.RUSAGE_CHILDREN)"
             ".ru_maxrss, rc)")
    out = subprocess.run([sys.executable, "-c", probe, *cmd], cwd=cwd, env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, check=True)
    seconds, kb, rc = out.stdout.split()[-3:]
    return float(seconds), int(kb) / 1024, int(rc)


def dvc_workspace(params: dict[str, Any], tmp: Path, data_dir: Path,
                  tracking: bool = True) -> tuple[Path, dict[str, str]]:
    """A throwaway git+DVC copy of the project with the data already in place (recorded as
    the `download` stage's output: nothing is fetched again)."""
    repo = tmp / "repo"
    repo.mkdir()
    for name in ("dvc.yaml", "stages", "src"):
        src = ROOT / name
        (shutil.copytree(src, repo / name, ignore=shutil.ignore_patterns("__pycache__"))
         if src.is_dir() else shutil.copy(src, repo / name))
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = {**os.environ, "PYTHONPATH": str(repo / "src"),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    env.pop("DVC_ROOT", None)
    if not tracking:
        env["PRUNELAB_TRACKING"] = "off"
    run = lambda *c: subprocess.run(c, cwd=repo, env=env, check=True,  # noqa: E731
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    run("git", "init", "-q")
    run("dvc", "init", "-q")
    run("dvc", "config", "core.analytics", "false")
    shutil.copytree(data_dir, repo / paths.DATA_DIR)
    run("dvc", "repro", "-q", "validate")  # download's upstream: the params check
    run("dvc", "commit", "-q", "-f", "download")  # the verified files, as if just downloaded
    run("dvc", "repro", "-q")  # first run: hashes the data, creates the MLflow store
    return repo, env


def bench_dvc(params: dict[str, Any], repeats: int, data_dir: Path,
              tracking: bool = True) -> dict[str, Any]:
    """Wall time of `dvc repro` from cached data, a no-op repro, and peak memory per stage.

    ``tracking=False`` (the quick smoke run) switches MLflow off: about 3 s less per stage.
    """
    with tempfile.TemporaryDirectory() as tmp:
        repo, env = dvc_workspace(params, Path(tmp), data_dir, tracking)
        # train -> prune_weight, prune_unit -> plot, each forced, every process start included
        chain = ["dvc", "repro", "-q", "-f", "-s", "train", "prune_weight", "prune_unit", "plot"]
        repro = [peak_rss_mb(chain, repo, env)[0] for _ in range(repeats)]
        noop = [peak_rss_mb(["dvc", "repro", "-q"], repo, env)[0] for _ in range(repeats)]
        memory = {}
        for stage, cmd in (("train", ["python", "stages/train.py"]),
                           ("prune_weight", ["python", "stages/prune.py", "weight"]),
                           ("prune_unit", ["python", "stages/prune.py", "unit"]),
                           ("plot", ["python", "stages/plot.py"]),
                           ("speed", ["python", "stages/speed.py"])):
            seconds, mb, rc = peak_rss_mb(cmd, repo, env)
            memory[stage] = {"seconds": seconds, "peak_rss_mb": mb, "ok": rc == 0}
    return {"repro_train_to_plot_seconds": statistics.median(repro),
            "repro_noop_seconds": statistics.median(noop), "stages": memory,
            "repeats": repeats, "tracking": tracking}


def load_data(params: Any, data_dir: Path) -> dict[str, Any]:
    images, labels = load_split(data_dir, "train", params.data.train_size)
    timages, tlabels = load_split(data_dir, "t10k", params.data.test_size)
    return {"images": images, "labels": labels, "test_images": timages, "test_labels": tlabels,
            "x": to_inputs(images, CPU), "y": to_targets(labels, CPU),
            "xt": to_inputs(timages, CPU), "yt": to_targets(tlabels, CPU)}


def machine() -> dict[str, Any]:
    """When and on what the figures were measured (CPU model, cores, GPU, torch, its BLAS)."""
    return {"date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            **describe().as_dict(), "torch_threads": torch.get_num_threads(),
            "python": platform.python_version()}


@click.command(help=__doc__)
@click.option("--quick", is_flag=True, help="Tiny budget: checks the benchmark runs (CI).")
@click.option("--repeats", default=3, show_default=True, help="Runs per figure (median).")
@click.option("--out", type=click.Path(path_type=Path), default=RESULTS / "latest.json",
              show_default=True)
@click.option("--readme", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Also write the table into this README's bench block.")
@click.option("--data", "data_dir", type=click.Path(path_type=Path), default=ROOT / paths.DATA_DIR,
              show_default=True, help="The verified MNIST IDX files.")
def main(quick: bool, repeats: int, out: Path, readme: Path | None, data_dir: Path) -> None:
    if not data_dir.is_dir():
        raise click.ClickException(f"{data_dir} missing: run `dvc repro download` first")
    params = load_params(ROOT / paths.PARAMS)
    raw = yaml.safe_load((ROOT / paths.PARAMS).read_text())
    if quick:
        repeats = 1
        raw["data"] = {"train_size": 2000, "test_size": 500}
        raw["model"]["hidden"] = [64, 32]
        raw["train"]["epochs"] = 1
        raw["prune"]["sparsities"] = [0.0, 0.5, 0.9]
        params = load_params_from(raw)
    hidden, cfg = params.model.hidden, params.train
    data = load_data(params, data_dir)
    log = lambda msg: click.echo(f"bench: {msg}", err=True)  # noqa: E731

    results: dict[str, Any] = {"machine": machine(), "quick": quick, "repeats": repeats}
    log("training")
    results["train"] = bench_training(data, cfg, hidden, repeats)
    log("training cost against batch size")
    results["batch_scaling"] = bench_batch_scaling(data, hidden, min(len(data["x"]), 20000),
                                                   repeats)
    model = build_model(hidden, cfg.seed, CPU)
    train(model, data["x"], data["y"], data["xt"][:100], data["yt"][:100],
          TrainConfig(epochs=1, seed=cfg.seed), progress=False)
    weights = [w.detach().clone() for w in model.weights()]
    log("sweeps")
    results["sweeps"] = bench_sweeps(weights, data["xt"], data["yt"], STUDY_GRID, repeats)
    log("every criterion's sweep")
    results["criteria"] = bench_criteria(weights, data, STUDY_GRID,
                                         params.prune.calibration_size, repeats)
    log("sweep cost against grid size")
    sub_x, sub_y = data["xt"][:1000], data["yt"][:1000]
    grids = (10, 100) if quick else (10, 100, 1000)
    results["grid_scaling"] = [
        {"grid": g, "test_samples": len(sub_x),
         **{f"{m}_seconds": median_time(lambda m=m, g=g: sweep(
             weights, m, "layer", tuple(np.linspace(0, 0.99, g).round(6)), sub_x, sub_y), 1)
            for m in ("weight", "unit")}}
        for g in grids]
    log("the study's style, on equal slices of work")
    results["reference"] = bench_reference(data, weights, hidden, 20 if quick else 200, repeats)
    log("profile: imports, data loading, one training step")
    results["profile"] = bench_profile(data_dir, hidden, cfg.batch_size, repeats)
    log("dvc repro wall time and peak memory per stage")
    results["dvc"] = bench_dvc(raw, repeats, data_dir, tracking=not quick)

    RESULTS.mkdir(parents=True, exist_ok=True)
    text = json.dumps(results, indent=2) + "\n"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    if not quick:
        (RESULTS / f"{datetime.now(timezone.utc):%Y%m%dT%H%M}.json").write_text(text)
    table = markdown(results)
    click.echo(table)
    if readme is not None:
        from prunelab.files import write_text
        from prunelab.report import replace_block

        write_text(readme, replace_block(readme.read_text(encoding="utf-8"), "bench", table))


def load_params_from(raw: dict[str, Any]) -> Any:
    from prunelab.config import parse_params

    return parse_params(raw)


def markdown(r: dict[str, Any]) -> str:
    """The README's benchmark table."""
    t, s, ref, d = r["train"], r["sweeps"], r["reference"], r["dvc"]
    lines = [
        f"Measured {r['machine']['date']} on {r['machine']['cores']} cores "
        f"({r['machine']['cpu']}, torch {r['machine']['torch']}), median of {r['repeats']}.",
        "",
        "| what | time | compared with | ratio |",
        "|---|---|---|---|",
        f"| train {t['epochs']} epochs ({t['samples']:,} images) | {t['seconds']:.1f} s | "
        f"GEMM floor {t['gemm_floor_seconds']:.1f} s | {t['ratio_to_floor']:.2f}x floor |",
        f"| train {ref['train_steps']} steps | {ref['train_ours_seconds']:.2f} s | study style "
        f"{ref['train_reference_seconds']:.2f} s | {ref['train_speedup']:.0f}x faster |",
        f"| both sweeps, {s['grid']} sparsities, {s['test_samples']:,} test images | "
        f"{s['both_seconds']:.2f} s | one dense test pass {s['dense_eval_seconds']:.2f} s | "
        f"{s['dense_evals_equivalent']:.1f} dense passes |",
    ]
    for m in ("weight", "unit"):
        lines.append(f"| {m} prune + test at k=0.5 | {ref[f'{m}_k0.5_ours_seconds']:.2f} s | "
                     f"study style {ref[f'{m}_k0.5_reference_seconds']:.2f} s | "
                     f"{ref[f'{m}_speedup']:.0f}x faster |")
    lines += [
        f"| `dvc repro` train → plot, from cached data (every criterion) | "
        f"{d['repro_train_to_plot_seconds']:.1f} s | target 90 s | |",
        f"| no-op `dvc repro` | {d['repro_noop_seconds']:.2f} s | target 3 s | |",
        "",
        f"| criterion | full sweep ({s['grid']} sparsities, {s['test_samples']:,} test images, "
        "calibration included) | ratio to magnitude / l2 |",
        "|---|---|---|",
        *[f"| {c['granularity']}: {c['criterion']} | {c['seconds']:.2f} s | "
          f"{c['ratio_to_study']:.1f}x |" for c in r.get("criteria", [])],
        "",
        "| grid size | weight sweep | unit sweep |",
        "|---|---|---|",
        *[f"| {g['grid']} ({g['test_samples']} test images) | {g['weight_seconds']:.2f} s | "
          f"{g['unit_seconds']:.2f} s |" for g in r["grid_scaling"]],
        "",
        "| batch size | one epoch | samples/s |",
        "|---|---|---|",
        *[f"| {b['batch_size']} | {b['seconds']:.2f} s | {b['samples_per_second']:,.0f} |"
          for b in r["batch_scaling"]],
        "",
        "Where the time goes: " + ", ".join(
            f"`import {k}` {v:.2f} s" for k, v in r["profile"]["import_seconds"].items())
        + f"; loading the training set {r['profile']['load_train_set_seconds']:.2f} s; one "
        "training step " + ", ".join(f"{k} {v:.2f} ms"
                                     for k, v in r["profile"]["step_ms"].items()) + ".",
        "",
        "| stage | wall time | peak memory |",
        "|---|---|---|",
        *[f"| {name} | {v['seconds']:.1f} s | {v['peak_rss_mb']:.0f} MB |"
          for name, v in d["stages"].items()],
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
