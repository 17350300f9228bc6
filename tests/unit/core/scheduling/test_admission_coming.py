"""Admission over a profile with coming capacity: tasks are placed at the node's ready time."""

from __future__ import annotations

from airflow_predictive.core.model.backend import Allocation
from airflow_predictive.core.model.plan import (
    AdmissionDecision,
    AllocationPlan,
    PlanSource,
    Pool,
    PoolCapacity,
    PoolKind,
)
from airflow_predictive.core.model.resources import ResourceVector
from airflow_predictive.core.model.runs import RunIdentity, TaskKey
from airflow_predictive.core.scheduling.admission import AdmissionSettings, WaitingTask, admit_round
from airflow_predictive.core.scheduling.coming import ComingCapacity
from airflow_predictive.core.scheduling.ledger import profile_of

POOL = Pool("p", PoolKind.CUSTOM, PoolCapacity(limits=ResourceVector(memory_bytes=10.0)))
NODE = ComingCapacity("p", PoolCapacity(limits=ResourceVector(memory_bytes=10.0)), 90.0, "node n1")


def _task(name: str, mem: float, priority: int = 1) -> WaitingTask:
    plan = AllocationPlan.flat(
        Allocation.exactly(ResourceVector(memory_bytes=mem)), 300.0, source=PlanSource.FORECAST, why="t"
    )
    return WaitingTask(name, RunIdentity(TaskKey("d", name), "r"), plan, priority, 0.0)


def test_task_above_present_capacity_waits_for_the_coming_node_instead_of_never_fitting() -> None:
    out = dict(
        (t.key, o)
        for t, o in admit_round(
            [_task("big", 15.0)], profile_of(POOL, [], coming=[NODE], now=0.0), 0.0, AdmissionSettings()
        )
    )
    assert out["big"].decision is AdmissionDecision.QUEUED
    assert out["big"].earliest_start == 90.0
    without = dict(
        (t.key, o)
        for t, o in admit_round([_task("big", 15.0)], profile_of(POOL, [], now=0.0), 0.0, AdmissionSettings())
    )
    assert without["big"].decision is AdmissionDecision.DECLARED_FALLBACK  # never fits 10 alone


def test_a_small_task_backfills_before_the_node_is_ready_only_if_it_delays_nobody() -> None:
    queue = [_task("big", 15.0, priority=10), _task("small", 4.0)]
    out = {
        t.key: o
        for t, o in admit_round(queue, profile_of(POOL, [], coming=[NODE], now=0.0), 0.0, AdmissionSettings())
    }
    # small would hold 4 of 20 at t=90, leaving 16 >= 15: it delays nobody and starts now
    assert out["small"].decision is AdmissionDecision.ADMITTED
    assert out["big"].earliest_start == 90.0
