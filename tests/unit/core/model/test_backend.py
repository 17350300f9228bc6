"""The shared resize precheck and the backend value types."""

from __future__ import annotations

import pytest

from airflow_predictive.core.model.backend import (
    Allocation,
    Bounds,
    Capabilities,
    Capacity,
    MemoryMargin,
    ResizeResult,
    ResizeStatus,
    changed_metrics,
    precheck_resize,
)
from airflow_predictive.core.model.resources import MIB, Metric, ResourceVector

CAPS = Capabilities(
    live=frozenset({Metric.CPU_CORES, Metric.MEMORY_BYTES}),
    provision_only=frozenset({Metric.GPU_UTIL}),
    bounds={
        Metric.CPU_CORES: Bounds(0.01, 4.0, 0.01),
        Metric.MEMORY_BYTES: Bounds(4 * MIB, 8192 * MIB, 4096),
    },
)
POOL = Capacity(ResourceVector(cpu_cores=4.0, memory_bytes=8192 * MIB), ResourceVector())


def _a(cpu: float, mb: float) -> Allocation:
    return Allocation.exactly(ResourceVector(cpu_cores=cpu, memory_bytes=mb * MIB))


def _check(
    current: Allocation, target: Allocation, used_mb: float | None = None, caps: Capabilities = CAPS
) -> ResizeResult | None:
    usage = None if used_mb is None else ResourceVector(memory_bytes=used_mb * MIB)
    return precheck_resize(current, target, caps, POOL, usage, MemoryMargin())


def test_changed_metrics_compares_requests_and_limits() -> None:
    assert changed_metrics(_a(1, 64), _a(1, 64)) == frozenset()
    assert changed_metrics(_a(1, 64), _a(2, 64)) == {Metric.CPU_CORES}
    gpu = Allocation(requests=_a(1, 64).requests, limits=_a(1, 64).limits.with_value(Metric.GPU_UTIL, 1.0))
    assert changed_metrics(_a(1, 64), gpu) == {Metric.GPU_UTIL}


def test_allowed_resize_passes() -> None:
    assert _check(_a(1, 256), _a(2, 512), used_mb=200) is None
    assert _check(_a(1, 256), _a(1, 128), used_mb=50) is None  # 50 + 16 MiB margin fits in 128


def test_provision_only_metric_is_unsupported() -> None:
    gpu = Allocation(requests=_a(1, 64).requests, limits=_a(1, 64).limits.with_value(Metric.GPU_UTIL, 2.0))
    result = _check(_a(1, 64), gpu)
    assert result is not None and result.status is ResizeStatus.UNSUPPORTED
    assert "gpu_util" in result.reason


def test_observe_only_refuses_every_change() -> None:
    caps = Capabilities(
        live=frozenset(), provision_only=frozenset(), bounds={}, enforcing=False, note="ro fs"
    )
    result = _check(_a(1, 64), _a(2, 64), caps=caps)
    assert result is not None and result.status is ResizeStatus.UNSUPPORTED
    assert "observe-only" in result.reason and "ro fs" in result.reason


def test_bounds_and_pool_decide_infeasible_or_rejected() -> None:
    above = _check(_a(1, 64), _a(8, 64))
    assert above is not None and above.status is ResizeStatus.INFEASIBLE
    below = _check(_a(1, 64), _a(0.001, 64))
    assert below is not None and below.status is ResizeStatus.REJECTED
    no_bounds = Capabilities(live=CAPS.live, provision_only=frozenset(), bounds={})
    beyond_pool = _check(_a(1, 64), _a(1, 10_000), caps=no_bounds)
    assert beyond_pool is not None and beyond_pool.status is ResizeStatus.INFEASIBLE
    assert "can ever hold" in beyond_pool.reason


def test_memory_below_usage_plus_margin_is_rejected_with_the_numbers() -> None:
    result = _check(_a(1, 256), _a(1, 100), used_mb=90)
    assert result is not None and result.status is ResizeStatus.REJECTED
    assert "90.0 MiB" in result.reason and "106.0 MiB" in result.reason


def test_growing_memory_is_never_rejected_for_usage() -> None:
    assert _check(_a(1, 64), _a(1, 96), used_mb=120) is None  # already above: growing only helps


def test_unknown_usage_does_not_block_a_shrink() -> None:
    assert _check(_a(1, 256), _a(1, 64), used_mb=None) is None


def test_margin_is_the_larger_of_fraction_and_minimum() -> None:
    assert MemoryMargin().floor(10 * MIB) == pytest.approx(26 * MIB)
    assert MemoryMargin().floor(1000 * MIB) == pytest.approx(1100 * MIB)


def test_capacity_free_never_negative() -> None:
    cap = Capacity(ResourceVector(cpu_cores=2.0), ResourceVector(cpu_cores=3.0))
    assert cap.free.cpu_cores == 0.0
