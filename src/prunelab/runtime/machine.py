"""Which machine produced a number: CPU, cores, GPU, torch, its BLAS and its thread count.

Timings and even accuracies (BLAS summation order, SIMD kernels) depend on these, so every
MLflow run and every benchmark file carries them. Reading them must stay cheap: this module
imports nothing heavy, and asks torch only when the caller has already imported it.
"""

from __future__ import annotations

import functools
import os
import platform
import re
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import psutil

CPUINFO = Path("/proc/cpuinfo")


@dataclass(frozen=True)
class Machine:
    """What a run ran on; the torch fields are None when torch was not loaded."""

    cpu: str  # the CPU's model name
    cores: int  # logical CPUs this process may use (a container's or taskset's share)
    gpu: str | None  # the CUDA device's name, "none" without CUDA
    torch: str | None  # torch.__version__, e.g. "2.14.1+cpu"
    blas: str | None  # the BLAS torch was built with, e.g. "MKL 2024.2"
    simd: str | None  # the CPU kernels torch dispatches to, e.g. "AVX512"
    threads: int | None  # torch's intra-op threads: results depend on it (prunelab.runtime.threads)

    def as_dict(self) -> dict[str, str | int | None]:
        """The fields by name (for JSON)."""
        return asdict(self)

    def tags(self) -> dict[str, str]:
        """``machine.<field>`` tags for MLflow, fields that are unknown left out."""
        return {f"machine.{k}": str(v) for k, v in asdict(self).items() if v is not None}


def cpu_model(cpuinfo: Path = CPUINFO) -> str:
    """The CPU's model name from /proc/cpuinfo, else what ``platform`` knows."""
    try:
        text = cpuinfo.read_text(encoding="utf-8", errors="replace")
    except OSError:
        text = ""
    # x86: "model name"; some ARM kernels: "Model" or "Hardware"
    for key in ("model name", "Model", "Hardware"):
        found = re.search(rf"^{key}\s*:\s*(.+)$", text, re.MULTILINE)
        if found:
            return found.group(1).strip()
    return platform.processor() or platform.machine() or "unknown"


LAUNCHED_BY = "PRUNELAB_LAUNCHED_BY"  # set by stages/_launch.py in a stage it runs


def stage_process() -> psutil.Process:
    """The process DVC (or a user) started for this stage: this one, or, when stages/_launch.py
    runs the stage in a fork of its warm server, the process that handed it over (its pid in
    PRUNELAB_LAUNCHED_BY). Its parents are the stage's: `dvc repro`, a `dvc queue` worker."""
    import psutil

    pid = os.environ.get(LAUNCHED_BY, "")
    return psutil.Process(int(pid)) if pid.isdigit() else psutil.Process()


def seconds_since_start(proc: psutil.Process) -> float:
    """Seconds since ``proc`` started, to the clock tick (10 ms). On Linux both ends come from
    /proc and count from boot: the process's start tick and the uptime. psutil's
    ``create_time()`` adds the boot time, which /proc/stat gives in whole seconds, so
    ``time.time() - create_time()`` is off by the boot time's fraction, up to 1 s (0.84 s on
    one of this project's machines). Elsewhere: that difference."""
    try:
        stat = Path(f"/proc/{proc.pid}/stat").read_text()
        start_ticks = int(stat.rsplit(")", 1)[1].split()[19])  # field 22: starttime
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return uptime - start_ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return time.time() - proc.create_time()


def usable_cores() -> int:
    """Logical CPUs this process may run on (what bounds its speed), at least 1."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


def blas_of(config: str) -> str | None:
    """The BLAS named in ``torch.__config__.show()``: "MKL 2024.2", "openblas", ..."""
    mkl = re.search(r"Math Kernel Library Version ([\d.]+)", config)
    if mkl:
        return f"MKL {mkl.group(1).rstrip('.')}"
    info = re.search(r"BLAS_INFO=([^,\s]+)", config)
    return info.group(1) if info else None


def simd_of(config: str) -> str | None:
    """The CPU capability line of ``torch.__config__.show()`` ("AVX2", "AVX512", ...)."""
    found = re.search(r"CPU capability usage:\s*(\S+)", config)
    return found.group(1) if found else None


@functools.lru_cache(maxsize=1)
def describe() -> Machine:
    """This machine (cached: the first call decides). Torch is described only if already
    imported: importing it takes seconds, and a process that never loaded torch did no tensor
    maths worth describing."""
    torch = sys.modules.get("torch")
    if torch is None:
        return Machine(cpu_model(), usable_cores(), None, None, None, None, None)
    config = torch.__config__.show()  # ~1 ms: a string compiled into the library
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    return Machine(cpu_model(), usable_cores(), gpu, torch.__version__, blas_of(config),
                   simd_of(config), torch.get_num_threads())
