from __future__ import annotations

import itertools

import numpy as np
import pytest

from airflow_predictive.core.model.backend import Allocation, Bounds, Capabilities
from airflow_predictive.core.model.plan import PlanDecision, PlanSource, PoolCapacity
from airflow_predictive.core.model.resources import GIB, MIB, Metric, ResourceVector
from airflow_predictive.core.model.series import DemandCurve, Forecast
from airflow_predictive.core.scheduling.planner import (
    PlanSettings,
    against_pool,
    oom_retry_plan,
    plan_from_forecast,
    segment,
)
from airflow_predictive.core.scheduling.profile import Profile, relative_pieces


def _forecast(
    mem_gib: np.ndarray, cpu: float = 1.0, step: float = 10.0, duration: float | None = None
) -> Forecast:
    n = mem_gib.size
    mem = DemandCurve(
        Metric.MEMORY_BYTES, step, {0.5: mem_gib * GIB * 0.8, 0.9: mem_gib * GIB * 0.9, 0.99: mem_gib * GIB}
    )
    cpus = DemandCurve(
        Metric.CPU_CORES, step, {0.5: np.full(n, cpu / 2), 0.9: np.full(n, cpu), 0.99: np.full(n, 2 * cpu)}
    )
    d = duration or n * step
    return Forecast({Metric.MEMORY_BYTES: mem, Metric.CPU_CORES: cpus}, {0.5: d * 0.9, 0.9: d}, "test")


RAMP = np.concatenate([np.full(30, 1.0), np.full(30, 4.0), np.full(30, 2.0)])  # 900 s


def test_plan_follows_the_risk_quantile_and_never_sits_below_the_curve() -> None:
    settings = PlanSettings(duration_margin=0.0)
    out = plan_from_forecast(_forecast(RAMP), declared=ResourceVector(), settings=settings)
    plan = out.plan
    assert out.decision is PlanDecision.PLANNED and plan.source is PlanSource.FORECAST
    assert plan.initial.limits.memory_bytes == 1 * GIB
    assert plan.initial.requests.cpu_cores == 1.0  # p90 for CPU, as a request
    assert plan.initial.limits.cpu_cores is None  # compressible: no forecast-derived hard quota
    assert [s.at_s for s in plan.steps] == [300.0, 600.0]
    for t in np.arange(0, 900, 5):
        assert plan.allocation_at(float(t)).limits.memory_bytes >= RAMP[int(t // 10)] * GIB
    assert "memory_bytes grows" in plan.steps[0].reason


def test_max_steps_and_min_step_length_bound_the_plan() -> None:
    noisy = 1 + (np.arange(120) % 7) / 3
    out = plan_from_forecast(
        _forecast(noisy), declared=ResourceVector(), settings=PlanSettings(max_steps=2, min_step_s=60.0)
    )
    assert len(out.plan.steps) <= 2
    starts = [0.0] + [s.at_s for s in out.plan.steps]
    assert all(b - a >= 60.0 for a, b in itertools.pairwise(starts))


def test_no_forecast_plans_the_declared_resources_and_nothing_declared_runs_unplanned() -> None:
    declared = ResourceVector(memory_bytes=2 * GIB, cpu_cores=1.0)
    out = plan_from_forecast(None, declared=declared, settings=PlanSettings())
    assert out.decision is PlanDecision.DECLARED
    assert out.plan.initial.limits == declared and not out.plan.steps
    none = plan_from_forecast(None, declared=ResourceVector(), settings=PlanSettings())
    assert none.decision is PlanDecision.UNPLANNED and none.plan.initial.limits.is_empty()


def test_granularity_and_max_bound_are_respected_and_said() -> None:
    caps = Capabilities(
        live=frozenset({Metric.MEMORY_BYTES, Metric.CPU_CORES}),
        provision_only=frozenset(),
        bounds={
            Metric.MEMORY_BYTES: Bounds(64 * MIB, 1e15, 256 * MIB),
            Metric.CPU_CORES: Bounds(0.01, 64, 0.1),
        },
    )
    out = plan_from_forecast(
        _forecast(RAMP * 1.05, cpu=0.33),
        declared=ResourceVector(),
        settings=PlanSettings(maximum=ResourceVector(memory_bytes=3 * GIB)),
        capabilities=caps,
    )
    assert out.decision is PlanDecision.CLAMPED and "capped at max" in out.reason
    for _a, _b, alloc in out.plan.segments():
        mem = alloc.limits.memory_bytes
        assert mem is not None and mem <= 3 * GIB and (mem / (256 * MIB)) == round(mem / (256 * MIB))
        assert alloc.requests.cpu_cores == 0.4


def test_non_live_metrics_stay_at_their_peak() -> None:
    caps = Capabilities(
        live=frozenset({Metric.CPU_CORES}), provision_only=frozenset({Metric.MEMORY_BYTES}), bounds={}
    )
    out = plan_from_forecast(
        _forecast(RAMP), declared=ResourceVector(), settings=PlanSettings(), capabilities=caps
    )
    assert all(a.limits.memory_bytes == 4 * GIB for _s, _e, a in out.plan.segments())


def test_segment_finds_the_cheapest_cut() -> None:
    values = np.array([[1, 1, 5, 5, 1, 1.0]])
    assert segment(values, np.ones(6), 3) == [(0, 2), (2, 4), (4, 6)]
    assert segment(values, np.ones(6), 1) == [(0, 6)]


def test_oom_retry_starts_from_the_peak_plus_vpa_margin_and_more_when_rising() -> None:
    settings = PlanSettings()
    flat = oom_retry_plan(
        None,
        ResourceVector(memory_bytes=1 * GIB),
        still_rising=False,
        settings=settings,
        declared=ResourceVector(),
    )
    assert flat.plan.source is PlanSource.OOM_RETRY
    assert flat.plan.initial.limits.memory_bytes == 1.2 * GIB
    small = oom_retry_plan(
        None,
        ResourceVector(memory_bytes=200 * MIB),
        still_rising=False,
        settings=settings,
        declared=ResourceVector(),
    )
    assert small.plan.initial.limits.memory_bytes == 300 * MIB  # +100 MiB beats x1.2
    rising = oom_retry_plan(
        None,
        ResourceVector(memory_bytes=1 * GIB),
        still_rising=True,
        settings=settings,
        declared=ResourceVector(),
    )
    assert rising.plan.initial.limits.memory_bytes == 1.5 * GIB and "still rising" in rising.reason


def test_against_pool_gives_the_earliest_start_and_the_bottleneck() -> None:
    cap = PoolCapacity(limits=ResourceVector(memory_bytes=5 * GIB, cpu_cores=4.0))
    out = plan_from_forecast(
        _forecast(RAMP), declared=ResourceVector(), settings=PlanSettings(duration_margin=0.0)
    )
    held = Allocation.exactly(ResourceVector(memory_bytes=2 * GIB))
    busy = Profile(cap, [(0.0, 1000.0, held)])  # 2 GiB held until t=1000: the 4 GiB phase collides
    degraded, start, bottleneck = against_pool(out.plan, busy, 0.0)
    assert bottleneck is not None and bottleneck.metric is Metric.MEMORY_BYTES and bottleneck.at == 300.0
    assert degraded is None and start == 700.0  # the 4 GiB phase must begin after t=1000
    assert busy.fit(relative_pieces(out.plan.segments()), start).fits
    tiny = Profile(PoolCapacity(limits=ResourceVector(memory_bytes=3 * GIB)))
    _d, never, why = against_pool(out.plan, tiny, 0.0)
    assert never is None and why is not None and why.capacity == 3 * GIB


def test_a_cpu_bottleneck_degrades_the_plan_instead_of_waiting() -> None:
    cap = PoolCapacity(limits=ResourceVector(memory_bytes=50 * GIB, cpu_cores=4.0))
    out = plan_from_forecast(_forecast(RAMP, cpu=2.0), declared=ResourceVector(), settings=PlanSettings())
    busy = Profile(cap, [(0.0, 5000.0, Allocation.exactly(ResourceVector(cpu_cores=3.0)))])
    degraded, _start, b = against_pool(out.plan, busy, 0.0)
    assert b is not None and b.metric is Metric.CPU_CORES
    assert degraded is not None and degraded.decision is PlanDecision.DEGRADED
    assert degraded.plan.initial.requests.cpu_cores == 1.0


def test_a_cpu_max_becomes_the_cpu_limit() -> None:
    out = plan_from_forecast(
        _forecast(RAMP, cpu=2.0),
        declared=ResourceVector(),
        settings=PlanSettings(maximum=ResourceVector(cpu_cores=1.5)),
    )
    assert out.plan.initial.limits.cpu_cores == 1.5 and out.plan.initial.requests.cpu_cores == 1.5


def test_a_thin_history_floors_memory_at_the_declared_value_and_leaves_cpu() -> None:
    from airflow_predictive.core.scheduling.planner import thin_history_floor

    declared = ResourceVector(memory_bytes=2 * GIB, cpu_cores=2.0)
    base = PlanSettings()
    floored = thin_history_floor(base, declared, history_runs=1, trust_after_runs=3)
    assert floored.minimum.memory_bytes == 2 * GIB and floored.minimum.cpu_cores is None
    assert thin_history_floor(base, declared, history_runs=3, trust_after_runs=3) is base
    assert thin_history_floor(base, declared, history_runs=None, trust_after_runs=3) is base
    assert thin_history_floor(base, ResourceVector(), history_runs=0, trust_after_runs=3) is base


def test_held_at_declared_raises_every_step_and_floors_shaping_at_the_declared_memory() -> None:
    from airflow_predictive.core.scheduling.codec import plan_from_dict, plan_to_dict
    from airflow_predictive.core.scheduling.planner import held_at_declared

    declared = ResourceVector(memory_bytes=3 * GIB, cpu_cores=2.0)
    out = plan_from_forecast(_forecast(RAMP), declared=declared, settings=PlanSettings())
    assert min(s.allocation.limits.memory_bytes or 0 for s in out.plan.steps) < 3 * GIB
    held = held_at_declared(out, declared)
    allocations = [held.plan.initial, *(s.allocation for s in held.plan.steps)]
    assert all((a.limits.memory_bytes or 0) >= 3 * GIB for a in allocations)
    assert max(a.limits.memory_bytes or 0 for a in allocations) == pytest.approx(4 * GIB)  # the peak stays
    assert held.plan.initial.requests.cpu_cores == out.plan.initial.requests.cpu_cores
    assert held.plan.memory_floor == 3 * GIB and "declared" in held.reason
    assert plan_from_dict(plan_to_dict(held.plan)).memory_floor == 3 * GIB  # stored and sent to shapers
    assert held_at_declared(out, ResourceVector(cpu_cores=2.0)) is out  # nothing declared: unchanged
