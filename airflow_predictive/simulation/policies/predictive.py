"""Ours: the profiler's forecast, the product's planner and its shaping controller, on simulated tries.

Nothing here decides a limit. The try starts with ``planner.plan_from_forecast`` (risk quantile
curve -> initial allocation + timed steps, the same call the executor makes); while it runs, a real
``ShapingController`` ticks every grid step on an injected clock, observing the try's usage
through a simulated backend whose resizes are in force ``actuation_delay_s`` after submission
(PENDING until then, as on Kubernetes). After an OOM kill the next try's plan is
``planner.oom_retry_plan`` from the peak seen before the kill.

``predictive_plan`` is the plan alone (its timed steps, no shaping): what the forecast and the
planner give before any feedback. ``predictive_shadow`` adds the shadow run of a cold start (a task without a champion forecast): a
short calibration run on small resources (at most ``shadow_budget`` of the predicted runtime, and
``shadow_deadline_s``) whose observed prefix re-forecasts the curve before planning. Its
allocation is charged to the try (it is capacity spent). Runs with history never shadow.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import numpy as np

from airflow_predictive.core.model.backend import (
    Allocation,
    Bounds,
    Capabilities,
    ExitKind,
    Handle,
    ResizeResult,
    ResizeStatus,
    TaskState,
)
from airflow_predictive.core.model.plan import PlanSource
from airflow_predictive.core.model.resources import MIB, Metric, ResourceVector
from airflow_predictive.core.shaping.expectation import window_max
from airflow_predictive.core.shaping.reforecast import ReforecastSettings
from airflow_predictive.simulation.execution import NEVER, Limits
from airflow_predictive.simulation.policies.base import TryContext, declared_limits

if TYPE_CHECKING:
    from collections.abc import Callable

    from airflow_predictive.core.model.backend import Capacity, ProvisionSpec
    from airflow_predictive.core.model.plan import AllocationPlan
    from airflow_predictive.core.model.series import Forecast, UsageSeries
    from airflow_predictive.core.scheduling.planner import PlanSettings
    from airflow_predictive.core.shaping.policy import Expectation, ShapingSettings
    from airflow_predictive.simulation.execution import SimSettings, TryDriver, TryResult
    from airflow_predictive.simulation.forecasting import HeldOutForecasts
    from airflow_predictive.simulation.policies.base import NodeShape
    from airflow_predictive.simulation.workload import SimRun, Workload

_EPOCH = datetime(2026, 1, 1, tzinfo=UTC)
RISING_WINDOW_S = 10.0
# ours' mid-run re-forecast by default (None: off): the product's default ReforecastSettings (the
# k-Segments re-forecast over each run's earlier runs, offering the reclaim above the need), chosen
# on the training half's own split, see docs/benchmarks/cluster_training.md
REFORECAST: ReforecastSettings | None = ReforecastSettings(every_s=60.0)


class SimClock:
    """The controller's clock: the try's wall seconds, moved by the simulator."""

    def __init__(self) -> None:
        self.t = 0.0

    def monotonic(self) -> float:
        return self.t

    def now(self) -> datetime:
        return _EPOCH + timedelta(seconds=self.t)


class SimBackend:
    """The simulated try as a resource backend: usage from the true curve (as sampled), resizes
    submitted now and in force once the simulator applies them (``poll_resize``)."""

    name = "sim"

    def __init__(self, node: NodeShape, allocation: Allocation | None = None) -> None:
        self.node = node
        self.allocation = allocation or Allocation()  # in force
        self.current: Limits | None = None  # in force, as the simulator sees it
        self.usage_now: ResourceVector | None = None
        self.submitted: Allocation | None = None  # asked for during the last tick
        self.in_flight: Allocation | None = None

    def capabilities(self) -> Capabilities:
        return Capabilities(
            live=frozenset({Metric.CPU_CORES, Metric.MEMORY_BYTES}),
            provision_only=frozenset(),
            bounds={
                Metric.CPU_CORES: Bounds(0.01, self.node.cpu_cores, 0.001),
                Metric.MEMORY_BYTES: Bounds(MIB, self.node.memory_bytes, 1.0),
            },
            note="simulated pool node",
        )

    def capacity(self) -> Capacity:  # pragma: no cover - the simulator places tries itself
        raise NotImplementedError("the simulator places tries itself")

    def provision(self, spec: ProvisionSpec, allocation: Allocation) -> Handle:  # pragma: no cover
        raise NotImplementedError("the simulator provisions tries itself")

    def state(self, handle: Handle) -> TaskState:
        return TaskState(ExitKind.RUNNING)

    def usage(self, handle: Handle) -> ResourceVector | None:
        return self.usage_now

    def submit_resize(self, handle: Handle, allocation: Allocation) -> ResizeResult:
        if limits_of(allocation, self.node, self.current) == self.current:
            self.allocation = allocation
            return ResizeResult(ResizeStatus.APPLIED, "already in force", allocation)
        self.submitted = self.in_flight = allocation
        return ResizeResult(ResizeStatus.PENDING, "actuating", None)

    def poll_resize(self, handle: Handle) -> ResizeResult | None:
        flight = self.in_flight
        if flight is None:
            return None
        if limits_of(flight, self.node, self.current) == self.current:
            self.in_flight = None
            self.allocation = flight
            return ResizeResult(ResizeStatus.APPLIED, "in force", flight)
        return ResizeResult(ResizeStatus.PENDING, "actuating", None)

    def resize(self, handle: Handle, allocation: Allocation) -> ResizeResult:  # pragma: no cover
        return self.submit_resize(handle, allocation)

    def release(self, handle: Handle) -> None:  # pragma: no cover
        return None


def limits_of(allocation: Allocation, node: NodeShape, fallback: Limits | None) -> Limits:
    """An allocation as simulated limits: memory from its limit (else request); CPU limit from its
    limit, or the node when it has none (a request alone never throttles), with the request kept."""
    req, lim = allocation.requests, allocation.limits
    mem = lim.memory_bytes if lim.memory_bytes is not None else req.memory_bytes
    if mem is None:
        mem = fallback.memory_bytes if fallback is not None else node.memory_bytes
    cpu_limit = min(lim.cpu_cores, node.cpu_cores) if lim.cpu_cores is not None else node.cpu_cores
    cpu_request = req.cpu_cores
    if cpu_request is None and lim.cpu_cores is None:
        cpu_request = fallback.cpu_allocated if fallback is not None else None
    if cpu_request is not None:
        cpu_request = min(max(cpu_request, 0.01), cpu_limit)
        if cpu_request >= cpu_limit:
            cpu_request = None
    return Limits(float(min(mem, node.memory_bytes)), float(max(cpu_limit, 0.01)), cpu_request)


@dataclass
class PredictiveSettings:
    """plan: the planner's settings (risk quantiles, steps). shape: run the shaping controller
    (False: the plan's timed steps only, as the executor applies them). shaping: the controller's policy
    settings (``maximum`` is set to the node). expectation_quantile: the forecast quantile the
    shaping band follows. shadow: run a shadow on cold start. shadow_budget / shadow_deadline_s:
    its length as a share of the predicted runtime / at most. shadow_limits: its small resources.
    event_driven: tick the controller only when its policy could act (``ShapingController.quiet``:
    a forecast edge, a plan step, a timer, usage leaving the policy's band), not every grid step;
    the decisions are the same (tests/unit/simulation/test_predictive.py compares both).
    reforecast: the mid-run re-forecast from the observed prefix (``core/shaping/reforecast.py``,
    the product's hook: the controller calls it every ``every_s``; None or ``every_s`` 0: off)."""

    plan: PlanSettings | None = None
    shape: bool = True
    shaping: ShapingSettings | None = None
    expectation_quantile: float = 0.9
    shadow: bool = False
    shadow_budget: float = 0.05
    shadow_deadline_s: float = 120.0
    shadow_limits: Limits = field(default_factory=lambda: Limits(2048 * MIB, 1.0))
    event_driven: bool = True
    reforecast: ReforecastSettings | None = REFORECAST


class PredictivePolicy:
    def __init__(
        self, forecasts: HeldOutForecasts, settings: PredictiveSettings | None = None, name: str | None = None
    ) -> None:
        from airflow_predictive.core.scheduling.planner import PlanSettings
        from airflow_predictive.core.shaping.policy import ShapingSettings

        self.forecasts = forecasts
        self.settings = settings or PredictiveSettings()
        self.plan_settings = self.settings.plan or PlanSettings()
        self.shaping = self.settings.shaping or ShapingSettings()
        default = "predictive_shadow" if self.settings.shadow else "predictive"
        self.name = name or (default if self.settings.shape else "predictive_plan")
        self.workload: Workload | None = None
        self.plans: dict[tuple[int, int], AllocationPlan] = {}
        self.shadows = 0
        self.shadow_seconds = 0.0

    def prepare(self, workload: Workload, settings: SimSettings) -> None:
        self.workload = workload
        self.plans = {}
        self.shadows = 0
        self.shadow_seconds = 0.0

    def driver(self, ctx: TryContext) -> TryDriver:
        from dataclasses import replace

        from airflow_predictive.core.profiler.features import reached_declared_memory
        from airflow_predictive.core.scheduling.planner import (
            held_at_declared,
            oom_retry_plan,
            plan_from_forecast,
        )
        from airflow_predictive.core.shaping.expectation import ForecastExpectation
        from airflow_predictive.training.serving import SERVED_HISTORY_RUNS

        run = ctx.run
        began = time.perf_counter()
        declared_lim = declared_limits(run, ctx.node)
        declared = ResourceVector(
            cpu_cores=run.declared_cpu or None, memory_bytes=run.declared_memory or None
        )
        forecast = self.forecasts.forecasts.get(run.origin)
        shadow = None
        if self.settings.shadow and run.origin in self.forecasts.cold_start and ctx.attempt == 1:
            shadow, forecast = self._shadow(run, forecast)
        caps = SimBackend(ctx.node).capabilities()
        if ctx.previous is not None and ctx.previous.oom:
            prev_plan = self.plans.get((run.index, ctx.attempt - 1))
            outcome = oom_retry_plan(
                prev_plan,
                ResourceVector(memory_bytes=ctx.previous.peak_seen),
                still_rising=_still_rising(run, ctx.previous),
                settings=self.plan_settings,
                declared=declared,
            )
        else:
            outcome = plan_from_forecast(
                forecast, declared=declared, settings=self.plan_settings, capabilities=caps
            )
            served = self.workload.history_of(run)[-SERVED_HISTORY_RUNS:] if self.workload is not None else []
            if forecast is not None and reached_declared_memory(served):
                outcome = held_at_declared(outcome, declared)  # as the product's coordinator does
        plan = outcome.plan
        self.plans[(run.index, ctx.attempt)] = plan
        initial = limits_of(plan.initial, ctx.node, declared_lim)
        expectation = (
            ForecastExpectation(forecast, quantile=self.settings.expectation_quantile)
            if forecast is not None
            else None
        )
        shaping = replace(
            self.shaping,
            maximum=ResourceVector(cpu_cores=ctx.node.cpu_cores, memory_bytes=ctx.node.memory_bytes),
        )
        retry_memory = (
            plan.initial.limits.memory_bytes if outcome.plan.source is PlanSource.OOM_RETRY else None
        )
        if retry_memory is not None:
            # the kill proved the run reaches the retry plan's memory: never reclaim below it
            shaping = replace(shaping, minimum=shaping.minimum.with_value(Metric.MEMORY_BYTES, retry_memory))
        if plan.memory_floor:  # the product's executors: executors/local_shaping.retry_floor
            floor = max(plan.memory_floor, shaping.minimum.memory_bytes or 0.0)
            shaping = replace(shaping, minimum=shaping.minimum.with_value(Metric.MEMORY_BYTES, floor))
        planned_s = time.perf_counter() - began
        if not self.settings.shape:
            return PlanStepsDriver(ctx, initial, plan, planned_s)
        return ShapedDriver(
            ctx,
            initial,
            plan.initial,
            plan,
            expectation,
            shaping,
            planned_s,
            shadow,
            event_driven=self.settings.event_driven,
            reforecaster=self._reforecaster(forecast, run),
        )

    def _reforecaster(self, forecast: Forecast | None, run: SimRun) -> PrefixReforecaster | None:
        """The re-forecast hook of ``run``'s tries; with ``segments`` on, over its task's earlier
        runs only (``Workload.history_of``: the training runs and the replayed runs that started
        before it, never the run itself nor a later one)."""
        settings = self.settings.reforecast
        if forecast is None or settings is None or settings.every_s <= 0:
            return None
        from airflow_predictive.core.shaping.reforecast import PrefixReforecaster

        history = (
            self.workload.history_of(run)
            if settings.segments is not None and self.workload is not None
            else []
        )
        return PrefixReforecaster(
            forecast,
            quantile=self.settings.expectation_quantile,
            settings=settings,
            history=history,
            features=run.example.record.features,
        )

    def _shadow(self, run: SimRun, forecast: Forecast | None) -> tuple[ShadowCost, Forecast | None]:
        """The shadow run's observed prefix and the re-forecast it gives (cost charged to the try)."""
        from dataclasses import replace

        from airflow_predictive.core.model.series import UsageSeries
        from airflow_predictive.core.profiler.selection import query_for
        from airflow_predictive.simulation.forecasting import METRICS

        assert self.workload is not None
        predicted = forecast.duration_s.get(0.5) if forecast is not None else None
        length = min(
            self.settings.shadow_deadline_s, (predicted or run.duration_s) * self.settings.shadow_budget
        )
        steps = max(2, min(run.steps, int(length / run.grid_s)))
        lim = self.settings.shadow_limits
        mem = np.minimum(run.memory[:steps], lim.memory_bytes)  # a shadow is capped, never killed
        cpu = np.minimum(run.cpu[:steps], lim.cpu_cores)
        times = np.arange(steps) * run.grid_s
        prefix = UsageSeries(times, {Metric.MEMORY_BYTES: mem, Metric.CPU_CORES: cpu})
        query = replace(query_for(run.example, self.workload.history_of(run), METRICS), prefix=prefix)
        fresh = self.forecasts.predict(run.key, query)
        wall = steps * run.grid_s
        self.shadows += 1
        self.shadow_seconds += wall
        cost = ShadowCost(wall, lim.memory_bytes * wall, float(mem.sum() * run.grid_s), lim.cpu_cores * wall)
        return cost, fresh if fresh is not None else forecast

    def finished(self, ctx: TryContext, result: TryResult) -> None:
        return None


@dataclass(frozen=True)
class ShadowCost:
    wall_s: float
    memory_alloc: float
    memory_used: float
    cpu_alloc: float


def _still_rising(run: SimRun, killed: TryResult) -> bool:
    k = min(killed.steps, run.steps - 1)
    back = max(0, k - int(RISING_WINDOW_S / run.grid_s))
    return bool(run.memory[k] > run.memory[back] * 1.02)


class PlanStepsDriver:
    """The plan alone: each timed step is asked for at its time (in force after the actuation
    delay), nothing reacts to usage. Separates what the forecast + planner give from shaping."""

    def __init__(self, ctx: TryContext, initial: Limits, plan: AllocationPlan, planned_s: float) -> None:
        self.start = initial
        self.node = ctx.node
        self.setup_s = planned_s
        g = ctx.run.grid_s
        self.asks = {max(1, round(step.at_s / g)): step.allocation for step in plan.steps}

    def initial(self) -> Limits:
        return self.start

    def next_wakeup(self, k: int, current: Limits) -> int:
        later = [s for s in self.asks if s > k]
        return min(later) if later else NEVER

    def decide(self, k: int, now_s: float, current: Limits) -> Limits | None:
        alloc = self.asks.get(k)
        return None if alloc is None else limits_of(alloc, self.node, current)


class ShapedDriver:
    """One try under the real ``ShapingController``: a tick per grid step, resizes via SimBackend."""

    def __init__(
        self,
        ctx: TryContext,
        initial: Limits,
        allocation: Allocation,
        plan: AllocationPlan,
        expectation: ForecastExpectation | None,
        shaping: ShapingSettings,
        planned_s: float,
        shadow: ShadowCost | None,
        *,
        event_driven: bool = True,
        reforecaster: PrefixReforecaster | None = None,
    ) -> None:
        """``planned_s``: how long the planner took; ``shadow``: the cold start's shadow run;
        ``event_driven``: skip the ticks the controller's ``quiet()`` promises change nothing;
        ``reforecaster``: the controller's re-forecast hook (every ``settings.every_s``)."""
        self.run = ctx.run
        self.start = initial
        self.plan = plan
        self.expectation = expectation
        self.shaping = shaping
        self.setup_s = planned_s  # the planner's decision time (see run_try)
        self.overhead = shadow  # the shadow run's allocation, charged to this try
        self.node = ctx.node
        self.clock = SimClock()
        self.backend = SimBackend(ctx.node, allocation)
        self.backend.current = initial
        self._controller: ShapingController | None = None
        self.event_driven = event_driven
        self.reforecaster: Callable[[UsageSeries], Expectation | None] | None = reforecaster
        self.reforecast_every_s = reforecaster.settings.every_s if reforecaster is not None else 0.0
        self.ticks = 0
        self._skipped: tuple[int, np.ndarray, np.ndarray, np.ndarray] | None = None  # k0, times, mem, cpu

    def initial(self) -> Limits:
        return self.start

    def _make(self) -> ShapingController:
        from airflow_predictive.core.shaping.controller import ControllerOptions, ShapingController

        handle = Handle(
            backend="sim",
            name=f"run-{self.run.index}",
            ref=f"sim/{self.run.index}",
            allocation=self.backend.allocation,
        )
        return ShapingController(
            self.backend,  # type: ignore[arg-type]
            handle,
            self.shaping,
            clock=self.clock,
            expectation=self.expectation,
            plan=self.plan,
            run_key=str(self.run.key),
            started_s=0.0,
            reforecast=self.reforecaster,
            options=ControllerOptions(reforecast_every_s=self.reforecast_every_s),
        )

    def next_wakeup(self, k: int, current: Limits) -> int:
        controller = self._controller
        if not self.event_driven or controller is None:
            return k + 1
        promise = controller.quiet()
        if promise is None:
            return k + 1
        return self._first_tick_out_of(promise, k, current, controller)

    def _first_tick_out_of(
        self, promise: Quiet, k: int, current: Limits, controller: ShapingController
    ) -> int:
        """The first step j > k whose tick (at the wall time after j steps, observing sample j - 1)
        is not covered by ``promise``; the samples of the ticks skipped before it are kept for the
        controller's dwell window (fed at the tick, see ``decide``)."""
        run, g, n = self.run, self.run.grid_s, self.run.steps
        window_s = controller.settings.reclaim_after_s
        now = self.clock.t
        lim_cpu = current.cpu_cores
        j1, chunk = k, 256
        while j1 < n:  # look 256 steps ahead first, then 4x as far each time
            j1 = min(n, j1 + chunk)
            chunk *= 4
            cpu_raw = run.cpu[k:j1]
            per_step = np.where(cpu_raw > lim_cpu, cpu_raw / lim_cpu, 1.0) * g
            times = now + np.cumsum(per_step)  # tick times of steps k+1 .. j1 (sample i at index i-k)
            mem = run.memory[k:j1]
            cpu = np.minimum(cpu_raw, lim_cpu)
            bad = times >= promise.until_s
            for metric, values in ((Metric.MEMORY_BYTES, mem), (Metric.CPU_CORES, cpu)):
                band = promise.bands.get(metric)
                if band is None:
                    continue
                bad |= (values < band.usage_min) | (values >= band.usage_max) | (values >= band.peak_max)
                if band.peak_min > -np.inf:
                    bad |= _window_peak(controller, metric, times, values, window_s) < band.peak_min
            if bad.any():
                self._skipped = (k, times, mem, cpu)
                return k + 1 + int(bad.argmax())
        return NEVER

    def decide(self, k: int, now_s: float, current: Limits) -> Limits | None:
        if self._controller is None:
            self._controller = self._make()
        backend = self.backend
        backend.current = current
        skipped = self._skipped
        if skipped is not None:  # the ticks skipped since step k0 still observed their samples
            self._skipped = None
            k0, times, mem, cpu = skipped
            count = k - 1 - k0  # ticks k0+1 .. k-1
            self._controller.observe_skipped(
                times[:count], {Metric.CPU_CORES: cpu[:count], Metric.MEMORY_BYTES: mem[:count]}
            )
        i = k - 1  # the last completed sample
        backend.usage_now = ResourceVector(
            cpu_cores=float(min(self.run.cpu[i], current.cpu_cores)), memory_bytes=float(self.run.memory[i])
        )
        backend.submitted = None
        self.clock.t = now_s
        self.ticks += 1
        self._controller.tick()
        if backend.submitted is None:
            return None
        return limits_of(backend.submitted, self.node, current)


def _window_peak(
    controller: ShapingController, metric: Metric, times: np.ndarray, values: np.ndarray, window_s: float
) -> np.ndarray:
    """The dwell window's peak the controller would read at each of ``times`` (its window's points
    before them, then ``values`` ticked at ``times``): max over the samples at t >= time - window_s."""
    old = controller.windows[metric].points
    all_t = np.concatenate([np.fromiter((p[0] for p in old), float, len(old)), times])
    all_v = np.concatenate([np.fromiter((p[1] for p in old), float, len(old)), values])
    last = np.arange(len(old), all_t.size)
    first = np.minimum(np.searchsorted(all_t, times - window_s, side="left"), last)
    return window_max(all_v[None, :], first, last)[0]


if TYPE_CHECKING:
    from airflow_predictive.core.shaping.controller import ShapingController
    from airflow_predictive.core.shaping.expectation import ForecastExpectation
    from airflow_predictive.core.shaping.quiet import Quiet
    from airflow_predictive.core.shaping.reforecast import PrefixReforecaster
