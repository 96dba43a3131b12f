"""Every MLflow call of the project (with :mod:`prunelab.tracking.store`): one parent run per
pipeline execution, a child per stage.

DVC owns the artefacts; MLflow mirrors them for browsing and comparison.

* Store: ``MLFLOW_TRACKING_URI`` when set (a tracking server), else the SQLite database
  ``mlflow.db`` at the repository root, artifacts in ``mlartifacts/`` beside it. The root comes
  from ``DVC_ROOT``, which ``dvc exp run --temp/--queue`` point at the parent repository, so
  runs executed in DVC's temporary copies land in the same store as workspace runs.
* Grouping: stages are separate processes. They find their execution's parent run by a tag
  derived from the ``dvc`` process that launched them (and ``DVC_EXP_NAME``); a stage run by
  hand gets a parent of its own.
* Concurrency: SQLite allows one writer. All calls on a SQLite store go through one file
  lock, and experiment creation tolerates a concurrent creator, so parallel queue workers
  neither hit "database is locked" nor race each other.
* Names: a pipeline run is named after its DVC experiment, or ``workspace <time> <params
  hash>``; every run carries its source (script or dvc command), git commit, user, machine
  (:mod:`prunelab.runtime.machine`) and owning process (see :mod:`prunelab.tracking.store`).
* Quiet: MLflow's "View run at <url>" lines, its pickle warning and its upload progress bars
  are dropped, and any credentials in what it does log are redacted.
* Off switch: ``PRUNELAB_TRACKING=off`` runs the stages without MLflow.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any

import psutil

from prunelab.config import Params
from prunelab.errors import PrunelabError, StageInterrupted
from prunelab.runtime import files
from prunelab.runtime.machine import describe, stage_process
from prunelab.tracking import store
from prunelab.tracking.store import EXPERIMENT, redact

__all__ = ["EXPERIMENT", "StageRun", "TrackingError", "close_stale", "enabled", "execution_key",
           "git_revision", "params_hash", "redact", "repo_root", "run_name", "track",
           "tracking_uri"]

SWITCH = "PRUNELAB_TRACKING"
MAX_PARAM_CHARS = 6000  # MLflow's limit on a param value


class TrackingError(PrunelabError):
    """The tracking store cannot be reached or refused a write."""


def enabled() -> bool:
    """Tracking is on unless PRUNELAB_TRACKING is off/0/false/no."""
    return os.environ.get(SWITCH, "on").strip().lower() not in ("off", "0", "false", "no")


def repo_root() -> Path:
    """The DVC repository the results belong to (the parent repo for --temp/--queue runs)."""
    return Path(os.environ.get("DVC_ROOT") or Path.cwd()).resolve()


def default_uri() -> str:
    """The repository's own store: SQLite at <repo root>/mlflow.db."""
    return f"sqlite:///{repo_root() / 'mlflow.db'}"


def tracking_uri() -> str:
    """MLFLOW_TRACKING_URI, or the repository's own store."""
    return os.environ.get("MLFLOW_TRACKING_URI") or default_uri()


def _dvc_words(argv: Sequence[str]) -> list[str] | None:
    """``["dvc", "exp", "run"]`` for a dvc command line (``dvc ...`` or ``python -m dvc ...``:
    the subcommand words before the first option), None for any other program."""
    if len(argv) > 1 and Path(argv[0]).name == "dvc":
        rest = argv[1:]
    elif len(argv) > 2 and Path(argv[1]).name == "dvc":  # python .../bin/dvc ...
        rest = argv[2:]
    elif argv[1:3] == ["-m", "dvc"]:
        rest = argv[3:]
    else:
        return None
    words = ["dvc"]
    for arg in rest:
        if arg.startswith("-"):
            break
        words.append(arg)
    return words


def launcher() -> tuple[psutil.Process, str]:
    """The process that launched this pipeline execution (the nearest ``dvc`` ancestor, else
    this process) and its command ("dvc repro", or this script's path for a stage by hand)."""
    me = stage_process()
    for proc in me.parents():
        try:
            words = _dvc_words(proc.cmdline())
        except psutil.Error:
            continue
        if words:
            return proc, " ".join(words)
    return me, _script()


def _script() -> str:
    """This process's script relative to its working directory, where DVC runs a stage (the
    repository, or DVC's temporary copy of it): ``stages/train.py``."""
    path = Path(sys.argv[0]).resolve() if sys.argv and sys.argv[0] else Path("python")
    try:
        return path.relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return path.name


def execution_key(proc: psutil.Process | None = None) -> str:
    """Identifies one pipeline execution: the launching dvc process (``proc``, found when not
    given), and the DVC experiment."""
    proc = launcher()[0] if proc is None else proc
    ident = f"{proc.pid}-{store.process_start(proc)}-{os.environ.get('DVC_EXP_NAME', '')}"
    return hashlib.sha256(ident.encode()).hexdigest()[:16]


def run_name(exp_name: str, params_digest: str, started: float) -> str:
    """The pipeline run's name: the DVC experiment's, else ``workspace HH:MM <hash6>`` (local
    start time, first 6 characters of the params_hash tag), so plain `dvc repro` runs differ.

    Short on purpose: the UI's run-name column shows about 20 characters, and its Created
    column already has the date.
    """
    if exp_name:
        return exp_name
    return f"workspace {time.strftime('%H:%M', time.localtime(started))} {params_digest[:6]}"


def values(params: Params, document: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Every params.yaml value by dotted name: the sections this stage loaded as validated
    (``params``), every other study's section as written in ``document`` (the whole file), so
    the stages of every study log the same keys and share one hash."""
    def leaves(prefix: str, value: Any) -> dict[str, Any]:
        if isinstance(value, Mapping):
            return {k: v for key, sub in value.items()
                    for k, v in leaves(f"{prefix}.{key}" if prefix else str(key), sub).items()}
        return {prefix: value}

    return {**(leaves("", document) if isinstance(document, Mapping) else {}), **params.flat()}


def params_hash(params: Params, document: Mapping[str, Any] | None = None) -> str:
    """Short hash of every params.yaml value (:func:`values`): equal params, equal hash.
    ``train.seed`` is left out: it is the process's replicate, not a value of params.yaml, and
    every seed's stage run must carry its parent's hash."""
    flat = {k: v for k, v in values(params, document).items() if k != "train.seed"}
    blob = json.dumps(flat, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


def git_revision(root: Path) -> str:
    """HEAD's commit (the baseline commit for `dvc exp run`), or '' outside git."""
    baseline = os.environ.get("DVC_EXP_BASELINE_REV")
    if baseline:
        return baseline
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True,
                             text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return ""
    return out.stdout.strip() if out.returncode == 0 else ""


def _param_value(value: Any) -> str:
    text = json.dumps(value) if isinstance(value, list) else str(value)
    return text if len(text) <= MAX_PARAM_CHARS else text[: MAX_PARAM_CHARS - 3] + "..."


def _configure_http_client() -> None:
    """Fail fast on an unreachable server instead of MLflow's minutes of retries."""
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (some containers)
        return str(os.getuid()) if hasattr(os, "getuid") else "unknown"


def _store_error(uri: str, what: str, exc: BaseException) -> TrackingError:
    """One line naming the store (credentials redacted) and MLflow's first line of complaint."""
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    first = redact(first)  # MLflow's message repeats the URL, password included
    return TrackingError(f"MLflow tracking store {redact(uri)} {what}: {first[:200]} "
                         f"(set {SWITCH}=off to run without tracking)")


def close_stale(uri: str | None = None, closer: str = "prunelab tracking close-stale") -> list[str]:
    """Mark KILLED the runs of ``uri`` (default: :func:`tracking_uri`) left RUNNING by a process
    that is gone; returns their ids. The sweep a stage does when it opens the store, without
    starting a run: `make ui` runs it first, because after a ``kill -9`` the next ``dvc repro``
    may restore every stage from DVC's run-cache and open no run at all. A SQLite store that
    does not exist yet stays uncreated."""
    uri = uri or tracking_uri()
    db = store.sqlite_path(uri)
    if db is not None and not db.is_file():
        return []
    _configure_http_client()
    try:
        store.quiet_mlflow()
        import mlflow

        with store.lock(uri):
            client = mlflow.MlflowClient(uri)
            experiment = client.get_experiment_by_name(EXPERIMENT)
            if experiment is None:
                return []
            return store.close_orphans(client, str(experiment.experiment_id), closer)
    except Exception as exc:
        raise _store_error(uri, "cannot be reached", exc) from None


class StageRun:
    """The MLflow child run of one stage (a no-op object when tracking is off).

    Off the critical path: entering starts a thread that imports MLflow and opens the runs
    (seconds of imports and SQLAlchemy set-up) while the stage computes. Every logging call,
    ``run_id`` and the end of the run wait for it, and so does every file the stage writes
    (:func:`prunelab.runtime.files.hold_writes`): a store that cannot be reached still leaves
    no output, and the stage's first write, log call or end raises its one-line error. (Not an
    interrupt of the main thread the moment the opening fails: a signal handler's exception
    raised inside an import's lock callback is printed as a traceback and lost.)"""

    def __init__(self, stage: str, params: Params,
                 document: Mapping[str, Any] | None = None) -> None:
        self.stage = stage
        self.params = params
        self.document = document  # the whole params.yaml as read (None: the sections loaded)
        self.values = values(params, document)  # what the run logs
        self.on = enabled()
        self.uri = tracking_uri()
        self._run_id: str | None = None
        self._parent_id: str | None = None
        self._client: Any = None
        self._opening: threading.Thread | None = None
        self._failure: PrunelabError | None = None

    @property
    def run_id(self) -> str | None:
        self.ready()
        return self._run_id

    @property
    def parent_id(self) -> str | None:
        self.ready()
        return self._parent_id

    # -- lifecycle -----------------------------------------------------------------------------

    def __enter__(self) -> StageRun:
        if not self.on:
            return self
        _configure_http_client()
        files.hold_writes(self.ready)
        self._opening = threading.Thread(target=self._open, name="mlflow-open", daemon=True)
        self._opening.start()
        return self

    def _open(self) -> None:
        """The opening thread: the store, the parent and the stage's run."""
        try:
            store.quiet_mlflow()
            import mlflow

            with store.lock(self.uri):
                # Constructing the client creates and migrates a fresh SQLite store: only
                # one process may do that at a time.
                self._client = mlflow.MlflowClient(self.uri)
                if self.uri == default_uri():  # the repo's own store, never a server's
                    moved = store.repoint_artifacts(self.uri, repo_root())
                    if moved:
                        print(moved, file=sys.stderr)
                self._start()
        except PrunelabError as exc:
            self._failure = exc
        except Exception as exc:
            self._failure = self._error("cannot be reached", exc)

    def ready(self) -> None:
        """Wait for the opening thread; its failure, if any, raised here."""
        if self._opening is not None:
            self._opening.join()
        if self._failure is not None:
            raise self._failure

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if not self.on:
            return
        files.release_writes(self.ready)
        if self._opening is not None:
            self._opening.join()
        if self._failure is not None:  # the store's line first, as when it was opened first
            if kind is not None and issubclass(kind, (KeyboardInterrupt, StageInterrupted)):
                return  # an interrupted stage says so itself
            raise self._failure from None
        if self._run_id is None:
            return
        if kind is None:
            status = "FINISHED"
        elif issubclass(kind, (KeyboardInterrupt, StageInterrupted)):
            status = "KILLED"
        else:
            status = "FAILED"
        try:
            with store.lock(self.uri):
                self._client.set_terminated(self._run_id, status)
                self._client.set_terminated(self._parent_id, status)
        except Exception as err:
            if kind is None:  # the stage worked but its record did not arrive: say so
                raise self._error("lost the end of the run", err) from None
            print(f"tracking: could not mark run {self._run_id} {status}: {redact(str(err))}",
                  file=sys.stderr)

    def _error(self, what: str, exc: BaseException) -> TrackingError:
        return _store_error(self.uri, what, exc)

    def _start(self) -> None:
        client, root = self._client, repo_root()
        db = store.sqlite_path(self.uri)
        location = (db.parent / store.ARTIFACTS_DIR).as_uri() if db else None
        experiment = store.experiment_id(client, location)
        self._experiment = experiment
        owner, command = launcher()
        key = execution_key(owner)
        store.close_orphans(client, experiment, closer=f"{self.stage} (execution {key})")
        exp_name = os.environ.get("DVC_EXP_NAME", "")
        digest = params_hash(self.params, self.document)
        tags = {
            "dvc_exp_name": exp_name or "(workspace)",
            "mlflow.source.git.commit": git_revision(root),
            "mlflow.source.type": "LOCAL",
            "mlflow.user": _user(),
            "params_hash": digest,
            "arch": self.params.model.arch,  # also the param model.arch; a tag filters faster
            "prunelab_execution": key,
            **describe().tags(),
        }
        found = client.search_runs(
            [experiment], filter_string=f"tags.prunelab_execution = '{key}' "
            "and tags.prunelab_role = 'pipeline'", max_results=1)
        if found:
            self._parent_id = found[0].info.run_id
            client.update_run(self._parent_id, status="RUNNING")
            # machine.torch etc. are known only to stages that load torch: collect them all
            self._log_tags(self._parent_id, describe().tags())
        else:
            parent = client.create_run(
                experiment, run_name=run_name(exp_name, digest, time.time()),
                tags={**tags, **store.owner_tags(owner), "mlflow.source.name": command,
                      "prunelab_role": "pipeline"})
            self._parent_id = parent.info.run_id
            self._log_params(self._parent_id)
        child = client.create_run(
            experiment, run_name=self.stage,
            tags={**tags, **store.owner_tags(stage_process()), "mlflow.source.name": _script(),
                  "prunelab_role": "stage", "stage": self.stage,
                  "mlflow.parentRunId": self._parent_id},
        )
        self._run_id = child.info.run_id
        self._log_params(self._run_id)

    def _log_tags(self, run_id: str, tags: Mapping[str, str]) -> None:
        from mlflow.entities import RunTag

        self._client.log_batch(run_id, tags=[RunTag(k, v) for k, v in tags.items()])

    def _log_params(self, run_id: str) -> None:
        from mlflow.entities import Param

        params = [Param(k, _param_value(v)) for k, v in self.values.items()]
        self._client.log_batch(run_id, params=params)

    # -- logging ---------------------------------------------------------------------------------

    @contextmanager
    def _writing(self) -> Iterator[None]:
        try:
            with store.lock(self.uri):
                yield
        except PrunelabError:
            raise
        except Exception as exc:
            raise self._error("refused a write", exc) from None

    def log_metrics(self, values: Mapping[str, float | None], step: int = 0,
                    parent_prefix: str | None = None, on_stage: bool = True) -> None:
        """Log scalar metrics on this stage's run (and, prefixed, on the parent)."""
        self.log_series({k: [(step, v)] for k, v in values.items() if v is not None},
                        parent_prefix, on_stage)

    def log_series(self, series: Mapping[str, Sequence[tuple[int, float]]],
                   parent_prefix: str | None = None, on_stage: bool = True) -> None:
        """Log metric histories ``{name: [(step, value), ...]}`` in batches."""
        if not self.on:
            return
        self.ready()
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        targets = [(self._run_id, "")] if on_stage else []
        if parent_prefix is not None:
            targets.append((self._parent_id, parent_prefix))
        with self._writing():
            for run_id, prefix in targets:
                metrics = [Metric(prefix + name, float(value), now, int(step))
                           for name, points in series.items() for step, value in points]
                for start in range(0, len(metrics), 1000):  # MLflow's batch limit
                    self._client.log_batch(run_id, metrics=metrics[start : start + 1000])

    def log_artifacts(self, files: Sequence[Path]) -> None:
        """Copy files into this stage's run artifacts."""
        if not self.on:
            return
        self.ready()
        with self._writing():
            for path in files:
                self._client.log_artifact(self._run_id, str(path))

    def log_model(self, model: Any) -> None:
        """Log the torch model with mlflow.pytorch, so ``mlflow.pytorch.load_model`` loads it."""
        if not self.on:
            return
        self.ready()
        import mlflow
        import mlflow.pytorch

        quiet, logger = store.NoPickleWarning(), logging.getLogger("mlflow.pytorch")
        logger.addFilter(quiet)  # a record logged on mlflow.pytorch itself: a logger filter
        try:
            with self._writing():
                with _fluent_uri(self.uri), mlflow.start_run(run_id=self._run_id):
                    # Pickle format: 0.2 s, and loads back as models.networks.Network with any batch
                    # size (MLflow's default pt2 export takes 4 s and fixes the batch dimension
                    # to 1). Naming the requirement skips MLflow's slow dependency inference.
                    mlflow.pytorch.log_model(model.cpu(), name="model",
                                             serialization_format="pickle",
                                             pip_requirements=[f"torch=={_torch_version()}"])
                # leaving start_run marked the run FINISHED: it is not, until the stage ends
                self._client.update_run(self._run_id, status="RUNNING")
        finally:
            logger.removeFilter(quiet)

    def log_child(self, name: str, metrics: Mapping[str, float | None],
                  series: Mapping[str, Sequence[tuple[int, float]]] | None = None,
                  tags: Mapping[str, str] | None = None) -> None:
        """A finished run nested under this stage's run (e.g. one per IMP round), with its
        metrics, metric histories and tags."""
        if not self.on:
            return
        self.ready()
        from mlflow.entities import Metric, RunTag

        now = int(time.time() * 1000)
        points = [Metric(k, float(v), now, 0) for k, v in metrics.items() if v is not None]
        points += [Metric(k, float(v), now, int(step)) for k, history in (series or {}).items()
                   for step, v in history]
        with self._writing():
            child = self._client.create_run(
                self._experiment, run_name=name,
                tags={"mlflow.parentRunId": self._run_id, "prunelab_role": "part",
                      "stage": self.stage, "arch": self.params.model.arch, **(tags or {})})
            run_id = child.info.run_id
            for start in range(0, len(points), 1000):  # MLflow's batch limit
                self._client.log_batch(run_id, metrics=points[start : start + 1000])
            self._client.log_batch(run_id, tags=[RunTag("mlflow.source.name", _script())])
            self._client.set_terminated(run_id, "FINISHED")

    def set_tags(self, tags: Mapping[str, str], on_parent: bool = False) -> None:
        """Tag this stage's run (and optionally the parent)."""
        if not self.on:
            return
        self.ready()
        with self._writing():
            for run_id in [self._run_id] + ([self._parent_id] if on_parent else []):
                for key, value in tags.items():
                    self._client.set_tag(run_id, key, value)


@contextmanager
def _fluent_uri(uri: str) -> Iterator[None]:
    """MLflow's process-wide URI set to ``uri`` for a fluent call, then put back: setting it
    also sets MLFLOW_TRACKING_URI in os.environ, which would outlive this run."""
    import mlflow

    before = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(before)  # type: ignore[arg-type]  (None: unset)


def _torch_version() -> str:
    import torch

    return torch.__version__.split("+")[0]


def seed_prefix(params: Params) -> str:
    """How a per-seed stage prefixes what it logs on the parent run: nothing for the first seed
    (the net the single-net studies use, as before replicates), ``seed<s>.`` for the others
    (MLflow metric names allow no ``@``)."""
    return "" if params.train.seed == params.first_seed else f"seed{params.train.seed}."


def track(stage: str, params: Params, document: Mapping[str, Any] | None = None) -> StageRun:
    """``with track("train", cfg) as run:`` -- the stage's MLflow run, ended with its status;
    ``document``: the whole params.yaml as read, so the run logs every study's section."""
    return StageRun(stage, params, document)
