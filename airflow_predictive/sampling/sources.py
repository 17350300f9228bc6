"""Builds the UsageSource the sidecar samples: a process tree, or a cgroup plus the tree.

With a cgroup, the cgroup's own accounting (CPU, memory, block I/O: exact, including processes
that left the tree) comes first and the process tree fills what a cgroup cannot see (network,
GPU). The cgroup adapter lives in ``backends.cgroups.usage`` and is imported only when a cgroup is
asked for, so the sidecar starts fast and works where that backend is absent.

Memory access patterns (anonymous vs file-backed memory) come with the cgroup's other counters
from its ``memory.stat`` when there is a cgroup, else from /proc of the tree's processes
(``sampling.memstat``).

Nothing here may raise into the sampler loop once built; building may raise ``TargetGone``.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import psutil

from airflow_predictive.core.model.resources import Metric, ResourceVector
from airflow_predictive.sampling.gpu import build_gpu
from airflow_predictive.sampling.memstat import MemoryPattern, ProcMemoryPattern
from airflow_predictive.sampling.process_tree import ProcessTreeSource

if TYPE_CHECKING:
    from collections.abc import Callable, Collection

    from airflow_predictive.core.ports import Clock, UsageSource

log = logging.getLogger(__name__)


class TargetGone(RuntimeError):
    """The process to sample does not exist (any more)."""


def with_pattern(reading: ResourceVector, read: Callable[[], MemoryPattern]) -> ResourceVector:
    """``reading`` with the anon / file memory ``read()`` returns (a failing read: both absent)."""
    try:
        pattern = read()
    except Exception as exc:  # never into the task path: the pattern is absent for this tick
        log.debug("predictive sampler: cannot read the memory pattern (%s)", exc)
        pattern = MemoryPattern()
    return reading.with_value(Metric.MEMORY_ANON_BYTES, pattern.anon_bytes).with_value(
        Metric.MEMORY_FILE_BYTES, pattern.file_bytes
    )


class PatternTreeSource(ProcessTreeSource):
    """A process tree whose readings also carry anon / file memory summed from /proc."""

    def __init__(self, pid: int, **kwargs: Any) -> None:
        super().__init__(pid, **kwargs)
        self._pattern = ProcMemoryPattern()

    def read(self) -> ResourceVector | None:
        reading = super().read()
        if reading is None:
            return None
        return with_pattern(reading, lambda: self._pattern.read(self.pids))


class CombinedSource:
    """Values of ``primary``; metrics it leaves absent come from ``tree``. Gone when either is."""

    def __init__(self, primary: UsageSource, tree: ProcessTreeSource) -> None:
        self.primary = primary
        self.tree = tree

    @property
    def pids(self) -> tuple[int, ...]:
        return self.tree.pids

    def read(self) -> ResourceVector | None:
        first = self.primary.read()
        second = self.tree.read()
        if first is None or second is None:
            return None
        return ResourceVector.lenient(
            {m: first.get(m) if first.get(m) is not None else second.get(m) for m in Metric}
        )

    def oom_killed(self) -> bool:
        return source_oom_killed(self.primary)

    def close(self) -> None:
        self.tree.close()
        close = getattr(self.primary, "close", None)
        if callable(close):
            close()


def source_oom_killed(source: Any) -> bool:
    """Whether a cgroup source saw the kernel OOM-kill a process of its task (False if unknown).

    Reads ``read_detail().oom_kills`` of ``backends.cgroups.usage.CgroupUsageSource``; any other
    source, or a cgroup that cannot be read any more, answers False.
    """
    read_detail = getattr(source, "read_detail", None)
    if not callable(read_detail):
        return False
    try:
        detail = read_detail()
    except Exception as exc:  # a cgroup that vanished, an unreadable file
        log.debug("predictive sampler: cannot read OOM state (%s)", exc)
        return False
    kills = getattr(detail, "oom_kills", None)
    return isinstance(kills, int) and kills > 0


def _cgroup_source(ref: str, clock: Clock | None) -> UsageSource:
    from airflow_predictive.backends.cgroups.usage import CgroupUsageSource

    source: UsageSource = CgroupUsageSource(ref, clock)
    return source


def build_source(
    pid: int,
    *,
    cgroup: str | None = None,
    gpu_mode: str = "auto",
    clock: Clock | None = None,
    exclude: Collection[int] = (),
) -> ProcessTreeSource | CombinedSource:
    """The source for the sidecar's command line; raises TargetGone when ``pid`` does not exist.
    ``exclude``: processes never counted (the sidecar itself and its children)."""
    gpu = build_gpu(gpu_mode)
    try:
        if not cgroup:
            return PatternTreeSource(pid, clock=clock, gpu=gpu, exclude=exclude)
        tree = ProcessTreeSource(pid, clock=clock, gpu=gpu, exclude=exclude)
    except psutil.NoSuchProcess as exc:
        raise TargetGone(f"process {pid} does not exist") from exc
    try:
        primary = _cgroup_source(cgroup, clock)
    except Exception as exc:  # backend missing, cgroup not readable: the tree still measures
        log.warning(
            "predictive sampler: cannot read cgroup %s (%s); sampling the process tree instead", cgroup, exc
        )
        tree.close()
        try:
            return PatternTreeSource(pid, clock=clock, gpu=gpu, exclude=exclude)
        except psutil.NoSuchProcess as exc2:
            raise TargetGone(f"process {pid} does not exist") from exc2
    return CombinedSource(primary, tree)
