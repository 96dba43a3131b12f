"""MNIST-1D (Greydanus 2020): 4,000 training and 1,000 test signals of 40 values, 10 classes.

Generated, never downloaded: the ``mnist1d`` package's ``make_dataset`` with its fixed default
arguments and seed (42) -- its ``get_dataset`` download path is never called. The generated
arrays are stored as float32 signals and int64 labels (``.npy``) and each file's SHA-256 must
match before anything uses it, like MNIST's MD5s. A new numpy, scipy or mnist1d that generated
other numbers would fail the check (one line), not silently change the study.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from prunelab.errors import DataError

REQUIREMENT = "mnist1d==0.0.2.post1"
DIR = Path("data/mnist1d")  # the generated arrays (stage mnist1d of stages/retrain/dvc.yaml)
LENGTH = 40  # values per signal
FILES = ("x_train", "y_train", "x_test", "y_test")
SHA256: Mapping[str, str] = {
    "x_train": "88324c8902778fbd2316ae1f8acbf36d87897390c1c2ad68212f4290790fa2b5",
    "y_train": "c718026182802e01693cbbad83b2af62a4e717da302e71815ac77fdbed4c5dde",
    "x_test": "d67069fc4db4b87677475f89583e9191285825f1eee33060f2fa2dc99fe5a53a",
    "y_test": "4134144e011c5abc45fc2a1f8fcad9556a4addd3bab819f191c3245d7018c243",
}


def generate() -> dict[str, np.ndarray]:
    """The four arrays from the package's default arguments and seed: x (n, 40) float32, y (n,)
    int64; 4,000 train, 1,000 test."""
    try:
        from mnist1d.data import get_dataset_args, make_dataset
    except ImportError as exc:  # pragma: no cover - the project's dependency
        raise DataError(f"the mnist1d package cannot be imported ({exc}); run: pip install "
                        f"'{REQUIREMENT}'") from None
    data = make_dataset(get_dataset_args())
    return {"x_train": np.asarray(data["x"], np.float32),
            "y_train": np.asarray(data["y"], np.int64),
            "x_test": np.asarray(data["x_test"], np.float32),
            "y_test": np.asarray(data["y_test"], np.int64)}


def npy_bytes(array: np.ndarray) -> bytes:
    """An array as ``.npy`` bytes (what is stored and hashed)."""
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(array), allow_pickle=False)
    return buf.getvalue()


def sha256_hex(blob: bytes) -> str:
    return hashlib.sha256(blob).hexdigest()


def write(dest: Path, expected: Mapping[str, str] = SHA256) -> None:
    """Generate, check every array's SHA-256, then write ``dest/<name>.npy`` (all or nothing:
    a mismatch writes nothing and names the file, the digest and the one expected)."""
    from prunelab.runtime.files import Outputs

    blobs = {name: npy_bytes(array) for name, array in generate().items()}
    for name, blob in blobs.items():
        if sha256_hex(blob) != expected[name]:
            raise DataError(f"generated MNIST-1D {name}: SHA-256 {sha256_hex(blob)}, expected "
                            f"{expected[name]} (another numpy/scipy/mnist1d than "
                            f"{REQUIREMENT}?)")
    out = Outputs()
    for name, blob in blobs.items():
        out.add_bytes(dest / f"{name}.npy", blob)
    out.commit()


def load(directory: Path, expected: Mapping[str, str] = SHA256) -> dict[str, np.ndarray]:
    """The four verified arrays; a missing or altered file is one DataError line."""
    arrays = {}
    for name in FILES:
        path = directory / f"{name}.npy"
        try:
            blob = path.read_bytes()
        except FileNotFoundError:
            raise DataError(f"{path}: missing; run: dvc repro stages/retrain/dvc.yaml:mnist1d") \
                from None
        if sha256_hex(blob) != expected[name]:
            raise DataError(f"{path}: fails its SHA-256 check (altered or truncated); run: dvc "
                            "repro -f stages/retrain/dvc.yaml:mnist1d")
        arrays[name] = np.load(io.BytesIO(blob), allow_pickle=False)
    return arrays
