"""Shaping of local tasks under the PredictiveLocalExecutor: one thread, one round over every task.

Why one thread for all (``ShapingGroup``) rather than one ``ShapingLoop`` per task: a round is a
few cgroup file reads per task (well under a millisecond each), so one thread keeps up with many
tasks at a 1 s interval; N threads would contend for the same cgroup backend lock and the GIL and
cost a thread per running task for nothing. The executor's own heartbeat is not used either: it
runs every few seconds and blocks on the scheduler, too slow to catch a memory ramp.

A task is shaped once its process has joined its cgroup (``LocalShapedTask`` waits for a pid in
the group: before that the group is empty and reads as idle, which must not be reclaimed), and for
its first ``warmup_s`` it is only grown, never reclaimed below its planned allocation: an Airflow
task process starts small and then parses its DAG and imports its code faster than a grow follows. Its
controller is the runtime's (events stored, applied changes adjusting the reservation), over a
``PoolGate``: a grow is first reserved in the ledger (``force=False``) and held with "pool full"
when the pool has no room; a reclaim is released by the controller's own adjust after it applied.
Nothing here may hurt the task: a failure is logged once and the task keeps its current limits.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from airflow_predictive.core.model.backend import ResizeResult, ResizeStatus
from airflow_predictive.core.model.plan import LedgerStatus, PlanSource
from airflow_predictive.core.model.resources import Metric, ResourceVector
from airflow_predictive.core.shaping.policy import ShapingSettings
from airflow_predictive.core.shaping.runner import ShapingGroup
from airflow_predictive.executors.local_worker import pids_in

if TYPE_CHECKING:
    from collections.abc import Callable

    from airflow_predictive.core.model.backend import Allocation, Capabilities, Handle, TaskState
    from airflow_predictive.core.model.plan import AllocationPlan
    from airflow_predictive.core.model.runs import RunIdentity
    from airflow_predictive.core.ports import ReservationLedger, ResourceBackend
    from airflow_predictive.core.shaping.controller import ShapingController, TickReport
    from airflow_predictive.core.shaping.expectation import ForecastExpectation
    from airflow_predictive.executors.coordinator import Running
    from airflow_predictive.executors.opt_in import TaskSettings

log = logging.getLogger(__name__)

POOL_FULL = "pool full"


def shaping_run_key(run: RunIdentity) -> str:
    """The ``run_key`` of a local task's shaping events: ``dag/task[map]/run_id/try``."""
    key = run.key
    task = key.task_id if key.map_index < 0 else f"{key.task_id}[{key.map_index}]"
    return f"{key.dag_id}/{task}/{run.run_id}/{run.try_number}"


def _grows(current: Allocation, target: Allocation) -> bool:
    for side_now, side_new in ((current.limits, target.limits), (current.requests, target.requests)):
        for metric, value in side_new.present().items():
            before = side_now.get(metric)
            if before is None or value > before:
                return True
    return False


class PoolGate:
    """``backend`` for one reserved task, as its shaping controller sees it: a grow goes through the
    ledger first (see the module docstring). Every other call is the backend's."""

    def __init__(
        self,
        backend: ResourceBackend,
        ledger: ReservationLedger,
        reservation_id: str,
        *,
        clock: Callable[[], float] = time.time,
        plan: AllocationPlan | None = None,
        started: float | None = None,
    ) -> None:
        self.backend = backend
        self.ledger = ledger
        self.reservation_id = reservation_id
        self.clock = clock
        self.plan = plan
        self.started = started  # epoch seconds the task started (the plan's t = 0)
        self.held = 0  # grows held back because the pool had no room
        self._in_force: dict[str, Allocation] = {}
        self._ledger_warned = False

    @property
    def name(self) -> str:
        return str(getattr(self.backend, "name", "cgroups"))

    def capabilities(self) -> Capabilities:
        return self.backend.capabilities()

    def state(self, handle: Handle) -> TaskState:
        return self.backend.state(handle)

    def usage(self, handle: Handle) -> ResourceVector | None:
        return self.backend.usage(handle)

    def resize(self, handle: Handle, allocation: Allocation) -> ResizeResult:
        current = self._in_force.get(handle.ref, handle.allocation)
        now = self.clock()
        until = self._segment_end(now)
        reserved = self._reserve_grow(handle, current, allocation, now, until)
        if isinstance(reserved, ResizeResult):
            return reserved
        out = self.backend.resize(handle, allocation)
        self._settle(handle, out, allocation, current, reserved_ahead=reserved, now=now, until=until)
        return out

    def _reserve_grow(
        self, handle: Handle, current: Allocation, allocation: Allocation, now: float, until: float | None
    ) -> ResizeResult | bool:
        """A grow reserved in the ledger before it is sent: True when reserved ahead, False when
        there was nothing to reserve (or no ledger to ask: logged once), a REJECTED result ("pool
        full") when the pool cannot hold it."""
        if not _grows(current, allocation):
            return False
        result = self.ledger.adjust(
            self.reservation_id,
            now,
            allocation,
            desired=allocation,
            actual=self._usage(handle),
            until=until,
            force=False,
        )
        if result.status is LedgerStatus.REFUSED:
            self.held += 1
            return ResizeResult(ResizeStatus.REJECTED, f"{POOL_FULL}: {result.reason}", allocation=current)
        if result.status is LedgerStatus.ADJUSTED:
            return True
        if not self._ledger_warned:  # ledger down / reservation gone: the task's need comes first
            self._ledger_warned = True
            log.warning(
                "predictive: %s grows without a ledger check (%s: %s)",
                handle.name,
                result.status.value,
                result.reason,
            )
        return False

    def _settle(
        self,
        handle: Handle,
        out: ResizeResult,
        allocation: Allocation,
        current: Allocation,
        *,
        reserved_ahead: bool,
        now: float,
        until: float | None,
    ) -> None:
        """A resize's final result: what is in force now, or the reserved grow given back."""
        if out.applied:
            self._in_force[handle.ref] = out.allocation or allocation
        elif reserved_ahead:  # give back what was reserved for a grow that did not happen
            self.ledger.adjust(self.reservation_id, now, out.allocation or current, until=until, force=True)

    def _segment_end(self, now: float) -> float | None:
        """Epoch seconds of the plan's next step (None: the reservation's end): a grow reserves only
        the current segment, the plan's future steps stay in the ledger (as the controller's own
        adjust does)."""
        if self.plan is None or self.started is None:
            return None
        return self.plan.segment_end(now - self.started, now)

    def _usage(self, handle: Handle) -> ResourceVector | None:
        try:
            return self.backend.usage(handle)
        except Exception:
            return None


class ShapedMember:
    """What every member of an executor's shaping group shares once its controller is built: the
    warm-up (for its first ``warmup_s`` its minimum is the allocation it started with: grows only),
    the tick, and the allocation in force. Subclasses say when the controller can be built."""

    def __init__(
        self, name: str, *, warmup_s: float = 0.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.name = name
        self.warmup_s = warmup_s
        self.clock = clock
        self.controller: ShapingController | None = None
        self.last: TickReport | None = None
        self.joined_at: float | None = None
        self._settings: ShapingSettings | None = None  # the real settings, while warming up

    def _joined(self, controller: ShapingController) -> None:
        """``controller`` now shapes this member: its warm-up starts."""
        self.controller = controller
        self.joined_at = self.clock()
        if self.warmup_s > 0:
            self._settings = controller.settings
            controller.settings = no_reclaim_below(self._settings, controller.allocation)

    def _tick_controller(self, controller: ShapingController) -> TickReport:
        if self._settings is not None and self.clock() - (self.joined_at or 0.0) >= self.warmup_s:
            controller.settings, self._settings = self._settings, None  # warm-up over
        self.last = controller.tick()
        return self.last

    @property
    def warming_up(self) -> bool:
        return self._settings is not None

    @property
    def allocation(self) -> Allocation | None:
        return None if self.controller is None else self.controller.allocation


class LocalShapedTask(ShapedMember):
    """One task in the executor's shaping group: its controller is built when the task's process is
    in its cgroup (``procs_files`` non-empty), then ticked every round (warm-up: ``ShapedMember``)."""

    def __init__(
        self,
        name: str,
        procs_files: tuple[str, ...],
        build: Callable[[], ShapingController],
        *,
        warmup_s: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(name, warmup_s=warmup_s, clock=clock)
        self.procs_files = procs_files
        self._build = build

    def tick(self) -> TickReport | None:
        if self.controller is None:
            if self.procs_files and not pids_in(self.procs_files):
                return None  # the task's process has not joined yet: an empty group is not idle
            self._joined(self._build())
        assert self.controller is not None
        return self._tick_controller(self.controller)


def forecast_expectation(forecast: Any, task: TaskSettings) -> ForecastExpectation | None:
    """What a shaped task follows: its served forecast at the task's risk quantiles (None: none)."""
    if forecast is None:
        return None
    from airflow_predictive.core.shaping.expectation import ForecastExpectation

    return ForecastExpectation(forecast, quantiles=dict(task.risk))


def log_shaping_ended(shaped: ShapedMember | None) -> None:
    """One line with what shaping did to ``shaped`` (nothing when it never had a controller)."""
    if shaped is not None and shaped.controller is not None:
        ctrl = shaped.controller
        log.info(
            "predictive: shaping of %s ended: %d resize(s), %d applied",
            shaped.name,
            ctrl.resizes,
            ctrl.applied,
        )


def no_reclaim_below(settings: ShapingSettings, allocation: Allocation) -> ShapingSettings:
    lo = dict(settings.minimum.present())
    for metric in settings.metrics:
        value = allocation.limits.get(metric)
        if value is None:
            value = allocation.requests.get(metric)
        if value is not None:
            lo[metric] = max(lo.get(metric, 0.0), value)
    return replace(settings, minimum=ResourceVector.from_mapping(lo))


def retry_floor(settings: ShapingSettings, plan: AllocationPlan | None) -> ShapingSettings:
    """A try after an OOM kill is never reclaimed below its retry plan's memory: the kill showed
    what the task needs (the cluster benchmark saw one run killed four times at the same jump
    when the shaper reclaimed its retry); nor is any try below its plan's ``memory_floor`` (a task
    whose runs reached their declared limit, ``planner.held_at_declared``)."""
    if plan is None:
        return settings
    memory = plan.memory_floor
    if plan.source is PlanSource.OOM_RETRY:
        memory = max(
            memory or 0.0, plan.initial.limits.memory_bytes or plan.initial.requests.memory_bytes or 0.0
        )
    if not memory:
        return settings
    floor = max(float(memory), settings.minimum.memory_bytes or 0.0)
    return replace(settings, minimum=settings.minimum.with_value(Metric.MEMORY_BYTES, floor))


def shaping_settings_for(task: TaskSettings) -> ShapingSettings:
    """The task's shaping settings with its ``min`` / ``max`` as the bounds (they win over the defaults)."""
    base = task.shaping_settings or ShapingSettings()
    lo = {**base.minimum.present(), **task.minimum.present()}
    hi = {**base.maximum.present(), **task.maximum.present()}
    return replace(base, minimum=ResourceVector.from_mapping(lo), maximum=ResourceVector.from_mapping(hi))


class LocalShaping:
    """The executor's shaping: ``start`` a task after its launch, ``stop`` it before its cgroup is
    released, ``close`` on executor end. ``runtime`` builds the controllers (``runtime.shaper``)."""

    def __init__(self, runtime: Any, backend: ResourceBackend, interval_s: float) -> None:
        self.runtime = runtime
        self.backend = backend
        self.group = ShapingGroup(interval_s, name="predictive-local-shaping")
        self.tasks: dict[Any, LocalShapedTask] = {}
        self.gates: dict[Any, PoolGate] = {}

    def start(self, item: Running, task: TaskSettings, forecast: Any = None) -> bool:
        """Shape ``item`` (launched in its cgroup); False (logged) when it cannot be shaped."""
        handle = item.handle
        if handle is None:
            return False
        try:
            settings = retry_floor(shaping_settings_for(task), item.plan)
            procs = tuple(self.backend.procs_files(handle)) if hasattr(self.backend, "procs_files") else ()
            backend: Any = self.backend
            if item.reservation_id is not None:
                backend = self.gates[item.key] = PoolGate(
                    self.backend,
                    self.runtime.ledger(),
                    item.reservation_id,
                    plan=item.plan,
                    started=item.started,
                )
            expectation = forecast_expectation(forecast, task)
            plan = item.plan

            def build() -> ShapingController:
                return self.runtime.shaper(  # type: ignore[no-any-return]
                    backend,
                    handle,
                    settings,
                    expectation=expectation,
                    plan=plan,
                    reservation_id=item.reservation_id,
                    run_key=shaping_run_key(item.run),
                )

            shaped = LocalShapedTask(handle.name, procs, build, warmup_s=task.shaping_warmup_s)
            self.tasks[item.key] = shaped
            self.group.add(item.key, shaped)
        except Exception as exc:
            log.warning("predictive: %s is not shaped (%s); it keeps its planned limits", item.run.key, exc)
            self.tasks.pop(item.key, None)
            self.gates.pop(item.key, None)
            return False
        item.shaped = True
        log.info(
            "predictive: shaping %s every %.1fs (%s)",
            item.run.key,
            self.group.interval_s,
            "forecast" if expectation is not None else "no forecast: near-limit grows, idle reclaims",
        )
        return True

    def stop(self, key: Any) -> LocalShapedTask | None:
        """Stop shaping ``key``; returns once no tick of it runs (its cgroup may be released)."""
        self.group.remove(key)
        self.gates.pop(key, None)
        shaped = self.tasks.pop(key, None)
        log_shaping_ended(shaped)
        return shaped

    def allocation(self, key: Any) -> Allocation | None:
        shaped = self.tasks.get(key)
        return None if shaped is None else shaped.allocation

    def close(self) -> None:
        self.group.close()
        self.tasks.clear()
        self.gates.clear()
