from __future__ import annotations

import numpy as np
import pytest

from airflow_predictive.core.model.resources import GIB, Metric
from airflow_predictive.core.model.series import DemandCurve, UsageSeries
from airflow_predictive.core.profiler import metrics
from airflow_predictive.core.profiler.metrics import (
    flat_waste,
    memory_waste,
    pinball,
    score_run,
    segment_error,
    stepped,
    summarise,
)


def test_pinball_punishes_under_prediction_at_high_quantiles() -> None:
    actual = np.array([10.0])
    assert pinball(actual, np.array([8.0]), 0.9) == pytest.approx(1.8)
    assert pinball(actual, np.array([12.0]), 0.9) == pytest.approx(0.2)


def test_stepped_allocation_holds_block_maximum_for_30_seconds() -> None:
    curve = np.array([1, 3, 2, 2, 5, 1, 1.0])
    out = stepped(curve, step_s=10.0, min_step_s=30.0)
    assert list(out) == [3, 3, 3, 5, 5, 5, 1]
    assert np.all(out >= curve)


def test_waste_counts_idle_gib_seconds_and_ooms() -> None:
    actual = np.array([1.0, 2.0, 1.0]) * GIB
    ok = memory_waste(np.full(3, 2.0 * GIB), actual, step_s=10.0)
    assert ok.allocated_gib_s == pytest.approx(60.0)
    assert ok.waste_gib_s == pytest.approx(20.0)
    assert not ok.oom
    assert ok.unused_fraction == pytest.approx(1 / 3)
    short = flat_waste(1.5 * GIB, actual, 10.0)
    assert short.oom


def test_allocation_shorter_than_run_holds_its_last_value() -> None:
    actual = np.ones(4) * GIB
    w = memory_waste(np.array([2.0 * GIB]), actual, 1.0)
    assert w.allocated_gib_s == pytest.approx(8.0)


def test_segment_error_sees_a_misplaced_peak() -> None:
    actual = np.array([1, 1, 10, 10.0])
    assert segment_error(actual, actual.copy(), 2) == 0.0
    assert segment_error(actual, np.array([10, 10, 1, 1.0]), 2) == pytest.approx((9 + 0.9) / 2)


def _curve(level: float, n: int = 10, step: float = 1.0) -> DemandCurve:
    return DemandCurve(Metric.MEMORY_BYTES, step, {0.5: np.full(n, level), 0.99: np.full(n, level * 1.5)})


def test_score_run_against_series() -> None:
    series = UsageSeries(np.arange(10.0), {Metric.MEMORY_BYTES: np.full(10, 2.0 * GIB)})
    s = score_run(_curve(1.0 * GIB), series=series, actual_peak=None)
    assert s is not None
    assert s.peak_error == pytest.approx(0.5)
    assert s.under == {0.5: True, 0.99: True}
    assert s.waste[0.99].oom


def test_peak_only_run_is_scored_on_its_peak() -> None:
    s = score_run(_curve(2.0 * GIB), series=None, actual_peak=2.5 * GIB)
    assert s is not None and s.segment_error is None and s.waste == {}
    assert s.under[0.5] and not s.under[0.99]


def test_runs_without_usable_actuals_give_no_score() -> None:
    nan_series = UsageSeries(np.arange(3.0), {Metric.MEMORY_BYTES: np.full(3, np.nan)})
    assert score_run(_curve(1.0), series=nan_series, actual_peak=None) is None
    assert score_run(_curve(1.0), series=None, actual_peak=float("nan")) is None
    assert score_run(_curve(1.0), series=None, actual_peak=None) is None


def test_single_sample_run_is_scored() -> None:
    one = UsageSeries(np.array([0.0]), {Metric.MEMORY_BYTES: np.array([1.0 * GIB])})
    s = score_run(_curve(1.0 * GIB), series=one, actual_peak=None)
    assert s is not None and s.peak_error == 0.0 and s.duration_s == 1.0


def test_summary_reports_coverage_as_share_of_runs_within_quantile() -> None:
    series = UsageSeries(np.arange(10.0), {Metric.MEMORY_BYTES: np.full(10, 2.0 * GIB)})
    scores = [
        score_run(_curve(level * GIB), series=series, actual_peak=None) for level in (1.0, 1.9, 2.0, 3.0)
    ]
    summary = summarise(Metric.MEMORY_BYTES, [s for s in scores if s is not None])
    assert summary.runs == 4
    assert summary.coverage[0.5] == pytest.approx(0.5)  # p50 of 1.0 and 1.9 GiB miss the 2 GiB peak
    assert summary.coverage[0.99] == pytest.approx(0.75)  # only the 1.5 GiB p99 misses
    d = summary.as_dict()
    assert d["coverage"]["p99"] == summary.coverage[0.99]  # type: ignore[index]
    assert summary.peak_error_median == pytest.approx(metrics.quantile_of([0.5, 0.05, 0.0, 0.5], 0.5))


def test_fast_resampling_matches_the_series_own() -> None:
    rng = np.random.default_rng(1)
    t = np.cumsum(rng.uniform(0.5, 7.0, 200))
    v = rng.uniform(0, 10, 200)
    v[[0, 1, 50, 51, 52, 120]] = np.nan  # leading gap and holes
    series = UsageSeries(t, {Metric.MEMORY_BYTES: v})
    for step in (1.0, 2.0, 30.0):
        ours = metrics.resample_max(series.times, v, step)
        assert np.allclose(ours, series.resampled(step, Metric.MEMORY_BYTES))
