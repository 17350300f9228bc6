from __future__ import annotations

import math

import pytest

from airflow_predictive.core.model.resources import (
    Dimension,
    InvalidResourceValue,
    Metric,
    ResourceVector,
    Unit,
    format_bytes,
)


def test_every_metric_has_a_dimension_and_unit() -> None:
    assert {m.dimension for m in Metric} == set(Dimension)
    assert Metric.MEMORY_BYTES.unit is Unit.BYTES
    assert Metric.CPU_CORES.unit is Unit.CORES
    assert Metric.NET_RX_BPS.unit is Unit.BYTES_PER_SECOND


@pytest.mark.parametrize("bad", [math.nan, math.inf, -1.0])
def test_rejects_values_that_cannot_describe_a_resource(bad: float) -> None:
    with pytest.raises(InvalidResourceValue, match="memory_bytes"):
        ResourceVector(memory_bytes=bad)


def test_lenient_turns_bad_readings_into_absent_not_zero() -> None:
    v = ResourceVector.lenient({Metric.CPU_CORES: math.nan, Metric.MEMORY_BYTES: 5.0, Metric.GPU_UTIL: -3})
    assert v.cpu_cores is None
    assert v.gpu_util is None
    assert v.memory_bytes == 5.0


def test_absent_is_not_zero_in_sums_and_maxima() -> None:
    a = ResourceVector(cpu_cores=1.0, disk_read_bps=10.0)
    b = ResourceVector(cpu_cores=3.0, memory_bytes=7.0)
    m = a.maximum(b)
    assert (m.cpu_cores, m.memory_bytes, m.disk_read_bps, m.gpu_util) == (3.0, 7.0, 10.0, None)
    assert a.disk_bps == 10.0
    assert a.network_bps is None


def test_scaled_keeps_absent_metrics_absent() -> None:
    v = ResourceVector(memory_bytes=2.0).scaled(1.5)
    assert v.memory_bytes == 3.0 and v.cpu_cores is None


def test_format_bytes_uses_binary_units() -> None:
    assert format_bytes(3.1 * 1024**3) == "3.1 GiB"
    assert format_bytes(512 * 1024**2) == "512.0 MiB"


def test_plus_and_minus_keep_absent_metrics_absent_and_never_go_negative() -> None:
    a = ResourceVector(cpu_cores=2.0, memory_bytes=100.0)
    b = ResourceVector(memory_bytes=150.0, gpu_util=1.0)
    assert a.plus(b) == ResourceVector(cpu_cores=2.0, memory_bytes=250.0, gpu_util=1.0)
    diff = a.minus(b)
    assert diff == ResourceVector(cpu_cores=2.0, memory_bytes=0.0)
    assert diff.gpu_util is None


def test_fits_within_only_checks_metrics_the_capacity_constrains() -> None:
    cap = ResourceVector(memory_bytes=100.0)
    assert ResourceVector(memory_bytes=100.0, cpu_cores=64.0).fits_within(cap)
    assert not ResourceVector(memory_bytes=101.0).fits_within(cap)
    assert ResourceVector(memory_bytes=101.0).exceeding(cap) == {Metric.MEMORY_BYTES: 1.0}
    assert ResourceVector().fits_within(cap)


def test_minimum_is_elementwise() -> None:
    assert ResourceVector(cpu_cores=2.0, memory_bytes=5.0).minimum(
        ResourceVector(cpu_cores=1.0)
    ) == ResourceVector(cpu_cores=1.0, memory_bytes=5.0)
