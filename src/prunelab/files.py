"""Atomic writes: a reader (DVC, a user, the next stage) never sees a half-written file."""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from prunelab.errors import DataError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; move it into place only if the block succeeds."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file ordinary permissions
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_bytes(path: Path, blob: bytes) -> None:
    """Write ``blob`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(blob)


def write_json(path: Path, data: Mapping[str, Any]) -> None:
    """Write a JSON document atomically, keys in insertion order, newline at the end."""
    write_text(path, json.dumps(data, indent=2) + "\n")


def write_csv(path: Path, rows: Sequence[Mapping[str, Any]]) -> None:
    """Write rows (all with the same keys) as CSV atomically."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_text(path, buf.getvalue())


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


def read_csv(path: Path, columns: Sequence[str]) -> list[dict[str, float]]:
    """Read a numeric CSV written by an earlier stage, checking it has ``columns``."""
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
        missing = [c for c in columns if not rows or c not in rows[0]]
        if missing:
            raise DataError(f"{path}: damaged, missing column(s) {', '.join(missing)}")
        return [{c: float(row[c]) for c in columns} for row in rows]
    except FileNotFoundError:
        raise DataError(f"{path}: missing (run the stage that writes it: dvc repro)") from None
    except (OSError, UnicodeDecodeError, ValueError, TypeError, csv.Error) as exc:
        raise DataError(f"{path}: damaged ({exc}); rerun: dvc repro -f") from None
