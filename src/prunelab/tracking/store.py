"""Keeping the MLflow store sound and MLflow quiet: the experiment, a moved repository, runs
left RUNNING, MLflow's own output.

Part of the tracking code: `prunelab.tracking.runs` is the stages' interface, and every MLflow call
of the project lives in these two modules. The store functions run under the store's lock.

* The experiment is tagged ``mlflow.experimentKind = custom_model_development``, the kind MLflow
  3's UI reads to open an experiment on its runs rather than the GenAI view (traces,
  "Evaluation runs"). The 3.17 UI installed here ignores the tag, so the links we print and
  document add ``?workflowType=machine_learning``, which it does honour.
* A moved or copied repository: the SQLite store holds its artifact folder as an absolute
  path, so a copy would keep writing into the original tree. The repo's own store is repointed
  to ``<repo>/mlartifacts``; a tracking server's store is never touched.
* Orphans: a run records the host, pid and start time of the process that owns it (the stage
  for a stage run, the launching ``dvc`` for the pipeline run). A run still RUNNING whose
  owner is gone (``kill -9``, power loss) is closed as KILLED by the next run on that host.
* Output: no "View run <url>" lines (the URL carries the URI's password), no pickle warning,
  no upload progress bars in captured logs; credentials redacted from whatever MLflow logs.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import re
import socket
import sys
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import psutil

EXPERIMENT = "prunelab"
# The value MLflow's UI knows for classic training runs (its ExperimentKind enum).
KIND_TAG, KIND = "mlflow.experimentKind", "custom_model_development"
ARTIFACTS_DIR = "mlartifacts"
# Who owns a run; read back by close_orphans.
HOST_TAG, PID_TAG, STARTED_TAG = "prunelab_host", "prunelab_pid", "prunelab_pid_started"
CLOSED_TAG = "prunelab_closed"

# scheme://anything-up-to-the-last-@ : SQLAlchemy accepts '/', '?' and '#' unencoded in a
# password, so the authority cannot be found by URL parsing; over-redacting is the safe side.
_CREDENTIALS = re.compile(r"([A-Za-z][\w+.-]*://)[^\s]*@")


def redact(text: str) -> str:
    """``text`` (a URI, or a message quoting one) with every user:password replaced by ***."""
    return _CREDENTIALS.sub(r"\1***@", text)


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI, None for any other store."""
    return Path(uri.removeprefix("sqlite:///")) if uri.startswith("sqlite:///") else None


def lock(uri: str) -> Any:
    """A cross-process lock for a SQLite store (one writer at a time); no lock for servers."""
    path = sqlite_path(uri)
    if path is None:
        return nullcontext()
    from filelock import FileLock

    return FileLock(f"{path}.lock", timeout=600)


# --- the experiment ------------------------------------------------------------------------------


def experiment_id(client: Any, artifact_location: str | None) -> str:
    """The project's experiment, created (or completed) with the kind that opens it on runs."""
    found = client.get_experiment_by_name(EXPERIMENT)
    if found is None:
        try:
            return str(client.create_experiment(EXPERIMENT, artifact_location=artifact_location,
                                                tags={KIND_TAG: KIND}))
        except Exception:  # another worker created it first: use theirs
            found = client.get_experiment_by_name(EXPERIMENT)
            if found is None:
                raise
    if KIND_TAG not in found.tags:  # created before this tag, or by hand: a user's choice stays
        client.set_experiment_tag(found.experiment_id, KIND_TAG, KIND)
    return str(found.experiment_id)


def repoint_artifacts(uri: str, root: Path) -> str | None:
    """Point the repo's own SQLite store at ``root/mlartifacts`` if it names another folder
    (the repository was copied or moved); returns the one line saying so, or None.

    MLflow has no API to change an experiment's artifact location, so this rewrites the
    columns that hold it: the experiment's, its runs' and its logged models'. Old runs' URIs
    move too: a copy carries their files along in its own ``mlartifacts``.
    """
    import sqlalchemy as sa

    new = (root / ARTIFACTS_DIR).as_uri()
    engine = sa.create_engine(uri)
    try:
        with engine.begin() as db:
            row = db.execute(sa.text("SELECT experiment_id, artifact_location FROM experiments "
                                     "WHERE name = :name"), {"name": EXPERIMENT}).first()
            if row is None or row.artifact_location == new:
                return None
            exp, old = row.experiment_id, row.artifact_location
            counts = {}
            for table, column in (("runs", "artifact_uri"),
                                  ("logged_models", "artifact_location")):
                counts[table] = db.execute(sa.text(
                    f"UPDATE {table} SET {column} = :new || substr({column}, :cut) "
                    f"WHERE experiment_id = :exp AND substr({column}, 1, :n) = :old "
                    f"AND (length({column}) = :n OR substr({column}, :cut, 1) = '/')"),
                    {"new": new, "cut": len(old) + 1, "exp": exp, "n": len(old), "old": old},
                ).rowcount
            db.execute(sa.text("UPDATE experiments SET artifact_location = :new "
                               "WHERE experiment_id = :exp"), {"new": new, "exp": exp})
    finally:
        engine.dispose()
    return (f"tracking: this repository was moved or copied; MLflow experiment '{EXPERIMENT}' "
            f"now keeps artifacts in {root / ARTIFACTS_DIR} (was {old}; "
            f"{counts['runs']} runs repointed)")


# --- runs left RUNNING by a dead process ------------------------------------------------------


def process_start(proc: psutil.Process) -> str:
    """When ``proc`` started, in a form that a step of the wall clock does not move.

    psutil's ``create_time`` is the boot time plus the start's offset from boot, and the boot
    time is read from the wall clock: when the clock is stepped (NTP, a laptop resuming, a VM
    restored or migrated) every process's ``create_time`` moves with it, and a run's owner would
    look like another process (this happened: a 5 s step in the middle of a `dvc exp run` split
    it into two parent runs). On Linux the start is the kernel's own count of clock ticks since
    boot (``/proc/<pid>/stat``, field 22), with the boot's id so that a reboot cannot repeat it;
    elsewhere, ``create_time`` to the millisecond.
    """
    try:
        stat = Path(f"/proc/{proc.pid}/stat").read_text(encoding="ascii", errors="replace")
        ticks = stat.rsplit(")", 1)[1].split()[19]  # fields from the 3rd on, after "(comm)"
        boot = Path("/proc/sys/kernel/random/boot_id").read_text(encoding="ascii").strip()
        return f"boot {boot} tick {ticks}"
    except (OSError, IndexError):
        return f"{proc.create_time():.3f}"


def owner_tags(proc: psutil.Process) -> dict[str, str]:
    """Tags naming the process that owns a run: host, pid and start (pids are reused)."""
    return {HOST_TAG: socket.gethostname(), PID_TAG: str(proc.pid),
            STARTED_TAG: process_start(proc)}


def owner_alive(tags: dict[str, str]) -> bool:
    """Whether the process a run's owner tags name still runs (on this host). A start tagged
    as epoch seconds (older runs, or a system without /proc) is compared within a second."""
    try:
        proc = psutil.Process(int(tags[PID_TAG]))
        if proc.status() == psutil.STATUS_ZOMBIE:  # killed, not yet reaped by its parent
            return False
        started = tags[STARTED_TAG]
        if started.startswith("boot "):
            return process_start(proc) == started
        return abs(proc.create_time() - float(started)) < 1.0
    except (psutil.NoSuchProcess, KeyError, ValueError):
        return False
    except psutil.Error:  # exists but cannot be inspected (another user's): leave it alone
        return True


def close_orphans(client: Any, experiment: str, closer: str) -> list[str]:
    """Mark KILLED every RUNNING run of this host whose owning process is gone; returns their
    ids. Runs of other hosts, and runs without owner tags (older code), are left alone."""
    host = socket.gethostname().replace("'", "")
    found = client.search_runs(
        [experiment], filter_string=f"attributes.status = 'RUNNING' and tags.{HOST_TAG} = '{host}'",
        max_results=1000)
    closed = []
    for run in found:
        tags = run.data.tags
        if owner_alive(tags):
            continue
        why = (f"process {tags.get(PID_TAG, '?')} on {host} ended without closing this run "
               f"(killed?); marked KILLED at {time.strftime('%Y-%m-%d %H:%M:%S')} by {closer}")
        client.set_tag(run.info.run_id, CLOSED_TAG, why)
        client.set_terminated(run.info.run_id, "KILLED")
        closed.append(run.info.run_id)
    if closed:
        print(f"tracking: closed {len(closed)} run(s) left RUNNING by a process that is gone "
              f"(tagged {CLOSED_TAG})", file=sys.stderr)
    return closed


# --- MLflow's own output -------------------------------------------------------------------


class Redacting(logging.Filter):
    """On MLflow's log handlers: credentials out of every message, "View run" links dropped."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "View run " in message or "View experiment at" in message:
            return False
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        return True


class NoPickleWarning(logging.Filter):
    """Drops mlflow.pytorch's warning that pickle can run code: we chose pickle knowingly
    (see tracking.StageRun.log_model), and the warning repeated on every training run."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Saving pytorch model by Pickle")


def quiet_mlflow() -> None:
    """Before MLflow is imported: no run URLs (they carry the URI's password) or upload bars
    in logs; after: the redacting filter on the handlers of MLflow's logger."""
    # MLflow writes "View run <name> at: <uri>" with plain sys.stdout.write, credentials and all
    os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "true"
    if not sys.stderr.isatty():  # tqdm bars are noise in DVC's and CI's captured logs
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    # requests (under MLflow) tries urllib3's SOCKS module, which warns when PySocks is
    # missing. Whether that warning shows depends on the warning filters of the moment: this
    # runs in the stage's opening thread, and a `catch_warnings` block of the main thread (torch
    # has many) restores the filter list it saved, dropping urllib3's own filter if it was added
    # meanwhile -- a warning line in a stage's log, now and then. Without PySocks, requests falls
    # back to its stub (SOCKS proxies unsupported) either way; take that fallback without the
    # module's import and its warning.
    if importlib.util.find_spec("socks") is None:
        sys.modules.setdefault("urllib3.contrib.socks", None)  # type: ignore[arg-type]
    import mlflow  # noqa: F401  (configures the "mlflow" logger and its handler)

    # A handler's filters see the records of every child logger (mlflow.tracking, ...); a
    # logger's own filters would not.
    # A new store's table creation and migration are logged at INFO: not a stage's business
    # (a stage's failure must stay one line, whatever the state of the store).
    logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)
    for handler in logging.getLogger("mlflow").handlers:
        if not any(isinstance(f, Redacting) for f in handler.filters):
            handler.addFilter(Redacting())
