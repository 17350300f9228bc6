from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from airflow_predictive.core.model.resources import GIB, Metric, ResourceVector
from airflow_predictive.core.model.series import DemandCurve, Forecast, UsageSeries
from airflow_predictive.core.profiler.prefix import PrefixPolicy
from airflow_predictive.core.scheduling.planner import PlanSettings, plan_from_forecast
from airflow_predictive.core.shaping.policy import ShapingSettings
from airflow_predictive.core.shaping.reforecast import ReforecastSettings
from airflow_predictive.simulation.cluster import PoolSpec, replay
from airflow_predictive.simulation.execution import SimSettings, run_try
from airflow_predictive.simulation.forecasting import HeldOutForecasts
from airflow_predictive.simulation.policies.base import NodeShape, TryContext
from airflow_predictive.simulation.policies.predictive import PredictivePolicy, PredictiveSettings
from tests.unit.simulation.helpers import sim_run, workload

SETTINGS = SimSettings()
NODE = NodeShape(64 * GIB, 32.0)


def forecast(memory_gib: np.ndarray, cpu: float = 1.0, step_s: float = 10.0) -> Forecast:
    mem = memory_gib * GIB
    curves = {
        Metric.MEMORY_BYTES: DemandCurve(
            Metric.MEMORY_BYTES, step_s, {0.5: mem, 0.9: mem * 1.05, 0.99: mem * 1.1}
        ),
        Metric.CPU_CORES: DemandCurve(
            Metric.CPU_CORES, step_s, {0.5: np.full(mem.size, cpu), 0.9: np.full(mem.size, cpu)}
        ),
    }
    return Forecast(curves, {0.5: mem.size * step_s, 0.9: mem.size * step_s}, "test")


def held(forecasts: dict[int, Forecast], cold: frozenset[int] = frozenset()) -> HeldOutForecasts:
    return HeldOutForecasts(forecasts, {}, {"test": len(forecasts)}, cold, 0.0, ("test",))


def test_the_try_starts_with_the_planners_initial_allocation() -> None:
    f = forecast(np.concatenate([np.full(6, 1.0), np.full(6, 3.0)]))
    run = sim_run(np.full(120, 0.9 * GIB))
    policy = PredictivePolicy(held({0: f}))
    policy.prepare(workload(run), SETTINGS)
    driver = policy.driver(TryContext(run, 1, None, 0.0, SETTINGS, NODE))
    expected = plan_from_forecast(
        f,
        declared=ResourceVector(cpu_cores=4.0, memory_bytes=8 * GIB),
        settings=PlanSettings(),
        capabilities=driver.backend.capabilities(),  # type: ignore[attr-defined]
    ).plan
    start = driver.initial()
    assert start.memory_bytes == pytest.approx(expected.initial.limits.memory_bytes)
    # the planner reserves CPU as a request; without a CPU limit the try may use the node
    assert start.cpu_allocated == pytest.approx(expected.initial.requests.cpu_cores)
    assert start.cpu_cores == pytest.approx(expected.initial.limits.cpu_cores or NODE.cpu_cores)


def test_shaping_grows_a_try_whose_usage_outruns_its_forecast_before_it_is_killed() -> None:
    f = forecast(np.full(30, 1.0))  # says 1 GiB flat for 300 s
    mem = np.concatenate([np.full(60, 0.9), np.linspace(0.9, 2.5, 120), np.full(120, 2.5)]) * GIB
    run = sim_run(mem)
    policy = PredictivePolicy(held({0: f}), PredictiveSettings(event_driven=False))
    policy.prepare(workload(run), SETTINGS)
    result = run_try(run, policy.driver(TryContext(run, 1, None, 0.0, SETTINGS, NODE)), SETTINGS)
    assert not result.oom
    assert result.resizes >= 2
    assert max(lim.memory_bytes for _, lim in result.changes) >= 2.5 * GIB
    assert len(result.decision_s) > 250  # per-second mode: one controller tick per second


def test_after_an_oom_kill_the_retry_plan_starts_from_the_peak_before_the_kill() -> None:
    f = forecast(np.full(30, 1.0))
    mem = np.concatenate([np.full(60, 0.9), np.full(60, 1.5)]) * GIB  # a jump: nothing can grow in time
    run = sim_run(mem)
    result = replay(workload(run), PredictivePolicy(held({0: f})), PoolSpec(), SETTINGS)
    first, retry = result.tries[0].result, result.tries[1].result
    assert first.oom and not retry.oom
    assert retry.changes[0][1].memory_bytes >= 1.2 * first.peak_seen


def test_a_retry_after_an_oom_kill_is_never_reclaimed_below_its_retry_plan() -> None:
    """Shaping the retry like the first try would reclaim it to the same level and kill it at
    the same jump again (seen in the cluster benchmark: the same run killed four times)."""
    f = forecast(np.full(40, 1.0))
    mem = np.concatenate([np.full(250, 0.5), np.full(100, 1.5)]) * GIB  # far below, then a jump
    run = sim_run(mem)
    result = replay(workload(run), PredictivePolicy(held({0: f})), PoolSpec(), SETTINGS)
    first, retry = result.tries[0].result, result.tries[1].result
    assert first.oom
    assert not retry.oom and len(result.tries) == 2
    start = retry.changes[0][1].memory_bytes
    assert all(lim.memory_bytes >= start for _, lim in retry.changes)


def test_without_a_forecast_the_plan_is_the_declared_resources() -> None:
    run = sim_run(np.full(30, GIB), declared_memory=6 * GIB, declared_cpu=2.0)
    policy = PredictivePolicy(held({}))
    policy.prepare(workload(run), SETTINGS)
    start = policy.driver(TryContext(run, 1, None, 0.0, SETTINGS, NODE)).initial()
    assert (start.memory_bytes, start.cpu_cores) == (6 * GIB, 2.0)


def test_the_shadow_variant_runs_a_shadow_only_on_a_cold_start() -> None:
    f = forecast(np.full(30, 1.0))
    runs = [
        sim_run(np.full(300, 0.9 * GIB), index=0),
        sim_run(np.full(300, 0.9 * GIB), index=1, arrival_s=1.0),
    ]
    policy = PredictivePolicy(held({0: f, 1: f}, cold=frozenset({1})), PredictiveSettings(shadow=True))
    assert policy.name == "predictive_shadow"
    result = replay(workload(*runs), policy, PoolSpec(), SETTINGS)
    assert policy.shadows == 1
    by_run = {t.run: t.result for t in result.tries}
    # the shadow's allocation is charged to the cold-start try
    assert by_run[1].memory_alloc > by_run[0].memory_alloc


def test_the_plan_alone_applies_its_timed_steps_after_the_actuation_delay() -> None:
    f = forecast(np.concatenate([np.full(6, 1.0), np.full(6, 3.0)]))  # 60 s at 1 GiB, then 3 GiB
    run = sim_run(np.concatenate([np.full(70, 0.9), np.full(50, 2.5)]) * GIB)
    policy = PredictivePolicy(held({0: f}), PredictiveSettings(shape=False))
    assert policy.name == "predictive_plan"
    policy.prepare(workload(run), SETTINGS)
    driver = policy.driver(TryContext(run, 1, None, 0.0, SETTINGS, NODE))
    plan = driver.plan if hasattr(driver, "plan") else None
    result = run_try(run, driver, SETTINGS)
    assert plan is None  # no controller: just the steps
    assert result.resizes >= 1
    assert len(result.decision_s) == 1 + result.resizes


def test_a_cpu_request_without_a_limit_reserves_the_request_and_never_throttles_below_the_node() -> None:
    from airflow_predictive.core.model.backend import Allocation
    from airflow_predictive.simulation.policies.predictive import limits_of

    alloc = Allocation(
        requests=ResourceVector(cpu_cores=1.5, memory_bytes=2 * GIB),
        limits=ResourceVector(memory_bytes=2 * GIB),
    )
    lim = limits_of(alloc, NODE, None)
    assert (lim.memory_bytes, lim.cpu_cores, lim.cpu_allocated) == (2 * GIB, NODE.cpu_cores, 1.5)


def _scripted_runs() -> list[np.ndarray]:
    """Memory curves (GiB) that cross every band: a ramp, a plateau with noise, sharp jumps, a drop
    far below the forecast (reclaims), and a rise above it (grows)."""
    rng = np.random.default_rng(7)
    ramp = np.concatenate([np.linspace(0.5, 3.0, 200), np.full(300, 3.0), np.linspace(3.0, 1.0, 100)])
    noisy = np.concatenate([np.full(150, 1.0), np.full(150, 2.6), np.full(300, 0.6)]) + rng.uniform(
        0, 0.2, 600
    )
    jumps = np.concatenate([np.full(100, 1.0), np.full(100, 2.9), np.full(100, 1.2), np.full(300, 3.4)])
    return [ramp, noisy, jumps, np.full(600, 0.3) + rng.uniform(0, 0.05, 600)]


def _both_ways(run: Any, f: Any, **settings: Any) -> tuple[list[Any], list[Any]]:
    """The try replayed ticking every second, then event-driven, with ``PredictiveSettings(**settings)``:
    ([per_second, event] results, [their drivers])."""
    results, drivers = [], []
    for event_driven in (False, True):
        policy = PredictivePolicy(held({0: f}), PredictiveSettings(event_driven=event_driven, **settings))
        policy.prepare(workload(run), SETTINGS)
        driver = policy.driver(TryContext(run, 1, None, 0.0, SETTINGS, NODE))
        results.append(run_try(run, driver, SETTINGS))
        drivers.append(driver)
    return results, drivers


@pytest.mark.parametrize("curve", range(4))
def test_event_driven_ticks_decide_exactly_what_ticking_every_second_decides(curve: int) -> None:
    memory = _scripted_runs()[curve] * GIB
    rng = np.random.default_rng(curve)
    cpu = 1.0 + rng.uniform(0, 1.5, memory.size)  # crosses the CPU request's band too
    f = forecast(np.concatenate([np.full(20, 1.5), np.full(20, 3.0), np.full(20, 1.2)]), cpu=1.2)
    run = sim_run(memory, cpu)
    (per_second, event), drivers = _both_ways(run, f)
    ticks = [d.ticks for d in drivers]
    assert event.changes == per_second.changes
    assert (event.oom, event.steps) == (per_second.oom, per_second.steps)
    # integrals over longer segments: the same sums in another order
    assert event.memory_alloc == pytest.approx(per_second.memory_alloc, rel=1e-12)
    assert event.cpu_alloc == pytest.approx(per_second.cpu_alloc, rel=1e-12)
    assert per_second.resizes > 0  # the curve made the controller act
    assert ticks[1] < ticks[0] * 0.7, ticks  # and many seconds were skipped (a ramp ticks at each new peak)


# A fixed grow margin: with the ramp-aware one (the default) a grow the hysteresis holds back is
# assumed to get the largest margin, so a run held at its guard ticks where the margin could bind
# (a slow ramp: 329 ticks in 1,199 s instead of 51; the decisions are the same either way).
FIXED_MARGIN = ShapingSettings(ramp_margin_s=None)


@pytest.mark.parametrize("level", [0.6, 0.8, 1.3])  # the run's level over its median forecast
def test_a_slow_ramp_past_the_ratio_guards_start_ticks_rarely_and_decides_what_every_second_decides(
    level: float,
) -> None:
    """A new peak so far no longer ends the promise where it decides nothing (the ratio guard not
    started, a run at or above its median) or until the scaled guard would reach a line the band
    compares it with; the skipped peaks reach the history (``observe_skipped``)."""
    median = 3.0
    ramp = np.concatenate(
        [np.linspace(0.5, level * median * 0.8, 400), np.linspace(level * median * 0.8, level * median, 800)]
    )
    memory = (ramp + np.random.default_rng(3).uniform(0, 0.01, ramp.size)) * GIB
    f = forecast(np.full(130, median), cpu=1.2)
    run = sim_run(memory, np.full(memory.size, 1.0))
    (per_second, event), drivers = _both_ways(run, f, reforecast=None, shaping=FIXED_MARGIN)
    ticks = [d.ticks for d in drivers]
    assert event.changes == per_second.changes
    assert (event.oom, event.steps) == (per_second.oom, per_second.steps)
    assert per_second.resizes > 0
    assert ticks[1] < ticks[0] * 0.2, ticks  # a ramp used to tick at every new peak


def test_the_peaks_of_skipped_ticks_scale_the_ratio_guard_as_ticking_every_second_does() -> None:
    """Past the ratio guard's start, a run below its median ramps up while its ticks are skipped,
    then drops: the reclaim that follows is held by the guard scaled by the ramp's peak (folded in
    from the skipped samples by ``observe_skipped``), exactly as per-second ticking holds it (without
    the fold, the event-driven replay reclaims at 698 s)."""
    memory = np.concatenate(
        [np.full(320, 1.3), np.linspace(1.3, 1.6, 300), np.full(60, 1.6), np.full(600, 0.3)]
    )
    f = forecast(np.full(200, 3.0), cpu=1.2)
    run = sim_run(memory * GIB, np.full(memory.size, 1.0))
    (per_second, event), drivers = _both_ways(run, f, reforecast=None, shaping=FIXED_MARGIN)
    ticks = [d.ticks for d in drivers]
    assert event.changes == per_second.changes
    assert len(per_second.changes) >= 3  # reclaims before the ramp, then the guard holds
    assert ticks[1] < ticks[0] * 0.2, ticks


REFORECASTS = (
    ReforecastSettings(30.0),  # the profiler's prefix policy: a prefix above the forecast raises it
    ReforecastSettings(45.0, PrefixPolicy(shrink_down=1.0), keep_guard=False),  # follows it down too
)


@pytest.mark.parametrize(("curve", "variant"), [(c, v) for c in range(4) for v in range(2)])
def test_event_driven_ticks_match_every_second_with_mid_run_re_forecasts(curve: int, variant: int) -> None:
    """Re-forecast times are events of ``quiet()`` and the skipped samples reach the prefix: the
    re-forecasts, and so every decision, are those of ticking every second."""
    memory = _scripted_runs()[curve] * GIB
    cpu = 1.0 + np.random.default_rng(curve).uniform(0, 1.5, memory.size)
    f = forecast(np.concatenate([np.full(20, 1.5), np.full(20, 3.0), np.full(20, 1.2)]), cpu=1.2)
    run = sim_run(memory, cpu)
    (per_second, event), drivers = _both_ways(run, f, reforecast=REFORECASTS[variant])
    calls = [d.reforecaster.calls for d in drivers]
    assert calls[0] >= 2 and calls[1] == calls[0]  # every re-forecast happened both ways
    assert event.changes == per_second.changes
    assert (event.oom, event.steps) == (per_second.oom, per_second.steps)
    assert event.memory_alloc == pytest.approx(per_second.memory_alloc, rel=1e-12)


def test_the_re_forecast_reads_the_whole_observed_prefix_in_event_driven_mode() -> None:
    """A peak early in the run moves the re-forecast: it must reach the prefix even when its ticks
    were skipped (a prefix of the dwell window only would lose it and forecast the run lower)."""
    memory = np.concatenate([np.full(30, 1.0), np.linspace(1.0, 3.0, 90), np.full(300, 1.0)]) * GIB
    f = forecast(np.full(45, 1.5))
    run = sim_run(memory)
    seen: list[list[tuple[float, int, float]]] = []
    for event_driven in (False, True):
        settings = PredictiveSettings(event_driven=event_driven, reforecast=ReforecastSettings(60.0))
        policy = PredictivePolicy(held({0: f}), settings)
        policy.prepare(workload(run), SETTINGS)
        driver = policy.driver(TryContext(run, 1, None, 0.0, SETTINGS, NODE))
        hook = driver.reforecaster  # type: ignore[attr-defined]
        calls: list[tuple[float, int, float]] = []

        def recording(prefix: UsageSeries, hook: Any = hook, calls: list[Any] = calls) -> Any:
            calls.append(
                (float(prefix.times[-1]), len(prefix), float(np.max(prefix.get(Metric.MEMORY_BYTES))))
            )
            return hook(prefix)

        driver.reforecaster = recording  # type: ignore[attr-defined]
        assert not run_try(run, driver, SETTINGS).oom
        ctrl = driver._controller  # type: ignore[attr-defined]
        # the run reached 2x its median: the rest is forecast x 2 ** 0.5, though usage is back at 1 GiB
        at_start = f.curve(Metric.MEMORY_BYTES).at(0.9)[-1]  # type: ignore[union-attr]
        assert ctrl.expectation.predicted(Metric.MEMORY_BYTES, 415.0) == pytest.approx(at_start * 2**0.5)
        seen.append(calls)
    assert len(seen[0]) >= 5
    assert seen[1] == seen[0]  # the same prefixes (length and peak) at the same times
    assert seen[0][-1][2] == pytest.approx(3.0 * GIB)


def test_a_task_whose_earlier_run_reached_its_declared_memory_is_never_shaped_below_it() -> None:
    """A run that took all its container allowed (a JVM sized to its limit) needs at least the
    limit: reclaiming the next one to its forecast kills it when it fills the container again."""
    f = forecast(np.full(40, 1.0))  # says 1 GiB: far below the 8 GiB declared
    mem = np.concatenate([np.full(250, 0.9), np.full(100, 8.0)]) * GIB  # fills its 8 GiB at 250 s
    earlier = sim_run(mem, index=0).example
    run = sim_run(mem, index=1)
    result = replay(workload(run, train=(earlier,)), PredictivePolicy(held({1: f})), PoolSpec(), SETTINGS)
    assert len(result.tries) == 1 and not result.tries[0].result.oom
    assert all(lim.memory_bytes >= 8 * GIB for _, lim in result.tries[0].result.changes)
    # the same run without that history: reclaimed to its forecast, and killed at the jump
    alone = replay(workload(sim_run(mem, index=1)), PredictivePolicy(held({1: f})), PoolSpec(), SETTINGS)
    assert alone.tries[0].result.oom
