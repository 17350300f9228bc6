"""What users would use instead: declared resources, VPA-style, Autopilot-style, and the oracle.

- ``declared``: the author's requests as limits; an OOM-killed try is retried with memory x the
  try number (the nf-core / Nextflow ``task.attempt`` convention).
- ``vpa``: the recommender's target (the product's ``VpaStyle``: p90 of the task's earlier peaks
  x 1.15, floors of 250 MiB / 25 millicores) at pod creation; an in-place updater loop every
  ``vpa_loop_s`` that sees usage at ``metrics_resolution_s`` and raises memory to the pod's
  observed peak x 1.15 when it is more than 10% above the request; after an OOM the next try gets
  max(limit + 100 MiB, limit x 1.2).
- ``autopilot``: the product's ``AutopilotStyle`` (decayed p98 memory / p95 CPU of earlier peaks
  + 10%), the maximum of the task's recommendations over the last hour of cluster time, flat per
  try; OOM bump as VPA's.
- ``oracle``: knows the true curve; every ``oracle_step_s`` its limits are the next window's true
  maximum, in force on time. The limit of what prediction can give at that step length.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING

import numpy as np

from airflow_predictive.core.model.resources import MIB, Metric
from airflow_predictive.simulation.execution import NEVER, Limits
from airflow_predictive.simulation.policies.base import (
    FlatDriver,
    StaticDriver,
    TryContext,
    clamp,
    declared_limits,
    vpa_oom_bump,
    window_max,
)

if TYPE_CHECKING:
    from airflow_predictive.core.model.runs import TaskKey
    from airflow_predictive.core.profiler.estimators.base import Estimator
    from airflow_predictive.simulation.execution import SimSettings, TryDriver, TryResult
    from airflow_predictive.simulation.workload import Workload

VPA_MIN_MEMORY = 250 * MIB
VPA_MIN_CPU = 0.025
AUTOPILOT_WINDOW_S = 3600.0


class DeclaredPolicy:
    name = "declared"

    def prepare(self, workload: Workload, settings: SimSettings) -> None:
        return None

    def driver(self, ctx: TryContext) -> TryDriver:
        base = declared_limits(ctx.run, ctx.node)
        return FlatDriver(clamp(Limits(base.memory_bytes * ctx.attempt, base.cpu_cores), ctx.node))

    def finished(self, ctx: TryContext, result: TryResult) -> None:
        return None


def _recommend(
    estimator: Estimator, workload: Workload, ctx: TryContext, memo: dict[int, Limits | None]
) -> Limits | None:
    """The estimator's flat level for the run (None without history: nothing to recommend yet).
    Memoised per original run: synthetic copies share the original's history."""
    if ctx.run.origin not in memo:
        memo[ctx.run.origin] = _recommend_once(estimator, workload, ctx)
    return memo[ctx.run.origin]


def _recommend_once(estimator: Estimator, workload: Workload, ctx: TryContext) -> Limits | None:
    from airflow_predictive.core.profiler.selection import query_for

    history = workload.history_of(ctx.run)
    if not history:
        return None
    try:
        forecast = estimator.predict(
            query_for(ctx.run.example, history, (Metric.CPU_CORES, Metric.MEMORY_BYTES))
        )
    except Exception:
        return None
    mem, cpu = forecast.curve(Metric.MEMORY_BYTES), forecast.curve(Metric.CPU_CORES)
    if mem is None:
        return None
    declared = declared_limits(ctx.run, ctx.node)
    return Limits(mem.peak(0.5), cpu.peak(0.5) if cpu is not None else declared.cpu_cores)


class VpaPolicy:
    name = "vpa"

    def __init__(self) -> None:
        from airflow_predictive.core.profiler.estimators.baselines import VpaStyle

        self.estimator = VpaStyle()
        self.workload: Workload | None = None
        self.memo: dict[int, Limits | None] = {}

    def prepare(self, workload: Workload, settings: SimSettings) -> None:
        self.workload = workload
        self.memo = {}

    def driver(self, ctx: TryContext) -> TryDriver:
        assert self.workload is not None, "prepare() first"
        rec = _recommend(self.estimator, self.workload, ctx, self.memo)
        start = rec if rec is not None else declared_limits(ctx.run, ctx.node)
        start = Limits(max(start.memory_bytes, VPA_MIN_MEMORY), max(start.cpu_cores, VPA_MIN_CPU))
        if ctx.previous is not None and ctx.previous.oom:
            bumped = vpa_oom_bump(ctx.previous.limit_at_end.memory_bytes)
            start = Limits(max(start.memory_bytes, bumped), start.cpu_cores)
        return VpaInPlace(ctx, clamp(start, ctx.node))

    def finished(self, ctx: TryContext, result: TryResult) -> None:
        return None


class VpaInPlace:
    """The updater's loop on one pod: every loop tick, memory up to the observed peak x 1.15 when the
    request is more than 10% below it (usage seen at the metrics resolution, so up to 15 s old)."""

    MARGIN = 0.15
    TOLERANCE = 0.10

    def __init__(self, ctx: TryContext, start: Limits) -> None:
        s = ctx.settings
        self.start = start
        self.node = ctx.node
        self.memory = ctx.run.memory
        self.loop = max(1, round(s.vpa_loop_s / s.grid_s))
        self.scrape = max(1, round(s.metrics_resolution_s / s.grid_s))
        # the updater's loop runs on the cluster's clock, not the pod's: first tick at its phase
        phase = (-ctx.now_s) % s.vpa_loop_s
        self.first = max(1, round(phase / s.grid_s)) if phase > 0 else self.loop

    def initial(self) -> Limits:
        return self.start

    def next_wakeup(self, k: int, current: Limits) -> int:
        """The first loop tick whose scraped peak would ask for a grow (the loop ticks in between
        change nothing: skipping them is exact, and keeps a try to a few array searches)."""
        threshold = current.memory_bytes * (1 + self.TOLERANCE) / (1 + self.MARGIN)
        seen = max(0, (k // self.scrape) * self.scrape)
        over = np.flatnonzero(self.memory[seen:] > threshold)
        if not over.size:
            return NEVER
        j = seen + int(over[0])  # this sample is visible from the scrape after it
        visible = (j // self.scrape + 1) * self.scrape
        tick = max(visible, k + 1, self.first)
        i = -(-(tick - self.first) // self.loop)  # ceil
        return self.first + i * self.loop

    def decide(self, k: int, now_s: float, current: Limits) -> Limits | None:
        seen = (k // self.scrape) * self.scrape  # samples up to the last scrape
        if seen <= 0:
            return None
        peak = float(self.memory[:seen].max())
        target = peak * (1 + self.MARGIN)
        if target > current.memory_bytes * (1 + self.TOLERANCE):
            return clamp(Limits(target, current.cpu_cores), self.node)
        return None


class AutopilotPolicy:
    name = "autopilot"

    def __init__(self) -> None:
        from airflow_predictive.core.profiler.estimators.baselines import AutopilotStyle

        self.estimator = AutopilotStyle()
        self.workload: Workload | None = None
        self.recent: dict[TaskKey, deque[tuple[float, Limits]]] = {}
        self.memo: dict[int, Limits | None] = {}

    def prepare(self, workload: Workload, settings: SimSettings) -> None:
        self.workload = workload
        self.recent = {}
        self.memo = {}

    def driver(self, ctx: TryContext) -> TryDriver:
        assert self.workload is not None, "prepare() first"
        rec = _recommend(self.estimator, self.workload, ctx, self.memo)
        window = self.recent.setdefault(ctx.run.key, deque())
        while window and window[0][0] < ctx.now_s - AUTOPILOT_WINDOW_S:
            window.popleft()
        if rec is not None:
            window.append((ctx.now_s, rec))
        if window:
            limits = Limits(max(r.memory_bytes for _, r in window), max(r.cpu_cores for _, r in window))
        else:
            limits = declared_limits(ctx.run, ctx.node)
        if ctx.previous is not None and ctx.previous.oom:
            limits = Limits(
                max(limits.memory_bytes, vpa_oom_bump(ctx.previous.limit_at_end.memory_bytes)),
                limits.cpu_cores,
            )
        return FlatDriver(clamp(limits, ctx.node))

    def finished(self, ctx: TryContext, result: TryResult) -> None:
        return None


class OraclePolicy:
    name = "oracle"

    def prepare(self, workload: Workload, settings: SimSettings) -> None:
        return None

    def driver(self, ctx: TryContext) -> TryDriver:
        s, run = ctx.settings, ctx.run
        window = max(1, round(s.oracle_step_s / s.grid_s))
        mem = np.repeat(window_max(run.memory, window), window)[: run.steps]
        cpu = np.repeat(window_max(run.cpu, window), window)[: run.steps]
        return StaticDriver(np.minimum(mem, ctx.node.memory_bytes), np.minimum(cpu, ctx.node.cpu_cores))

    def finished(self, ctx: TryContext, result: TryResult) -> None:
        return None
