from __future__ import annotations

import numpy as np
import pytest

from airflow_predictive.core.model.resources import GIB, Metric
from airflow_predictive.core.model.series import UsageSeries
from airflow_predictive.core.profiler.features import FeatureEncoder
from airflow_predictive.core.profiler.windows import (
    WindowConfig,
    prefix_inputs,
    query_windows,
    timeline_targets,
    training_windows,
    truncate,
)

MEM = Metric.MEMORY_BYTES
METRICS = (Metric.CPU_CORES, MEM)


def test_timeline_targets_follow_the_ramp_on_the_runs_own_timeline():
    times = np.arange(0.0, 101.0)
    series = UsageSeries(times, {MEM: times * 1.0})
    curve = timeline_targets(series, (MEM,), np.array([100.0]), 10, 20.0)
    assert curve.shape == (10, 1)
    assert np.all(np.diff(curve[:, 0]) > 0)
    assert curve[-1, 0] == pytest.approx(1.0)


def test_gaps_are_held_and_bad_readings_dropped():
    times = np.arange(0.0, 10.0)
    vals = np.array([1.0, np.nan, np.nan, -3.0, 1e30, 2.0, np.nan, np.nan, np.nan, 2.0])
    curve = timeline_targets(UsageSeries(times, {MEM: vals}), (MEM,), np.array([1.0]), 10, 20.0)
    assert list(curve[:, 0]) == [1.0, 1.0, 1.0, 1.0, 1.0, 2.0, 2.0, 2.0, 2.0, 2.0]


def test_metric_never_measured_stays_nan():
    series = UsageSeries(np.arange(5.0), {MEM: np.ones(5)})
    curve = timeline_targets(series, METRICS, np.ones(2), 4, 20.0)
    assert np.all(np.isnan(curve[:, 0])) and np.all(curve[:, 1] == 1.0)


def test_single_sample_run_fills_the_whole_timeline():
    series = UsageSeries(np.array([0.0]), {MEM: np.array([3.0])})
    assert np.all(timeline_targets(series, (MEM,), np.ones(1), 4, 20.0) == 3.0)


def test_prefix_inputs_carry_level_and_elapsed_time():
    times = np.arange(0.0, 61.0, 2.0)
    prefix = UsageSeries(times, {MEM: np.full(times.size, 4 * GIB)})
    cfg = WindowConfig(prefix_steps=8)
    seq, extra, elapsed = prefix_inputs(prefix, (MEM,), np.array([2 * GIB]), 600.0, cfg)
    assert seq.shape == (8, 2)
    assert np.allclose(seq[:, 0], 2.0) and np.all(seq[:, 1] == 1.0)
    assert elapsed == 60.0
    assert extra[0] == 1.0 and extra[2] == pytest.approx(0.1) and extra[3] == pytest.approx(2.0)


def test_no_prefix_is_all_zeros():
    seq, extra, elapsed = prefix_inputs(None, METRICS, np.ones(2), 60.0, WindowConfig())
    assert not seq.any() and not extra.any() and elapsed == 0.0


def test_truncate_keeps_the_first_seconds():
    series = UsageSeries(np.arange(0.0, 10.0), {MEM: np.arange(10.0)})
    assert len(truncate(series, 3.0)) == 4


def test_training_windows_use_only_earlier_runs_and_add_prefix_variants(synth, task_key):
    runs = synth.linear_task(task_key, 5)
    runs.append(synth.make_run(task_key, 99, series=False))  # peak-only: history, not a target
    enc = FeatureEncoder.fit(runs, METRICS)
    cfg = WindowConfig(horizon_steps=8, prefix_steps=4, prefix_fractions=(0.25, 0.5))
    w = training_windows(runs, enc, cfg)
    assert len(w) == 5 * 3
    assert w.curve.shape == (15, 8, 2) and w.prefix.shape == (15, 4, 3)
    assert w.static.shape == (15, enc.n_static)
    # the first run has no history: scaled by its declared 16 GiB; later ones by earlier peaks
    assert w.scales[0, 1] == 16 * GIB
    assert w.scales[3, 1] == pytest.approx(runs[0].series.peak(MEM))
    assert np.all(w.elapsed_s[[0, 3, 6]] == 0) and np.all(w.elapsed_s[[1, 2]] > 0)
    assert np.all(np.isfinite(w.curve)) and np.all(np.isfinite(w.log_duration))


def test_query_windows_have_no_targets(synth, task_key):
    runs = synth.linear_task(task_key, 4)
    enc = FeatureEncoder.fit(runs, METRICS)
    w = query_windows([synth.query_for(runs[-1], runs[:-1])], enc, WindowConfig(horizon_steps=8))
    assert len(w) == 1 and np.all(np.isnan(w.curve))


def test_single_sample_and_absurd_runs_do_not_poison_training(synth, task_key):
    from airflow_predictive.core.profiler.estimators.base import RunExample

    runs = synth.linear_task(task_key, 4)
    one = RunExample(runs[0].record, UsageSeries(np.array([0.0]), {MEM: np.array([1.0 * GIB])}))
    times = np.arange(0.0, 20.0, 2.0)
    absurd = RunExample(
        runs[1].record,
        UsageSeries(times, {MEM: np.full(times.size, 1e17), Metric.CPU_CORES: np.ones(times.size)}),
    )
    enc = FeatureEncoder.fit(runs, METRICS)
    cfg = WindowConfig(horizon_steps=8, prefix_steps=4, prefix_fractions=())
    w = training_windows([one, absurd, *runs[2:]], enc, cfg)
    assert len(w) == 3  # the single-sample run is history only
    assert np.nanmax(w.curve) <= cfg.target_clip


def test_recency_orders_each_tasks_runs(synth, task_key):
    runs = synth.linear_task(task_key, 5)
    enc = FeatureEncoder.fit(runs, METRICS)
    w = training_windows(
        runs[::-1], enc, WindowConfig(horizon_steps=4, prefix_steps=2, prefix_fractions=(0.5,))
    )
    assert list(w.recency) == [0.0, 0.0, 0.25, 0.25, 0.5, 0.5, 0.75, 0.75, 1.0, 1.0]
