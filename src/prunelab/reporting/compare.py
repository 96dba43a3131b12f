"""Architectures side by side: `python -m prunelab compare REV [REV ...]`.

One run of the pipeline studies one architecture (``model.arch``), so a comparison reads
several runs: each REV is a git revision (commit, branch, tag), a DVC experiment name, or
``workspace``. Their curve CSVs come through DVC (``dvc.api.read``, from the cache), their
architecture from their params.yaml -- the same files ``dvc plots diff REV ...`` draws.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from prunelab import paths
from prunelab.config import METHODS, STUDY_CRITERIA, parse_yaml
from prunelab.errors import DataError
from prunelab.reporting.figures import ARCH_TITLES, Curve, by_criterion

WORKSPACE = "workspace"


@dataclass(frozen=True)
class Run:
    """One revision's study: its architecture and both pruning curves, by criterion."""

    rev: str
    arch: str
    curves: Mapping[str, Mapping[str, Curve]]
    speed: Sequence[Mapping[str, str]] = ()  # plots/speed.csv rows, when the rev has them

    @property
    def label(self) -> str:
        return f"{ARCH_TITLES.get(self.arch, self.arch)} ({self.rev})"


def read_text(path: Path, rev: str) -> str:
    """``path`` as it is in ``rev`` (the file itself for ``workspace``); one DataError line
    when the revision or the file is not there."""
    if rev == WORKSPACE:
        try:
            return path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            why = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
            raise DataError(f"{path}: cannot be read ({why}); run: dvc repro") from None
    import dvc.api

    try:
        return str(dvc.api.read(str(path), rev=rev, mode="r", encoding="utf-8"))
    except Exception as exc:  # dvc raises its own kinds for a bad rev, a missing file or cache
        raise DataError(f"{path} at {rev!r}: cannot be read ({type(exc).__name__}: "
                        f"{str(exc).splitlines()[0][:120] if str(exc) else ''}); is {rev!r} a "
                        "commit, branch or experiment (dvc exp list) whose outputs are in "
                        "this cache?") from None


def read_bytes(path: Path, rev: str) -> bytes | None:
    """``path``'s bytes as it is in ``rev`` (the workspace's for ``workspace``); None when the
    revision has no such file (a study that did not run there)."""
    if rev == WORKSPACE:
        return path.read_bytes() if path.is_file() else None
    import dvc.api
    from dvc.exceptions import PathMissingError

    try:
        return bytes(dvc.api.read(str(path), rev=rev, mode="rb"))
    except (FileNotFoundError, PathMissingError):  # the study did not run in that revision
        return None
    except Exception as exc:  # a bad rev, a cache entry missing or damaged: say so
        raise DataError(f"{path} at {rev!r}: cannot be read ({type(exc).__name__}: "
                        f"{str(exc).splitlines()[0][:120] if str(exc) else ''})") from None


def arch_of(params_text: str, rev: str) -> str:
    """``model.arch`` of a params.yaml; revisions from before architectures were chosen
    (``model.hidden`` directly) are the MLP."""
    doc = parse_yaml(params_text, Path(f"params.yaml at {rev}"))
    model = doc.get("model") if isinstance(doc, dict) else None
    arch = model.get("arch", "mlp") if isinstance(model, dict) else "mlp"
    return str(arch)


def trained_arch(lock_text: str, rev: str) -> str | None:
    """``model.arch`` as the train stage last ran with it (dvc.lock): what produced the curves,
    even if params.yaml has been edited since. None when the lock does not say."""
    doc = parse_yaml(lock_text, Path(f"dvc.lock at {rev}"))
    try:
        stages = doc["stages"]
        # train@<seed> since replicates (any seed: they share model.arch), train before
        name = next(s for s in stages if s == "train" or s.startswith("train@"))
        return str(stages[name]["params"]["params.yaml"]["model.arch"])
    except (KeyError, TypeError, StopIteration):
        return None


# Before replicates, a run had one curve per granularity here; now it has the mean over seeds.
LEGACY_CURVE = "plots/prune_{method}.csv"


def curve_text(method: str, rev: str) -> tuple[Path, str]:
    """One granularity's accuracy curve of ``rev``: the mean over its seeds
    (plots/aggregate_<method>.csv), or the single curve of a run from before replicates."""
    path = paths.aggregate_curve(method)
    try:
        return path, read_text(path, rev)
    except DataError:
        legacy = Path(LEGACY_CURVE.format(method=method))
        try:
            return legacy, read_text(legacy, rev)
        except DataError:
            pass
        raise


def load_run(rev: str) -> Run:
    """Read one revision's architecture and pruning curves."""
    try:
        arch = trained_arch(read_text(Path("dvc.lock"), rev), rev)
    except DataError:
        arch = None
    arch = arch or arch_of(read_text(paths.PARAMS, rev), rev)
    curves = {}
    for m in METHODS:
        path, text = curve_text(m, rev)
        rows = list(csv.DictReader(io.StringIO(text)))
        curves[m] = by_criterion(rows, m, f"{path} at {rev}")
    try:
        speed = list(csv.DictReader(io.StringIO(read_text(paths.SPEED_CURVE, rev))))
    except DataError:  # the speed stage is optional for a comparison of accuracy
        speed = []
    return Run(rev, arch, curves, speed)


def _within(points: Curve) -> tuple[float | None, float | None]:
    """(highest k within 1 point of the k = 0 accuracy, its effective sparsity)."""
    dense = next((p["accuracy"] for p in points if p["sparsity"] == 0.0), None)
    ok = [p for p in points if dense is not None and p["accuracy"] >= dense - 1]
    best = max(ok, key=lambda p: p["sparsity"], default=None)
    return (best["sparsity"], best["effective_sparsity"]) if best else (None, None)


def comparison_table(runs: Sequence[Run], ks: Sequence[float] = (0.5, 0.8, 0.9)) -> str:
    """Per run, granularity and criterion: dense accuracy, the highest k within 1 point of
    dense (and its effective sparsity), and the accuracy at a few k. Markdown."""
    head = ["architecture", "pruning", "criterion", "dense %", "max k within 1 pt",
            "effective sparsity there", *[f"acc. at k = {k:g}" for k in ks]]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for run in runs:
        for m in METHODS:
            for name, points in run.curves[m].items():
                at = {p["sparsity"]: p["accuracy"] for p in points}
                k, eff = _within(points)
                shown = f"**{name}**" if name == STUDY_CRITERIA[m] else name
                cells = [run.label, m, shown,
                         f"{at[0.0]:.2f}" if 0.0 in at else "–",
                         f"{k:g}" if k is not None else "none",
                         f"{eff:.3f}" if eff is not None else "–",
                         *[f"{at[x]:.2f}" if x in at else "–" for x in ks]]
                lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def differences(runs: Sequence[Run]) -> str:
    """Sentences computed from the curves: for the study's criteria, how far each run prunes
    within 1 point of dense, nominally and effectively."""
    out = []
    for m in METHODS:
        name = STUDY_CRITERIA[m]
        parts = []
        for run in runs:
            points = run.curves[m].get(name)
            if not points:
                continue
            k, eff = _within(points)
            parts.append(f"{run.label} up to k = {k:g} (effective sparsity {eff:.3f})"
                         if k else f"{run.label} at no k > 0")
        if parts:
            out.append(f"- {m} pruning ({name}) stays within 1 point of dense: "
                       + "; ".join(parts) + ".")
    return "\n".join(out)


def speed_table(runs: Sequence[Run], ks: Sequence[float] = (0.5, 0.8, 0.9)) -> str:
    """The study's criteria, layer scope, at a few k: accuracy, measured speed-up over each
    run's own dense net (batch 100, 1 thread) and how each layer was stored. Markdown."""
    lines = ["| architecture | pruning | k | accuracy % | speed-up, batch 100 | "
             "stored as (per layer) |", "|---|---|---|---|---|---|"]
    for run in runs:
        for row in run.speed:
            try:
                k = float(row["sparsity"])
                wanted = (row["scope"] == "layer" and k in ks
                          and row.get("criterion") == STUDY_CRITERIA.get(row["method"]))
                if wanted:
                    lines.append(f"| {run.label} | {row['method']} ({row['criterion']}) | "
                                 f"{k:g} | {float(row['accuracy']):.2f} | "
                                 f"{float(row['speedup_b100']):.2f}x | {row['formats']} |")
            except (KeyError, ValueError) as exc:
                raise DataError(f"{paths.SPEED_CURVE} at {run.rev}: damaged ({exc!r})") from None
    return "\n".join(lines) if len(lines) > 2 else ""
