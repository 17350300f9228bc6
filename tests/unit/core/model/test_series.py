from __future__ import annotations

import numpy as np
import pytest

from airflow_predictive.core.model.resources import Metric, ResourceVector
from airflow_predictive.core.model.series import DemandCurve, ResourceSample, UsageSeries


def _series(values: list[float | None]) -> UsageSeries:
    return UsageSeries.from_samples(
        [ResourceSample(float(i), ResourceVector(memory_bytes=v)) for i, v in enumerate(values)]
    )


def test_from_samples_sorts_and_keeps_gaps_as_nan() -> None:
    samples = [
        ResourceSample(2.0, ResourceVector(memory_bytes=30.0)),
        ResourceSample(0.0, ResourceVector(memory_bytes=10.0, cpu_cores=1.0)),
        ResourceSample(1.0, ResourceVector()),
    ]
    s = UsageSeries.from_samples(samples)
    assert s.times.tolist() == [0.0, 1.0, 2.0]
    mem = s.get(Metric.MEMORY_BYTES)
    assert mem is not None and np.isnan(mem[1]) and mem[2] == 30.0
    assert s.peak(Metric.CPU_CORES) == 1.0
    assert s.get(Metric.GPU_UTIL) is None  # never measured: no array at all


def test_rejects_times_that_do_not_increase() -> None:
    with pytest.raises(ValueError, match="increasing"):
        UsageSeries(np.array([0.0, 0.0]), {})


def test_resampled_takes_step_maxima_and_holds_across_gaps() -> None:
    s = _series([1.0, 5.0, None, None, 2.0, 3.0])
    out = s.resampled(2.0, Metric.MEMORY_BYTES)
    assert out.tolist() == [5.0, 5.0, 3.0]


def test_demand_curve_quantiles_are_made_monotone_and_non_negative() -> None:
    c = DemandCurve(
        Metric.MEMORY_BYTES,
        10.0,
        {0.5: np.array([5.0, -1.0]), 0.9: np.array([4.0, 2.0]), 0.99: np.array([6.0, 1.0])},
    )
    assert c.at(0.5).tolist() == [5.0, 0.0]
    assert c.at(0.9).tolist() == [5.0, 2.0]
    assert c.at(0.99).tolist() == [6.0, 2.0]
    assert c.peak(0.99) == 6.0 and c.peak_time_s(0.99) == 0.0
    assert c.value_at(15.0, 0.9) == 2.0


def test_demand_curve_rejects_nan_forecasts() -> None:
    with pytest.raises(ValueError, match="NaN"):
        DemandCurve(Metric.CPU_CORES, 1.0, {0.5: np.array([np.nan])})
