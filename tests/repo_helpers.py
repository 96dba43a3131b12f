"""Shared helpers for the end-to-end and server tests: temporary DVC repos, commands, MLflow.

A plain module (not a conftest): ``from repo_helpers import ...``. Every helper here works on
temporary directories only; nothing touches the project checkout except reading its files.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

MAIN = Path(__file__).resolve().parents[1]
VENV_BIN = MAIN / ".venv" / "bin"
EXPERIMENT = "prunelab"
# The study's stages as DVC names them for SMALL_PARAMS (train.seeds [0]), in pipeline order:
# the per-seed stages (dvc.yaml `foreach: ${train.seeds}`) are `<stage>@<seed>`.
STAGES = ("validate", "download", "train@0", "prune_weight@0", "prune_unit@0", "aggregate",
          "plot", "sensitivity", "speed", "report")

# A pipeline small enough for tests: ~2,000 training images, one epoch, a narrow net, 3 points.
SMALL_PARAMS: dict[str, Any] = {
    "data": {"train_size": 2000, "test_size": 1000},
    "model": {"arch": "mlp", "mlp": {"hidden": [64, 32]},
              "lenet5": {"channels": [6, 16], "fc": [120, 84]},
              "resnet": {"widths": [16, 32, 64], "blocks": 1}, "lstm": {"hidden": 128}},
    "train": {"epochs": 1, "lr": 0.001, "batch_size": 100, "seeds": [0], "device": "auto"},
    "prune": {"sparsities": [0.0, 0.5, 0.9], "scope": "layer",
              "weight_criteria": ["magnitude", "random", "largest", "wanda", "obd", "obs"],
              "unit_criteria": ["l2", "random", "largest", "activation", "l2_refit"],
              "calibration_size": 256},
    "finetune": {"epochs": 1, "lr": None, "weight_criteria": ["magnitude"],
                 "unit_criteria": ["l2"]},
    "imp": {"rounds": 2, "rate": 0.2, "output_rate": 0.1, "rewind": "init",
            "controls": ["reinit", "random_mask"], "eval_every": 5},
    "atinit": {"seeds": [0], "methods": ["random", "snip"], "rounds": [1, 2], "control_rounds": [2],
               "controls": ["shuffled"], "batches": 2, "eval_every": 5,
               "supermask_inits": ["signed_constant"], "supermask_keep": [0.5],
               "supermask_epochs": 1, "supermask_lr": 0.001},
    "during": {"method_seeds": [], "schedule_seeds": [0], "shapes": ["decreasing"],
               "final_sparsity": 0.9, "sparsities": [], "start": 0.1, "end": 0.7, "every": 5,
               "dst_methods": [], "dst_sparsities": [], "drop_fraction": 0.3,
               "earlybird": False, "earlybird_sparsity": 0.9, "earlybird_every": 5,
               "earlybird_threshold": 0.1, "earlybird_window": 2, "noise": [0.3],
               "delete": [0.3], "eval_every": 100},
    "l0": {"lambdas": []},
    "archs": {"archs": ["mlp"], "datasets": ["mnist1d"], "seeds": [0], "mnist_epochs": 1,
              "mnist1d_epochs": 1, "resnet_mnist_epochs": 1,
              "resnet_shift": 2, "resnet_widths": [4, 8, 8], "resnet_blocks": 1,
              "lstm_hidden": 8, "resnet_lr": 0.003, "lstm_lr": 0.003, "schedule": "onecycle",
              "compact_sparsity": 0.5,
              "weight_criteria": ["magnitude"], "unit_criteria": ["l2"]},
}
SMALL_STEPS = [0, 500, 900]

# The MLflow servers the tests start run no job runner (MLFLOW_SERVER_ENABLE_JOB_EXECUTION): its
# huey consumers serve MLflow's GenAI jobs, which the study never submits, and cost ~16 s of CPU
# per server start.
SERVER_JOBS = "false"

# Environment variables that would leak the developer's (or DVC's) context into a temp repo.
_SCRUB = ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_EXPERIMENT_ID", "MLFLOW_RUN_ID",
          "PRUNELAB_TRACKING", "DVC_ROOT", "DVC_EXP_NAME", "DVC_EXP_BASELINE_REV", "DVC_STAGE",
          "PYTHONPATH", "VIRTUAL_ENV", "GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE")


class CommandFailed(AssertionError):
    """A command that should have worked did not; the message carries its output."""


# --- processes ------------------------------------------------------------------------------


def env_for(repo: Path, **extra: str | None) -> dict[str, str]:
    """The environment of a command in ``repo``: the venv first on PATH, the repo's src importable.

    ``extra`` sets (or, with None, removes) variables, e.g. MLFLOW_TRACKING_URI=...
    """
    env = {k: v for k, v in os.environ.items() if k not in _SCRUB}
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '/usr/bin:/bin')}"
    env["PYTHONPATH"] = str(Path(repo) / "src")
    env["PYTHONUNBUFFERED"] = "1"
    env["GIT_TERMINAL_PROMPT"] = "0"
    env["DVC_NO_ANALYTICS"] = "1"
    for key, value in extra.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


def run(cmd: Sequence[str], cwd: Path, env: Mapping[str, str] | None = None,
        timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run ``cmd`` in ``cwd`` (env defaults to :func:`env_for`); raise CommandFailed on failure."""
    started = time.monotonic()
    done = subprocess.run(list(cmd), cwd=cwd, env=dict(env) if env else env_for(cwd),
                          capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)
    done.seconds = time.monotonic() - started  # type: ignore[attr-defined]
    if check and done.returncode != 0:
        raise CommandFailed(
            f"{' '.join(cmd)} (in {cwd}) exited {done.returncode}\n"
            f"--- stdout ---\n{done.stdout[-6000:]}\n--- stderr ---\n{done.stderr[-6000:]}")
    return done


run_command = run  # for modules where `run` is a common local name


def dvc(repo: Path, *args: str, env: Mapping[str, str] | None = None, timeout: float = 600,
        check: bool = True) -> subprocess.CompletedProcess[str]:
    """``dvc ARGS`` in ``repo`` with the venv's dvc."""
    return run([str(VENV_BIN / "dvc"), *args], repo, env=env, timeout=timeout, check=check)


def git(repo: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return run(["git", *args], repo, env=env_for(repo), timeout=120, check=check)


def error_lines(text: str) -> list[str]:
    """The lines of ``text`` that start with 'Error:' (click's one-line stage errors)."""
    return [line for line in text.splitlines() if line.startswith("Error:")]


# --- temporary repositories -----------------------------------------------------------------

@dataclass(frozen=True)
class SessionBaseline:
    """A committed git + DVC repository (small params) after its first, complete `dvc repro`."""

    repo: Path
    cache: Path  # the shared DVC cache its .dvc/config.local points at
    first_repro: str  # the output of that first `dvc repro`: every stage really ran
    train_run_id: str  # the MLflow run of its train stage (in repo/mlflow.db)

    def copy_to(self, dest: Path) -> Path:
        """An independent copy (git history, outputs, MLflow store) to run or change.

        The copy's first tracked stage repoints its MLflow store at the copy's own
        ``mlartifacts/`` (and says so in one line), so nothing is written into the baseline.
        """
        shutil.copytree(self.repo, dest, symlinks=True)
        return dest


def write_params(repo: Path, params: Mapping[str, Any]) -> None:
    (Path(repo) / "params.yaml").write_text(yaml.safe_dump(dict(params), sort_keys=False),
                                           encoding="utf-8")


def make_repo(dest: Path, cache_dir: Path | None = None,
              params: Mapping[str, Any] = SMALL_PARAMS) -> Path:
    """A git + DVC repository with the project's pipeline and code, small params, one commit."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    # no dvc.lock: stages/retrain/dvc.lock names outputs this repo's cache has never seen
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "dvc.lock")
    for name in ("stages", "src"):
        shutil.copytree(MAIN / name, dest / name, ignore=ignore)
    for name in ("dvc.yaml", ".gitignore", ".dvcignore", "data/params.checked"):
        if (MAIN / name).exists():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(MAIN / name, dest / name)
    write_params(dest, params)
    git(dest, "init", "-q", "-b", "main")
    git(dest, "config", "user.name", "prunelab tests")
    git(dest, "config", "user.email", "tests@prunelab.invalid")
    git(dest, "config", "commit.gpgsign", "false")
    dvc(dest, "init", "-q")
    shutil.copy2(MAIN / ".dvc" / "config", dest / ".dvc" / "config")
    # The plot templates and the offline page (built by `make setup`) that .dvc/config names.
    shutil.copytree(MAIN / ".dvc" / "plots", dest / ".dvc" / "plots", dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns("node_modules"))
    if cache_dir is not None:  # .dvc/config.local: never committed, so clones keep their own
        dvc(dest, "cache", "dir", "--local", str(cache_dir))
    git(dest, "add", "-A")
    git(dest, "commit", "-q", "-m", "pipeline with small params")
    return dest


def repro(repo: Path, env: Mapping[str, str] | None = None,
          timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """``dvc repro``: download may come from the (shared) run-cache, every other stage really runs.

    Without ``--no-run-cache`` a shared cache would restore train/prune outputs computed in
    another repository, and no MLflow run would be created here.
    """
    dvc(repo, "repro", "download", env=env, timeout=timeout)
    return dvc(repo, "repro", "--no-run-cache", env=env, timeout=timeout)


def repro_output(repo: Path, env: Mapping[str, str] | None = None, timeout: float = 600) -> str:
    """:func:`repro`, returning everything both of its dvc commands printed (stdout, stderr)."""
    first = dvc(repo, "repro", "download", env=env, timeout=timeout)
    second = dvc(repo, "repro", "--no-run-cache", env=env, timeout=timeout)
    return first.stdout + first.stderr + second.stdout + second.stderr


def stage_script(repo: Path, stage: str) -> str:
    """The script a stage's dvc.yaml cmd runs (``stages/prune.py`` for prune_weight@0, or for
    the foreach definition prune_weight)."""
    import shlex

    dvc_yaml = yaml.safe_load((Path(repo) / "dvc.yaml").read_text(encoding="utf-8"))
    definition = dvc_yaml["stages"][stage.split("@", 1)[0]]
    return shlex.split(definition.get("do", definition)["cmd"])[1]


def pipeline_stages(repo: Path) -> set[str]:
    """The stage names DVC gives the repository's dvc.yaml with its params.yaml: a foreach
    stage over ``${train.seeds}`` is one stage per seed, ``train@0``, ``train@1``, ..."""
    import re

    repo = Path(repo)
    stages = yaml.safe_load((repo / "dvc.yaml").read_text(encoding="utf-8"))["stages"]
    params = yaml.safe_load((repo / "params.yaml").read_text(encoding="utf-8"))
    names = set()
    for name, definition in stages.items():
        if "foreach" not in definition:
            names.add(name)
            continue
        dotted = re.fullmatch(r"\$\{([\w.]+)\}", str(definition["foreach"]))
        assert dotted, f"{name}: foreach {definition['foreach']!r} is not a params reference"
        items: Any = params
        for key in dotted.group(1).split("."):
            items = items[key]
        names |= {f"{name}@{item}" for item in items}
    return names


def stages_run(output: str) -> set[str]:
    """The stages `dvc repro` / `dvc exp run` says it ran."""
    import re

    return set(re.findall(r"Running stage '([^']+)'", output))


def commit_all(repo: Path, message: str) -> None:
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", message)


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


# --- MLflow ----------------------------------------------------------------------------------


def sqlite_uri(repo: Path) -> str:
    return f"sqlite:///{Path(repo).resolve() / 'mlflow.db'}"


def mlflow_runs(uri: str) -> list[Any]:
    """Every run of the 'prunelab' experiment in the store at ``uri`` (MlflowClient)."""
    import mlflow

    client = mlflow.MlflowClient(uri)
    experiment = client.get_experiment_by_name(EXPERIMENT)
    assert experiment is not None, f"no experiment {EXPERIMENT!r} in {uri}"
    return list(client.search_runs([experiment.experiment_id], max_results=5000))


def children(runs: Sequence[Any], parent_id: str) -> dict[str, Any]:
    """The stage runs under ``parent_id``, by stage name."""
    return {r.data.tags["stage"]: r for r in runs
            if r.data.tags.get("mlflow.parentRunId") == parent_id
            and r.data.tags.get("prunelab_role") == "stage"}


def parents(runs: Sequence[Any]) -> list[Any]:
    return [r for r in runs if r.data.tags.get("prunelab_role") == "pipeline"]


def tree_snapshot(root: Path) -> dict[str, str]:
    """Every file under ``root`` by relative path -> SHA-256 of its bytes (to show nothing
    was written there)."""
    import hashlib

    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(Path(root).rglob("*")) if p.is_file()}


def metric_steps(uri: str, run_id: str, key: str = "accuracy") -> list[int]:
    import mlflow

    history = mlflow.MlflowClient(uri).get_metric_history(run_id, key)
    return sorted(m.step for m in history)


# --- servers ----------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_http(url: str, timeout: float, proc: subprocess.Popen[Any] | None = None,
              log: Path | None = None) -> None:
    """Poll ``url`` until it answers 200; fail early if ``proc`` dies."""
    import requests

    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            tail = log.read_text(errors="replace")[-4000:] if log and log.exists() else ""
            raise RuntimeError(f"server exited {proc.returncode} before {url} answered\n{tail}")
        try:
            answer = requests.get(url, timeout=2)
            if answer.status_code == 200:
                return
            last = answer.status_code
        except requests.RequestException as exc:
            last = exc
        time.sleep(0.5)
    tail = log.read_text(errors="replace")[-4000:] if log and log.exists() else ""
    raise TimeoutError(f"{url} did not answer within {timeout:.0f} s (last: {last})\n{tail}")


def stop_process(proc: subprocess.Popen[Any], grace: float = 10) -> None:
    """Stop a process started with start_new_session=True: its whole group, TERM then KILL."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=grace)


@contextlib.contextmanager
def mlflow_server_process(backend_uri: str, workdir: Path, artifact_root: Path | None = None,
                          timeout: float = 120) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """An ``mlflow server`` on a free loopback port; yields (its base URL, its process), for a
    test that kills it; stopped afterwards."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log = workdir / f"mlflow-server-{port}.log"
    cmd = [str(VENV_BIN / "mlflow"), "server", "--backend-store-uri", backend_uri,
           "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    if artifact_root is not None:
        cmd += ["--default-artifact-root", str(artifact_root)]
    # the server's settings are the test's: none inherited from the caller's MLFLOW_* variables
    env = {k: v for k, v in env_for(workdir).items() if not k.startswith("MLFLOW_")}
    env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = SERVER_JOBS
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, cwd=workdir, env=env, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{url}/health", timeout, proc, log)
        yield url, proc
    finally:
        stop_process(proc)


@contextlib.contextmanager
def mlflow_server(backend_uri: str, workdir: Path, artifact_root: Path | None = None,
                  timeout: float = 120) -> Iterator[str]:
    """An ``mlflow server`` on a free loopback port; yields its base URL; stopped afterwards."""
    with mlflow_server_process(backend_uri, workdir, artifact_root, timeout) as (url, _):
        yield url


def rest_runs(url: str, experiment_name: str = EXPERIMENT) -> tuple[str, list[dict[str, Any]]]:
    """(experiment id, every run as JSON) through the server's REST API."""
    import requests

    answer = requests.get(f"{url}/api/2.0/mlflow/experiments/get-by-name",
                          params={"experiment_name": experiment_name}, timeout=30)
    answer.raise_for_status()
    exp_id = answer.json()["experiment"]["experiment_id"]
    runs: list[dict[str, Any]] = []
    token = None
    while True:
        body: dict[str, Any] = {"experiment_ids": [exp_id], "max_results": 1000}
        if token:
            body["page_token"] = token
        answer = requests.post(f"{url}/api/2.0/mlflow/runs/search", json=body, timeout=30)
        answer.raise_for_status()
        data = answer.json()
        runs += data.get("runs", [])
        token = data.get("next_page_token")
        if not token:
            return exp_id, runs


def rest_tags(run: Mapping[str, Any]) -> dict[str, str]:
    return {t["key"]: t["value"] for t in run.get("data", {}).get("tags", [])}


def rest_params(run: Mapping[str, Any]) -> dict[str, str]:
    return {p["key"]: p["value"] for p in run.get("data", {}).get("params", [])}


def rest_history(url: str, run_id: str, key: str = "accuracy") -> list[dict[str, Any]]:
    import requests

    answer = requests.get(f"{url}/api/2.0/mlflow/metrics/get-history",
                          params={"run_id": run_id, "metric_key": key}, timeout=30)
    answer.raise_for_status()
    return list(answer.json().get("metrics", []))


# --- DVC experiments ---------------------------------------------------------------------------


def reset_workspace(repo: Path) -> None:
    """Back to the committed baseline: params, lock, metrics (git) and models, data (DVC)."""
    git(repo, "reset", "-q", "--hard", "HEAD")
    # --allow-missing: the retraining pipeline never ran here, its outputs have no hashes
    dvc(repo, "checkout", "-q", "--force", "--allow-missing")


def ran_experiments(output: str) -> list[str]:
    """Experiment names from `dvc exp run` output ('Ran experiment(s): a, b')."""
    import re

    names: list[str] = []
    for match in re.finditer(r"Ran experiment\(s\): (.+)", output):
        names += [n.strip() for n in match.group(1).split(",") if n.strip()]
    if not names:
        names = re.findall(r"Reproducing experiment '([^']+)'", output)
    return names


def queued_experiments(output: str) -> list[str]:
    import re

    return re.findall(r"Queued experiment '([^']+)' for future execution", output)


def experiment_running(repo: Path) -> bool:
    """Whether an experiment of ``repo``'s queue is executing: a `dvc exp exec-run` process
    whose command line names this repository (its info file under .dvc/tmp/exps). A scan of
    /proc, against ~0.7 s of CPU for a `dvc queue status`."""
    import psutil

    mark = str(repo.resolve() / ".dvc" / "tmp")
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = proc.info["cmdline"] or []
        if "exec-run" in cmdline and any(mark in arg for arg in cmdline):
            return True
    return False


def queue_workers(repo: Path) -> list[Any]:
    """``repo``'s live `dvc exp queue-worker` processes (psutil), and the forks that spawned
    them: `dvc queue start` leaves them in the directory it ran in, the repository."""
    import psutil

    def spawned(cmdline: Sequence[str]) -> bool:
        return "queue-worker" in cmdline or ("queue" in cmdline and "start" in cmdline)

    root = str(repo.resolve())
    return [proc for proc in psutil.process_iter(["cmdline", "cwd"])
            if proc.info["cwd"] == root and spawned(proc.info["cmdline"] or [])]


def start_queue(repo: Path, jobs: int, env: Mapping[str, str] | None = None) -> None:
    """`dvc queue start -j JOBS` in ``repo``, back once its workers are spawned.

    The workers inherit the command's output streams, so its output goes to a file: through a
    pipe the call would last until the last worker exits, and forever if one never does (under
    load, DVC's idle monitor once sent its worker a shutdown in mid-experiment, and that worker
    never exited: CI, 2026-12-06)."""
    cmd = [str(VENV_BIN / "dvc"), "queue", "start", "-j", str(jobs)]
    with tempfile.TemporaryFile("w+", encoding="utf-8") as out:
        done = subprocess.run(cmd, cwd=repo, env=dict(env) if env else env_for(repo), stdout=out,
                              stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, timeout=120)
        if done.returncode != 0:
            out.seek(0)
            raise CommandFailed(f"{' '.join(cmd)} (in {repo}) exited {done.returncode}\n"
                                f"{out.read()[-6000:]}")


def wait_for_queue(repo: Path, timeout: float, env: Mapping[str, str] | None = None,
                   poll: float = 3) -> str:
    """Wait until nothing in `dvc queue status` is Queued or Running; return the last status.
    While an experiment is executing (:func:`experiment_running`) only processes are checked;
    `dvc queue status` decides, between experiments and at the end."""
    import re

    deadline = time.monotonic() + timeout
    status = ""
    while time.monotonic() < deadline:
        if experiment_running(repo):
            time.sleep(min(poll, 1))
            continue
        status = dvc(repo, "queue", "status", env=env, timeout=120).stdout
        rows = [line for line in status.splitlines() if re.search(r"\b(Queued|Running)\b", line)]
        if not rows:
            return status
        time.sleep(poll)
    status = dvc(repo, "queue", "status", env=env, timeout=120, check=False).stdout
    raise TimeoutError(f"queue still busy after {timeout:.0f} s:\n{status}")


def stop_queue(repo: Path, env: Mapping[str, str] | None = None, grace: float = 30) -> None:
    """`dvc queue stop`, then wait up to ``grace`` seconds for ``repo``'s workers to exit and
    kill any left (a worker stuck in its shutdown), so no test leaves a worker behind."""
    import psutil

    dvc(repo, "queue", "stop", env=env, check=False)
    _, alive = psutil.wait_procs(queue_workers(repo), timeout=grace)
    for proc in alive:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    psutil.wait_procs(alive, timeout=10)


def run_queue(repo: Path, names: Sequence[str], jobs: int, timeout: float,
              env: Mapping[str, str] | None = None, poll: float = 3) -> str:
    """Run ``repo``'s queued experiments ``names`` in ``jobs`` workers (`dvc queue start -j`)
    and return the final `dvc queue status` once none is Queued or Running; the workers are
    gone when it returns. On a failure or a timeout the experiments are killed first."""
    try:
        start_queue(repo, jobs, env)
        return wait_for_queue(repo, timeout, env=env, poll=poll)
    except BaseException:
        dvc(repo, "queue", "kill", *names, env=env, check=False)
        raise
    finally:
        stop_queue(repo, env)


def exp_show(repo: Path, env: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
    """`dvc exp show --json`, parsed."""
    return json.loads(dvc(repo, "exp", "show", "--json", env=env, timeout=300).stdout)


def experiment_entries(shown: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Every experiment in `dvc exp show --json` by name: {'rev': ..., 'state': ..., ...}."""
    found: dict[str, dict[str, Any]] = {}
    for baseline in shown:
        for exp in baseline.get("experiments") or []:
            for rev in exp.get("revs") or []:
                name = rev.get("name") or exp.get("name")
                state = (exp.get("executor") or {}).get("state")
                found[name] = {**rev, "state": state}
    return found
