"""Atomic writes and the readers of earlier stages' outputs (prunelab.files)."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from prunelab.errors import DataError
from prunelab.files import atomic_path, read_csv, read_json, write_csv, write_json


@pytest.fixture
def umask_022() -> Iterator[None]:
    """Run with the common umask 022, restoring the previous one afterwards."""
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def test_json_and_csv_round_trip(tmp_path: Path) -> None:
    """write_json/read_json and write_csv/read_csv give back what was written."""
    write_json(tmp_path / "sub" / "m.json", {"b": 1, "a": [1, 2]})
    assert read_json(tmp_path / "sub" / "m.json") == {"b": 1, "a": [1, 2]}
    assert (tmp_path / "sub" / "m.json").read_text().endswith("}\n")
    write_csv(tmp_path / "c.csv", [{"x": 0.5, "y": 2}, {"x": 1.0, "y": 3}])
    assert read_csv(tmp_path / "c.csv", ("y", "x")) == [{"y": 2.0, "x": 0.5},
                                                        {"y": 3.0, "x": 1.0}]


def test_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    """An exception inside atomic_path keeps the previous content and cleans up."""
    target = tmp_path / "m.json"
    write_json(target, {"v": 1})
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("boom")
    assert read_json(target) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["m.json"]


@pytest.mark.parametrize("content", ["{not json", "[1, 2]", "\xff"])
def test_damaged_json_is_a_data_error(tmp_path: Path, content: str) -> None:
    """Invalid JSON or a non-object is a DataError naming the file."""
    path = tmp_path / "m.json"
    path.write_text(content, encoding="latin-1")
    with pytest.raises(DataError, match="m.json"):
        read_json(path)


def test_csv_missing_column_or_file_is_a_data_error(tmp_path: Path) -> None:
    """A CSV without a needed column, or no CSV at all, is a DataError naming the file."""
    path = tmp_path / "c.csv"
    write_csv(path, [{"x": 1}])
    with pytest.raises(DataError, match="missing column"):
        read_csv(path, ("x", "accuracy"))
    with pytest.raises(DataError, match="nope.csv"):
        read_csv(tmp_path / "nope.csv", ("x",))


@pytest.mark.usefixtures("umask_022")
def test_atomic_write_honours_the_umask(tmp_path: Path) -> None:
    """A file written atomically gets the same permissions as a plain write (0644 at 022)."""
    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    write_json(tmp_path / "m.json", {})
    assert stat.S_IMODE((tmp_path / "m.json").stat().st_mode) == stat.S_IMODE(
        plain.stat().st_mode) == 0o644
