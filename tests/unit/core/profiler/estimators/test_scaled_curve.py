from __future__ import annotations

import numpy as np
import pytest

from airflow_predictive.core.profiler.estimators.scaled_curve import level_for

GB = 1e9


def _capped_history(n: int = 24) -> tuple[np.ndarray, np.ndarray]:
    # peaks grow with the input up to 3 GB of input, then stay at a configured maximum (bwa's
    # batch buffer, a JVM's -Xmx); the straight line through both regimes would give 10.1 at 9 GB
    sizes = np.linspace(1 * GB, 6 * GB, n)
    return sizes, np.minimum(1.0 + 2.0 * sizes / GB, 7.0)


def test_level_stops_at_the_cap_the_earlier_runs_reached():
    sizes, peaks = _capped_history()
    guess = level_for(sizes, peaks, 9 * GB, elasticity=1.0)
    assert guess is not None and guess.how == "linear"
    assert guess.value == pytest.approx(7.0, rel=0.03)


def test_level_below_the_cap_follows_the_rising_line():
    sizes, peaks = _capped_history()
    guess = level_for(sizes, peaks, 1.5 * GB, elasticity=1.0)
    assert guess is not None
    assert guess.value == pytest.approx(4.0, rel=0.03)  # the straight line: 4.7


def test_level_of_uncapped_runs_extrapolates_the_line():
    sizes = np.linspace(1 * GB, 6 * GB, 24)
    peaks = 1.0 + 2.0 * sizes / GB
    guess = level_for(sizes, peaks, 9 * GB, elasticity=1.0)
    assert guess is not None
    assert guess.value == pytest.approx(19.0, rel=0.03)
