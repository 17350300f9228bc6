from __future__ import annotations

import math
from datetime import UTC, datetime

import numpy as np
import pytest

from airflow_predictive.core.model.resources import GIB, Metric, ResourceVector
from airflow_predictive.core.model.runs import TaskKey
from airflow_predictive.core.profiler.estimators.base import ForecastQuery
from airflow_predictive.core.profiler.features import (
    UNKNOWN_ID,
    FeatureEncoder,
    capped_fit,
    input_size,
    plausible,
    summarise_history,
)

MEM = Metric.MEMORY_BYTES
METRICS = (Metric.CPU_CORES, MEM)


def test_plausible_rejects_nan_negative_and_absurd():
    assert plausible(MEM, 2 * GIB) == 2 * GIB
    for bad in (math.nan, -1.0, math.inf, 1e30):
        assert plausible(MEM, bad) is None


def test_input_size_ignores_text_bools_and_nan():
    assert input_size({"input_bytes": 5}) == 5.0
    assert input_size({"input_bytes": "5", "input_size": 7.0}) == 7.0
    assert input_size({"input_bytes": True}) is None
    assert input_size({"input_bytes": math.nan}) is None


def test_history_summary_gives_linear_prediction_for_this_input(synth, task_key):
    runs = synth.linear_task(task_key, 10, noise=0.0)
    s = summarise_history(runs, {"input_bytes": 2e9}, METRICS)
    assert s.n_runs == 10
    assert s.peak_linear[MEM] == pytest.approx(2.5 * GIB, rel=0.01)
    assert s.duration_linear == pytest.approx(120.0, rel=0.05)
    assert s.peak_last[MEM] == pytest.approx(runs[-1].series.peak(MEM))


def test_history_summary_of_nothing_is_nan():
    s = summarise_history([], {}, METRICS)
    assert s.n_runs == 0
    assert math.isnan(s.peak_median[MEM]) and math.isnan(s.duration_median) and math.isnan(s.input_ratio)


def test_encoder_scales_by_history_then_declared_then_global(synth, task_key):
    runs = synth.linear_task(task_key, 6)
    enc = FeatureEncoder.fit(runs, METRICS)
    with_history = enc.encode(synth.query_for(runs[-1], runs[:-1]))  # 5 earlier runs: the line
    linear = summarise_history(runs[:-1], runs[-1].record.features, METRICS).peak_linear[MEM]
    assert with_history.scales[1] == pytest.approx(linear)
    assert with_history.scales[1] == pytest.approx(runs[-1].series.peak(MEM), rel=0.05)
    short = enc.encode(synth.query_for(runs[3], runs[:3]))  # 3 earlier runs: their median
    assert short.scales[1] == pytest.approx(np.median([r.series.peak(MEM) for r in runs[:3]]))
    cold = enc.encode(ForecastQuery(key=task_key, declared=ResourceVector(memory_bytes=8 * GIB)))
    assert cold.scales[1] == 8 * GIB
    nothing = enc.encode(ForecastQuery(key=task_key))
    assert nothing.scales[1] == pytest.approx(enc.global_scale[MEM.value])


def test_encoder_vector_has_fixed_length_and_is_finite_on_bad_input(synth, task_key):
    runs = synth.linear_task(task_key, 6)
    enc = FeatureEncoder.fit(runs, METRICS)
    weird = ForecastQuery(
        key=TaskKey("other", "task"),
        features={"input_bytes": math.nan, "flag": True, "name": "x", "neg": -5.0},
        operator="Unknown",
        start=datetime(2026, 1, 1, 23, 59, tzinfo=UTC),
        try_number=3,
    )
    a = enc.encode(weird)
    b = enc.encode(synth.query_for(runs[-1], runs[:-1]))
    assert a.static.shape == b.static.shape == (enc.n_static,)
    assert np.all(np.isfinite(a.static))
    assert a.task_id == UNKNOWN_ID and a.operator_id == UNKNOWN_ID
    assert b.task_id != UNKNOWN_ID and b.operator_id != UNKNOWN_ID


def test_missing_numeric_feature_sets_its_flag(synth, task_key):
    runs = synth.linear_task(task_key, 6)
    enc = FeatureEncoder.fit(runs, METRICS)
    assert enc.numeric_keys == ("input_bytes",)
    present = enc.encode(ForecastQuery(key=task_key, features={"input_bytes": 2e9})).static
    missing = enc.encode(ForecastQuery(key=task_key, features={})).static
    assert present[-1] == 0.0 and missing[-1] == 1.0


def test_encoder_round_trips_through_json(synth, task_key):
    import json

    runs = synth.linear_task(task_key, 6)
    enc = FeatureEncoder.fit(runs, METRICS)
    again = FeatureEncoder.from_json(json.loads(json.dumps(enc.to_json())))
    q = synth.query_for(runs[-1], runs[:-1])
    assert np.array_equal(enc.encode(q).static, again.encode(q).static)


def test_rare_upstream_output_sizes_are_kept_and_rare_other_keys_dropped(synth, task_key):
    from dataclasses import replace

    from airflow_predictive.core.profiler.estimators.base import RunExample

    runs = synth.linear_task(task_key, 40)
    rare = dict(runs[0].record.features, upstream_output_bytes=5e8, rare_param=3.0)
    runs[0] = RunExample(replace(runs[0].record, features=rare), runs[0].series)
    enc = FeatureEncoder.fit(runs, METRICS)
    assert enc.numeric_keys == ("input_bytes", "upstream_output_bytes")


def test_capped_fit_finds_the_plateau_of_a_peak_that_stops_growing_with_the_input():
    rng = np.random.default_rng(0)
    x = rng.uniform(1.0, 10.0, 40)
    y = np.minimum(2.0 + 1.5 * x, 11.0) + rng.normal(0, 0.05, x.size)  # a cap from x = 6 on
    a, b, knot = capped_fit(x, y)
    assert b == pytest.approx(1.5, rel=0.05)
    assert knot == pytest.approx(6.0, abs=0.5)
    assert a + b * min(20.0, knot) == pytest.approx(11.0, rel=0.02)  # no extrapolation past the cap


def test_capped_fit_keeps_the_straight_line_where_the_peak_keeps_growing():
    rng = np.random.default_rng(1)
    x = rng.uniform(1.0, 10.0, 40)
    y = 2.0 + 1.5 * x + rng.normal(0, 0.05, x.size)
    a, b, knot = capped_fit(x, y)
    assert math.isinf(knot)
    assert (a, b) == pytest.approx((2.0, 1.5), rel=0.05)
    assert capped_fit(np.array([1.0, 1.0]), np.array([2.0, 3.0])) is None  # one input size: no line


def test_a_run_that_reached_its_declared_memory_marks_its_history_limit_bound(synth, task_key):
    from airflow_predictive.core.model.resources import GIB, ResourceVector
    from airflow_predictive.core.profiler.features import reached_declared_memory

    DECLARED = ResourceVector(memory_bytes=8 * GIB)

    below = [synth.make_run(task_key, i, peak_gib=5.0, declared=DECLARED) for i in range(3)]
    assert not reached_declared_memory(below)
    assert reached_declared_memory([*below, synth.make_run(task_key, 3, peak_gib=8.0, declared=DECLARED)])
    assert not reached_declared_memory([])
