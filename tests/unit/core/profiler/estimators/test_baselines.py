from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import numpy as np
import pytest

from airflow_predictive.core.model.resources import GIB, Metric, ResourceVector
from airflow_predictive.core.model.runs import RunIdentity, RunRecord, TaskKey
from airflow_predictive.core.model.series import UsageSeries
from airflow_predictive.core.profiler.estimators.base import ForecastQuery, NotFitted, RunExample
from airflow_predictive.core.profiler.estimators.baselines import (
    AutopilotStyle,
    DeclaredResources,
    FallbackChain,
    LastRunCurve,
    LinearInputSize,
    MedianPeak,
    OperatorPrior,
    VpaStyle,
    spread,
    weighted_quantile,
)

if TYPE_CHECKING:
    from pathlib import Path

MEM = Metric.MEMORY_BYTES


def test_median_peak_predicts_median_of_earlier_peaks(synth, task_key):
    runs = [synth.make_run(task_key, i, peak_gib=p) for i, p in enumerate([1.0, 2.0, 3.0, 10.0])]
    forecast = MedianPeak().predict(synth.query_for(runs[-1], runs))
    assert forecast.curve(MEM).peak(0.5) == pytest.approx(2.5 * GIB, rel=1e-6)
    assert forecast.curve(MEM).peak(0.99) >= 10.0 * GIB
    assert forecast.peak_only
    assert forecast.estimator == "median_peak"


def test_linear_input_size_beats_median_when_peak_follows_input(synth, task_key):
    runs = synth.linear_task(task_key, 30, seed=3)
    history, held = runs[:20], runs[20:]
    lin_err, med_err = [], []
    for run in held:
        actual = run.series.peak(MEM)
        q = synth.query_for(run, history)
        lin_err.append(abs(LinearInputSize().predict(q).curve(MEM).peak(0.5) - actual) / actual)
        med_err.append(abs(MedianPeak().predict(q).curve(MEM).peak(0.5) - actual) / actual)
    assert np.median(lin_err) < 0.05
    assert np.median(lin_err) < np.median(med_err) / 2


def test_linear_input_size_high_quantile_covers_held_out_runs(synth, task_key):
    runs = synth.linear_task(task_key, 60, seed=4, noise=0.03)
    history = runs[:40]
    covered = [
        LinearInputSize().predict(synth.query_for(r, history)).curve(MEM).peak(0.99) >= r.series.peak(MEM)
        for r in runs[40:]
    ]
    assert np.mean(covered) >= 0.9


def test_linear_falls_back_to_median_without_input_size(synth, task_key):
    runs = [synth.make_run(task_key, i, input_bytes=None, peak_gib=1.0 + i) for i in range(5)]
    forecast = LinearInputSize().predict(synth.query_for(runs[-1], runs))
    assert forecast.curve(MEM).peak(0.5) == pytest.approx(3.0 * GIB, rel=1e-6)


def test_vpa_is_p90_of_peaks_plus_fifteen_percent_flat(synth, task_key):
    runs = [synth.make_run(task_key, i, peak_gib=float(i + 1)) for i in range(10)]
    forecast = VpaStyle().predict(synth.query_for(runs[-1], runs))
    expected = np.quantile(np.arange(1.0, 11.0), 0.9) * 1.15 * GIB
    curve = forecast.curve(MEM)
    for q in (0.5, 0.9, 0.99):
        assert np.allclose(curve.at(q), expected)


def test_autopilot_weights_recent_runs_more(synth, task_key):
    old = [synth.make_run(task_key, i, peak_gib=8.0) for i in range(5)]
    # a week later the task shrank; memory half-life is 48 h so old peaks weigh ~1/11
    recent = [synth.make_run(task_key, 24 * 7 + i, peak_gib=2.0) for i in range(20)]
    forecast = AutopilotStyle().predict(synth.query_for(recent[-1], old + recent))
    assert forecast.curve(MEM).peak(0.5) == pytest.approx(2.0 * 1.1 * GIB, rel=1e-6)
    # with equal ages the p98 would still pick the big old runs
    flat = AutopilotStyle(memory_half_life_s=1e12).predict(synth.query_for(recent[-1], old + recent))
    assert flat.curve(MEM).peak(0.5) == pytest.approx(8.0 * 1.1 * GIB, rel=1e-6)


def test_weighted_quantile_matches_plain_quantile_on_equal_weights():
    values = np.array([5.0, 1.0, 3.0, 2.0, 4.0])
    assert weighted_quantile(values, np.ones(5), 0.5) == 3.0
    assert weighted_quantile(values, np.array([0, 0, 0, 0, 1.0]), 0.1) == 4.0


def test_last_run_repeats_the_last_curve(synth, task_key):
    runs = [synth.make_run(task_key, i, peak_gib=1.0 + i, duration_s=100.0) for i in range(3)]
    forecast = LastRunCurve().predict(synth.query_for(runs[-1], runs))
    curve = forecast.curve(MEM)
    assert not forecast.peak_only
    assert curve.at(0.5)[0] == pytest.approx(0.2 * 3.0 * GIB, rel=1e-6)
    assert curve.peak(0.5) == pytest.approx(3.0 * GIB, rel=1e-6)
    assert curve.at(0.5)[0] < curve.at(0.5)[-1]  # the ramp is kept
    assert curve.peak(0.99) > curve.peak(0.5)


def test_last_run_without_series_gives_flat_peak(synth, task_key):
    runs = [synth.make_run(task_key, i, series=False, peak_gib=2.0) for i in range(3)]
    forecast = LastRunCurve().predict(synth.query_for(runs[-1], runs))
    assert forecast.peak_only
    assert forecast.curve(MEM).peak(0.5) == pytest.approx(2.0 * GIB)


def test_declared_resources_forecast_what_was_asked(synth, task_key):
    run = synth.make_run(task_key, 0, declared=ResourceVector(memory_bytes=4 * GIB))
    forecast = DeclaredResources().predict(synth.query_for(run, []))
    assert forecast.curve(MEM).peak(0.5) == 4 * GIB
    assert forecast.curve(Metric.CPU_CORES) is None  # not declared: not invented


def test_no_history_raises_not_fitted(synth, task_key):
    run = synth.make_run(task_key, 0)
    for est in (MedianPeak(), LinearInputSize(), VpaStyle(), AutopilotStyle(), LastRunCurve()):
        with pytest.raises(NotFitted):
            est.predict(synth.query_for(run, []))


def test_one_earlier_run_gives_wide_but_finite_quantiles(synth, task_key):
    run = synth.make_run(task_key, 0, peak_gib=2.0)
    forecast = MedianPeak().predict(synth.query_for(run, [run]))
    curve = forecast.curve(MEM)
    assert curve.peak(0.5) == pytest.approx(2 * GIB)
    assert curve.peak(0.9) == pytest.approx(2 * GIB * 1.2)
    assert curve.peak(0.99) == pytest.approx(2 * GIB * 1.5)


def test_nan_negative_and_absurd_readings_are_ignored(task_key, synth):
    good = synth.make_run(task_key, 0, peak_gib=2.0)
    times = np.arange(5.0)
    broken = RunExample(
        synth.make_run(task_key, 1, series=False).record,
        UsageSeries(times, {MEM: np.array([np.nan, -5.0, 1e30, np.inf, 1.0 * GIB])}),
    )
    all_nan = RunExample(
        RunRecord(identity=RunIdentity(task_key, "nan_run")),
        UsageSeries(times, {MEM: np.full(5, np.nan)}),
    )
    forecast = MedianPeak().predict(synth.query_for(good, [good, broken, all_nan]))
    # the broken run counts with its one plausible reading (1 GiB); the all-NaN run not at all
    assert forecast.curve(MEM).peak(0.5) == pytest.approx(1.5 * GIB)


def test_single_sample_run_is_usable(synth, task_key):
    one = RunExample(
        synth.make_run(task_key, 0, series=False).record,
        UsageSeries(np.array([0.0]), {MEM: np.array([3.0 * GIB])}),
    )
    forecast = LastRunCurve().predict(synth.query_for(one, [one]))
    assert forecast.curve(MEM).peak(0.5) == pytest.approx(3.0 * GIB)


def test_metric_never_seen_is_skipped_and_all_unseen_is_an_error(synth, task_key):
    runs = [synth.make_run(task_key, i) for i in range(3)]
    q = synth.query_for(runs[-1], runs, metrics=(MEM, Metric.GPU_UTIL))
    forecast = MedianPeak().predict(q)
    assert set(forecast.curves) == {MEM}
    with pytest.raises(NotFitted):
        MedianPeak().predict(synth.query_for(runs[-1], runs, metrics=(Metric.GPU_UTIL,)))


def test_operator_prior_answers_for_unknown_task_of_known_operator(synth):
    runs = [synth.make_run(TaskKey("d", f"t{i}"), i, peak_gib=2.0) for i in range(5)]
    prior = OperatorPrior().fit(runs)
    new = ForecastQuery(key=TaskKey("d", "new"), operator="BashOperator")
    assert prior.predict(new).curve(MEM).peak(0.5) == pytest.approx(2.0 * GIB)
    with pytest.raises(NotFitted):
        prior.predict(ForecastQuery(key=TaskKey("d", "new"), operator="PythonOperator"))


def test_chain_falls_through_and_logs_the_answering_level(synth, task_key, caplog):
    run = synth.make_run(task_key, 0, declared=ResourceVector(memory_bytes=4 * GIB))
    chain = FallbackChain([MedianPeak(), OperatorPrior().fit([]), DeclaredResources()])
    with caplog.at_level(logging.INFO):
        forecast = chain.predict(synth.query_for(run, []))
    assert forecast.estimator == "declared"
    assert chain.last_answer is not None and chain.last_answer.level == "declared"
    assert [name for name, _ in chain.last_answer.skipped] == ["median_peak", "operator_prior"]
    assert any("declared answered" in r.getMessage() for r in caplog.records)


def test_chain_with_no_answer_raises_with_every_reason(task_key):
    chain = FallbackChain([MedianPeak(), DeclaredResources()])
    with pytest.raises(NotFitted, match=r"median_peak.*declared"):
        chain.predict(ForecastQuery(key=task_key))


def test_chain_drops_a_level_that_cannot_fit(synth, task_key, caplog):
    class Broken(MedianPeak):
        def fit(self, examples):
            raise ImportError("No module named 'tensorflow'")

    chain = FallbackChain([Broken(name="lstm"), MedianPeak()])
    with caplog.at_level(logging.WARNING):
        chain.fit(synth.linear_task(task_key, 3))
    assert [lvl.name for lvl in chain.levels] == ["median_peak"]
    assert any("lstm dropped" in r.getMessage() for r in caplog.records)


def test_save_load_round_trip_keeps_predictions(synth, task_key, tmp_path: Path):
    runs = synth.linear_task(task_key, 10)
    chain = FallbackChain([LinearInputSize(), AutopilotStyle(margin=0.2), OperatorPrior().fit(runs)])
    chain.save(tmp_path / "chain")
    loaded = FallbackChain.load(tmp_path / "chain")
    q = synth.query_for(runs[-1], runs[:-1])
    a, b = chain.predict(q), loaded.predict(q)
    assert np.array_equal(a.curve(MEM).at(0.99), b.curve(MEM).at(0.99))
    assert loaded.levels[1].margin == 0.2


def test_load_refuses_classes_outside_the_estimator_package(tmp_path: Path):
    d = tmp_path / "chain"
    d.mkdir()
    (d / "estimator.json").write_text('{"name": "x", "levels": [{"dir": "a", "class": "os:system"}]}')
    with pytest.raises(NotFitted, match="refusing"):
        FallbackChain.load(d)


def test_spread_never_below_one_and_widens_short_history():
    assert spread(np.array([0.5, 0.6]))[0.9] >= 1.0
    long = spread(np.ones(50))
    assert long[0.9] == 1.0 and long[0.99] == 1.0
    assert spread(np.ones(1))[0.99] > 1.0
