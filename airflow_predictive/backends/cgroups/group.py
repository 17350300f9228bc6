"""One task's cgroup on the host, for cgroup v1 (a folder per controller) or v2 (one folder).

Why it exists: the backend and the usage source speak to a ``TaskGroup`` (create, add a pid, set
CPU / memory limits, read counters, kill, remove) and never to v1 or v2 file names. The group is
named by a ``ref`` string (``v2:<dir>`` or ``v1:memory=<dir>;cpu=<dir>;...``) that survives a
process boundary, so the sampler process can read a group the worker made.

It must never write a file it was not asked to (limits are only set by ``set_*``) and never
raise for a group that vanished: reads return None, ``remove`` reports whether it succeeded.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
from dataclasses import dataclass
from typing import TYPE_CHECKING

from airflow_predictive.backends.cgroups import files
from airflow_predictive.backends.cgroups.files import CgroupFileError, IoBytes
from airflow_predictive.backends.cgroups.hierarchy import CgroupVersion

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping


@dataclass(frozen=True, slots=True)
class CgroupReading:
    """Raw counters of one group at one moment; None = that file is absent here (never 0)."""

    cpu_seconds: float | None
    memory_usage: int | None
    memory_working_set: int | None
    memory_peak: int | None
    memory_limit: int | None
    io: IoBytes | None
    oom_kills: int | None
    cpu_quota: files.CpuQuota | None
    memory_composition: files.MemoryComposition | None = None  # None: memory.stat unreadable


class CgroupWriteError(OSError):
    """A limit could not be written (the message names the file and the kernel's reason)."""


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read()
    except (FileNotFoundError, NotADirectoryError, ProcessLookupError):
        return None
    except OSError:
        return None


def _write(path: str, value: str) -> None:
    try:
        with open(path, "w") as f:
            f.write(value)
    except OSError as exc:
        reason = errno.errorcode.get(exc.errno or 0, "") if exc.errno else ""
        raise CgroupWriteError(
            exc.errno or 0, f"writing {value!r} to {path} failed: {exc.strerror or exc} {reason}".strip()
        ) from exc


def _int_or_none(text: str | None) -> int | None:
    if text is None:
        return None
    try:
        return files.parse_int(text)
    except CgroupFileError:
        return None


def _keyed(text: str | None) -> dict[str, int] | None:
    if text is None:
        return None
    try:
        return files.parse_flat_keyed(text)
    except CgroupFileError:
        return None


class TaskGroup:
    """Common part: a set of folders (one per controller on v1, one on v2)."""

    version: CgroupVersion

    def __init__(self, dirs: Mapping[str, str]) -> None:
        if not dirs:
            raise ValueError("a task group needs at least one folder")
        self.dirs: dict[str, str] = dict(dirs)

    @property
    def ref(self) -> str:
        raise NotImplementedError

    @property
    def folders(self) -> list[str]:
        return sorted(set(self.dirs.values()))

    def _f(self, controller: str, name: str) -> str | None:
        folder = self.dirs.get(controller)
        return None if folder is None else os.path.join(folder, name)

    def _read(self, controller: str, name: str) -> str | None:
        path = self._f(controller, name)
        return None if path is None else _read(path)

    def exists(self) -> bool:
        return any(os.path.isdir(d) for d in self.folders)

    def create(self) -> None:
        for folder in self.folders:
            os.makedirs(folder, exist_ok=True)

    def procs_files(self) -> list[str]:
        return [os.path.join(d, "cgroup.procs") for d in self.folders]

    def add_pid(self, pid: int) -> None:
        for path in self.procs_files():
            _write(path, str(pid))

    def pids(self) -> set[int]:
        out: set[int] = set()
        for path in self.procs_files():
            text = _read(path)
            if text:
                with contextlib.suppress(CgroupFileError):
                    out.update(files.parse_pids(text))
        return out

    def kill(self) -> None:
        """SIGKILL every process in the group (one pass; callers repeat until ``pids()`` is empty)."""
        for pid in self.pids():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)

    def remove(self, *, attempts: int = 20, sleep: Callable[[float], None] | None = None) -> bool:
        """Remove the folders (after the processes are gone); True when none is left."""
        for attempt in range(attempts):
            left = [d for d in self.folders if os.path.isdir(d)]
            for folder in left:
                with contextlib.suppress(FileNotFoundError, OSError):
                    os.rmdir(folder)
            if not any(os.path.isdir(d) for d in self.folders):
                return True
            self.kill()
            if sleep is not None and attempt + 1 < attempts:
                sleep(0.05)
        return False

    def set_cpu(self, limit_cores: float | None, request_cores: float | None) -> None:
        raise NotImplementedError

    def set_memory(self, limit_bytes: float | None) -> None:
        raise NotImplementedError

    def read(self) -> CgroupReading | None:
        raise NotImplementedError


class V1Group(TaskGroup):
    version = CgroupVersion.V1

    @property
    def ref(self) -> str:
        return "v1:" + ";".join(f"{c}={d}" for c, d in sorted(self.dirs.items()))

    def set_cpu(self, limit_cores: float | None, request_cores: float | None) -> None:
        if "cpu" not in self.dirs:
            raise CgroupWriteError(errno.ENOENT, "no writable cpu hierarchy")
        period = _int_or_none(self._read("cpu", "cpu.cfs_period_us")) or files.DEFAULT_CFS_PERIOD_US
        quota = files.quota_for_cores(limit_cores, period)
        _write(str(self._f("cpu", "cpu.cfs_quota_us")), str(-1 if quota.quota_us is None else quota.quota_us))
        if request_cores is not None and request_cores > 0:
            _write(str(self._f("cpu", "cpu.shares")), str(files.v1_shares_for_cores(request_cores)))

    def enable_io_accounting(self, devices: list[str] | None = None) -> int:
        """Put a never-binding 1 TiB/s read/write rule on each block device; returns how many took.

        On recent kernels the v1 blkio byte counters only move on devices where blk-throttle has a
        rule for the group. The rule is far above any device's speed, so it limits nothing.
        """
        if "blkio" not in self.dirs:
            return 0
        done = 0
        for dev in block_devices() if devices is None else devices:
            try:
                for name in ("blkio.throttle.read_bps_device", "blkio.throttle.write_bps_device"):
                    _write(str(self._f("blkio", name)), f"{dev} {files.NEVER_BINDING_BPS}")
                done += 1
            except CgroupWriteError:
                continue
        return done

    def set_memory(self, limit_bytes: float | None) -> None:
        if "memory" not in self.dirs:
            raise CgroupWriteError(errno.ENOENT, "no writable memory hierarchy")
        value = "-1" if limit_bytes is None else str(int(limit_bytes))
        mem = str(self._f("memory", "memory.limit_in_bytes"))
        memsw = self._f("memory", "memory.memsw.limit_in_bytes")
        if memsw is None or not os.path.exists(memsw):
            _write(mem, value)
            return
        # memsw (memory + swap) must stay >= the memory limit: raise memsw first, lower it last.
        current = files.parse_v1_memory_limit(_read(mem) or "-1")
        raising = limit_bytes is None or (current is not None and limit_bytes >= current)
        order = [memsw, mem] if raising else [mem, memsw]
        for path in order:
            _write(path, value)

    def read(self) -> CgroupReading | None:
        if not self.exists():
            return None
        ns = _int_or_none(self._read("cpuacct", "cpuacct.usage"))
        usage = _int_or_none(self._read("memory", "memory.usage_in_bytes"))
        stat = _keyed(self._read("memory", "memory.stat"))
        oom = _keyed(self._read("memory", "memory.oom_control"))
        limit_text = self._read("memory", "memory.limit_in_bytes")
        # Recent kernels count v1 blkio bytes only where blk-throttle is active (a rule exists):
        # without our accounting rules the counters read 0 whatever the task does, so: absent.
        rules = self._read("blkio", "blkio.throttle.read_bps_device")
        io_text = self._read("blkio", "blkio.throttle.io_service_bytes_recursive") if rules else None
        quota_text, period_text = (
            self._read("cpu", "cpu.cfs_quota_us"),
            self._read("cpu", "cpu.cfs_period_us"),
        )
        quota = None
        if quota_text is not None and period_text is not None:
            with contextlib.suppress(CgroupFileError):
                quota = files.parse_v1_quota(quota_text, period_text)
        return CgroupReading(
            cpu_seconds=None if ns is None else ns / 1e9,
            memory_usage=usage,
            memory_working_set=None if usage is None else files.working_set(usage, stat or {}, v2=False),
            memory_peak=_int_or_none(self._read("memory", "memory.max_usage_in_bytes")),
            memory_limit=None
            if limit_text is None
            else _limit_or_none(limit_text, files.parse_v1_memory_limit),
            io=_io_or_none(io_text, files.parse_v1_blkio_bytes),
            oom_kills=None if oom is None else oom.get("oom_kill"),
            cpu_quota=quota,
            memory_composition=None if stat is None else files.memory_composition(stat, v2=False),
        )


class V2Group(TaskGroup):
    version = CgroupVersion.V2

    @property
    def ref(self) -> str:
        return f"v2:{self.folders[0]}"

    def kill(self) -> None:
        path = os.path.join(self.folders[0], "cgroup.kill")
        if os.path.exists(path):
            with contextlib.suppress(OSError):
                _write(path, "1")
                return
        super().kill()

    def set_cpu(self, limit_cores: float | None, request_cores: float | None) -> None:
        current = _read(os.path.join(self.folders[0], "cpu.max"))
        period = files.DEFAULT_CFS_PERIOD_US
        if current is not None:
            with contextlib.suppress(CgroupFileError):
                period = files.parse_cpu_max(current).period_us
        _write(
            os.path.join(self.folders[0], "cpu.max"),
            files.format_cpu_max(files.quota_for_cores(limit_cores, period)),
        )
        weight = os.path.join(self.folders[0], "cpu.weight")
        if request_cores is not None and request_cores > 0 and os.path.exists(weight):
            _write(weight, str(files.v2_weight_for_cores(request_cores)))

    def set_memory(self, limit_bytes: float | None) -> None:
        folder = self.folders[0]
        _write(os.path.join(folder, "memory.max"), "max" if limit_bytes is None else str(int(limit_bytes)))
        swap = os.path.join(folder, "memory.swap.max")
        if os.path.exists(swap):  # like Kubernetes: a limited task does not spill into swap
            _write(swap, "max" if limit_bytes is None else "0")

    def read(self) -> CgroupReading | None:
        folder = self.folders[0]
        if not os.path.isdir(folder):
            return None
        cpu = _keyed(_read(os.path.join(folder, "cpu.stat")))
        usage = _int_or_none(_read(os.path.join(folder, "memory.current")))
        stat = _keyed(_read(os.path.join(folder, "memory.stat")))
        events = _keyed(_read(os.path.join(folder, "memory.events")))
        max_text = _read(os.path.join(folder, "memory.max"))
        cpu_max = _read(os.path.join(folder, "cpu.max"))
        quota = None
        if cpu_max is not None:
            with contextlib.suppress(CgroupFileError):
                quota = files.parse_cpu_max(cpu_max)
        usec = None if cpu is None else cpu.get("usage_usec")
        return CgroupReading(
            cpu_seconds=None if usec is None else usec / 1e6,
            memory_usage=usage,
            memory_working_set=None if usage is None else files.working_set(usage, stat or {}, v2=True),
            memory_peak=_int_or_none(_read(os.path.join(folder, "memory.peak"))),
            memory_limit=None if max_text is None else _limit_or_none(max_text, files.parse_v2_max),
            io=_io_or_none(_read(os.path.join(folder, "io.stat")), files.parse_v2_io_stat),
            oom_kills=None if events is None else events.get("oom_kill"),
            cpu_quota=quota,
            memory_composition=None if stat is None else files.memory_composition(stat, v2=True),
        )


def _limit_or_none(text: str, parse: Callable[[str], int | None]) -> int | None:
    try:
        return parse(text)
    except CgroupFileError:
        return None


def _io_or_none(text: str | None, parse: Callable[[str], IoBytes]) -> IoBytes | None:
    if text is None:
        return None
    try:
        return parse(text)
    except CgroupFileError:
        return None


def block_devices(sys_block: str = "/sys/block") -> list[str]:
    """``MAJ:MIN`` of the host's block devices that have a size (no empty loop or ram devices)."""
    out: list[str] = []
    try:
        names = sorted(os.listdir(sys_block))
    except OSError:
        return out
    for name in names:
        dev = _read(os.path.join(sys_block, name, "dev"))
        size = _int_or_none(_read(os.path.join(sys_block, name, "size")))
        if dev and size:
            out.append(dev.strip())
    return out


def group_from_ref(ref: str) -> TaskGroup:
    """Rebuild a group from its ``ref``; a bare folder is read as v2 when it has cgroup.controllers."""
    if ref.startswith("v2:"):
        return V2Group({"unified": ref[3:]})
    if ref.startswith("v1:"):
        dirs: dict[str, str] = {}
        for item in ref[3:].split(";"):
            controller, sep, folder = item.partition("=")
            if not sep or not controller or not folder:
                raise ValueError(f"malformed cgroup ref {ref!r}")
            dirs[controller] = folder
        return V1Group(dirs)
    if not ref.startswith("/"):
        raise ValueError(f"cgroup ref must be 'v1:...', 'v2:<dir>' or an absolute folder, got {ref!r}")
    if os.path.exists(os.path.join(ref, "cgroup.controllers")):
        return V2Group({"unified": ref})
    return V1Group({c: ref for c in ("cpu", "cpuacct", "memory", "blkio")})


def make_group(version: CgroupVersion, parents: Mapping[str, str], leaf: str) -> TaskGroup:
    """A (not yet created) group named ``leaf`` under each controller's parent folder."""
    if "/" in leaf or leaf in ("", ".", ".."):
        raise ValueError(f"invalid cgroup name {leaf!r}")
    if version is CgroupVersion.V2:
        parent = next(iter(parents.values()))
        return V2Group({"unified": os.path.join(parent, leaf)})
    return V1Group({c: os.path.join(p, leaf) for c, p in parents.items()})
