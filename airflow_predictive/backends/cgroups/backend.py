"""The local cgroup backend: run a task's process tree in its own cgroup, resize it live, watch it.

Why it exists: it is the embedded default for tasks that run on this machine. ``provision`` makes
a fresh cgroup (v2 ``cpu.max`` / ``memory.max``, or v1 ``cpu.cfs_quota_us`` /
``memory.limit_in_bytes``), then starts the command through ``/bin/sh`` which writes its own pid
into the group's ``cgroup.procs`` and only then ``exec``s the command: user code never runs
outside the group. ``adopt`` moves an already running tree into a new group. ``resize`` changes
CPU quota and memory limit live (never a memory limit below current usage + margin). ``state``
reads exits and OOM kills (v1 ``memory.oom_control`` / v2 ``memory.events`` ``oom_kill``).

Where no cgroup can be written it runs in observe-only mode: tasks still run and are measured
(psutil), ``Capabilities.enforcing`` is False, every resize is UNSUPPORTED, and the reason is
logged once. It must never pretend to enforce, and never leave a group or a process behind after
``release``.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import re
import shutil
import signal
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Concatenate, ParamSpec, TypeVar

import psutil

from airflow_predictive.backends.cgroups import owner
from airflow_predictive.backends.cgroups.exits import classify_exit, hit_limit_without_counter
from airflow_predictive.backends.cgroups.group import (
    CgroupWriteError,
    TaskGroup,
    V1Group,
    make_group,
)
from airflow_predictive.backends.cgroups.hierarchy import CgroupLayout, detect, effective_memory_limit
from airflow_predictive.backends.cgroups.observe import ProcessTreeUsage
from airflow_predictive.backends.cgroups.usage import CgroupUsageSource
from airflow_predictive.core.model.backend import (
    Allocation,
    Bounds,
    Capabilities,
    Capacity,
    ExitKind,
    Handle,
    MemoryMargin,
    ProvisionSpec,
    ResizeResult,
    ResizeStatus,
    TaskState,
    changed_metrics,
    precheck_resize,
)
from airflow_predictive.core.model.resources import MIB, Metric, ResourceVector, format_bytes
from airflow_predictive.core.ports import ProvisionError, SystemClock

if TYPE_CHECKING:
    from collections.abc import Callable

    from airflow_predictive.core.ports import Clock, UsageSource

log = logging.getLogger(__name__)

BACKEND_NAME = "cgroups"
MIN_MEMORY_BYTES = 4 * MIB
PAGE = 4096.0
# Joins every cgroup.procs file given as arguments, then becomes the command (same pid).
_JOIN_AND_EXEC = (
    'n=$1; shift; while [ "$n" -gt 0 ]; do echo $$ > "$1" || exit 125; shift; n=$((n-1)); done; exec "$@"'
)


P = ParamSpec("P")
R = TypeVar("R")


def _locked(method: Callable[Concatenate[CgroupBackend, P], R]) -> Callable[Concatenate[CgroupBackend, P], R]:
    """Serialise calls: the executor provisions while the shaping loop resizes and samples."""

    @functools.wraps(method)
    def wrapper(self: CgroupBackend, *args: P.args, **kwargs: P.kwargs) -> R:
        with self._lock:
            return method(self, *args, **kwargs)

    return wrapper


def _leaf_name(name: str) -> str:
    """``<name>-<random>.p<pid>s<start>n<ns>``: unique, readable, and tagged with its maker (owner.py)."""
    safe = re.sub(r"[^a-zA-Z0-9_.-]", "-", name).strip(".-")[:80] or "task"
    return f"{safe}-{uuid.uuid4().hex[:8]}{owner.own_tag()}"


def _host_memory_bytes() -> float | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return float(line.split()[1]) * 1024.0
    except OSError:
        return None
    return None


def _host_cpus() -> float:
    try:
        return float(len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return float(os.cpu_count() or 1)


@dataclass
class _Task:
    handle: Handle
    group: TaskGroup | None
    proc: subprocess.Popen[bytes] | None
    source: UsageSource
    allocation: Allocation
    released: bool = False
    final: TaskState | None = None
    awaiting_join: bool = False  # prepared: no process has joined the group yet


class CgroupBackend:
    """``ResourceBackend`` over local cgroups (v2, or v1 cpu/cpuacct/memory/blkio)."""

    name = BACKEND_NAME

    def __init__(
        self,
        layout: CgroupLayout | None = None,
        *,
        cgroup_root: str = "",
        clock: Clock | None = None,
        margin: MemoryMargin | None = None,
        sleep: Callable[[float], None] = time.sleep,
        stdout: int | None = None,
        stderr: int | None = None,
    ) -> None:
        self.layout = layout if layout is not None else detect(cgroup_root)
        self._clock: Clock = clock or SystemClock()
        self._margin = margin or MemoryMargin()
        self._sleep = sleep
        self._stdout, self._stderr = stdout, stderr
        self._tasks: dict[str, _Task] = {}
        self._lock = threading.RLock()
        self._cpus = _host_cpus()
        host_memory = _host_memory_bytes()
        above = effective_memory_limit(self.layout)
        # A container or sandbox limit above our groups bounds what tasks can ever get.
        self._memory = (
            float(above)
            if above is not None and (host_memory is None or above < host_memory)
            else host_memory
        )
        if not self.layout.enforcing:
            log.warning(
                "cgroup backend runs observe-only: limits are recorded, not enforced (%s)", self.layout.reason
            )
        elif self.layout.reason:
            log.info("cgroup backend uses %s (%s)", self.layout.version, self.layout.reason)

    def remove_abandoned(self) -> list[str]:
        """Remove the empty groups whose maker died before releasing them (owner.py); returns the
        folders removed. A group that still holds a process is left alone (its task may still be
        running under a supervisor that outlived its executor), as is any group without a tag."""
        if not self.layout.enforcing:
            return []
        removed: list[str] = []
        for parent in sorted(set(self.layout.parents.values())):
            try:
                names = sorted(e.name for e in os.scandir(parent) if e.is_dir(follow_symlinks=False))
            except OSError:
                continue
            for name in names:
                if not owner.abandoned(name):
                    continue
                folder = os.path.join(parent, name)
                try:
                    os.rmdir(folder)  # the kernel refuses (EBUSY) while a process is inside
                except OSError as exc:
                    log.debug("abandoned cgroup %s kept (%s)", folder, exc)
                    continue
                removed.append(folder)
        if removed:
            log.info(
                "removed %d empty cgroup(s) left by processes that died before releasing them: %s",
                len(removed),
                ", ".join(removed[:5]) + (" ..." if len(removed) > 5 else ""),
            )
        return removed

    # -- what this backend can do ----------------------------------------------------------------

    def capabilities(self) -> Capabilities:
        live: set[Metric] = set()
        if "cpu" in self.layout.parents:
            live.add(Metric.CPU_CORES)
        if "memory" in self.layout.parents:
            live.add(Metric.MEMORY_BYTES)
        if self.layout.enforcing:
            where = ", ".join(f"{c}={p}" for c, p in sorted(self.layout.parents.items()))
            note = f"cgroup {self.layout.version}: {where}"
        else:
            note = f"observe-only: {self.layout.reason}"
        return Capabilities(
            live=frozenset(live),
            provision_only=frozenset(),
            bounds={
                Metric.CPU_CORES: Bounds(0.01, self._cpus, 0.01),
                Metric.MEMORY_BYTES: Bounds(MIN_MEMORY_BYTES, self._memory or float(2**62), PAGE),
            },
            enforcing=self.layout.enforcing,
            note=note,
        )

    @_locked
    def capacity(self) -> Capacity:
        allocated = ResourceVector()
        for task in self._tasks.values():
            if not task.released:
                held = task.allocation.limits.combine(task.allocation.requests, lambda _lim, req: req)
                allocated = allocated.combine(held, lambda a, b: a + b)
        allocatable = ResourceVector(cpu_cores=self._cpus, memory_bytes=self._memory)
        return Capacity(allocatable=allocatable, allocated=allocated)

    # -- provision / adopt -------------------------------------------------------------------------

    @_locked
    def provision(
        self,
        spec: ProvisionSpec,
        allocation: Allocation,
        *,
        cwd: str | None = None,
        stdout: int | None = None,
        stderr: int | None = None,
    ) -> Handle:
        """Start ``spec.command`` in a new group; ``cwd`` / ``stdout`` / ``stderr`` (file descriptors)
        override the backend's defaults for this one process (the emulator's kubelet uses them)."""
        if not spec.command:
            raise ProvisionError(
                f"{spec.name}: no command to run (use adopt() for a running process)",
                status=ResizeStatus.REJECTED,
            )
        if spec.gpus:
            raise ProvisionError(
                f"{spec.name}: the cgroup backend has no GPUs; wrap it in GpuBackend",
                status=ResizeStatus.INFEASIBLE,
            )
        env = {**os.environ, **spec.env}
        # The shell wrapper would turn a missing program into exit 127: refuse it up front.
        if shutil.which(spec.command[0], path=env.get("PATH")) is None:
            raise ProvisionError(
                f"{spec.name}: cannot start {spec.command[0]!r}: not an executable program",
                status=ResizeStatus.REJECTED,
            )
        group = self._make_group(spec.name, allocation) if self.layout.enforcing else None
        argv: list[str] = list(spec.command)
        if group is not None:
            procs = group.procs_files()
            argv = ["/bin/sh", "-c", _JOIN_AND_EXEC, "sh", str(len(procs)), *procs, *argv]
        try:
            proc = subprocess.Popen(
                argv,
                env=env,
                cwd=cwd,
                stdout=self._stdout if stdout is None else stdout,
                stderr=self._stderr if stderr is None else stderr,
                start_new_session=True,
            )
        except OSError as exc:
            if group is not None:
                group.remove(sleep=self._sleep)
            raise ProvisionError(f"{spec.name}: cannot start {spec.command[0]!r}: {exc}") from exc
        source: UsageSource
        if group is not None:
            source = CgroupUsageSource.for_group(group, self._clock)
            ref = group.ref
        else:
            source = ProcessTreeUsage(proc.pid, self._clock)
            ref = f"pid:{proc.pid}"
        handle = Handle(backend=self.name, name=spec.name, ref=ref, allocation=allocation, pid=proc.pid)
        self._tasks[ref] = _Task(handle, group, proc, source, allocation)
        return handle

    @_locked
    def adopt(self, pid: int, spec: ProvisionSpec, allocation: Allocation) -> Handle:
        """Move the running process ``pid`` and its descendants into a new group with ``allocation``.

        Memory already charged elsewhere stays charged there (v2, and v1 unless the kernel still
        honours ``memory.move_charge_at_immigrate``): only memory touched after the move counts.
        """
        try:
            root = psutil.Process(pid)
        except psutil.NoSuchProcess as exc:
            raise ProvisionError(
                f"{spec.name}: process {pid} does not exist", status=ResizeStatus.REJECTED
            ) from exc
        if not self.layout.enforcing:
            handle = Handle(
                backend=self.name, name=spec.name, ref=f"pid:{pid}", allocation=allocation, pid=pid
            )
            self._tasks[handle.ref] = _Task(
                handle, None, None, ProcessTreeUsage(pid, self._clock), allocation
            )
            return handle
        group = self._make_group(spec.name, allocation)
        move_charge = group.dirs.get("memory")
        if move_charge and group.version.value == "v1":
            path = os.path.join(move_charge, "memory.move_charge_at_immigrate")
            with contextlib.suppress(OSError), open(path, "w") as f:
                f.write("3")
        try:
            for _ in range(3):  # again, for children forked while we were moving
                for proc in [root, *root.children(recursive=True)]:
                    with contextlib.suppress(psutil.NoSuchProcess):
                        if proc.pid not in group.pids():
                            group.add_pid(proc.pid)
        except (CgroupWriteError, psutil.NoSuchProcess) as exc:
            group.remove(sleep=self._sleep)
            raise ProvisionError(f"{spec.name}: cannot move process {pid} into its cgroup: {exc}") from exc
        handle = Handle(backend=self.name, name=spec.name, ref=group.ref, allocation=allocation, pid=pid)
        self._tasks[group.ref] = _Task(
            handle, group, None, CgroupUsageSource.for_group(group, self._clock), allocation
        )
        return handle

    @_locked
    def prepare(self, spec: ProvisionSpec, allocation: Allocation) -> Handle:
        """An empty group with ``allocation`` for a process that joins it itself (it writes its pid
        into ``procs_files(handle)``), e.g. an executor's worker just before it forks the task.

        v1 memory moves the charge along (``move_charge_at_immigrate``). ``resize``, ``usage``,
        ``state`` and ``release`` work on the handle as for ``adopt``. Raises ProvisionError
        (UNSUPPORTED when observe-only: there is nothing to join)."""
        if not self.layout.enforcing:
            raise ProvisionError(
                f"{spec.name}: observe-only cgroups ({self.layout.reason})", status=ResizeStatus.UNSUPPORTED
            )
        group = self._make_group(spec.name, allocation)
        memory_dir = group.dirs.get("memory")
        if memory_dir and group.version.value == "v1":
            with (
                contextlib.suppress(OSError),
                open(os.path.join(memory_dir, "memory.move_charge_at_immigrate"), "w") as f,
            ):
                f.write("3")
        handle = Handle(backend=self.name, name=spec.name, ref=group.ref, allocation=allocation)
        self._tasks[group.ref] = _Task(
            handle,
            group,
            None,
            CgroupUsageSource.for_group(group, self._clock),
            allocation,
            awaiting_join=True,
        )
        return handle

    @_locked
    def joined(self, handle: Handle) -> None:
        """The process meant to join a prepared group has joined (and may have exited since):
        from now on an empty group means the task ended, and ``state`` says how."""
        task = self._tasks.get(handle.ref)
        if task is not None:
            task.awaiting_join = False

    @_locked
    def procs_files(self, handle: Handle) -> tuple[str, ...]:
        """The files a process writes its pid into to join ``handle``'s group (empty when unknown)."""
        task = self._tasks.get(handle.ref)
        return () if task is None or task.group is None else tuple(task.group.procs_files())

    @_locked
    def peak_memory(self, handle: Handle) -> float | None:
        """The group's memory high-water mark (bytes), None when unknown."""
        task = self._tasks.get(handle.ref)
        reading = None if task is None or task.group is None else task.group.read()
        return None if reading is None or reading.memory_peak is None else float(reading.memory_peak)

    def _make_group(self, name: str, allocation: Allocation) -> TaskGroup:
        version = self.layout.version
        assert version is not None
        group = make_group(version, self.layout.parents, _leaf_name(name))
        try:
            group.create()
            if (
                isinstance(group, V1Group)
                and "blkio" in self.layout.parents
                and not group.enable_io_accounting()
            ):
                log.info("%s: no block device accepted an accounting rule; disk I/O stays absent", name)
            if "memory" in self.layout.parents:
                group.set_memory(allocation.limits.memory_bytes)
            if "cpu" in self.layout.parents:
                group.set_cpu(allocation.limits.cpu_cores, allocation.requests.cpu_cores)
        except (OSError, ValueError) as exc:
            group.remove(sleep=self._sleep)
            raise ProvisionError(f"{name}: cannot prepare cgroup {group.ref}: {exc}") from exc
        return group

    # -- live changes --------------------------------------------------------------------------------

    @_locked
    def resize(self, handle: Handle, allocation: Allocation) -> ResizeResult:
        task = self._tasks.get(handle.ref)
        if task is None or task.released:
            return ResizeResult(ResizeStatus.REJECTED, "not a running task of this backend (released?)")
        if not self.layout.enforcing or task.group is None:
            return ResizeResult(
                ResizeStatus.UNSUPPORTED,
                f"observe-only: limits are not enforced here ({self.layout.reason})",
                allocation=task.allocation,
            )
        if self.state(handle).kind is not ExitKind.RUNNING:
            return ResizeResult(
                ResizeStatus.REJECTED, "task is no longer running", allocation=task.allocation
            )
        usage = task.source.read()
        early = precheck_resize(
            task.allocation,
            allocation,
            self.capabilities(),
            Capacity(ResourceVector(cpu_cores=self._cpus, memory_bytes=self._memory), ResourceVector()),
            usage,
            self._margin,
        )
        if early is not None:
            return ResizeResult(early.status, early.reason, allocation=task.allocation)
        changed = changed_metrics(task.allocation, allocation)
        applied = task.allocation
        try:
            if Metric.MEMORY_BYTES in changed:
                task.group.set_memory(allocation.limits.memory_bytes)
                applied = Allocation(
                    requests=applied.requests.with_value(
                        Metric.MEMORY_BYTES, allocation.requests.memory_bytes
                    ),
                    limits=applied.limits.with_value(Metric.MEMORY_BYTES, allocation.limits.memory_bytes),
                )
            if Metric.CPU_CORES in changed:
                task.group.set_cpu(allocation.limits.cpu_cores, allocation.requests.cpu_cores)
        except (OSError, ValueError) as exc:
            task.allocation = applied
            return ResizeResult(ResizeStatus.ERROR, str(exc), allocation=applied)
        problem = self._verify(task.group, allocation, changed)
        if problem:
            return ResizeResult(ResizeStatus.ERROR, problem, allocation=task.allocation)
        task.allocation = allocation
        return ResizeResult(ResizeStatus.APPLIED, "applied", allocation=allocation)

    @staticmethod
    def _verify(group: TaskGroup, allocation: Allocation, changed: frozenset[Metric]) -> str:
        """Read the changed limits back: the kernel may round or refuse silently."""
        reading = group.read()
        if reading is None:
            return "the cgroup vanished during the resize"
        want_mem = allocation.limits.memory_bytes
        if Metric.MEMORY_BYTES in changed:
            got = reading.memory_limit
            if (want_mem is None) != (got is None) or (
                want_mem is not None and got is not None and abs(got - want_mem) > PAGE
            ):
                shown = "none" if got is None else format_bytes(got)
                return f"memory limit reads back as {shown}, not {want_mem}"
        want_cpu = allocation.limits.cpu_cores
        if Metric.CPU_CORES in changed and reading.cpu_quota is not None:
            got_cpu = reading.cpu_quota.cores
            if (want_cpu is None) != (got_cpu is None) or (
                want_cpu is not None and got_cpu is not None and abs(got_cpu - want_cpu) > 0.011
            ):
                return f"cpu quota reads back as {got_cpu}, not {want_cpu}"
        return ""

    # -- observation -----------------------------------------------------------------------------------

    @_locked
    def usage(self, handle: Handle) -> ResourceVector | None:
        task = self._tasks.get(handle.ref)
        if task is None or task.released or self.state(handle).kind is not ExitKind.RUNNING:
            return None
        return task.source.read()

    def source(self, handle: Handle) -> UsageSource | None:
        """The usage source of a running task (the sampler may read it directly)."""
        task = self._tasks.get(handle.ref)
        return None if task is None or task.released else task.source

    def _oom_kills(self, task: _Task) -> int:
        if task.group is None:
            return 0
        reading = task.group.read()
        return 0 if reading is None or reading.oom_kills is None else reading.oom_kills

    @_locked
    def state(self, handle: Handle) -> TaskState:
        task = self._tasks.get(handle.ref)
        if task is None:
            return TaskState(ExitKind.GONE, reason="unknown to this backend")
        if task.final is not None:
            return task.final
        if task.released:
            return TaskState(ExitKind.GONE, reason="released")
        if task.awaiting_join:
            if task.group is None or not task.group.pids():
                # prepared and still empty: its process has not joined yet (not an exit)
                return TaskState(ExitKind.RUNNING, reason="prepared: no process has joined yet")
            task.awaiting_join = False
        ooms = self._oom_kills(task)
        if task.proc is not None:
            rc = task.proc.poll()
            if rc is None:
                return TaskState(ExitKind.RUNNING, oom_events=ooms)
            reading = None if task.group is None else task.group.read()
            task.final = classify_exit(
                rc, max(ooms, self._oom_kills(task)), hit_limit_without_counter(reading)
            )
            return task.final
        if task.group is not None and task.group.pids():
            return TaskState(ExitKind.RUNNING, oom_events=ooms)
        if task.group is None and task.handle.pid is not None and _alive(task.handle.pid):
            return TaskState(ExitKind.RUNNING)
        if ooms:
            task.final = TaskState(
                ExitKind.OOM_KILLED,
                reason=f"{ooms} OOM kill(s) in the cgroup; exit code unknown (adopted)",
                oom_events=ooms,
            )
        else:
            task.final = TaskState(ExitKind.GONE, reason="adopted process exited; exit code unknown")
        return task.final

    # -- release -------------------------------------------------------------------------------------------

    @_locked
    def release(self, handle: Handle) -> None:
        task = self._tasks.get(handle.ref)
        if task is None or task.released:
            return
        current = self.state(handle)
        if current.kind is ExitKind.RUNNING:
            task.final = TaskState(
                ExitKind.GONE, reason="released while running", oom_events=current.oom_events
            )
        task.released = True
        if task.proc is not None and task.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(task.proc.pid, signal.SIGKILL)
        if task.group is not None:
            for _ in range(50):
                task.group.kill()
                if not task.group.pids():
                    break
                self._sleep(0.02)
        if task.proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                task.proc.wait(timeout=5)
        if task.group is not None and not task.group.remove(sleep=self._sleep):
            log.warning("cgroup %s could not be removed after its processes were killed", task.group.ref)


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
