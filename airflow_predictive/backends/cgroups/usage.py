"""Usage of one task from its cgroup's files, as a ``ResourceVector`` (a ``UsageSource``).

Why it exists: a cgroup holds the whole process tree's CPU time, memory and block I/O, including
children that a process-tree walk would miss after they exit. Counters become rates through the
difference between two readings over the injected clock's monotonic time; the first reading is
taken at construction, so the first ``read()`` already has a rate.

It must never report a metric it did not read: network and GPU are always None here, and a file
absent on this kernel leaves its metric None (never 0). ``read()`` returns None once the group
is gone.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from airflow_predictive.backends.cgroups.group import CgroupReading, TaskGroup, group_from_ref
from airflow_predictive.core.model.resources import Metric, ResourceVector
from airflow_predictive.core.ports import SystemClock

if TYPE_CHECKING:
    from airflow_predictive.core.ports import Clock


def _rate(now: float | None, before: float | None, dt: float) -> float | None:
    if now is None or before is None or dt <= 0:
        return None
    return max(0.0, (now - before) / dt)


def _bytes(value: int | None) -> float | None:
    return None if value is None else float(value)


def to_vector(current: CgroupReading, previous: CgroupReading | None, dt: float) -> ResourceVector:
    """Rates over ``dt`` seconds (None without a previous reading), memory as the working set and
    its anon / file composition."""
    prev_io = None if previous is None else previous.io
    composition = current.memory_composition
    return ResourceVector.lenient(
        {
            Metric.CPU_CORES: _rate(
                current.cpu_seconds, None if previous is None else previous.cpu_seconds, dt
            ),
            Metric.MEMORY_BYTES: None
            if current.memory_working_set is None
            else float(current.memory_working_set),
            Metric.DISK_READ_BPS: _rate(
                None if current.io is None else current.io.read, None if prev_io is None else prev_io.read, dt
            ),
            Metric.DISK_WRITE_BPS: _rate(
                None if current.io is None else current.io.write,
                None if prev_io is None else prev_io.write,
                dt,
            ),
            Metric.MEMORY_ANON_BYTES: None if composition is None else _bytes(composition.anon),
            Metric.MEMORY_FILE_BYTES: None if composition is None else _bytes(composition.file),
        }
    )


def _fills_gaps(baseline: CgroupReading, current: CgroupReading) -> bool:
    """A baseline without a counter the group now has cannot give that rate: replace it."""
    return (baseline.cpu_seconds is None and current.cpu_seconds is not None) or (
        baseline.io is None and current.io is not None
    )


class CgroupUsageSource:
    """``read()`` -> usage of the cgroup named by ``path`` (a handle's ``ref`` or a bare folder)."""

    def __init__(self, path: str, clock: Clock | None = None, *, min_interval_s: float = 0.1) -> None:
        self.ref = path
        self._min_interval_s = min_interval_s
        self._group: TaskGroup = group_from_ref(path)
        self._clock: Clock = clock or SystemClock()
        self._last: CgroupReading | None = self._group.read()
        self._last_t = self._clock.monotonic()
        self._prev: CgroupReading | None = None
        self._prev_t = self._last_t
        self._peak: int | None = None

    @classmethod
    def for_group(cls, group: TaskGroup, clock: Clock | None = None) -> CgroupUsageSource:
        return cls(group.ref, clock)

    def read_detail(self) -> CgroupReading | None:
        """The raw counters now (memory peak, OOM kills, limits in force), without moving the baseline."""
        return self._group.read()

    @property
    def peak_memory_bytes(self) -> int | None:
        """Highest memory usage the kernel saw for the group (v1 max_usage_in_bytes / v2 memory.peak)."""
        return self._peak

    def read(self) -> ResourceVector | None:
        current = self._group.read()
        if current is None:
            return None
        now = self._clock.monotonic()
        if current.memory_peak is not None:
            self._peak = max(self._peak or 0, current.memory_peak)
        # A rate over a few milliseconds is noise (and two calls at the same instant have none):
        # readings closer than min_interval_s to the last baseline are measured against the one
        # before it, and do not move the baselines.
        if (
            self._last is None
            or now - self._last_t >= self._min_interval_s
            or _fills_gaps(self._last, current)
        ):
            vector = to_vector(current, self._last, now - self._last_t)
            self._prev, self._prev_t = self._last, self._last_t
            self._last, self._last_t = current, now
            return vector
        if self._prev is not None:
            return to_vector(current, self._prev, now - self._prev_t)
        return to_vector(current, self._last, now - self._last_t)
