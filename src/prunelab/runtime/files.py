"""Atomic writes: a reader (DVC, a user, the next stage) never sees a half-written file.

A stage collects its outputs in :class:`Outputs` and commits them together, so a failure
(a full disk, a read-only folder, Ctrl-C) leaves none of them written rather than a curve
without its metrics partner. An OS error becomes one line naming the path. Every write first
waits for what the stage holds writes on (:func:`hold_writes`: its MLflow run being opened in
the background), so a stage whose tracking store fails writes nothing.
"""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from prunelab.errors import DataError

_HOLDS: list[Callable[[], None]] = []


def hold_writes(until: Callable[[], None]) -> None:
    """Every later write first calls ``until`` (which waits, or raises to write nothing)."""
    _HOLDS.append(until)


def release_writes(until: Callable[[], None]) -> None:
    """Undo :func:`hold_writes` for ``until`` (no-op if it holds nothing)."""
    if until in _HOLDS:
        _HOLDS.remove(until)


def _wait_for_holds() -> None:
    for until in list(_HOLDS):
        until()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _cannot_write(path: Path, exc: OSError) -> DataError:
    return DataError(f"{path}: cannot be written: {exc.strerror or exc}")


def _temporary_beside(path: Path) -> Path:
    """An empty temporary file in ``path``'s folder (same file system: rename is atomic)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file ordinary permissions
    return Path(tmp)


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; move it into place only if the block succeeds."""
    _wait_for_holds()
    try:
        tmp = _temporary_beside(path)
    except OSError as exc:
        raise _cannot_write(path, exc) from None
    try:
        yield tmp
        os.replace(tmp, path)
    except OSError as exc:
        raise _cannot_write(path, exc) from None
    finally:
        if tmp.exists():
            tmp.unlink()


def json_text(data: Mapping[str, Any]) -> str:
    """A JSON document: keys in insertion order, two-space indent, newline at the end."""
    return json.dumps(data, indent=2) + "\n"


def csv_text(rows: Sequence[Mapping[str, Any]]) -> str:
    """Rows (all with the same keys) as CSV text, header first."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


class Outputs:
    """A stage's output files, written all together or not at all.

    ``commit()`` first writes every file to a temporary beside its target, and renames them
    into place only once all of them are written: a full disk or a read-only folder leaves
    every target as it was.
    """

    def __init__(self) -> None:
        self._files: dict[Path, bytes] = {}

    def add_bytes(self, path: Path, blob: bytes) -> None:
        """Stage ``blob`` for ``path``."""
        self._files[Path(path)] = blob

    def add_text(self, path: Path, text: str) -> None:
        """Stage UTF-8 text for ``path``."""
        self.add_bytes(path, text.encode("utf-8"))

    def add_json(self, path: Path, data: Mapping[str, Any]) -> None:
        """Stage a JSON document for ``path``."""
        self.add_text(path, json_text(data))

    def add_csv(self, path: Path, rows: Sequence[Mapping[str, Any]]) -> None:
        """Stage CSV rows for ``path``."""
        self.add_text(path, csv_text(rows))

    @property
    def paths(self) -> list[Path]:
        """The staged paths, in the order they were added."""
        return list(self._files)

    def commit(self) -> None:
        """Write every staged file, or (on any OS error) none, with one line naming the path."""
        _wait_for_holds()
        staged: list[tuple[Path, Path]] = []
        try:
            for path, blob in self._files.items():
                try:
                    tmp = _temporary_beside(path)
                    staged.append((tmp, path))
                    tmp.write_bytes(blob)
                except OSError as exc:
                    raise _cannot_write(path, exc) from None
            for tmp, path in staged:
                try:
                    os.replace(tmp, path)
                except OSError as exc:
                    raise _cannot_write(path, exc) from None
        finally:
            for tmp, _ in staged:
                if tmp.exists():
                    tmp.unlink()


def write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    write_bytes(path, text.encode("utf-8"))


def write_bytes(path: Path, blob: bytes) -> None:
    """Write ``blob`` to ``path`` atomically."""
    out = Outputs()
    out.add_bytes(path, blob)
    out.commit()


def write_json(path: Path, data: Mapping[str, Any]) -> None:
    """Write a JSON document atomically, keys in insertion order, newline at the end."""
    write_text(path, json_text(data))


def write_csv(path: Path, rows: Sequence[Mapping[str, Any]]) -> None:
    """Write rows (all with the same keys) as CSV atomically."""
    write_text(path, csv_text(rows))


def read_json(path: Path) -> dict[str, Any]:
    """Read a JSON object written by an earlier stage; a damaged file is a DataError."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{path}: missing (run the stage that writes it: dvc repro)") from None
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise DataError(f"{path}: damaged, not valid JSON ({exc}); rerun: dvc repro -f") from None
    if not isinstance(data, dict):
        raise DataError(f"{path}: damaged, expected a JSON object")
    return data


def read_rows(path: Path) -> list[dict[str, str]]:
    """Read a CSV written by an earlier stage as text rows; missing or damaged is a DataError."""
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            return list(csv.DictReader(fh))
    except FileNotFoundError:
        raise DataError(f"{path}: missing (run the stage that writes it: dvc repro)") from None
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{path}: damaged ({exc}); rerun: dvc repro -f") from None


def read_csv(path: Path, columns: Sequence[str]) -> list[dict[str, float]]:
    """Read a numeric CSV written by an earlier stage, checking it has ``columns``."""
    rows = read_rows(path)
    missing = [c for c in columns if not rows or c not in rows[0]]
    if missing:
        raise DataError(f"{path}: damaged, missing column(s) {', '.join(missing)}")
    try:
        return [{c: float(row[c]) for c in columns} for row in rows]
    except (ValueError, TypeError) as exc:
        raise DataError(f"{path}: damaged ({exc}); rerun: dvc repro -f") from None
