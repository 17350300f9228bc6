from __future__ import annotations

import sys

import numpy as np
import pytest

from airflow_predictive.core.model.resources import GIB, Metric
from airflow_predictive.core.profiler.estimators.base import NotFitted
from airflow_predictive.core.profiler.estimators.baselines import FallbackChain, MedianPeak
from airflow_predictive.core.profiler.estimators.statsmodels_ets import StatsmodelsTrend
from tests._real_parts import require_module

require_module("statsmodels", "install the statsmodels extra")
MEM = Metric.MEMORY_BYTES


def _growing(synth, task_key, n=30, noise=0.02, seed=0):
    rng = np.random.default_rng(seed)
    return [
        synth.make_run(
            task_key, i, peak_gib=1.0 + 0.1 * i * (1 + noise * rng.standard_normal()), duration_s=60 + 2 * i
        )
        for i in range(n)
    ]


@pytest.mark.parametrize("method", ["ets", "arima"])
def test_follows_a_trend_that_the_median_lags_behind(synth, task_key, method):
    runs = _growing(synth, task_key)
    q = synth.query_for(runs[-1], runs[:-1])
    actual = runs[-1].series.peak(MEM)
    trend = StatsmodelsTrend(name=method, method=method).predict(q).curve(MEM)
    median = MedianPeak().predict(q).curve(MEM)
    assert abs(trend.peak(0.5) - actual) < abs(median.peak(0.5) - actual) / 3
    assert trend.peak(0.5) < trend.peak(0.9) < trend.peak(0.99)


def test_intervals_cover_noisy_stationary_runs(synth, task_key):
    rng = np.random.default_rng(1)
    runs = [
        synth.make_run(task_key, i, peak_gib=float(2.0 * np.exp(0.1 * rng.standard_normal())))
        for i in range(60)
    ]
    model = StatsmodelsTrend()
    covered = [
        model.predict(synth.query_for(runs[i], runs[:i])).curve(MEM).peak(0.9) >= runs[i].series.peak(MEM)
        for i in range(30, 60)
    ]
    assert 0.7 <= np.mean(covered) <= 1.0


def test_duration_is_forecast_too(synth, task_key):
    runs = _growing(synth, task_key)
    f = StatsmodelsTrend().predict(synth.query_for(runs[-1], runs[:-1]))
    assert f.duration_s[0.5] == pytest.approx(runs[-1].record.duration_s, rel=0.1)
    assert f.peak_only and f.estimator == "ets"


def test_mean_cpu_is_the_cpu_level(synth, task_key):
    runs = [synth.make_run(task_key, i, cpu=2.0) for i in range(10)]
    f = StatsmodelsTrend().predict(synth.query_for(runs[-1], runs[:-1]))
    assert f.curve(Metric.CPU_CORES).peak(0.5) == pytest.approx(2.0)


def test_too_little_history_falls_back_in_a_chain(synth, task_key):
    runs = _growing(synth, task_key, n=4)
    q = synth.query_for(runs[-1], runs[:-1])
    with pytest.raises(NotFitted, match="needs 8"):
        StatsmodelsTrend().predict(q)
    assert FallbackChain([StatsmodelsTrend(), MedianPeak()]).predict(q).estimator == "median_peak"


def test_constant_history_gives_the_constant(synth, task_key):
    runs = [synth.make_run(task_key, i, peak_gib=3.0, noise=0.0) for i in range(10)]
    f = StatsmodelsTrend().predict(synth.query_for(runs[-1], runs))
    assert f.curve(MEM).peak(0.99) == pytest.approx(3.0 * GIB)


def test_nan_and_absurd_peaks_are_left_out(synth, task_key):
    runs = _growing(synth, task_key, n=12)
    broken = synth.make_run(task_key, 99, series=False)  # record peak is plausible; series missing
    f = StatsmodelsTrend().predict(synth.query_for(runs[-1], [*runs, broken]))
    assert np.isfinite(f.curve(MEM).peak(0.99))


def test_unknown_method_is_refused():
    with pytest.raises(ValueError, match="method"):
        StatsmodelsTrend(method="prophet")


def test_without_statsmodels_fit_fails_clearly(monkeypatch, synth, task_key):
    monkeypatch.setitem(sys.modules, "statsmodels", None)
    with pytest.raises(ImportError):
        StatsmodelsTrend().fit([])


def test_save_load_round_trip(tmp_path):
    StatsmodelsTrend(method="arima", min_runs=5).save(tmp_path / "m")
    loaded = StatsmodelsTrend.load(tmp_path / "m")
    assert loaded.method == "arima" and loaded.min_runs == 5
