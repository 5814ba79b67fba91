"""What every benchmark records about the machine and its own processes; imported by each bench_*.py.

`machine_info()` goes into each JSON report: CPUs, the load averages, and the memory bandwidth measured right
then (a large tensor copy), so a figure taken on a busy or slow machine says so; `RunStart` adds to it the load
averages and the source measured at both ends of a run. The rest is what the benchmarks' worker processes share:
peak-RSS readings, CPU time, waiting for idle CPUs.
"""

from __future__ import annotations

import importlib
import os
import resource
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]  # the repository
SHARED = ROOT.parent / "shared"  # data, assets and peers beside the repository; absent on most machines
MIB = 2**20


def load_average() -> list[float]:
    """The 1-, 5- and 15-minute load averages. Above the CPU count, other processes competed with the run."""
    return [round(x, 2) for x in os.getloadavg()]


def memory_bandwidth(mib: int = 256, repeats: int = 5) -> float:
    """GB/s of copying a `mib` MiB tensor into another with torch's threads, best of `repeats`; bytes read plus
    bytes written, as STREAM's Copy counts them. Far larger than the CPU caches, so it is memory's speed."""
    import torch

    source = torch.ones(mib * MIB // 4)
    target = torch.empty_like(source)
    target.copy_(source)  # fault the pages in before timing
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        target.copy_(source)
        best = min(best, time.perf_counter() - start)
    return round(2 * source.nbytes / best / 1e9, 2)


def machine_info() -> dict[str, Any]:
    """CPUs, load averages and measured memory bandwidth now: the `machine` block of every report."""
    import torch

    model = None
    if os.path.exists("/proc/cpuinfo"):
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), None)
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "load_average": load_average(),
        "memory_bandwidth_gb_per_s": memory_bandwidth(),
        "bandwidth_threads": torch.get_num_threads(),
    }


def source_state() -> dict[str, Any]:
    """The git HEAD of this checkout and the gptkit source files that differ from it (uncommitted edits)."""

    def git(*cmd: str) -> list[str]:
        out = subprocess.run(["git", "-C", str(ROOT), *cmd], capture_output=True, text=True, check=False)
        return out.stdout.split()

    dirty = git("diff", "--name-only", "HEAD", "--", "src") + git("ls-files", "--others", "--exclude-standard", "src")
    return {"git_head": next(iter(git("rev-parse", "--short", "HEAD")), None), "uncommitted_src": dirty}


@dataclass(frozen=True)
class RunStart:
    """A run's start, made when it starts: the clock, the load averages and the source measured."""

    clock: float = field(default_factory=time.perf_counter)
    load: list[float] = field(default_factory=load_average)
    source: dict[str, Any] = field(default_factory=source_state)

    def closing(self, *packages: str) -> dict[str, Any]:
        """The last blocks of a report, at the run's end: `env` (the `__version__` of each package, the source at
        start and end, Python), `machine` (with the load averages at start and end) and `total_seconds`."""
        versions = {name: importlib.import_module(name).__version__ for name in packages}
        return {
            "env": {
                **versions,
                "gptkit_source_start": self.source,
                "gptkit_source_end": source_state(),
                "python": sys.version.split()[0],
            },
            "machine": {**machine_info(), "load_average_start": self.load, "load_average_end": load_average()},
            "total_seconds": round(time.perf_counter() - self.clock, 1),
        }


# -- inside a worker process -----------------------------------------------------------------------


def proc_status(key: str) -> int:
    """A /proc/self/status memory field (VmRSS, VmHWM) in bytes."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    raise KeyError(key)


def reset_peak() -> None:
    """Reset this process's peak RSS (VmHWM) to its current RSS (Linux >= 4.0)."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def cpu_seconds() -> float:
    """User + system CPU time of this process so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def wait_for_idle(limit: float) -> float:
    """Wait (at most `limit` s) until the CPUs are < 10% busy for 3 s running; return the seconds waited.

    On a shared machine another process halves a run's speed (and OpenMP threads spin while they wait for
    a descheduled peer), so a case that starts on a busy machine measures the neighbour.
    """

    def ticks() -> tuple[int, int]:
        with open("/proc/stat", encoding="ascii") as fh:
            fields = [int(v) for v in fh.readline().split()[1:]]
        return sum(fields[:3]), fields[3] + fields[4]  # (user+nice+system, idle+iowait)

    if limit <= 0 or not os.path.exists("/proc/stat"):
        return 0.0
    start, quiet = time.perf_counter(), 0
    while quiet < 3 and time.perf_counter() - start < limit:
        busy0, idle0 = ticks()
        time.sleep(1.0)
        busy1, idle1 = ticks()
        busy, idle = busy1 - busy0, idle1 - idle0
        quiet = quiet + 1 if busy * 10 < busy + idle else 0
    return time.perf_counter() - start
