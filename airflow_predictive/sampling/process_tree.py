"""ProcessTreeSource: what a local task's whole process tree consumes, read with psutil.

The tree is the task's process and all its descendants, rediscovered every tick so that new
children count from the tick they appear. CPU and disk are rates of cumulative kernel counters
(``cpu_times`` user+system plus the times of reaped children; ``io_counters`` read/write bytes,
which also include reaped children), memory is the sum of RSS. ``TreeAccountant`` keeps the
counter arithmetic pure so that exits, reaping and pid reuse are tested without real processes.

The sampler itself is never part of the tree: the sidecar is a child of the task process, so its
pid (and everything it starts, e.g. ``nvidia-smi``) is passed as ``exclude`` and pruned from the
walk with its whole subtree; otherwise its own memory and CPU would be counted as the task's.

It must never raise into the sampler for a process that vanishes or hides mid-sample: such a
process is skipped for that tick; ``read()`` returns None only when the task's own process is gone.
"""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import psutil

from airflow_predictive.core.model.resources import Metric, ResourceVector
from airflow_predictive.sampling.clock import MonotonicClock
from airflow_predictive.sampling.network import TreeNetwork

if TYPE_CHECKING:
    from collections.abc import Collection, Mapping

    from airflow_predictive.core.ports import Clock
    from airflow_predictive.sampling.gpu import GpuReader

log = logging.getLogger(__name__)

ProcKey = tuple[int, float]  # (pid, create_time): a pid reused by a new process is a new key


@dataclass(frozen=True, slots=True)
class ProcReading:
    """Cumulative counters of one process at one moment.

    cpu_s: user + system seconds of the process and of its reaped children.
    rss_bytes: resident set size (0 for a zombie).
    read_bytes, write_bytes: storage I/O of the process and its reaped children; None if unreadable.
    """

    pid: int
    ppid: int
    create_time: float
    cpu_s: float
    rss_bytes: int
    read_bytes: int | None = None
    write_bytes: int | None = None

    @property
    def key(self) -> ProcKey:
        return (self.pid, self.create_time)


@dataclass(frozen=True, slots=True)
class TreeRates:
    cpu_cores: float
    read_bps: float | None
    write_bps: float | None


class TreeAccountant:
    """Rates of a tree from successive snapshots of its processes.

    Delta of a tick = growth of the processes seen twice + the whole counters of processes new
    since the previous tick - the last counters of processes that vanished while an ancestor in
    the tree is still alive (the kernel moved their counters into that ancestor's children
    totals, so they reappear in its growth). A process orphaned out of the tree takes its
    counters with it; only its last partial tick is lost.
    """

    def __init__(self) -> None:
        self._prev: dict[ProcKey, ProcReading] | None = None
        self._prev_t: float | None = None

    def update(self, procs: Mapping[ProcKey, ProcReading], t: float) -> TreeRates | None:
        prev, prev_t = self._prev, self._prev_t
        self._prev, self._prev_t = dict(procs), t
        if prev is None or prev_t is None or t <= prev_t:
            return None  # the first snapshot is a baseline
        cpu = 0.0
        read: int | None = 0
        write: int | None = 0
        for key, cur in procs.items():
            old = prev.get(key)
            cpu += cur.cpu_s - (old.cpu_s if old else 0.0)
            read = _add(read, cur.read_bytes, old.read_bytes if old else 0)
            write = _add(write, cur.write_bytes, old.write_bytes if old else 0)
        live = {r.pid for r in procs.values()}
        by_pid = {r.pid: r for r in prev.values()}
        for key, gone in prev.items():
            if key in procs or not _ancestor_alive(gone, by_pid, live):
                continue
            cpu -= gone.cpu_s
            read = _add(read, 0, gone.read_bytes)
            write = _add(write, 0, gone.write_bytes)
        dt = t - prev_t
        return TreeRates(
            cpu_cores=max(0.0, cpu) / dt,
            read_bps=None if read is None else max(0, read) / dt,
            write_bps=None if write is None else max(0, write) / dt,
        )


def _add(total: int | None, cur: int | None, old: int | None) -> int | None:
    if total is None or cur is None or old is None:
        return None
    return total + cur - old


def _ancestor_alive(proc: ProcReading, by_pid: Mapping[int, ProcReading], live: set[int]) -> bool:
    seen: set[int] = set()
    ppid = proc.ppid
    while ppid not in seen:
        if ppid in live:
            return True
        seen.add(ppid)
        parent = by_pid.get(ppid)
        if parent is None:
            return False
        ppid = parent.ppid
    return False


#: CPU one full /proc scan may cost per tick; a slower scan (many processes on the host) runs
#: only every few ticks, known processes being read in between
SCAN_BUDGET_S = 0.002


def has_children_files(pid: int) -> bool:
    """Whether the kernel lists children in /proc/<pid>/task/<tid>/children (CONFIG_PROC_CHILDREN)."""
    return os.path.exists(f"/proc/{pid}/task/{pid}/children")


def direct_children(pid: int) -> list[int]:
    """Children of ``pid`` from every thread's ``children`` file ([] once the process is gone)."""
    kids: list[int] = []
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return kids
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as fh:
                kids.extend(int(k) for k in fh.read().split())
        except (OSError, ValueError):
            continue  # the thread exited meanwhile
    return kids


def _prune(children: list[psutil.Process], exclude: frozenset[int]) -> list[psutil.Process]:
    """``children`` without the excluded processes and their descendants."""
    if not exclude:
        return children
    parents: dict[int, int] = {}
    for child in children:
        try:
            parents[child.pid] = child.ppid()
        except psutil.Error:
            parents[child.pid] = -1

    def excluded(pid: int) -> bool:
        seen: set[int] = set()
        while pid in parents and pid not in seen:
            if pid in exclude:
                return True
            seen.add(pid)
            pid = parents[pid]
        return pid in exclude

    return [c for c in children if not excluded(c.pid)]


def _cpu_seconds(times: Any) -> float:
    total = float(times.user) + float(times.system)
    total += float(getattr(times, "children_user", 0.0) or 0.0)
    total += float(getattr(times, "children_system", 0.0) or 0.0)
    return total


class ProcessTreeSource:
    """UsageSource for a local process and all its descendants (see the module docstring)."""

    def __init__(
        self,
        pid: int,
        *,
        clock: Clock | None = None,
        network: bool = True,
        gpu: GpuReader | None = None,
        exclude: Collection[int] = (),
    ) -> None:
        self.pid = pid
        self.exclude = frozenset(p for p in exclude if p != pid)
        self._root = psutil.Process(pid)  # raises psutil.NoSuchProcess when it is already gone
        self._clock = clock or MonotonicClock()
        self._acct = TreeAccountant()
        self._net = TreeNetwork(pid) if network else None
        self._gpu = gpu
        self._pids: tuple[int, ...] = (pid,)
        self._procs: dict[int, psutil.Process] = {}
        self._hidden: set[int] = set()
        self._children_files = has_children_files(pid)
        self._scan_every = 1
        self._since_scan = 0

    @property
    def pids(self) -> tuple[int, ...]:
        """The processes of the tree at the last reading."""
        return self._pids

    def close(self) -> None:
        if self._net is not None:
            self._net.close()

    def read(self) -> ResourceVector | None:
        t = self._clock.monotonic()
        snapshot = self._snapshot()
        if snapshot is None:
            return None
        self._pids = tuple(sorted(r.pid for r in snapshot.values()))
        values: dict[Metric, float | None] = {
            Metric.MEMORY_BYTES: float(sum(r.rss_bytes for r in snapshot.values())),
        }
        rates = self._acct.update(snapshot, t)
        if rates is not None:
            values[Metric.CPU_CORES] = rates.cpu_cores
            values[Metric.DISK_READ_BPS] = rates.read_bps
            values[Metric.DISK_WRITE_BPS] = rates.write_bps
        if self._net is not None:
            net = self._net.read(self._pids, self.pid, t)
            if net is not None:
                values[Metric.NET_RX_BPS] = net.rx_bps
                values[Metric.NET_TX_BPS] = net.tx_bps
        if self._gpu is not None:
            gpu = self._gpu.read(set(self._pids), t)
            if gpu is not None:
                values[Metric.GPU_UTIL] = gpu.util
                values[Metric.GPU_MEMORY_BYTES] = gpu.memory_bytes
        return ResourceVector.lenient(values)

    def _children(self) -> list[psutil.Process]:
        """Descendants of the root: from the kernel's children lists, else a (rate-limited) /proc scan."""
        if self._children_files:
            out: list[psutil.Process] = []
            queue = [self.pid]
            while queue:
                for pid in direct_children(queue.pop()):
                    if pid in self.exclude:
                        continue  # the sampler and its own children: pruned with their subtree
                    known = self._procs.get(pid)
                    try:
                        out.append(known if known is not None else psutil.Process(pid))
                    except psutil.NoSuchProcess:
                        continue
                    queue.append(pid)
            return out
        self._since_scan += 1
        if self._since_scan < self._scan_every:
            # between two scans: the processes already known (new ones join at the next scan)
            return [p for pid, p in self._procs.items() if pid != self.pid]
        started = time.perf_counter()
        children = _prune(self._root.children(recursive=True), self.exclude)
        cost = time.perf_counter() - started
        self._since_scan = 0
        self._scan_every = max(1, math.ceil(cost / SCAN_BUDGET_S))
        return children

    def _snapshot(self) -> dict[ProcKey, ProcReading] | None:
        try:
            if not self._root.is_running() or self._root.status() == psutil.STATUS_ZOMBIE:
                return None
            children = self._children()
        except psutil.NoSuchProcess:
            return None
        except psutil.AccessDenied:
            children = []
        # keep one Process object per pid so psutil's cached identity (create time) is reused
        procs = {self.pid: self._root}
        for child in children:
            known = self._procs.get(child.pid)
            procs[child.pid] = known if known is not None and known == child else child
        out: dict[ProcKey, ProcReading] = {}
        for pid, proc in procs.items():
            reading = self._read_one(proc)
            if reading is None and pid == self.pid and not self._root.is_running():
                return None
            if reading is not None:
                out[reading.key] = reading
        self._procs = {pid: procs[pid] for pid in (r.pid for r in out.values())}
        self._procs[self.pid] = self._root
        try:  # the root exited while we read it: a zombie's RSS of 0 is not a reading of the task
            if self._root.status() == psutil.STATUS_ZOMBIE:
                return None
        except psutil.NoSuchProcess:
            return None
        return out

    def _read_one(self, proc: psutil.Process) -> ProcReading | None:
        try:
            with proc.oneshot():
                ppid = proc.ppid()
                cpu = _cpu_seconds(proc.cpu_times())
                zombie = proc.status() == psutil.STATUS_ZOMBIE
                rss = 0 if zombie else int(proc.memory_info().rss)
                read: int | None
                write: int | None
                try:
                    io = proc.io_counters()
                    read, write = int(io.read_bytes), int(io.write_bytes)
                except (psutil.AccessDenied, AttributeError, NotImplementedError):
                    read = write = None
                return ProcReading(proc.pid, ppid, proc.create_time(), cpu, rss, read, write)
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            return None  # vanished mid-sample: its reaped counters surface in its parent
        except psutil.AccessDenied:
            if proc.pid not in self._hidden:
                self._hidden.add(proc.pid)
                log.warning(
                    "predictive sampler: process %s of the task tree is not readable; its usage is "
                    "not counted",
                    proc.pid,
                )
            return None
