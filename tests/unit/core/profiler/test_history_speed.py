"""The fast paths of the forecasters give the numbers of the plain ones, bit for bit.

Quantiles, medians and look-ahead maxima are reimplemented for speed (re-forecasting 100 running
tasks calls them thousands of times); the history's per-run numbers are memoised per run and per
history. Each test compares with the straightforward computation they replaced.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np
import pytest

from airflow_predictive.core.model.resources import Metric
from airflow_predictive.core.profiler.features import (
    example_duration,
    example_peak,
    forward_max,
    history_columns,
    history_durations,
    history_peaks,
    input_size,
    median,
    quantile,
)
from tests.unit.core.profiler.synthetic_runs import example

if TYPE_CHECKING:
    from airflow_predictive.core.profiler.estimators.base import RunExample


@pytest.mark.parametrize("seed", range(2))
def test_quantile_and_median_equal_numpy_bit_for_bit(seed: int) -> None:
    rng = np.random.default_rng(seed)
    for _ in range(2000):
        n = int(rng.integers(1, 70))
        values = rng.lognormal(size=n) * 10 ** rng.uniform(-6, 12)
        if rng.random() < 0.3:
            values = np.round(values)  # ties
        for q in (0.0, 0.5, 0.9, 0.99, 1.0, float(rng.random())):
            assert quantile(values, q) == float(np.quantile(values, q))
        assert median(values) == float(np.median(values))


def test_quantile_and_median_hand_nan_and_empty_to_numpy() -> None:
    with_nan = np.array([1.0, np.nan, 3.0])
    assert np.isnan(quantile(with_nan, 0.9)) and np.isnan(median(with_nan))
    with pytest.raises(IndexError):
        quantile(np.array([]), 0.5)


def test_forward_max_is_the_clipped_window_maximum() -> None:
    rng = np.random.default_rng(0)
    for _ in range(3000):
        values = rng.random(int(rng.integers(1, 90)))
        ahead = int(rng.integers(0, 120))
        expected = np.array([values[i : i + ahead + 1].max() for i in range(values.size)])
        assert np.array_equal(forward_max(values, ahead), expected)


def _history(n: int) -> tuple[RunExample, ...]:
    runs = [example("t", i, 1.0 + (i % 3), series=i % 4 != 0) for i in range(n)]
    # a run without input size and one with size 0 (unknown to the scaled curve, 0 to the line)
    runs[2] = replace(runs[2], record=replace(runs[2].record, features={}))
    runs[3] = replace(runs[3], record=replace(runs[3].record, features={"input_bytes": 0.0}))
    return tuple(runs)


def test_history_columns_equal_the_per_run_numbers() -> None:
    history = _history(12)
    cols = history_columns(history)
    for metric in (Metric.MEMORY_BYTES, Metric.CPU_CORES, Metric.GPU_UTIL):
        expected = [example_peak(e, metric) for e in history]
        got = cols.peaks(metric)
        assert [None if np.isnan(v) else v for v in got] == expected
        assert history_peaks(history, metric).tolist() == [p for p in expected if p is not None]
    assert history_durations(history).tolist() == [
        d for e in history if (d := example_duration(e)) is not None
    ]
    sizes = [input_size(e.record.features) for e in history]
    assert [None if np.isnan(v) else v for v in cols.sizes()] == sizes
    assert [None if np.isnan(v) else v for v in cols.sizes_known()] == [s or None for s in sizes]
    with pytest.raises(ValueError):  # shared between estimators: read-only
        cols.peaks(Metric.MEMORY_BYTES)[0] = 1.0


def test_history_columns_are_rebuilt_when_the_history_changes() -> None:
    history = list(_history(6))
    first = history_columns(history)
    assert history_columns(history) is first
    history.append(example("t", 50, 9.0))  # the same list object, grown in place
    grown = history_columns(history)
    assert grown is not first
    assert grown.peaks(Metric.MEMORY_BYTES)[-1] == example_peak(history[-1], Metric.MEMORY_BYTES)
    history[-1] = example("t", 51, 3.0)  # newest run replaced
    assert history_columns(history).peaks(Metric.MEMORY_BYTES)[-1] == pytest.approx(3.0 * 1024.0**3)


def test_a_replaced_run_does_not_inherit_the_memoised_peak() -> None:
    run = example("t", 1, 2.0)
    assert example_peak(run, Metric.MEMORY_BYTES) == pytest.approx(2.0 * 1024.0**3)
    other = replace(run, series=example("t", 1, 5.0).series)
    assert example_peak(other, Metric.MEMORY_BYTES) == pytest.approx(5.0 * 1024.0**3)
