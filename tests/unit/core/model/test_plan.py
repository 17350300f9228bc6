from __future__ import annotations

import pytest

from airflow_predictive.core.model.backend import Allocation
from airflow_predictive.core.model.plan import (
    AllocationPlan,
    Bottleneck,
    PlanSource,
    PlanStep,
    Reservation,
    charge_of,
    resized_charge,
)
from airflow_predictive.core.model.resources import GIB, Metric, ResourceVector
from airflow_predictive.core.model.runs import RunIdentity, TaskKey


def _mem(gib: float, cpu: float | None = None) -> Allocation:
    return Allocation.exactly(ResourceVector(memory_bytes=gib * GIB, cpu_cores=cpu))


def _plan() -> AllocationPlan:
    return AllocationPlan(
        initial=_mem(1),
        steps=(PlanStep(10.0, _mem(3), "load phase"), PlanStep(40.0, _mem(2), "after load")),
        duration_s=60.0,
        source=PlanSource.FORECAST,
        why="p99 memory",
    )


def test_allocation_at_follows_the_timed_steps() -> None:
    plan = _plan()
    assert plan.allocation_at(0).limits.memory_bytes == 1 * GIB
    assert plan.allocation_at(9.99).limits.memory_bytes == 1 * GIB
    assert plan.allocation_at(10).limits.memory_bytes == 3 * GIB
    assert plan.allocation_at(59).limits.memory_bytes == 2 * GIB
    assert plan.allocation_at(600).limits.memory_bytes == 2 * GIB


def test_segments_cover_the_whole_duration() -> None:
    segs = list(_plan().segments())
    assert [(s, e) for s, e, _ in segs] == [(0.0, 10.0), (10.0, 40.0), (40.0, 60.0)]


def test_peak_is_the_elementwise_maximum() -> None:
    assert _plan().peak().limits.memory_bytes == 3 * GIB


def test_steps_out_of_order_or_past_the_end_are_rejected() -> None:
    with pytest.raises(ValueError, match="increasing"):
        AllocationPlan(_mem(1), (PlanStep(20, _mem(2), "a"), PlanStep(10, _mem(2), "b")), duration_s=60)
    with pytest.raises(ValueError, match="before the plan's end"):
        AllocationPlan(_mem(1), (PlanStep(70, _mem(2), "a"),), duration_s=60)
    with pytest.raises(ValueError):
        PlanStep(0.0, _mem(1), "at start is the initial allocation")


def test_charge_fills_a_missing_request_from_the_limit_and_vice_versa() -> None:
    alloc = Allocation(
        requests=ResourceVector(cpu_cores=0.5), limits=ResourceVector(memory_bytes=GIB, cpu_cores=1.0)
    )
    charge = charge_of(alloc)
    assert charge.requests == ResourceVector(cpu_cores=0.5, memory_bytes=GIB)
    assert charge.limits == ResourceVector(cpu_cores=1.0, memory_bytes=GIB)


def test_resized_charge_is_the_max_of_desired_allocated_and_actual() -> None:
    charge = resized_charge(_mem(2), desired=_mem(3), actual=ResourceVector(memory_bytes=2.5 * GIB))
    assert charge.limits.memory_bytes == 3 * GIB
    charge = resized_charge(_mem(2), desired=_mem(1), actual=ResourceVector(memory_bytes=2.5 * GIB))
    assert charge.limits.memory_bytes == 2.5 * GIB


def test_reservation_charge_is_piecewise_in_wall_clock_time() -> None:
    plan = _plan()
    run = RunIdentity(TaskKey("d", "t"), "r1")
    res = Reservation(
        id="x",
        pool="local",
        run=run,
        holder="h",
        start=1000.0,
        end=1060.0,
        timeline=Reservation.timeline_of(plan, 1000.0),
        expires_at=1100.0,
    )
    assert res.charge_at(999.0) is None
    assert res.charge_at(1015.0).limits.memory_bytes == 3 * GIB  # type: ignore[union-attr]
    assert res.charge_at(1060.0) is None
    assert [(a, b) for a, b, _ in res.pieces()] == [(1000.0, 1010.0), (1010.0, 1040.0), (1040.0, 1060.0)]


def test_bottleneck_says_which_metric_when_and_by_how_much() -> None:
    b = Bottleneck(Metric.MEMORY_BYTES, "limits", at=1030.0, needed=3.0, available=1.0, capacity=4.0)
    assert b.over_by == 2.0
    text = b.describe(start=1000.0)
    assert "memory_bytes" in text and "+30 s" in text and "over by 2 B" in text
