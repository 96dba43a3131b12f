"""Atomic writes and the readers of earlier stages' outputs (prunelab.runtime.files)."""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from reliability_helpers import read_only_dir

from prunelab.errors import DataError
from prunelab.runtime import files
from prunelab.runtime.files import Outputs, atomic_path, read_csv, read_json, write_csv, write_json


@contextlib.contextmanager
def mock_full_disk() -> Iterator[None]:
    """Every temporary the writer opens is /dev/full's twin: writes fail with ENOSPC."""
    real = files._temporary_beside

    def full(path: Path) -> Path:
        tmp = real(path)
        tmp.unlink()
        tmp.symlink_to("/dev/full")
        return tmp

    files._temporary_beside = full  # type: ignore[assignment]
    try:
        yield
    finally:
        files._temporary_beside = real  # type: ignore[assignment]


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


# --- a stage's outputs: all together or none -------------------------------------------------

def test_outputs_commit_writes_every_file(tmp_path: Path) -> None:
    """Outputs.commit writes each staged file (folders made as needed), no temporaries left."""
    out = Outputs()
    out.add_csv(tmp_path / "plots" / "c.csv", [{"k": 0.5}])
    out.add_json(tmp_path / "metrics" / "m.json", {"a": 1})
    out.add_bytes(tmp_path / "f.png", b"\x89PNG")
    out.commit()
    assert read_json(tmp_path / "metrics" / "m.json") == {"a": 1}
    assert read_csv(tmp_path / "plots" / "c.csv", ("k",)) == [{"k": 0.5}]
    assert out.paths == [tmp_path / "plots" / "c.csv", tmp_path / "metrics" / "m.json",
                         tmp_path / "f.png"]
    assert not list(tmp_path.rglob("*.tmp"))


@pytest.mark.parametrize("blocked", ["metrics", "plots"])
def test_outputs_land_together_or_not_at_all(tmp_path: Path, blocked: str) -> None:
    """One unwritable folder: one line naming the file, and *neither* file changes (the curve
    is not left without its metrics partner, whichever of the two fails)."""
    for name in ("metrics", "plots"):
        (tmp_path / name).mkdir()
    old_csv, old_json = tmp_path / "plots" / "c.csv", tmp_path / "metrics" / "m.json"
    old_csv.write_text("old csv\n")
    old_json.write_text("old json\n")
    out = Outputs()
    out.add_csv(old_csv, [{"k": 0.5}])
    out.add_json(old_json, {"a": 1})
    with read_only_dir(tmp_path / blocked), pytest.raises(DataError) as err:
        out.commit()
    target = old_json if blocked == "metrics" else old_csv
    assert str(err.value).startswith(f"{target}: cannot be written")
    assert "\n" not in str(err.value)
    assert old_csv.read_text() == "old csv\n" and old_json.read_text() == "old json\n"
    assert not list(tmp_path.rglob("*.tmp"))


def test_full_disk_is_one_line_and_nothing_written(tmp_path: Path) -> None:
    """ENOSPC while writing (/dev/full as a stand-in for a full disk): one line, no file."""
    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full")
    out = Outputs()
    out.add_text(tmp_path / "a.json", "{}\n")
    with mock_full_disk(), pytest.raises(DataError, match="cannot be written") as err:
        out.commit()
    assert "a.json" in str(err.value)
    assert not (tmp_path / "a.json").exists() and not list(tmp_path.rglob("*.tmp"))
