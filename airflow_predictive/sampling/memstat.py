"""Memory access patterns of a task: anonymous vs file-backed memory.

Why it exists: the working set (``memory_bytes``) mixes memory a task cannot give back (anonymous
pages, shmem/tmpfs) with page cache the kernel reclaims under a limit. Sizing an allocation on
the first instead of the total is the decision these metrics serve (docs/benchmarks/profiler_memstat.md
measures how much it saves). The kernel exposes both in two places:

- a cgroup's ``memory.stat`` (v1: ``total_rss``/``total_cache``/``total_shmem``/``total_pgfault``/
  ``total_pgmajfault``, the non-``total_`` keys when a kernel lacks the hierarchical ones;
  v2: ``anon``/``file``/``shmem``/``pgfault``/``pgmajfault``), exact for the whole group;
- per process, ``/proc/<pid>/status`` (``RssAnon``/``RssFile``/``RssShmem``), summed over the
  process tree the sampler already walks. A process sees only the page cache it maps, so the /proc
  fallback under-reports file memory read with read(2).

anon = anonymous + shmem (neither can be dropped without swap); file = page cache minus shmem.
Page-fault counters are parsed from memory.stat too, but not recorded as metrics: the benchmark
found them redundant (minor faults x 4 KiB = anon growth; major faults 0 without swap and far
below the disk reads the sampler already records under a tight limit).
Parsing is pure; the readers never raise: an unreadable file leaves its values None (one debug log).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

log = logging.getLogger(__name__)

PAGE_KIB = 1024


@dataclass(frozen=True, slots=True)
class MemoryPattern:
    """One reading: bytes now, fault counters cumulative (None = not readable here)."""

    anon_bytes: float | None = None
    file_bytes: float | None = None
    faults: float | None = None  # all page faults (minor + major), cgroup only; not recorded
    major_faults: float | None = None


# ------------------------------------------------------------------------------- pure parsing


def _keyed(text: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2:
            try:
                out[parts[0]] = int(parts[1])
            except ValueError:
                continue
    return out


def _first(values: Mapping[str, int], *keys: str) -> int | None:
    return next((values[k] for k in keys if k in values), None)


def parse_memory_stat(text: str, *, v2: bool) -> MemoryPattern:
    """A cgroup's ``memory.stat``; a key this kernel lacks leaves its value None."""
    stat = _keyed(text)
    if v2:
        anon, file, shmem = stat.get("anon"), stat.get("file"), stat.get("shmem")
        faults, major = stat.get("pgfault"), stat.get("pgmajfault")
    else:
        anon = _first(stat, "total_rss", "rss")
        file = _first(stat, "total_cache", "cache")
        shmem = _first(stat, "total_shmem", "shmem")
        faults = _first(stat, "total_pgfault", "pgfault")
        major = _first(stat, "total_pgmajfault", "pgmajfault")
    return _pattern(anon, file, shmem, faults, major)


def _pattern(
    anon: float | None, file: float | None, shmem: float | None, faults: float | None, major: float | None
) -> MemoryPattern:
    shmem = shmem or 0
    return MemoryPattern(
        anon_bytes=None if anon is None else float(anon + shmem),
        file_bytes=None if file is None else float(max(0, file - shmem)),
        faults=None if faults is None else float(faults),
        major_faults=None if major is None else float(major),
    )


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


class CgroupMemoryPattern:
    """Reads one cgroup's ``memory.stat`` (``folder`` is its memory controller's folder)."""

    def __init__(self, folder: str, *, v2: bool) -> None:
        self.path = os.path.join(folder, "memory.stat")
        self.v2 = v2
        self._warned = False

    def read(self) -> MemoryPattern:
        text = _read_text(self.path)
        if text is None:
            if not self._warned:
                self._warned = True
                log.debug("predictive sampler: %s is not readable; no memory pattern from it", self.path)
            return MemoryPattern()
        return parse_memory_stat(text, v2=self.v2)


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
