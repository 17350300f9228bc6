from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import numpy as np
import pytest

from airflow_predictive.core.model.resources import Metric
from airflow_predictive.core.model.series import DemandCurve, Forecast
from airflow_predictive.core.profiler.estimators.base import NotFitted
from airflow_predictive.core.profiler.estimators.baselines import LastRunCurve, MedianPeak
from airflow_predictive.core.profiler.estimators.combination import MedianCombination, combine_curves
from airflow_predictive.core.profiler.estimators.scaled_curve import ScaledCurve
from airflow_predictive.core.profiler.selection import query_for
from tests.unit.core.profiler.synthetic_runs import GIB, Broken, FlatHistoryPeak, example, ramp_series

if TYPE_CHECKING:
    from pathlib import Path

MEM = Metric.MEMORY_BYTES


def _flat(value: float, steps: int = 10, step: float = 2.0) -> DemandCurve:
    return DemandCurve(MEM, step, {0.5: np.full(steps, value), 0.99: np.full(steps, 2 * value)})


def test_combination_of_flat_forecasts_is_their_median_per_quantile() -> None:
    combined = combine_curves(MEM, [_flat(1.0), _flat(2.0), _flat(10.0)])
    assert np.allclose(combined.at(0.5), 2.0)
    assert np.allclose(combined.at(0.99), 4.0)


def test_curves_peaking_at_different_times_keep_the_median_peak() -> None:
    early = np.zeros(10)
    early[1] = 4.0
    late = np.zeros(10)
    late[8] = 2.0
    a = DemandCurve(MEM, 2.0, {0.5: early})
    b = DemandCurve(MEM, 2.0, {0.5: late})
    combined = combine_curves(MEM, [a, b])
    # the point-wise median alone would peak at 2.0 (half of each spike); the level is the members' median peak
    assert combined.peak(0.5) == pytest.approx(3.0)


def test_members_on_different_steps_share_one_timeline() -> None:
    fine = DemandCurve(MEM, 1.0, {0.5: np.arange(20, dtype=float)})  # 20 s, 1 s steps
    coarse = DemandCurve(MEM, 4.0, {0.5: np.full(5, 10.0)})  # 20 s, 4 s steps
    combined = combine_curves(MEM, [fine, coarse])
    assert combined.step_s == 1.0 and combined.steps == 20
    assert combined.peak(0.5) == pytest.approx(np.median([19.0, 10.0]))


def _history(n: int = 6) -> list:
    return [example("a", i, 1.0 + 0.2 * i) for i in range(n)]


def test_forecast_is_the_combination_of_the_members_forecasts() -> None:
    runs = _history()
    members = [FlatHistoryPeak("low", 0.8), FlatHistoryPeak("mid", 1.0), FlatHistoryPeak("high", 1.6)]
    combo = MedianCombination(members, name="combo").fit(runs)
    query = query_for(runs[-1], runs[:-1], (Metric.CPU_CORES, MEM))
    forecast = combo.predict(query)
    mine = [m.predict(query) for m in members]
    expected = combine_curves(MEM, [f.curves[MEM] for f in mine])
    assert forecast.estimator == "combo"
    assert np.allclose(forecast.curves[MEM].at(0.5), expected.at(0.5))
    assert forecast.curves[MEM].peak(0.5) == pytest.approx(runs[-2].record.peak.get(MEM))  # the middle member
    assert combo.combine(mine).curves[MEM].peak(0.99) == pytest.approx(forecast.curves[MEM].peak(0.99))


def test_a_member_that_cannot_answer_is_left_out_and_one_member_is_not_enough() -> None:
    runs = _history()
    query = query_for(runs[-1], runs[:-1], (Metric.CPU_CORES, MEM))
    two = MedianCombination([FlatHistoryPeak("a", 1.0), FlatHistoryPeak("b", 2.0), Broken("x")]).fit(runs)
    assert two.predict(query).curves[MEM].peak(0.5) == pytest.approx(1.5 * runs[-2].record.peak.get(MEM))
    one = MedianCombination([FlatHistoryPeak("a", 1.0), Broken("x")]).fit(runs)
    with pytest.raises(NotFitted):
        one.predict(query)


def test_assembled_from_fitted_members_reuses_them_without_fitting() -> None:
    fitted = {"low": FlatHistoryPeak("low", 0.5), "high": FlatHistoryPeak("high", 1.5)}
    proto = MedianCombination([FlatHistoryPeak("low"), FlatHistoryPeak("high")])
    combo = proto.assembled(fitted)
    assert combo.members[0] is fitted["low"] and combo.members[1] is fitted["high"]
    with pytest.raises(NotFitted):
        proto.assembled({"low": fitted["low"]})


def test_saved_combination_forecasts_like_the_fitted_one(tmp_path: Path) -> None:
    runs = _history(8)
    combo = MedianCombination([ScaledCurve(), LastRunCurve(), MedianPeak()], name="combo").fit(runs)
    combo.save(tmp_path / "c")
    loaded = MedianCombination.load(tmp_path / "c")
    assert loaded.member_names == ("scaled_curve", "last_run", "median_peak")
    query = query_for(runs[-1], runs[:-1], (Metric.CPU_CORES, MEM))
    a, b = combo.predict(query), loaded.predict(query)
    for metric in (Metric.CPU_CORES, MEM):
        for q in (0.5, 0.9, 0.99):
            assert np.array_equal(a.curves[metric].at(q), b.curves[metric].at(q))
    assert a.duration_s == b.duration_s


def test_damaged_state_raises_not_fitted(tmp_path: Path) -> None:
    (tmp_path / "estimator.json").write_text('{"name": "x", "members": [{"class": "os:system", "dir": "m"}]}')
    with pytest.raises(NotFitted):
        MedianCombination.load(tmp_path)


def test_observed_prefix_reaches_members_that_ignore_prefixes() -> None:
    runs = _history()
    combo = MedianCombination([LastRunCurve(), MedianPeak()]).fit(runs)
    query = query_for(runs[-1], runs[:-1], (Metric.CPU_CORES, MEM))
    at_start = combo.predict(query)
    high = ramp_series(4.0 * runs[-2].record.peak.get(MEM) / GIB, seconds=60)  # far above every earlier run
    prefixed = combo.predict(dataclasses.replace(query, prefix=high))
    assert prefixed.curves[MEM].peak(0.5) > 1.5 * at_start.curves[MEM].peak(0.5)


def test_forecasts_of_peaks_only_members_stay_peaks_only() -> None:
    f = Forecast({MEM: _flat(1.0)}, {0.5: 20.0}, "a", peak_only=True)
    g = Forecast({MEM: _flat(3.0)}, {0.5: 40.0}, "b", peak_only=True)
    out = MedianCombination([FlatHistoryPeak("a"), FlatHistoryPeak("b")]).combine([f, g])
    assert out.peak_only and out.duration_s == {0.5: 30.0}
