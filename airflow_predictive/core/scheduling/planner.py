"""Forecast quantile curve -> AllocationPlan (pure; the executor, operators and simulator call it).

For each metric the backend can enforce, the planner takes the forecast curve at the task's risk
quantile (default p99 memory, p90 CPU), cuts the predicted duration into at most ``max_steps + 1``
constant pieces no shorter than ``min_step_s`` whose values are the curve's maximum over the piece
(never below the curve), choosing the cut points that reserve the least (a small dynamic
programme over coarse blocks), then rounds to the backend's granularity and clamps to the task's
and the backend's bounds. Metrics the backend cannot change live stay at their plan-wide peak.

With no usable forecast the plan *is* the declared resources (flat, enforced as limits); with
nothing declared either the task runs unplanned (no limits), exactly as Airflow would run it.
``against_pool`` then says whether the plan fits the pool now, or when it will (earliest feasible
start), or a degraded plan (CPU is compressible: capped to what is free), naming the bottleneck.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import numpy as np

from airflow_predictive.core.model.backend import Allocation
from airflow_predictive.core.model.plan import (
    AllocationPlan,
    Bottleneck,
    PlanDecision,
    PlanOutcome,
    PlanSource,
    PlanStep,
)
from airflow_predictive.core.model.resources import Metric, ResourceVector, format_bytes
from airflow_predictive.core.scheduling.profile import relative_pieces

if TYPE_CHECKING:
    from collections.abc import Mapping

    from airflow_predictive.core.model.backend import Capabilities
    from airflow_predictive.core.model.series import Forecast
    from airflow_predictive.core.scheduling.profile import Profile

PLANNED_METRICS: tuple[Metric, ...] = (Metric.MEMORY_BYTES, Metric.CPU_CORES, Metric.GPU_MEMORY_BYTES)
DEFAULT_RISK: Mapping[Metric, float] = {Metric.MEMORY_BYTES: 0.99, Metric.CPU_CORES: 0.9}
MAX_BLOCKS = 48


@dataclass(frozen=True, slots=True)
class PlanSettings:
    """How to turn a forecast into a plan.

    risk: quantile per metric (metrics not listed use ``default_risk``).
    minimum / maximum: the task's bounds (absent = none).
    min_step_s: shortest constant piece; max_steps: most timed steps after the initial allocation.
    duration_quantile: which quantile of the predicted duration the plan (and reservation) spans.
    default_duration_s: the plan's length when nothing predicts it (declared plans).
    duration_margin: extra fraction of the duration reserved beyond the prediction.
    """

    risk: Mapping[Metric, float] = field(default_factory=lambda: dict(DEFAULT_RISK))
    default_risk: float = 0.99
    minimum: ResourceVector = field(default_factory=ResourceVector)
    maximum: ResourceVector = field(default_factory=ResourceVector)
    min_step_s: float = 30.0
    max_steps: int = 4
    duration_quantile: float = 0.9
    default_duration_s: float = 3600.0
    duration_margin: float = 0.1

    def quantile(self, metric: Metric) -> float:
        return self.risk.get(metric, self.default_risk)


def thin_history_floor(
    settings: PlanSettings, declared: ResourceVector, history_runs: int | None, trust_after_runs: int
) -> PlanSettings:
    """A forecast from fewer than ``trust_after_runs`` earlier runs may raise memory above the
    declared value, never lower it: one run of a task says nothing about its next, larger input
    (seen in ``make demo``: a ramp recorded at 128 MiB planned for a 384 MiB input was OOM-killed).
    CPU is not floored (too little CPU throttles, it does not kill)."""
    memory = declared.memory_bytes
    if not memory or history_runs is None or history_runs >= trust_after_runs:
        return settings
    floor = max(float(memory), float(settings.minimum.memory_bytes or 0.0))
    return replace(settings, minimum=settings.minimum.with_value(Metric.MEMORY_BYTES, floor))


def held_at_declared(outcome: PlanOutcome, declared: ResourceVector) -> PlanOutcome:
    """``outcome`` with memory never below the declared value, in the plan and in shaping (its
    ``memory_floor``): for a task whose earlier runs reached their declared memory limit
    (``core/profiler/features.reached_declared_memory``). Such a run took all the container
    allowed (a JVM sized to its container, a cache): its need is at least its limit, so a lower
    limit is a bet the history cannot back. On kseg-eager's ``markduplicates`` (9 of 68 held-out
    runs at exactly the declared 16 GiB) the scaled curve's level for them was ~12.5 GiB and shaping
    reclaimed to it: 5 of the cluster benchmark's 6 OOM kills (docs/benchmarks/cluster.md)."""
    memory = declared.memory_bytes
    if not memory:
        return outcome
    plan = outcome.plan

    def raised(a: Allocation) -> Allocation:
        def up(v: ResourceVector) -> ResourceVector:
            value = v.memory_bytes
            return v if value is None or value >= memory else v.with_value(Metric.MEMORY_BYTES, memory)

        return Allocation(requests=up(a.requests), limits=up(a.limits))

    why = f"memory held at the declared {format_bytes(memory)}: earlier runs reached it"
    held = replace(
        plan,
        initial=raised(plan.initial),
        steps=tuple(replace(step, allocation=raised(step.allocation)) for step in plan.steps),
        memory_floor=max(float(memory), plan.memory_floor or 0.0),
        why=f"{plan.why}; {why}" if plan.why else why,
    )
    return replace(outcome, plan=held, reason=f"{outcome.reason}; {why}" if outcome.reason else why)


def declared_plan(declared: ResourceVector, settings: PlanSettings, why: str) -> PlanOutcome:
    """The fallback plan: the declared resources, flat, as limits (or no limits at all)."""
    if declared.is_empty():
        plan = AllocationPlan.flat(
            Allocation(), settings.default_duration_s, source=PlanSource.NONE, why=f"{why}; nothing declared"
        )
        return PlanOutcome(plan, PlanDecision.UNPLANNED, plan.why)
    plan = AllocationPlan.flat(
        Allocation.exactly(declared), settings.default_duration_s, source=PlanSource.DECLARED, why=why
    )
    return PlanOutcome(plan, PlanDecision.DECLARED, why)


def _round_up(value: float, granularity: float) -> float:
    if granularity <= 0:
        return value
    return math.ceil(value / granularity - 1e-9) * granularity


def _blocks(curve: np.ndarray, step_s: float, horizon_s: float, block_s: float) -> np.ndarray:
    """[n] the curve's maximum over consecutive blocks of ``block_s`` covering the horizon."""
    n = max(1, math.ceil(horizon_s / block_s - 1e-9))
    out = np.zeros(n)
    for i in range(n):
        a = int(i * block_s // step_s)
        b = max(a + 1, math.ceil(min((i + 1) * block_s, horizon_s) / step_s - 1e-9))
        lo, hi = min(a, curve.size - 1), min(b, curve.size)
        out[i] = float(np.max(curve[lo:hi])) if hi > lo else float(curve[-1])
    return out


def segment(values: np.ndarray, weights: np.ndarray, max_pieces: int) -> list[tuple[int, int]]:
    """Cut blocks into <= ``max_pieces`` runs minimising sum(run max x run length) over metrics.

    values: [metrics, n] per-block demand, each metric normalised (so they weigh alike).
    weights: [n] block lengths. Returns [(first block, end block)] covering 0..n.
    """
    n = values.shape[1]
    if n == 1 or max_pieces <= 1:
        return [(0, n)]
    # cost[i, j] = sum over metrics of max(values[:, i:j]) * len(i..j), for j > i
    run_max = np.full((values.shape[0], n, n), np.inf)  # [metrics, i, j-1]
    for i in range(n):
        run_max[:, i, i:] = np.maximum.accumulate(values[:, i:], axis=1)
    lengths = np.cumsum(np.concatenate([[0.0], weights]))
    span = lengths[None, 1:] - lengths[:-1, None]  # [i, j-1] = length of blocks i..j-1
    with np.errstate(invalid="ignore", over="ignore"):
        summed = run_max.sum(axis=0)
        cost = np.where(np.isfinite(summed), summed * span, np.inf)  # [i, j-1]
    best = cost[0].copy()  # best[j-1]: blocks 0..j-1 in one piece
    back: list[np.ndarray] = []
    for _ in range(max_pieces - 1):
        # extend: last piece i..j-1, earlier blocks 0..i-1 in best_prev[i-1]
        prev = np.concatenate([[np.inf], best[:-1]])  # prev[i] = best for blocks 0..i-1
        total = prev[:, None] + cost  # [i, j-1]
        arg = np.argmin(total, axis=0)
        cand = total[arg, np.arange(n)]
        better = cand < best - 1e-12
        back.append(np.where(better, arg, -1))
        best = np.where(better, cand, best)
    cuts: list[tuple[int, int]] = []
    j = n
    for level in range(len(back) - 1, -1, -1):
        i = int(back[level][j - 1])
        if i > 0:
            cuts.append((i, j))
            j = i
    cuts.append((0, j))
    return sorted(cuts)


def plan_from_forecast(
    forecast: Forecast | None,
    *,
    declared: ResourceVector,
    settings: PlanSettings,
    capabilities: Capabilities | None = None,
    model_version: str | None = None,
    why: str = "",
) -> PlanOutcome:
    """The plan for one try (see the module docstring). Never raises for a bad forecast."""
    if forecast is None:
        return declared_plan(declared, settings, why or "no forecast: declared resources")
    metrics = [
        m
        for m in PLANNED_METRICS
        if m in forecast.curves
        and (capabilities is None or m in capabilities.live or m in capabilities.provision_only)
    ]
    if not metrics:
        return declared_plan(declared, settings, "forecast has no enforceable metric: declared resources")
    duration = forecast.duration_s.get(settings.duration_quantile)
    if duration is None and forecast.duration_s:
        above = [q for q in forecast.duration_s if q >= settings.duration_quantile]
        duration = forecast.duration_s[min(above) if above else max(forecast.duration_s)]
    if duration is None or not math.isfinite(duration) or duration <= 0:
        duration = max(c.horizon_s for m, c in forecast.curves.items() if m in metrics)
    horizon = max(duration * (1 + settings.duration_margin), settings.min_step_s)
    block_s = max(settings.min_step_s, horizon / MAX_BLOCKS, 1e-3)
    # [metrics, n] demand per block at each metric's risk quantile
    demand = np.stack(
        [
            _blocks(forecast.curves[m].at(settings.quantile(m)), forecast.curves[m].step_s, horizon, block_s)
            for m in metrics
        ]
    )
    n = demand.shape[1]
    weights = np.full(n, block_s)
    weights[-1] = horizon - block_s * (n - 1)
    live = [capabilities is None or m in capabilities.live for m in metrics]
    steppable = np.array([live[i] for i in range(len(metrics))])
    scale = np.maximum(demand.max(axis=1, keepdims=True), 1e-12)
    pieces = (
        segment(demand[steppable] / scale[steppable], weights, settings.max_steps + 1)
        if steppable.any()
        else [(0, n)]
    )
    notes: list[str] = []
    clamped = False
    values: list[dict[Metric, float]] = []
    for a, b in pieces:
        row: dict[Metric, float] = {}
        for i, m in enumerate(metrics):
            v = float(demand[i, a:b].max()) if live[i] else float(demand[i].max())
            v, was_clamped, note = _bounded(m, v, settings, capabilities)
            clamped |= was_clamped
            if note and note not in notes:
                notes.append(note)
            row[m] = v
        values.append(row)
    # merge neighbours that became equal after rounding
    merged: list[tuple[float, dict[Metric, float]]] = []
    for (a, _b), row in zip(pieces, values, strict=True):
        if merged and merged[-1][1] == row:
            continue
        merged.append((a * block_s, row))
    allocs = [_allocation(ResourceVector.from_mapping(row), settings) for _, row in merged]
    steps = tuple(
        PlanStep(at, alloc, _step_reason(prev, alloc))
        for (at, _), alloc, prev in zip(merged[1:], allocs[1:], allocs[:-1], strict=True)
    )
    quantiles = {m: settings.quantile(m) for m in metrics}
    text = ", ".join(f"{m.value} p{round(q * 100):d}" for m, q in quantiles.items())
    coarse = len(pieces) >= settings.max_steps + 1 and n > len(pieces)
    reason = why or f"from forecast ({forecast.estimator}): {text}, {len(steps)} step(s) over {horizon:.0f} s"
    if notes:
        reason += "; " + "; ".join(notes)
    plan = AllocationPlan(
        initial=allocs[0],
        steps=steps,
        duration_s=horizon,
        source=PlanSource.FORECAST,
        why=reason,
        quantiles=quantiles,
        model_version=model_version,
    )
    decision = PlanDecision.CLAMPED if clamped else PlanDecision.DEGRADED if coarse else PlanDecision.PLANNED
    return PlanOutcome(plan, decision, reason)


def _allocation(vector: ResourceVector, settings: PlanSettings) -> Allocation:
    """Requests = limits = the planned values, except CPU: compressible, so the forecast sets its
    request (a cgroup weight, a Kubernetes request) and a limit only when the task's ``max`` asks
    for one (a p90 usage curve as a hard quota would throttle the task whenever it runs above it)."""
    cpu_max = settings.maximum.cpu_cores
    limits = vector.with_value(Metric.CPU_CORES, cpu_max if vector.cpu_cores is not None else None)
    if cpu_max is not None and vector.cpu_cores is not None and vector.cpu_cores > cpu_max:
        vector = vector.with_value(Metric.CPU_CORES, cpu_max)
    return Allocation(requests=vector, limits=limits)


def _bounded(
    metric: Metric, value: float, settings: PlanSettings, capabilities: Capabilities | None
) -> tuple[float, bool, str]:
    bounds = None if capabilities is None else capabilities.bounds.get(metric)
    if bounds is not None:
        value = _round_up(value, bounds.granularity)
    lo = settings.minimum.get(metric)
    hi = settings.maximum.get(metric)
    if bounds is not None:
        lo = bounds.minimum if lo is None else max(lo, bounds.minimum)
        hi = bounds.maximum if hi is None else min(hi, bounds.maximum)
    if lo is not None and value < lo:
        value = lo
    if hi is not None and value > hi:
        return hi, True, f"{metric.value} capped at max {_fmt(metric, hi)} (forecast {_fmt(metric, value)})"
    return value, False, ""


def _fmt(metric: Metric, value: float) -> str:
    return format_bytes(value) if "bytes" in metric.value else f"{value:g}"


def _step_reason(prev: Allocation, new: Allocation) -> str:
    parts = []
    for m, v in new.limits.present().items():
        old = prev.limits.get(m)
        if old != v:
            verb = "grows" if old is None or v > old else "shrinks"
            parts.append(f"{m.value} {verb} to {_fmt(m, v)}")
    return "forecast: " + ", ".join(parts) if parts else "forecast"


def oom_retry_plan(
    previous: AllocationPlan | None,
    peak_before_kill: ResourceVector,
    *,
    still_rising: bool,
    settings: PlanSettings,
    declared: ResourceVector,
) -> PlanOutcome:
    """Next try after an OOM kill: memory from the peak seen before the kill plus a margin of at
    least VPA's max(+100 MiB, x1.2), x1.5 when the curve was still rising at the kill; other
    metrics from the previous plan's peak (or declared). Flat: the try's curve past the kill is unknown."""
    peak_mem = peak_before_kill.memory_bytes
    base = previous.peak().limits if previous is not None else declared
    if peak_mem is None:
        peak_mem = base.memory_bytes or declared.memory_bytes
    if peak_mem is None:
        return declared_plan(declared, settings, "OOM retry: no peak observed and nothing declared")
    factor = 1.5 if still_rising else 1.2
    target = max(peak_mem + 100 * 1024**2, peak_mem * factor)
    limit_before = base.memory_bytes
    if limit_before is not None:
        target = max(target, limit_before * 1.2)  # the kill proves the old limit was too small
    hi = settings.maximum.memory_bytes
    note = ""
    if hi is not None and target > hi:
        note = f"; capped at max {format_bytes(hi)}"
        target = hi
    vector = base.with_value(Metric.MEMORY_BYTES, target)
    why = (
        f"OOM retry: peak {format_bytes(peak_mem)} before the kill"
        f"{' (still rising)' if still_rising else ''} -> memory {format_bytes(target)} "
        f"(max(+100 MiB, x{factor:g}){', >= 1.2 x old limit' if limit_before else ''}){note}"
    )
    duration = previous.duration_s if previous is not None else settings.default_duration_s
    plan = AllocationPlan.flat(Allocation.exactly(vector), duration, source=PlanSource.OOM_RETRY, why=why)
    return PlanOutcome(plan, PlanDecision.CLAMPED if note else PlanDecision.PLANNED, why)


def against_pool(
    plan: AllocationPlan, profile: Profile, now: float
) -> tuple[PlanOutcome | None, float | None, Bottleneck | None]:
    """Fit a plan to a pool: (degraded outcome or None, earliest feasible start or None, bottleneck now).

    earliest start None with a bottleneck: the plan can never fit this pool (above its capacity).
    A CPU bottleneck (compressible) yields a degraded plan with CPU capped to what is free.
    """
    pieces = relative_pieces(plan.segments())
    fit = profile.fit(pieces, now)
    if fit.fits:
        return None, now, None
    start = profile.earliest_start(pieces, now)
    b = fit.bottleneck
    degraded: PlanOutcome | None = None
    if b is not None and b.metric is Metric.CPU_CORES and b.available > 0:
        cpu = b.available
        capped = _cap_metric(plan, Metric.CPU_CORES, cpu)
        if profile.fit(relative_pieces(capped.segments()), now).fits:
            why = f"degraded: cpu_cores capped at {cpu:g} (free now) — {b.describe(now)}"
            degraded = PlanOutcome(capped, PlanDecision.DEGRADED, why, bottleneck=b)
    return degraded, start, b


def _cap_metric(plan: AllocationPlan, metric: Metric, cap: float) -> AllocationPlan:
    def capped(a: Allocation) -> Allocation:
        req, lim = a.requests, a.limits
        if (v := req.get(metric)) is not None:
            req = req.with_value(metric, min(v, cap))
        if (v := lim.get(metric)) is not None:
            lim = lim.with_value(metric, min(v, cap))
        return Allocation(requests=req, limits=lim)

    return AllocationPlan(
        initial=capped(plan.initial),
        steps=tuple(PlanStep(s.at_s, capped(s.allocation), s.reason) for s in plan.steps),
        duration_s=plan.duration_s,
        source=plan.source,
        why=plan.why,
        quantiles=plan.quantiles,
        model_version=plan.model_version,
    )
