"""Shared pieces of the benchmark suite: interleaved timing, medians, machine description, peak-memory workers.

Timing rule: every figure is the median over repeated runs, and the variants compared in one ratio are run
interleaved (A B C A B C ...) in the same process, so that load from other processes on a shared machine hits all of
them alike. Peak memory is the peak resident set size (``VmHWM``, reset after the network is built) of a fresh
subprocess per variant: torch's CPU allocator takes memory straight from the system, so tracemalloc does not see it,
and the peak of a process that ran other variants before would hide the smaller ones.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from typing import Any, Callable, Mapping, Sequence

import torch

__all__ = [
    "interleaved",
    "median",
    "machine_info",
    "run_worker",
    "reset_peak_rss",
    "current_rss_mib",
    "peak_rss_mib",
    "load_average",
]


def median(values: Sequence[float]) -> float:
    """Median of a non-empty sequence."""
    return float(statistics.median(values))


def interleaved(runs: Mapping[str, Callable[[], Any]], rounds: int, warmup: int = 1) -> dict[str, list[float]]:
    """Wall time in seconds of each callable per round, the callables run round-robin after ``warmup`` rounds."""
    for _ in range(warmup):
        for run in runs.values():
            run()
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(rounds):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    return times


def _status_mib(field: str) -> float | None:
    try:
        with open("/proc/self/status", encoding="utf-8") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return None


def reset_peak_rss() -> None:
    """Start a new peak-RSS window (Linux: writing 5 to ``/proc/self/clear_refs`` resets ``VmHWM``); else no-op."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="utf-8") as f:
            f.write("5")
    except OSError:
        pass


def current_rss_mib() -> float:
    """Resident set size of this process now, in MiB."""
    value = _status_mib("VmRSS")
    return value if value is not None else peak_rss_mib()


def peak_rss_mib() -> float:
    """Peak resident set size of this process in MiB since :func:`reset_peak_rss` (``VmHWM``; else ``ru_maxrss``)."""
    value = _status_mib("VmHWM")
    return value if value is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def run_worker(module: str, spec: Mapping[str, Any], threads: int, timeout: float = 900.0) -> dict[str, Any]:
    """Run ``python -m module <spec as JSON>`` in a fresh process and return the JSON object it prints last."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    done = subprocess.run(
        [sys.executable, "-m", module, json.dumps(dict(spec, threads=threads))],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{module} {spec} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_info(threads: int) -> dict[str, str]:
    """Machine, load and library versions for the report header."""
    import monai

    try:
        with open("/proc/meminfo", encoding="utf-8") as f:
            total_kib = int(f.readline().split()[1])
        memory = f"{total_kib / 2**20:.1f} GiB"
    except (OSError, ValueError, IndexError):
        memory = "unknown"
    return {
        "cpu": _cpu_model(),
        "logical cores": str(os.cpu_count()),
        "memory": memory,
        "torch threads": str(threads),
        "load average (1/5/15 min) at start": " / ".join(f"{v:.2f}" for v in os.getloadavg()),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "monai": monai.__version__,
        "oneDNN (mkldnn) available": str(torch.backends.mkldnn.is_available()),
        "platform": platform.platform(),
    }


def load_average() -> str:
    """The 1/5/15-minute load averages as ``"a / b / c"``."""
    return " / ".join(f"{v:.2f}" for v in os.getloadavg())
