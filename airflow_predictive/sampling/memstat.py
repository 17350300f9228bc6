"""Memory access patterns of a task without a cgroup: anonymous vs file memory from /proc.

Why it exists: the working set (``memory_bytes``) mixes memory a task cannot give back (anonymous
pages, shmem/tmpfs) with page cache the kernel reclaims under a limit. Sizing an allocation on
the first instead of the total is the decision these metrics serve (docs/benchmarks/profiler_memstat.md
measures how much it saves). With a cgroup, the group's ``memory.stat`` is exact for the whole
group and is read once per sample with the other counters (``backends.cgroups.files.memory_composition``,
carried by ``CgroupReading``). Without one, this module sums ``/proc/<pid>/status``
(``RssAnon``/``RssFile``/``RssShmem``) over the process tree the sampler already walks. A process
sees only the page cache it maps, so this fallback under-reports file memory read with read(2).

anon = anonymous + shmem (neither can be dropped without swap); file = page cache minus shmem.
Parsing is pure; the reader never raises: nothing readable leaves both values None (one debug log).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterable

log = logging.getLogger(__name__)

PAGE_KIB = 1024


@dataclass(frozen=True, slots=True)
class MemoryPattern:
    """One reading, in bytes (None = not readable here)."""

    anon_bytes: float | None = None
    file_bytes: float | None = None


# ------------------------------------------------------------------------------- pure parsing


def parse_proc_status(text: str) -> tuple[int, int, int] | None:
    """(RssAnon, RssFile, RssShmem) in bytes from ``/proc/<pid>/status``; None when absent (a kernel
    before 4.5, a zombie)."""
    found: dict[str, int] = {}
    for line in text.splitlines():
        key, sep, rest = line.partition(":")
        if sep and key in ("RssAnon", "RssFile", "RssShmem"):
            parts = rest.split()
            try:
                found[key] = int(parts[0]) * PAGE_KIB if parts else 0
            except ValueError:
                return None
    if "RssAnon" not in found or "RssFile" not in found:
        return None
    return found["RssAnon"], found["RssFile"], found.get("RssShmem", 0)


# -------------------------------------------------------------------------------------- readers


def _read_text(path: str) -> str | None:
    try:
        with open(path) as fh:
            return fh.read()
    except OSError:
        return None


class ProcMemoryPattern:
    """Sums ``/proc/<pid>/status`` over the tree's processes (a process gone meanwhile is skipped)."""

    def __init__(self, proc: str = "/proc") -> None:
        self.proc = proc
        self._warned = False

    def read(self, pids: Iterable[int]) -> MemoryPattern:
        anon = file = shmem = 0
        known = False
        for pid in pids:
            status = _read_text(f"{self.proc}/{pid}/status")
            parsed = None if status is None else parse_proc_status(status)
            if parsed is not None:
                known = True
                anon, file, shmem = anon + parsed[0], file + parsed[1], shmem + parsed[2]
        if not known:
            if not self._warned:
                self._warned = True
                log.debug("predictive sampler: no RssAnon/RssFile readable under %s", self.proc)
            return MemoryPattern()
        # RssAnon and RssFile exclude RssShmem, which cannot be dropped without swap: it joins anon
        return MemoryPattern(anon_bytes=float(anon + shmem), file_bytes=float(file))
