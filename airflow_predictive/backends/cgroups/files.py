"""Pure parsing and formatting of cgroup interface files (v1 and v2), and quota conversions.

Why it exists: every number the cgroup backend reads or writes goes through one small, tested
function here, so the v1/v2 differences (``cpu.cfs_quota_us`` vs ``cpu.max``, ``memory.oom_control``
vs ``memory.events``, ``blkio`` vs ``io.stat``) live in one place and are unit-tested against text,
not against the host. It must never touch the file system: callers pass the file's text.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

# v1 writes -1 for "no limit"; reading back an unlimited memory limit gives PAGE_COUNTER_MAX
# rounded to the page size (9223372036854771712 on 4 KiB pages). Anything this large is "none".
V1_UNLIMITED_THRESHOLD = 2**62
DEFAULT_CFS_PERIOD_US = 100_000
MIN_CFS_QUOTA_US = 1_000  # the kernel refuses quotas below 1 ms
V1_SHARES_PER_CORE = 1024
V2_WEIGHT_DEFAULT = 100
NEVER_BINDING_BPS = 2**40  # 1 TiB/s: a blk-throttle rule that only switches byte accounting on


class CgroupFileError(ValueError):
    """A cgroup file's text does not have the expected shape."""


def parse_int(text: str) -> int:
    try:
        return int(text.strip())
    except ValueError:
        raise CgroupFileError(f"expected an integer, got {text.strip()[:40]!r}") from None


def parse_flat_keyed(text: str) -> dict[str, int]:
    """``key value`` per line (``memory.events``, ``memory.oom_control``, ``cpu.stat``, ``memory.stat``)."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 2:
            raise CgroupFileError(f"expected 'key value', got {line[:60]!r}")
        try:
            out[parts[0]] = int(parts[1])
        except ValueError:
            raise CgroupFileError(f"{parts[0]}: {parts[1][:30]!r} is not an integer") from None
    return out


def parse_v1_memory_limit(text: str) -> int | None:
    """``memory.limit_in_bytes``: bytes, or None when unlimited."""
    value = parse_int(text)
    return None if value < 0 or value >= V1_UNLIMITED_THRESHOLD else value


def parse_v2_max(text: str) -> int | None:
    """``memory.max`` / ``memory.swap.max``: bytes, or None for ``max``."""
    raw = text.strip()
    return None if raw == "max" else parse_int(raw)


@dataclass(frozen=True, slots=True)
class CpuQuota:
    """A CFS bandwidth limit: ``quota_us`` of CPU time per ``period_us``; None quota = unlimited."""

    quota_us: int | None
    period_us: int = DEFAULT_CFS_PERIOD_US

    @property
    def cores(self) -> float | None:
        return None if self.quota_us is None else self.quota_us / self.period_us


def quota_for_cores(cores: float | None, period_us: int = DEFAULT_CFS_PERIOD_US) -> CpuQuota:
    """The CFS quota that gives ``cores`` (rounded to whole microseconds, at least 1 ms)."""
    if cores is None:
        return CpuQuota(None, period_us)
    if not math.isfinite(cores) or cores <= 0:
        raise ValueError(f"cpu cores must be a finite value > 0, got {cores!r}")
    return CpuQuota(max(MIN_CFS_QUOTA_US, round(cores * period_us)), period_us)


def parse_cpu_max(text: str) -> CpuQuota:
    """v2 ``cpu.max``: ``"<quota|max> <period>"``."""
    parts = text.split()
    if len(parts) not in (1, 2):
        raise CgroupFileError(f"cpu.max: expected '<quota> <period>', got {text.strip()[:40]!r}")
    period = parse_int(parts[1]) if len(parts) == 2 else DEFAULT_CFS_PERIOD_US
    quota = None if parts[0] == "max" else parse_int(parts[0])
    return CpuQuota(quota, period)


def format_cpu_max(quota: CpuQuota) -> str:
    return f"{'max' if quota.quota_us is None else quota.quota_us} {quota.period_us}"


def parse_v1_quota(quota_text: str, period_text: str) -> CpuQuota:
    """v1 ``cpu.cfs_quota_us`` (-1 = unlimited) and ``cpu.cfs_period_us``."""
    quota = parse_int(quota_text)
    return CpuQuota(None if quota < 0 else quota, parse_int(period_text))


def v1_shares_for_cores(cores: float) -> int:
    """``cpu.shares`` proportional to a CPU request (the kubelet's mapping: 1024 per core, >= 2)."""
    return max(2, round(cores * V1_SHARES_PER_CORE))


def v2_weight_for_cores(cores: float) -> int:
    """``cpu.weight`` in [1, 10000] from a CPU request (shares mapped as the kubelet does)."""
    shares = v1_shares_for_cores(cores)
    return max(1, min(10_000, 1 + ((shares - 2) * 9999) // 262142))


@dataclass(frozen=True, slots=True)
class IoBytes:
    read: int
    write: int


def parse_v1_blkio_bytes(text: str) -> IoBytes:
    """``blkio.throttle.io_service_bytes[_recursive]``: ``MAJ:MIN Read N`` lines; ``Total`` skipped."""
    read = write = 0
    for line in text.splitlines():
        parts = line.split()
        if len(parts) != 3:
            continue  # "Total N" and blank lines
        op = parts[1].lower()
        try:
            value = int(parts[2])
        except ValueError:
            raise CgroupFileError(f"blkio: {line[:60]!r} has no byte count") from None
        if op == "read":
            read += value
        elif op == "write":
            write += value
    return IoBytes(read, write)


def parse_v2_io_stat(text: str) -> IoBytes:
    """v2 ``io.stat``: ``MAJ:MIN rbytes=N wbytes=N rios=N ...`` per device, summed."""
    read = write = 0
    for line in text.splitlines():
        for field in line.split()[1:]:
            key, _, value = field.partition("=")
            if key in ("rbytes", "wbytes"):
                try:
                    n = int(value)
                except ValueError:
                    raise CgroupFileError(f"io.stat: {field!r} is not a byte count") from None
                if key == "rbytes":
                    read += n
                else:
                    write += n
    return IoBytes(read, write)


def parse_pids(text: str) -> list[int]:
    """``cgroup.procs`` / ``tasks``: one pid per line."""
    return [parse_int(line) for line in text.splitlines() if line.strip()]


def working_set(usage_bytes: int, stat: dict[str, int], *, v2: bool) -> int:
    """Usage minus inactive page cache (what the kubelet calls the working set), never negative."""
    inactive = stat.get("inactive_file" if v2 else "total_inactive_file", stat.get("inactive_file", 0))
    return max(0, usage_bytes - inactive)


@dataclass(frozen=True, slots=True)
class MemoryComposition:
    """What a group's memory is made of, from its ``memory.stat`` (None: this kernel lacks the key).

    anon: anonymous + shmem bytes (neither can be dropped without swap); file: page cache minus
    shmem (what the kernel reclaims under a limit); faults / major_faults: cumulative counters
    (read for benchmarks, not recorded as metrics: docs/benchmarks/profiler_memstat.md).
    """

    anon: int | None = None
    file: int | None = None
    faults: int | None = None
    major_faults: int | None = None


def _first(stat: dict[str, int], *keys: str) -> int | None:
    return next((stat[k] for k in keys if k in stat), None)


def memory_composition(stat: dict[str, int], *, v2: bool) -> MemoryComposition:
    """v2 keys ``anon``/``file``/``shmem``/``pgfault``/``pgmajfault``; v1 the hierarchical
    ``total_*`` keys, else the group's own (a kernel without ``use_hierarchy`` totals)."""
    if v2:
        anon, file, shmem = stat.get("anon"), stat.get("file"), stat.get("shmem")
        faults, major = stat.get("pgfault"), stat.get("pgmajfault")
    else:
        anon = _first(stat, "total_rss", "rss")
        file = _first(stat, "total_cache", "cache")
        shmem = _first(stat, "total_shmem", "shmem")
        faults = _first(stat, "total_pgfault", "pgfault")
        major = _first(stat, "total_pgmajfault", "pgmajfault")
    shmem = shmem or 0
    return MemoryComposition(
        anon=None if anon is None else anon + shmem,
        file=None if file is None else max(0, file - shmem),
        faults=faults,
        major_faults=major,
    )
