"""Min/max-bucket downsampling: bounded points, every peak kept, gaps dropped, time order kept."""

from __future__ import annotations

import numpy as np
import pytest

from airflow_predictive.ui.downsample import min_max_buckets


def test_short_series_comes_back_unchanged() -> None:
    d = min_max_buckets(np.array([0.0, 1.0, 2.0]), np.array([5.0, 7.0, 6.0]), 10)
    assert d.t == (0.0, 1.0, 2.0)
    assert d.v == (5.0, 7.0, 6.0)
    assert d.source_points == 3


def test_a_one_sample_spike_survives_a_hundredfold_reduction() -> None:
    t = np.arange(100_000, dtype=float)
    v = np.sin(t / 500.0) + 2.0
    v[77_777] = 50.0
    v[12_345] = -9.0
    d = min_max_buckets(t, v, 1000)
    assert len(d.t) <= 1000
    assert max(x for x in d.v if x is not None) == 50.0
    assert min(x for x in d.v if x is not None) == -9.0
    assert 77_777.0 in d.t and 12_345.0 in d.t
    assert d.source_points == 100_000


def test_times_stay_strictly_increasing() -> None:
    t = np.arange(5000, dtype=float)
    rng = np.random.default_rng(3)
    d = min_max_buckets(t, rng.random(5000), 200)
    assert all(b > a for a, b in zip(d.t, d.t[1:], strict=False))


def test_missing_readings_are_dropped_not_zeroed() -> None:
    v = np.array([1.0, np.nan, 3.0, np.nan])
    d = min_max_buckets(np.arange(4, dtype=float), v, 10)
    assert d.t == (0.0, 2.0)
    assert d.v == (1.0, 3.0)


def test_a_series_of_only_gaps_stays_absent() -> None:
    d = min_max_buckets(np.arange(3, dtype=float), np.full(3, np.nan), 10)
    assert d.v == (None, None, None)


def test_mismatched_lengths_are_refused() -> None:
    with pytest.raises(ValueError, match="equal length"):
        min_max_buckets(np.arange(3, dtype=float), np.arange(4, dtype=float), 10)
