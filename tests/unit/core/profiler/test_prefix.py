"""Rest-of-run re-forecast from an observed prefix, for estimators that forecast at start only."""

from __future__ import annotations

import numpy as np

from airflow_predictive.core.model.resources import GIB, Metric
from airflow_predictive.core.model.series import DemandCurve, Forecast, UsageSeries
from airflow_predictive.core.profiler.prefix import (
    PrefixPolicy,
    condition_on_prefix,
    needs_conditioning,
    window_error,
)

MEM = Metric.MEMORY_BYTES


def _forecast(level: float = 1 * GIB, steps: int = 60, step_s: float = 10.0) -> Forecast:
    ramp = np.linspace(0.2, 1.0, steps) * level
    curve = DemandCurve(MEM, step_s, {0.5: ramp, 0.9: ramp * 1.2, 0.99: ramp * 1.5})
    return Forecast(curves={MEM: curve}, duration_s={0.5: 600.0, 0.9: 660.0, 0.99: 720.0}, estimator="x")


def _prefix(level: float, seconds: float = 120.0) -> UsageSeries:
    t = np.arange(0.0, seconds + 1, 2.0)
    return UsageSeries(t, {MEM: np.linspace(0.2, 0.2 + 0.8 * seconds / 600, t.size) * level})


def test_a_prefix_above_the_forecast_raises_the_rest_by_the_shrunk_ratio():
    f = _forecast()
    hot = condition_on_prefix(f, _prefix(2 * GIB), PrefixPolicy(shrink=0.5, persist_s=0))
    before, after = f.curve(MEM).value_at(500, 0.5), hot.curve(MEM).value_at(500, 0.5)
    assert abs(after / before - 2**0.5) < 0.05
    # below the forecast: peaks come late, so by default a low start does not lower the rest
    cold = condition_on_prefix(f, _prefix(0.5 * GIB), PrefixPolicy(shrink=0.5, persist_s=0))
    assert cold.curve(MEM).value_at(500, 0.5) == before
    lowered = condition_on_prefix(f, _prefix(0.5 * GIB), PrefixPolicy(shrink_down=0.5, persist_s=0))
    assert lowered.curve(MEM).value_at(500, 0.5) < before


def test_the_next_minutes_hold_at_least_the_level_now():
    f = _forecast()
    prefix = UsageSeries(np.arange(0.0, 121, 2.0), {MEM: np.full(61, 0.9 * GIB)})  # already near peak
    out = condition_on_prefix(f, prefix, PrefixPolicy(shrink=0.0, persist_s=300))
    assert out.curve(MEM).value_at(130, 0.5) >= 0.9 * GIB
    assert out.curve(MEM).value_at(130, 0.5) > f.curve(MEM).value_at(130, 0.5)


def test_no_prefix_or_unmeasured_metric_leaves_the_forecast_as_it_is():
    f = _forecast()
    assert condition_on_prefix(f, None) is f
    other = UsageSeries(np.arange(5.0), {Metric.CPU_CORES: np.ones(5)})
    assert np.array_equal(condition_on_prefix(f, other).curve(MEM).at(0.5), f.curve(MEM).at(0.5))


def test_a_try_past_its_forecast_duration_gets_a_longer_one():
    out = condition_on_prefix(_forecast(), _prefix(GIB, seconds=900.0))
    assert out.duration_s[0.5] >= 990.0


def test_window_error_reads_the_next_minutes():
    f = _forecast()
    series = UsageSeries(np.arange(0.0, 601, 10.0), {MEM: np.linspace(0.2, 1.0, 61) * GIB})
    assert window_error(f, series, MEM, 100.0, 300.0) < 0.05
    assert window_error(_forecast(2 * GIB), series, MEM, 100.0, 300.0) > 0.9


def test_only_estimators_that_ignore_prefixes_are_conditioned():
    class Lstm:
        uses_prefix = True

    assert needs_conditioning(object()) and not needs_conditioning(Lstm())
