"""Observe-only usage of a process tree (psutil), for hosts where no cgroup can be written.

Why it exists: without a writable cgroup the backend still runs the task and still reports what
it uses, but it enforces nothing, and says so. This reader is deliberately small: the product's
full process-tree sampler lives in ``airflow_predictive.sampling`` (backends do not import it, to
keep adapters independent). It must never report a metric it could not read (None, not 0).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import psutil

from airflow_predictive.core.model.resources import Metric, ResourceVector
from airflow_predictive.core.ports import SystemClock

if TYPE_CHECKING:
    from airflow_predictive.core.ports import Clock


MIN_INTERVAL_S = 0.1


class ProcessTreeUsage:
    """``read()`` -> usage of ``pid`` and its live descendants; None once ``pid`` is gone."""

    def __init__(self, pid: int, clock: Clock | None = None) -> None:
        self._clock: Clock = clock or SystemClock()
        self._pid = pid
        self._prev: tuple[float, float | None, float | None, float | None] | None = None
        self._last: tuple[float, float | None, float | None, float | None] | None = None
        self._last = self._totals()

    def _totals(self) -> tuple[float, float | None, float | None, float | None] | None:
        """(time, cpu seconds, read bytes, written bytes) of the tree, or None when the root is gone."""
        try:
            root = psutil.Process(self._pid)
            if root.status() == psutil.STATUS_ZOMBIE:
                return None
            procs = [root, *root.children(recursive=True)]
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            return None
        cpu: float | None = 0.0
        rd: float | None = 0.0
        wr: float | None = 0.0
        for p in procs:
            try:
                t = p.cpu_times()
                cpu = None if cpu is None else cpu + t.user + t.system
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
            try:
                io = p.io_counters()
                rd = None if rd is None else rd + io.read_bytes
                wr = None if wr is None else wr + io.write_bytes
            except (psutil.NoSuchProcess, psutil.AccessDenied, AttributeError, NotImplementedError):
                rd = wr = None
        return (self._clock.monotonic(), cpu, rd, wr)

    def _rss(self) -> float | None:
        try:
            root = psutil.Process(self._pid)
            procs = [root, *root.children(recursive=True)]
            return float(sum(p.memory_info().rss for p in procs))
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            return None

    def read(self) -> ResourceVector | None:
        now = self._totals()
        if now is None:
            return None
        values: dict[Metric, float | None] = {Metric.MEMORY_BYTES: self._rss()}
        # psutil's CPU times tick at 10 ms: a rate over a few ms is noise. Readings closer than
        # MIN_INTERVAL_S to the last baseline are measured against the one before it.
        base = self._last
        if base is not None and now[0] - base[0] < MIN_INTERVAL_S and self._prev is not None:
            base = self._prev
        if base is not None and now[0] > base[0]:
            dt = now[0] - base[0]
            for metric, i in ((Metric.CPU_CORES, 1), (Metric.DISK_READ_BPS, 2), (Metric.DISK_WRITE_BPS, 3)):
                a, b = now[i], base[i]
                values[metric] = None if a is None or b is None else max(0.0, (a - b) / dt)
        if self._last is None or now[0] - self._last[0] >= MIN_INTERVAL_S:
            self._prev, self._last = self._last, now
        return ResourceVector.lenient(values)
