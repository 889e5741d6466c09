"""How busy the machine was while a benchmark ran: sampled in the background, per section, with a quiet/busy verdict.

The kernel's load average counts the benchmark's own threads too: a quiet 2-core machine running a 2-thread benchmark
shows a 1-minute load of about 2, the core count. What disturbs the figures is the work of *other* processes, so the
monitor samples, every ``interval`` seconds, the number of running threads of the whole machine (``procs_running``
of ``/proc/stat``) and subtracts the running threads of this process and its children (the memory workers). A
section is **busy** when other processes kept more than ``cores - threads + tolerance`` threads running on average
over any ``window`` seconds (2 cores, 2 threads, tolerance 0.5: more than half a core of foreign work), i.e. when
foreign work and the benchmark's threads together exceeded the core count. The 1-minute load average is recorded
next to it. Linux only; elsewhere every sample is "unknown" and nothing is flagged.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

__all__ = ["LoadSample", "SectionLoad", "LoadMonitor", "foreign_running_threads"]

PROC = Path("/proc")


@dataclass(frozen=True)
class LoadSample:
    """One sample: seconds since the monitor started, 1-minute load average, other processes' running threads."""

    t: float
    load1: float
    foreign: int | None


@dataclass
class SectionLoad:
    """The samples of one section and their summary."""

    name: str
    samples: list[LoadSample] = field(default_factory=list)

    def foreign_mean(self) -> float | None:
        values = [s.foreign for s in self.samples if s.foreign is not None]
        return statistics.fmean(values) if values else None

    def foreign_peak(self, window: float) -> float | None:
        """The largest mean of the foreign running threads over ``window`` seconds (the whole section if shorter)."""
        known = [s for s in self.samples if s.foreign is not None]
        if not known:
            return None
        peak = 0.0
        for i, first in enumerate(known):
            inside = [s.foreign for s in known[i:] if s.t - first.t <= window]
            peak = max(peak, statistics.fmean(inside))
            if known[-1].t - first.t <= window:
                break
        return peak

    def load1_max(self) -> float | None:
        return max((s.load1 for s in self.samples), default=None)


def _running_threads(pid: str) -> int:
    count = 0
    for stat in (PROC / pid / "task").glob("*/stat"):
        with contextlib.suppress(OSError, IndexError):
            # the state follows the parenthesised command name, which may itself contain spaces
            if stat.read_text().rsplit(")", 1)[1].split()[0] == "R":
                count += 1
    return count


def _descendants(root: int) -> set[str]:
    children: dict[str, list[str]] = {}
    for stat in PROC.glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            children.setdefault(fields[1], []).append(stat.parent.name)
    tree, todo = set(), [str(root)]
    while todo:
        pid = todo.pop()
        tree.add(pid)
        todo += children.get(pid, [])
    return tree


def foreign_running_threads(root: int | None = None) -> int | None:
    """Running threads of the machine that do not belong to process ``root`` (default: this one) or its children."""
    try:
        with open(PROC / "stat", encoding="utf-8") as f:
            running = next(int(line.split()[1]) for line in f if line.startswith("procs_running"))
    except (OSError, StopIteration, ValueError):
        return None
    own = sum(_running_threads(pid) for pid in _descendants(os.getpid() if root is None else root))
    return max(running - own, 0)


class LoadMonitor:
    """Samples the load in a background thread; :meth:`section` attributes the samples to named parts of a run.

    Args:
        threads: torch threads of the benchmark.
        cores: logical cores of the machine. Default ``os.cpu_count()``.
        interval: seconds between samples. Default 2.
        window: seconds over which foreign work is averaged for the verdict. Default 30.
        tolerance: foreign running threads tolerated beyond the free cores. Default 0.5.
    """

    def __init__(
        self,
        threads: int,
        cores: int | None = None,
        interval: float = 2.0,
        window: float = 30.0,
        tolerance: float = 0.5,
    ) -> None:
        if threads < 1 or interval <= 0 or window <= 0 or tolerance < 0:
            raise ValueError(f"bad monitor settings: threads={threads}, interval={interval}, window={window}.")
        self.threads = threads
        self.cores = cores or os.cpu_count() or 1
        self.interval, self.window, self.tolerance = interval, window, tolerance
        self.sections: list[SectionLoad] = []
        self.errors: list[str] = []
        self._current = SectionLoad("(outside sections)")
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._start = time.monotonic()

    @property
    def threshold(self) -> float:
        """Foreign running threads above which a section is busy: ``max(cores - threads, 0) + tolerance``."""
        return max(self.cores - self.threads, 0) + self.tolerance

    def sample(self) -> LoadSample:
        """Take one sample now and add it to the current section."""
        s = LoadSample(time.monotonic() - self._start, os.getloadavg()[0], foreign_running_threads())
        self._current.samples.append(s)
        return s

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.sample()
            except Exception as err:  # noqa: BLE001 - a failed sample must not end the sampling; it is reported
                self.errors.append(repr(err))

    def __enter__(self) -> LoadMonitor:
        self._thread = threading.Thread(target=self._run, name="load-monitor", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    @contextlib.contextmanager
    def section(self, name: str) -> Iterator[SectionLoad]:
        """Attribute the samples taken inside the block (plus one at each end) to section ``name``."""
        section = SectionLoad(name)
        self.sections.append(section)
        previous, self._current = self._current, section
        self.sample()
        try:
            yield section
        finally:
            self.sample()
            self._current = previous

    def busy(self, section: SectionLoad) -> bool:
        """Whether foreign work exceeded :attr:`threshold` over some window of the section."""
        peak = section.foreign_peak(self.window)
        return peak is not None and peak > self.threshold

    def busy_sections(self) -> list[str]:
        return [s.name for s in self.sections if self.busy(s)]

    def probe(self, seconds: float) -> SectionLoad:
        """Sample for ``seconds`` (before starting a run) into a new section named ``probe``, and return it."""
        probe = SectionLoad("probe")
        self.sections.append(probe)
        previous, self._current = self._current, probe
        try:
            deadline = time.monotonic() + seconds
            while True:
                self.sample()
                if time.monotonic() >= deadline:
                    break
                time.sleep(min(self.interval, max(deadline - time.monotonic(), 0.0)))
        finally:
            self._current = previous
        return probe
