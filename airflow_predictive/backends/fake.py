"""An in-memory ``ResourceBackend`` driven by scripted demand and an injected clock.

Why it exists: the shaping controller and the scheduler need a backend whose tasks grow, finish,
get OOM-killed and wait for capacity deterministically, in microseconds, without processes. Each
task follows a ``UsageScript`` (demand as a function of seconds since start, and a lifetime); the
fake walks time forward in small steps on every call, so an OOM happens at the first step where
demand exceeds the limit in force at that moment, and a resize made in time prevents it.

It must never touch the host (no processes, files or cgroups) and never read the wall clock: time
only moves through the injected ``Clock`` (``ManualClock`` in tests).
"""

from __future__ import annotations

import bisect
import itertools
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

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
    precheck_resize,
)
from airflow_predictive.core.model.resources import MIB, Metric, ResourceVector
from airflow_predictive.core.ports import Clock, ProvisionError

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

BACKEND_NAME = "fake"


class ManualClock:
    """A ``Clock`` that only moves when told to (``advance``)."""

    def __init__(self, start: float = 0.0, epoch: datetime | None = None) -> None:
        self._t = float(start)
        self._epoch = epoch or datetime(2026, 1, 1, tzinfo=UTC)

    def monotonic(self) -> float:
        return self._t

    def now(self) -> datetime:
        return self._epoch + timedelta(seconds=self._t)

    def advance(self, seconds: float) -> None:
        if not seconds >= 0:
            raise ValueError(f"time only moves forward, got {seconds!r}")
        self._t += seconds


@dataclass(frozen=True)
class UsageScript:
    """What a fake task would use if unconstrained: ``demand(t)`` for t seconds since start.

    The task ends with ``exit_code`` at ``duration_s`` unless it is OOM-killed first (demand for
    memory above the memory limit in force). CPU demand above the CPU limit is throttled: the
    reported usage is capped at the limit (the script's lifetime does not stretch).
    """

    demand: Callable[[float], ResourceVector]
    duration_s: float
    exit_code: int = 0


def ramp_script(
    memory_mb: float, cpu_cores: float, seconds: float, *, ramp_s: float = 1.0, base_mb: float = 8.0
) -> UsageScript:
    """Memory grows linearly from ``base_mb`` to ``memory_mb`` over ``ramp_s`` and stays; CPU flat."""

    def demand(t: float) -> ResourceVector:
        frac = 1.0 if ramp_s <= 0 else min(1.0, max(0.0, t / ramp_s))
        mem = base_mb + (max(memory_mb, base_mb) - base_mb) * frac
        return ResourceVector(cpu_cores=cpu_cores, memory_bytes=mem * MIB)

    return UsageScript(demand=demand, duration_s=seconds)


def curve_script(
    times: Sequence[float], values: Mapping[Metric, Sequence[float]], *, exit_code: int = 0
) -> UsageScript:
    """Piecewise-linear demand through the points ``(times[i], values[m][i])``; lasts until times[-1]."""
    ts = [float(t) for t in times]
    if len(ts) < 2 or any(b <= a for a, b in itertools.pairwise(ts)):
        raise ValueError("curve_script needs at least two strictly increasing times")
    for metric, vs in values.items():
        if len(vs) != len(ts):
            raise ValueError(f"{metric.value}: {len(vs)} values for {len(ts)} times")
        if any(not math.isfinite(v) or v < 0 for v in vs):
            raise ValueError(f"{metric.value}: values must be finite and >= 0")

    def demand(t: float) -> ResourceVector:
        i = min(max(bisect.bisect_right(ts, t) - 1, 0), len(ts) - 2)
        frac = min(1.0, max(0.0, (t - ts[i]) / (ts[i + 1] - ts[i])))
        return ResourceVector.from_mapping(
            {m: vs[i] + (vs[i + 1] - vs[i]) * frac for m, vs in values.items()}
        )

    return UsageScript(demand=demand, duration_s=ts[-1], exit_code=exit_code)


@dataclass(frozen=True, slots=True)
class ResizeEvent:
    """One resize call as the fake saw it (for assertions in tests of callers)."""

    t: float
    name: str
    requested: Allocation
    result: ResizeResult


@dataclass
class _Task:
    spec: ProvisionSpec
    script: UsageScript
    allocation: Allocation
    started: float
    checked: float
    progress: float = 0.0  # seconds of script done (= wall seconds unless CPU-throttled)
    end: TaskState | None = None
    oom_events: int = 0
    pending: Allocation | None = None
    released: bool = False


def _default_bounds(allocatable: ResourceVector) -> dict[Metric, Bounds]:
    return {
        Metric.CPU_CORES: Bounds(0.01, allocatable.cpu_cores or 1e6, 0.001),
        Metric.MEMORY_BYTES: Bounds(4 * MIB, allocatable.memory_bytes or 1e18, 4096.0),
    }


@dataclass
class FakeBackend:
    """Scripted backend. Register a script per task name (``add_script``) or pass ``script_for``.

    defer_over_commit: a resize that fits the pool in principle but not next to the other tasks
        right now returns PENDING and is applied on a later call once room frees up, i.e. once
        other handles are released (like a Kubernetes node's Deferred resize); otherwise such
        resizes are applied (over-commit). Capacity is held from provision until release.
    step_s: granularity of the time walk that detects OOM kills and exits.
    cpu_work_conserving: a task whose CPU demand exceeds its CPU limit advances through its
        script at limit/demand speed (it runs longer, as a throttled process does); otherwise
        throttling only caps the reported CPU usage and the script keeps wall-clock pace.
    """

    clock: Clock
    allocatable: ResourceVector = field(
        default_factory=lambda: ResourceVector(cpu_cores=8.0, memory_bytes=16 * 1024 * MIB)
    )
    live: frozenset[Metric] = frozenset({Metric.CPU_CORES, Metric.MEMORY_BYTES})
    provision_only: frozenset[Metric] = frozenset({Metric.GPU_UTIL, Metric.GPU_MEMORY_BYTES})
    bounds: Mapping[Metric, Bounds] | None = None
    enforcing: bool = True
    margin: MemoryMargin = field(default_factory=MemoryMargin)
    defer_over_commit: bool = False
    step_s: float = 0.05
    cpu_work_conserving: bool = False
    script_for: Callable[[ProvisionSpec], UsageScript | None] | None = None
    name: str = BACKEND_NAME
    resizes: list[ResizeEvent] = field(default_factory=list)
    _scripts: dict[str, UsageScript] = field(default_factory=dict, init=False)
    _tasks: dict[str, _Task] = field(default_factory=dict, init=False)
    _fail_next: str | None = field(default=None, init=False)
    _ids: itertools.count[int] = field(default_factory=itertools.count, init=False)

    # -- scripting -----------------------------------------------------------------------------

    def add_script(self, name: str, script: UsageScript) -> None:
        self._scripts[name] = script

    def fail_next_resize(self, reason: str) -> None:
        """Make the next resize that passes validation end in ERROR (an API failure)."""
        self._fail_next = reason

    # -- ResourceBackend -------------------------------------------------------------------------

    def capabilities(self) -> Capabilities:
        return Capabilities(
            live=self.live if self.enforcing else frozenset(),
            provision_only=self.provision_only,
            bounds=dict(self.bounds) if self.bounds is not None else _default_bounds(self.allocatable),
            enforcing=self.enforcing,
            note="in-memory fake" if self.enforcing else "in-memory fake, observe-only",
        )

    def capacity(self) -> Capacity:
        self._catch_up_all()
        allocated = ResourceVector()
        for task in self._tasks.values():
            if not task.released:
                allocated = allocated.combine(task.allocation.requests, lambda a, b: a + b)
        return Capacity(allocatable=self.allocatable, allocated=allocated)

    def provision(self, spec: ProvisionSpec, allocation: Allocation) -> Handle:
        script = self._scripts.get(spec.name)
        if script is None and self.script_for is not None:
            script = self.script_for(spec)
        if script is None:
            raise ProvisionError(
                f"fake backend has no usage script for task {spec.name!r}", status=ResizeStatus.REJECTED
            )
        for metric, want in allocation.requests.present().items():
            total = self.allocatable.get(metric)
            if total is not None and want > total:
                raise ProvisionError(
                    f"{metric.value} request {want:g} can never fit in {total:g}",
                    status=ResizeStatus.INFEASIBLE,
                )
        ref = f"fake://{spec.name}/{next(self._ids)}"
        now = self.clock.monotonic()
        self._tasks[ref] = _Task(spec=spec, script=script, allocation=allocation, started=now, checked=now)
        return Handle(backend=self.name, name=spec.name, ref=ref, allocation=allocation)

    def resize(self, handle: Handle, allocation: Allocation) -> ResizeResult:
        self._catch_up_all()
        task = self._tasks.get(handle.ref)
        result = self._resize(task, allocation)
        self.resizes.append(ResizeEvent(self.clock.monotonic(), handle.name, allocation, result))
        return result

    def usage(self, handle: Handle) -> ResourceVector | None:
        task = self._tasks.get(handle.ref)
        if task is None or task.released:
            return None
        self._catch_up_all()
        if task.end is not None:
            return None
        return self._observed(task)

    def state(self, handle: Handle) -> TaskState:
        task = self._tasks.get(handle.ref)
        if task is None:
            return TaskState(ExitKind.GONE, reason="unknown to this fake backend")
        self._catch_up_all()
        if task.end is not None:
            return task.end
        if task.released:
            return TaskState(ExitKind.GONE, reason="released while running", oom_events=task.oom_events)
        return TaskState(ExitKind.RUNNING, oom_events=task.oom_events)

    def release(self, handle: Handle) -> None:
        task = self._tasks.get(handle.ref)
        if task is None or task.released:
            return
        self._catch_up_all()
        task.released = True
        task.pending = None

    # -- internals ---------------------------------------------------------------------------

    def _resize(self, task: _Task | None, target: Allocation) -> ResizeResult:
        if task is None or task.released or task.end is not None:
            return ResizeResult(ResizeStatus.REJECTED, "task is no longer running")
        early = precheck_resize(
            task.allocation,
            target,
            self.capabilities(),
            Capacity(self.allocatable, ResourceVector()),
            self._observed(task),
            self.margin,
        )
        if early is not None:
            return early
        if self._fail_next is not None:
            reason, self._fail_next = self._fail_next, None
            return ResizeResult(ResizeStatus.ERROR, reason, allocation=task.allocation)
        if self.defer_over_commit and not self._fits_now(task, target):
            task.pending = target
            return ResizeResult(
                ResizeStatus.PENDING, "waiting for capacity held by other tasks", allocation=task.allocation
            )
        task.allocation = target
        task.pending = None
        return ResizeResult(ResizeStatus.APPLIED, "applied", allocation=target)

    def _fits_now(self, task: _Task, target: Allocation) -> bool:
        for metric, want in target.requests.present().items():
            total = self.allocatable.get(metric)
            if total is None:
                continue
            others = sum(
                t.allocation.requests.get(metric) or 0.0
                for t in self._tasks.values()
                if t is not task and not t.released
            )
            if others + want > total + 1e-9:
                return False
        return True

    def _observed(self, task: _Task) -> ResourceVector:
        demand = task.script.demand(task.progress)
        cpu_lim = task.allocation.limits.cpu_cores if self.enforcing else None
        mem_lim = task.allocation.limits.memory_bytes if self.enforcing else None
        out = demand
        if cpu_lim is not None and demand.cpu_cores is not None:
            out = out.with_value(Metric.CPU_CORES, min(demand.cpu_cores, cpu_lim))
        if mem_lim is not None and demand.memory_bytes is not None:
            out = out.with_value(Metric.MEMORY_BYTES, min(demand.memory_bytes, mem_lim))
        return out

    def _catch_up_all(self) -> None:
        for task in self._tasks.values():
            self._catch_up(task)
        for task in self._tasks.values():
            if task.end is None and task.pending is not None and self._fits_now(task, task.pending):
                task.allocation, task.pending = task.pending, None

    def _catch_up(self, task: _Task) -> None:
        """Walk the task from its last check to now in ``step_s`` steps: progress, exits, OOM kills."""
        now = self.clock.monotonic()
        if task.end is not None or task.released:
            task.checked = now
            return
        while not self._ended(task) and task.checked < now:
            dt = min(self.step_s, now - task.checked)
            task.progress += dt * self._speed(task)
            task.checked += dt
        task.checked = now

    def _speed(self, task: _Task) -> float:
        """Script seconds per wall second: below 1 when a work-conserving task is CPU-throttled."""
        if not self.cpu_work_conserving or not self.enforcing:
            return 1.0
        want = task.script.demand(task.progress).cpu_cores
        limit = task.allocation.limits.cpu_cores
        if want is None or limit is None or want <= limit:
            return 1.0
        return limit / want

    def _ended(self, task: _Task) -> bool:
        """Whether the task ends at its current progress (and record how)."""
        if task.progress >= task.script.duration_s - 1e-9:
            code = task.script.exit_code
            kind = ExitKind.SUCCEEDED if code == 0 else ExitKind.FAILED
            task.end = TaskState(
                kind, exit_code=code, reason=f"exited with {code}", oom_events=task.oom_events
            )
            return True
        limit = task.allocation.limits.memory_bytes
        want = task.script.demand(task.progress).memory_bytes
        if self.enforcing and limit is not None and want is not None and want > limit:
            task.oom_events += 1
            task.end = TaskState(
                ExitKind.OOM_KILLED,
                exit_code=137,
                reason=f"memory demand {want / MIB:.0f} MiB exceeded the limit {limit / MIB:.0f} MiB "
                f"at t={task.progress:.2f}s of its script",
                oom_events=task.oom_events,
            )
            return True
        return False
