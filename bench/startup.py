"""Stage start-up: how long each stage takes, from its process starting, to reach its first
useful computation (params read and checked, its MLflow run opened or opening), beside a bare
`python -c "import torch"` on the same machine. `python bench/startup.py` writes
bench/results/startup.json; run it on a quiet machine.

Each stage runs as DVC runs it (its command from the registry, ${item} = the first seed) with
PRUNELAB_STARTUP_PROBE set: it stops where its work would begin and prints the seconds since
its process started (prunelab.tracking.stage.probe), writing nothing. MLflow logs to a
throwaway SQLite store, created once before the timed runs (as a pipeline's stages find it).

Each stage is measured twice: in its own process (PRUNELAB_LAUNCHER=0: it imports torch and
MLflow itself), and handed to the warm stage server (stages/_launch.py, the default), started
once beforehand in a private folder; its cold start (start to listening) is reported too.

Target (issue: the study at the hardware's pace): at most 0.5 s beyond `import torch` per
stage. Stages that never import torch (aggregate, plot) are measured against the same bare
import: their figure is then below it.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import click

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
from prunelab import paths  # noqa: E402
from prunelab.reporting.tables import fill_blocks  # noqa: E402
from prunelab.runtime.machine import describe  # noqa: E402
from prunelab.studies.registry import STUDIES  # noqa: E402
from prunelab.tracking.stage import PROBE  # noqa: E402

TARGET_S = 0.5  # beyond import torch
LAUNCHER_DIR = "PRUNELAB_LAUNCHER_DIR"


def import_torch(repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import torch"], check=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def start_server(env: dict[str, str]) -> float:
    """Start the stage server and wait until it listens (`_launch.py start`): seconds."""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "stages/_launch.py", "start"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        raise click.ClickException(f"the stage server did not start: {done.stdout.strip()}")
    return time.perf_counter() - start


def stop_server(env: dict[str, str]) -> None:
    subprocess.run([sys.executable, "stages/_launch.py", "stop", "--all"], cwd=ROOT, env=env,
                   capture_output=True, check=False)


def probe(cmd: list[str], env: dict[str, str]) -> float:
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    for line in done.stderr.splitlines():
        if line.startswith(PROBE):
            return float(line.split()[-1])
    raise click.ClickException(f"{' '.join(cmd)}: no probe line (exit {done.returncode}): "
                               f"{done.stderr.strip().splitlines()[-1:]}")


def stage_commands(seed: int) -> dict[str, list[str]]:
    """Every registered stage that opens an MLflow run, as DVC runs it."""
    commands = {}
    for study in STUDIES:
        for stage in study.stages:
            if stage.name in ("download", "validate"):
                continue  # no MLflow run: download fetches files, validate checks params
            args = [a.replace(paths.ITEM, str(seed)) for a in stage.args]
            commands[stage.name] = [sys.executable, stage.script, *args]
    return commands


def markdown(results: dict[str, Any], before: dict[str, Any] | None) -> str:
    """The startup-bench block: each stage's start-up served and in its own process, beside
    the run ``before`` if given."""
    m = results["machine"]
    torch_s = results["import_torch_seconds"]
    lines = [f"Measured on {m['cores']} cores ({m['cpu']}, {m.get('simd', 'SIMD unknown')}), "
             "`python bench/startup.py` (median "
             f"of {results['repeats']}): seconds from a stage's process starting to its first "
             "useful computation (params checked, its MLflow run opened or opening), handed to "
             "the warm stage server (the default) and in its own process "
             f"(`PRUNELAB_LAUNCHER=0`), beside a bare `import torch` ({torch_s:.2f} s here); "
             f"target ≤ +{TARGET_S} s. The server's own start, once per "
             "`PRUNELAB_LAUNCHER_IDLE` (10 min by default) without a stage: "
             f"{results['server_start_seconds']:.2f} s.", ""]
    head = "| stage | served | beyond `import torch` | own process |"
    lines += [head + (" before (`bench/results/startup_before.json`) |" if before else ""),
              "|---" * (5 if before else 4) + "|"]
    for name, s in results["stages"].items():
        row = (f"| {name} | {s['served_seconds']:.2f} s | {s['served_beyond_import_torch']:+.2f}"
               f" s | {s['seconds']:.2f} s ({s['beyond_import_torch']:+.2f} s) |")
        if before and name in before["stages"]:
            b = before["stages"][name]
            row += f" {b['seconds']:.2f} s ({b['beyond_import_torch']:+.2f} s) |"
        lines.append(row)
    return "\n".join(lines)


@click.command()
@click.option("--repeats", default=3, show_default=True)
@click.option("--out", type=click.Path(path_type=Path),
              default=ROOT / "bench/results/startup.json")
@click.option("--readme", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Also write the startup-bench block (README.md or the docs page holding it).")
@click.option("--render", is_flag=True, help="Run nothing: the block from the saved --out.")
def main(repeats: int, out: Path, readme: Path | None, render: bool) -> None:
    if render:
        _publish(json.loads(out.read_text()), out, readme)
        return
    seed = 0
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "launcher").mkdir(mode=0o700)
        env = {**os.environ, PROBE: "1", LAUNCHER_DIR: str(Path(tmp) / "launcher"),
               "MLFLOW_TRACKING_URI": f"sqlite:///{Path(tmp) / 'mlflow.db'}"}
        own = {**env, "PRUNELAB_LAUNCHER": "0"}
        commands = stage_commands(seed)
        probe(next(iter(commands.values())), own)  # creates and migrates the store
        torch_s = import_torch(repeats)
        click.echo(f"import torch: {torch_s:.2f} s", err=True)
        try:
            server_s = start_server(env)
            click.echo(f"stage server start: {server_s:.2f} s", err=True)
            stages: dict[str, Any] = {}
            for name, cmd in commands.items():
                seconds = statistics.median(probe(cmd, own) for _ in range(repeats))
                served = statistics.median(probe(cmd, env) for _ in range(repeats))
                stages[name] = {"seconds": round(seconds, 3),
                                "beyond_import_torch": round(seconds - torch_s, 3),
                                "served_seconds": round(served, 3),
                                "served_beyond_import_torch": round(served - torch_s, 3)}
                click.echo(f"{name}: {seconds:.2f} s ({seconds - torch_s:+.2f} s), served "
                           f"{served:.2f} s", err=True)
        finally:
            stop_server(env)
    worst = max(s["served_beyond_import_torch"] for s in stages.values())
    results = {"machine": describe().as_dict(), "repeats": repeats,
               "import_torch_seconds": round(torch_s, 3), "target_beyond_torch": TARGET_S,
               "server_start_seconds": round(server_s, 3),
               "worst_beyond_torch": worst, "met": worst <= TARGET_S, "stages": stages}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    click.echo(json.dumps({k: v for k, v in results.items() if k != "stages"}, indent=2))
    _publish(results, out, readme)


def _publish(results: dict[str, Any], out: Path, readme: Path | None) -> None:
    before_file = out.with_name("startup_before.json")
    before = json.loads(before_file.read_text()) if before_file.is_file() else None
    table = markdown(results, before)
    click.echo(table)
    if readme is not None:
        for page, text in fill_blocks(readme, {"startup-bench": table}).items():
            page.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
