"""Beyond one machine: a study's seeds spread over three clones through DVC's run-cache and one
shared DVC remote, every run in one MLflow server (README: "Several machines").

Machine A trains and prunes seeds 0-2, machine B seeds 3-4; each pushes its outputs and its
run-cache (`prunelab push`). Machine C, a fresh clone with an empty cache, fetches the
run-cache and reproduces the whole pipeline: every per-seed stage is restored and none runs;
C aggregates the five seeds and writes the report. A local directory stands for the shared
remote (NFS); the MLflow server is the one the server tests start (PostgreSQL when installed,
as .ci/run does).
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from repo_helpers import (
    SMALL_PARAMS,
    commit_all,
    dvc,
    env_for,
    git,
    make_repo,
    mlflow_server,
    read_json,
    rest_runs,
    rest_tags,
    run,
    stages_run,
)
from server_helpers import server_backend

from prunelab import paths

pytestmark = [pytest.mark.e2e, pytest.mark.server, pytest.mark.timeout(1200)]

SEEDS = [0, 1, 2, 3, 4]
PARAMS: dict[str, Any] = {**SMALL_PARAMS, "train": {**SMALL_PARAMS["train"], "seeds": SEEDS}}
SHARES = {"A": (0, 1, 2), "B": (3, 4)}  # machine -> the seeds it trains and prunes
PER_SEED = ("train", "prune_weight", "prune_unit")


def targets(seeds: tuple[int, ...]) -> list[str]:
    """What a machine reproduces for its seeds (the README's command): both prune stages of
    each seed, which bring the seed's training with them."""
    return [f"prune_{method}@{seed}" for seed in seeds for method in ("weight", "unit")]


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@dataclass(frozen=True)
class Cluster:
    machines: dict[str, Path]
    said: dict[str, str]  # what `dvc repro` printed on each machine
    runs: list[dict[str, Any]]  # every run of the server's experiment


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, dvc_cache: Path) -> Iterator[Cluster]:
    base = tmp_path_factory.mktemp("machines")
    with server_backend(base) as backend, \
            mlflow_server(backend.store_uri, base, artifact_root=backend.artifact_root,
                          timeout=180) as url:
        # The project, with its five seeds and the shared remote committed; MNIST fetched once
        # (here from the session's run-cache) and pushed, its lock committed.
        origin = make_repo(base / "origin", cache_dir=dvc_cache, params=PARAMS)
        dvc(origin, "remote", "add", "-d", "shared", str(base / "remote"))
        dvc(origin, "repro", "download")
        dvc(origin, "push", "download")
        commit_all(origin, "the shared remote; MNIST's lock")
        machines, said = {}, {}
        for name in ("A", "B", "C"):  # a git clone each, with a cache of its own
            machines[name] = base / name
            run(["git", "clone", "-q", str(origin), str(machines[name])], base)
            assert not (machines[name] / ".dvc" / "config.local").exists()
        for name, seeds in SHARES.items():
            machine, env = machines[name], env_for(machines[name], MLFLOW_TRACKING_URI=url)
            dvc(machine, "pull", "download", env=env)
            done = dvc(machine, "repro", *targets(seeds), env=env)
            said[name] = done.stdout + done.stderr
            # `dvc push --run-cache` and the objects of its entries' uncached (in-git) curves,
            # which DVC 3's push leaves out (tests/test_share.py)
            run([sys.executable, "-m", "prunelab", "push"], machine, env=env)
        machine, env = machines["C"], env_for(machines["C"], MLFLOW_TRACKING_URI=url)
        dvc(machine, "fetch", "--run-cache", env=env)  # the run history, not a checkout
        done = dvc(machine, "repro", "--pull", env=env)
        said["C"] = done.stdout + done.stderr
        yield Cluster(machines, said, rest_runs(url)[1])


def test_each_machine_trains_only_its_seeds(cluster: Cluster) -> None:
    for name, seeds in SHARES.items():
        ran = stages_run(cluster.said[name])
        assert {s for s in ran if "@" in s} == {f"{stage}@{seed}" for seed in seeds
                                                 for stage in PER_SEED}, name


def test_the_aggregating_machine_trains_nothing_and_reports_five_seeds(cluster: Cluster) -> None:
    """C restores every seed's stages from the run-cache (none runs), aggregates five seeds and
    writes the report; its nets are byte for byte the ones A and B trained; nothing is left to
    reproduce."""
    c = cluster.machines["C"]
    ran = stages_run(cluster.said["C"])
    assert not {s for s in ran if "@" in s}, ran
    assert {"aggregate", "report"} <= ran
    for seed in SEEDS:
        assert f"Stage 'train@{seed}' is cached" in cluster.said["C"], seed
        trainer = next(m for m, seeds in SHARES.items() if seed in seeds)
        assert digest(c / paths.model(seed)) == \
            digest(cluster.machines[trainer] / paths.model(seed)), seed
    aggregate = read_json(c / paths.AGGREGATE_METRICS)
    assert (aggregate["seeds"], aggregate["n"]) == (SEEDS, len(SEEDS))
    report = (c / paths.REPORT).read_text(encoding="utf-8")
    assert "Replicates: 5 seeds" in report
    status = dvc(c, "status", "dvc.yaml", "--json").stdout.strip()  # the study; not retrain
    assert status in ("{}", ""), status
    assert git(c, "status", "--porcelain", "--", "params.yaml").stdout == ""


def test_every_run_is_in_the_one_server_grouped_by_machine(cluster: Cluster) -> None:
    """One MLflow server holds every machine's runs: one training run per seed, the seeds of A
    under one pipeline run and those of B under another, and C's pipeline run with the
    aggregate and the report but no training."""
    stage_runs = [r for r in cluster.runs if rest_tags(r).get("prunelab_role") == "stage"]
    trains = [r for r in stage_runs if rest_tags(r)["stage"].startswith("train@")]
    assert sorted(rest_tags(r)["stage"] for r in trains) == [f"train@{s}" for s in SEEDS]
    by_parent: dict[str, set[str]] = {}
    for r in stage_runs:
        by_parent.setdefault(rest_tags(r)["mlflow.parentRunId"], set()).add(rest_tags(r)["stage"])
    groups = sorted((sorted(s for s in stages if "@" in s) for stages in by_parent.values()),
                    key=len)
    expected = [sorted(f"{stage}@{seed}" for seed in seeds for stage in PER_SEED)
                for seeds in SHARES.values()]
    assert [g for g in groups if g] == sorted(expected, key=len)
    aggregating = [stages for stages in by_parent.values() if "aggregate" in stages]
    assert len(aggregating) == 1 and not {s for s in aggregating[0] if "@" in s}
    assert {r["info"]["status"] for r in stage_runs} == {"FINISHED"}
