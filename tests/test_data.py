"""MNIST files: the IDX format, the verified pickle rebuild, the download fallback, loading."""

from __future__ import annotations

import gzip
import hashlib
import pathlib
import pickle
from collections.abc import Callable
from pathlib import Path

import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from prunelab.data.mnist import (
    download,
    idx_bytes,
    load_split,
    md5_hex,
    parse_idx,
    rebuild_from_pickle,
)
from prunelab.errors import DataError, DownloadError

IDX_NAMES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
             "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def header(*dims: int) -> bytes:
    """An IDX header for unsigned bytes with these (big-endian int32) dimensions."""
    return bytes([0, 0, 0x08, len(dims)]) + b"".join(
        d.to_bytes(4, "big", signed=True) for d in dims)


# --- IDX ---------------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(array=hnp.arrays(np.uint8, hnp.array_shapes(min_dims=1, max_dims=4, min_side=0,
                                                   max_side=6)))
def test_idx_round_trip(array: np.ndarray) -> None:
    """parse_idx(idx_bytes(a)) gives back a: same shape, dtype and values."""
    blob = idx_bytes(array)
    assert len(blob) == 4 + 4 * array.ndim + array.size
    back = parse_idx(blob)
    assert back.dtype == np.uint8 and back.shape == array.shape
    assert np.array_equal(back, array)


def test_idx_bytes_layout() -> None:
    """The header is 0, 0, 0x08, ndim, then big-endian int32 dims; data row-major."""
    array = np.arange(6, dtype=np.uint8).reshape(2, 3)
    assert idx_bytes(array) == header(2, 3) + bytes(range(6))
    assert idx_bytes(array.T) == header(3, 2) + bytes([0, 3, 1, 4, 2, 5])


def test_idx_bytes_rejects_other_dtypes() -> None:
    """Only uint8 arrays are encoded."""
    with pytest.raises(ValueError, match="uint8"):
        idx_bytes(np.zeros(3, dtype=np.int64))


@pytest.mark.parametrize(
    "blob",
    [
        b"",
        b"\x00\x00",
        b"\x00\x00\x08",
        b"\x01\x00\x08\x01" + (1).to_bytes(4, "big") + b"\x00",  # bad magic
        b"\x00\x00\x0d\x01" + (1).to_bytes(4, "big") + b"\x00\x00\x00\x00",  # float type code
        b"\x00\x00\x08\x00",  # no dimensions
        header(2, 3)[:9],  # truncated header
        header(2, 3) + bytes(5),  # data truncated
        header(2, 3) + bytes(7),  # trailing bytes
        header(4) + bytes(3),
        header(-3) + bytes(3),  # negative size
    ],
    ids=["empty", "2-bytes", "3-bytes", "magic", "type", "ndim0", "trunc-header", "short",
         "long", "short-1d", "negative"],
)
def test_parse_idx_rejects_malformed_blobs(blob: bytes) -> None:
    """Truncated, altered or non-byte IDX data is a DataError naming the file."""
    with pytest.raises(DataError, match="some/file"):
        parse_idx(blob, "some/file")


@settings(max_examples=100, deadline=None)
@given(dims=st.lists(st.integers(0, 5), min_size=1, max_size=3), extra=st.integers(-8, 8),
       payload=st.binary(max_size=200))
def test_parse_idx_either_decodes_or_raises_data_error(dims: list[int], extra: int,
                                                       payload: bytes) -> None:
    """Any header with a wrong data length is a DataError; a right one decodes to that shape."""
    size = int(np.prod(dims))
    length = max(size + extra, 0)
    data = (payload * (size + 9))[:length] if payload else bytes(length)
    blob = header(*dims) + data
    if len(data) == size:
        assert parse_idx(blob).shape == tuple(dims)
    else:
        with pytest.raises(DataError):
            parse_idx(blob)


def test_parse_idx_negative_dimensions_pair_is_a_data_error() -> None:
    """A header with dims (-1, -1) and 1 data byte is malformed: DataError, not ValueError."""
    with pytest.raises(DataError):
        parse_idx(header(-1, -1) + b"\x00", "f")


# --- rebuilding from the verified pickle -------------------------------------------------------


def make_split(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(uint8 images (n, 784), float32 images = bytes/256, int64 labels) for a made-up split."""
    raw = rng.integers(0, 256, size=(n, 784), dtype=np.uint8)
    return raw, (raw.astype(np.float32) / 256).astype(np.float32), rng.integers(0, 10, n)


def test_rebuild_from_pickle_writes_the_original_bytes(tmp_path: Path) -> None:
    """The four IDX files decode to the pickle's bytes; train = train + valid in order."""
    rng = np.random.default_rng(0)
    (tr_raw, tr_x, tr_y), (va_raw, va_x, va_y), (te_raw, te_x, te_y) = (
        make_split(rng, n) for n in (7, 3, 5))
    blob = gzip.compress(pickle.dumps(((tr_x, tr_y), (va_x, va_y), (te_x, te_y))))
    dest = tmp_path / "out"
    dest.mkdir()
    rebuild_from_pickle(blob, hashlib.sha256(blob).hexdigest(), dest)

    assert sorted(p.name for p in dest.iterdir()) == sorted(IDX_NAMES)
    train_images = np.concatenate([tr_raw, va_raw]).reshape(-1, 28, 28)
    expected = {
        "train-images-idx3-ubyte": train_images,
        "train-labels-idx1-ubyte": np.concatenate([tr_y, va_y]).astype(np.uint8),
        "t10k-images-idx3-ubyte": te_raw.reshape(-1, 28, 28),
        "t10k-labels-idx1-ubyte": te_y.astype(np.uint8),
    }
    for name, array in expected.items():
        blob_out = (dest / name).read_bytes()
        assert blob_out == idx_bytes(array), name
        assert np.array_equal(parse_idx(blob_out), array)
    assert parse_idx((dest / "train-images-idx3-ubyte").read_bytes()).shape == (10, 28, 28)


class TouchOnUnpickle:
    """Unpickling this creates a file: proof that a pickle was (or was not) loaded."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Callable[..., object], tuple[Path]]:
        return (pathlib.Path.touch, (self.path,))


def test_rebuild_from_pickle_wrong_sha256_never_unpickles(tmp_path: Path) -> None:
    """A SHA-256 mismatch raises DownloadError before anything is unpickled or written."""
    marker = tmp_path / "unpickled"
    blob = gzip.compress(pickle.dumps(TouchOnUnpickle(marker)))
    dest = tmp_path / "out"
    dest.mkdir()
    with pytest.raises(DownloadError, match="SHA-256"):
        rebuild_from_pickle(blob, "0" * 64, dest)
    assert not marker.exists()
    assert list(dest.iterdir()) == []


def test_rebuild_from_pickle_marker_control(tmp_path: Path) -> None:
    """Control for the test above: with the right SHA-256 the marker pickle does run."""
    marker = tmp_path / "unpickled"
    blob = gzip.compress(pickle.dumps(TouchOnUnpickle(marker)))
    dest = tmp_path / "out"
    dest.mkdir()
    with pytest.raises(DownloadError, match="unexpected content"):
        rebuild_from_pickle(blob, hashlib.sha256(blob).hexdigest(), dest)
    assert marker.exists()
    assert list(dest.iterdir()) == []


def test_rebuild_from_pickle_rejects_pixels_that_are_not_bytes(tmp_path: Path) -> None:
    """Images that are not exactly byte/256 are refused rather than rounded."""
    x = np.full((2, 784), 0.3, dtype=np.float32)
    y = np.zeros(2, dtype=np.int64)
    blob = gzip.compress(pickle.dumps(((x, y), (x, y), (x, y))))
    with pytest.raises(DownloadError, match="bytes / 256"):
        rebuild_from_pickle(blob, hashlib.sha256(blob).hexdigest(), tmp_path)


# --- download with fallback ------------------------------------------------------------------

GOOD = {"alpha.bin": b"alpha bytes", "beta.bin": b"beta bytes"}
EXPECTED = {name: md5_hex(content) for name, content in GOOD.items()}


def writes(files: dict[str, bytes], calls: list[str], name: str,
           fail: BaseException | None = None) -> Callable[[Path], None]:
    """A fake source: records its call, writes ``files``, then raises ``fail`` if given."""

    def fetch(directory: Path) -> None:
        calls.append(name)
        assert directory.is_dir() and list(directory.iterdir()) == []
        for file, content in files.items():
            (directory / file).write_bytes(content)
        if fail is not None:
            raise fail

    return fetch


def test_download_skips_failing_sources_and_uses_the_first_good_one(tmp_path: Path) -> None:
    """A raising source and a wrong-bytes source are skipped; later sources are not called."""
    calls: list[str] = []
    dest = tmp_path / "data" / "mnist"
    sources = [
        ("raises", writes({"alpha.bin": GOOD["alpha.bin"]}, calls, "raises",
                          DownloadError("mirror down"))),
        ("oserror", writes({}, calls, "oserror", OSError("disk full"))),
        ("wrong", writes({**GOOD, "beta.bin": b"tampered"}, calls, "wrong")),
        ("good", writes({**GOOD, "README": b"extra"}, calls, "good")),
        ("never", writes(GOOD, calls, "never")),
    ]
    assert download(dest, sources, EXPECTED) == "good"
    assert calls == ["raises", "oserror", "wrong", "good"]
    assert sorted(p.name for p in dest.iterdir()) == sorted(GOOD)  # the extra file is dropped
    for name, content in GOOD.items():
        assert (dest / name).read_bytes() == content
    assert [p.name for p in dest.parent.iterdir()] == ["mnist"]  # no scratch left behind


def test_download_replaces_an_existing_destination(tmp_path: Path) -> None:
    """Stale files in an existing destination do not survive a successful download."""
    dest = tmp_path / "mnist"
    dest.mkdir()
    (dest / "stale").write_bytes(b"old")
    assert download(dest, [("good", writes(GOOD, [], "good"))], EXPECTED) == "good"
    assert sorted(p.name for p in dest.iterdir()) == sorted(GOOD)


def test_download_all_sources_fail(tmp_path: Path) -> None:
    """All failing: DownloadError naming the checksum mismatch; nothing left on disk."""
    dest = tmp_path / "data" / "mnist"
    calls: list[str] = []
    sources = [
        ("partial", writes({"alpha.bin": GOOD["alpha.bin"]}, calls, "partial",
                           DownloadError("connection reset"))),
        ("wrong", writes({"alpha.bin": b"x", "beta.bin": GOOD["beta.bin"]}, calls, "wrong")),
        ("missing", writes({"alpha.bin": GOOD["alpha.bin"]}, calls, "missing")),
    ]
    with pytest.raises(DownloadError) as info:
        download(dest, sources, EXPECTED)
    message = str(info.value)
    assert "checksum mismatch" in message
    assert "connection reset" in message and "alpha.bin" in message
    assert "beta.bin missing" in message
    assert calls == ["partial", "wrong", "missing"]
    assert not dest.exists()
    assert list(dest.parent.iterdir()) == []  # no scratch directories beside it


def test_download_drops_an_extra_subdirectory(tmp_path: Path) -> None:
    """A verified source that also leaves a subdirectory still wins; the extra is dropped."""

    def fetch(directory: Path) -> None:
        for name, content in GOOD.items():
            (directory / name).write_bytes(content)
        (directory / "raw").mkdir()

    dest = tmp_path / "mnist"
    assert download(dest, [("good", fetch)], EXPECTED) == "good"
    assert sorted(p.name for p in dest.iterdir()) == sorted(GOOD)


# --- loading -----------------------------------------------------------------------------------


@pytest.fixture
def mnist_dir(tmp_path: Path) -> tuple[Path, dict[str, str], dict[str, np.ndarray]]:
    """A made-up MNIST directory (5 train, 4 test images), its MD5s and its arrays."""
    rng = np.random.default_rng(1)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (5, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 10, 5, dtype=np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (4, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, 4, dtype=np.uint8),
    }
    expected = {}
    for name, array in arrays.items():
        blob = idx_bytes(array)
        (tmp_path / name).write_bytes(blob)
        expected[name] = md5_hex(blob)
    return tmp_path, expected, arrays


@pytest.mark.parametrize("split", ["train", "t10k"])
@pytest.mark.parametrize("limit", [None, 1, 3, 100])
def test_load_split_returns_the_arrays(mnist_dir: tuple[Path, dict[str, str],
                                                        dict[str, np.ndarray]],
                                       split: str, limit: int | None) -> None:
    """load_split gives the verified images and labels, the first ``limit`` of them."""
    directory, expected, arrays = mnist_dir
    images, labels = load_split(directory, split, limit, expected=expected)
    want_x = arrays[f"{split}-images-idx3-ubyte"][:limit]
    want_y = arrays[f"{split}-labels-idx1-ubyte"][:limit]
    assert images.dtype == np.uint8 and labels.dtype == np.uint8
    assert images.shape == want_x.shape and labels.shape == want_y.shape
    assert np.array_equal(images, want_x) and np.array_equal(labels, want_y)


@pytest.mark.parametrize("damage", ["truncate", "alter", "delete"])
def test_load_split_damaged_file_is_a_data_error(mnist_dir: tuple[Path, dict[str, str],
                                                                  dict[str, np.ndarray]],
                                                 damage: str) -> None:
    """A truncated, altered or missing file gives a DataError naming its path."""
    directory, expected, _ = mnist_dir
    path = directory / "t10k-images-idx3-ubyte"
    blob = bytearray(path.read_bytes())
    if damage == "truncate":
        path.write_bytes(blob[:-10])
    elif damage == "alter":
        blob[100] ^= 0xFF
        path.write_bytes(blob)
    else:
        path.unlink()
    with pytest.raises(DataError) as info:
        load_split(directory, "t10k", expected=expected)
    assert str(path) in str(info.value)
    # the other split is unaffected
    assert load_split(directory, "train", expected=expected)[0].shape == (5, 28, 28)
