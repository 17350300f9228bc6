"""The real try's forecast from its shadow's observed prefix."""

from __future__ import annotations

import numpy as np

from airflow_predictive.core.model.resources import GIB, MIB, Metric, ResourceVector
from airflow_predictive.core.model.series import DemandCurve, Forecast, UsageSeries
from airflow_predictive.core.shadow.reforecast import ShadowEnd, ShadowObservation, reforecast

MEM = Metric.MEMORY_BYTES
LIMITS = ResourceVector(cpu_cores=0.5, memory_bytes=2 * GIB)


def _forecast(level: float = 1 * GIB, steps: int = 60, step_s: float = 10.0) -> Forecast:
    ramp = np.linspace(0.2, 1.0, steps) * level
    curve = DemandCurve(MEM, step_s, {0.5: ramp, 0.9: ramp * 1.2, 0.99: ramp * 1.5})
    return Forecast(curves={MEM: curve}, duration_s={0.5: 600.0, 0.9: 660.0}, estimator="scaled_curve")


def _shadow(level: float, seconds: float = 30.0, end: ShadowEnd = ShadowEnd.BUDGET) -> ShadowObservation:
    t = np.arange(0.0, seconds + 0.1, 1.0)
    return ShadowObservation(UsageSeries(t, {MEM: np.full(t.size, level)}), end, seconds, LIMITS)


def test_a_shadow_above_the_forecast_raises_it():
    f = _forecast()
    out = reforecast(_shadow(0.9 * GIB), f)
    assert out.used and out.forecast is not None
    assert out.forecast.estimator == "scaled_curve+shadow"
    assert out.forecast.curve(MEM).peak(0.5) > f.curve(MEM).peak(0.5)
    assert "re-forecast from a 30.0 s shadow prefix" in out.note


def test_a_low_shadow_never_lowers_the_forecast():
    f = _forecast()
    out = reforecast(_shadow(0.05 * GIB), f)
    for q in (0.5, 0.9, 0.99):
        assert np.all(out.forecast.curve(MEM).at(q) >= f.curve(MEM).at(q) - 1e-6)


def test_the_part_the_shadow_covered_is_at_least_what_it_used():
    f = _forecast()
    out = reforecast(_shadow(0.5 * GIB, seconds=30.0), f)
    assert out.forecast.curve(MEM).value_at(5.0, 0.5) >= 0.5 * GIB
    assert f.curve(MEM).value_at(5.0, 0.5) < 0.5 * GIB


def test_a_failed_or_empty_shadow_leaves_the_forecast_unchanged():
    f = _forecast()
    failed = ShadowObservation(None, ShadowEnd.FAILED, 2.0, LIMITS, "exit code 3")
    out = reforecast(failed, f)
    assert out.forecast is f and not out.used and "exit code 3" in out.note
    empty = ShadowObservation(
        UsageSeries(np.array([0.0]), {MEM: np.array([1.0])}), ShadowEnd.BUDGET, 5, LIMITS
    )
    assert reforecast(empty, f).forecast is f
    nan = ShadowObservation(
        UsageSeries(np.arange(5.0), {MEM: np.full(5, np.nan)}), ShadowEnd.BUDGET, 5, LIMITS
    )
    assert not reforecast(nan, f).used


def test_an_oom_killed_shadow_needed_at_least_its_limit():
    f = _forecast(level=1 * GIB)
    out = reforecast(_shadow(1.5 * GIB, end=ShadowEnd.OOM_KILLED), f)
    assert out.used
    assert out.forecast.curve(MEM).value_at(31.0, 0.5) >= 2 * GIB
    assert "capped by its small limits: memory_bytes" in out.note


def test_without_a_forecast_the_shadow_only_raises_declared_resources():
    declared = ResourceVector(memory_bytes=256 * MIB)
    out = reforecast(_shadow(400 * MIB), None, declared=declared, horizon_s=300.0)
    assert out.used and out.forecast.peak_only
    assert out.forecast.curve(MEM).peak(0.99) == 400 * MIB * 1.25
    within = reforecast(_shadow(100 * MIB), None, declared=declared)
    assert within.forecast is None and not within.used
    # nothing declared: a 5% prefix is no reason to limit a task
    assert reforecast(_shadow(400 * MIB), None).forecast is None


def test_the_real_trys_own_overhead_is_added_to_what_the_shadow_saw():
    declared = ResourceVector(memory_bytes=64 * MIB)
    out = reforecast(
        _shadow(100 * MIB), None, declared=declared, overhead=ResourceVector(memory_bytes=60 * MIB)
    )
    assert out.forecast.curve(MEM).peak(0.99) == (100 + 60) * MIB * 1.25
