from __future__ import annotations

from airflow_predictive.core.model.backend import Allocation
from airflow_predictive.core.model.plan import (
    AdmissionDecision,
    AdmissionOutcome,
    AllocationPlan,
    PlanSource,
    PoolCapacity,
)
from airflow_predictive.core.model.resources import ResourceVector
from airflow_predictive.core.model.runs import RunIdentity, TaskKey
from airflow_predictive.core.scheduling.admission import AdmissionSettings, WaitingTask, admit_round
from airflow_predictive.core.scheduling.profile import Profile

CAP = PoolCapacity(limits=ResourceVector(memory_bytes=10.0))


def _task(name: str, mem: float, duration: float, priority: int = 1, queued_at: float = 0.0) -> WaitingTask:
    plan = AllocationPlan.flat(
        Allocation.exactly(ResourceVector(memory_bytes=mem)), duration, source=PlanSource.FORECAST, why="t"
    )
    return WaitingTask(name, RunIdentity(TaskKey("d", name), "r"), plan, priority, queued_at)


def _decisions(
    queue: list[WaitingTask], profile: Profile, now: float = 0.0, **kw: float | bool
) -> dict[str, AdmissionOutcome]:
    settings = AdmissionSettings(**kw)  # type: ignore[arg-type]
    return {t.key: o for t, o in admit_round(queue, profile, now, settings)}


def test_tasks_wait_while_the_pool_is_full_and_say_until_when() -> None:
    running = Profile(CAP, [(0.0, 100.0, Allocation.exactly(ResourceVector(memory_bytes=8.0)))])
    out = _decisions([_task("big", 5.0, 50.0)], running)
    big = out["big"]
    assert big.decision is AdmissionDecision.QUEUED
    assert big.earliest_start == 100.0
    assert "memory_bytes" in big.reason


def test_a_small_task_backfills_only_when_it_delays_no_waiting_task() -> None:
    running = Profile(CAP, [(0.0, 100.0, Allocation.exactly(ResourceVector(memory_bytes=6.0)))])
    high = _task("high", 8.0, 50.0, priority=10)  # waits for t=100
    short = _task("short", 3.0, 60.0, priority=1)  # ends at 60 < 100: delays nobody
    long = _task("long", 3.0, 200.0, priority=1)  # would still hold 3 at t=100: high could not start
    out = _decisions([high, short, long], running)
    assert out["high"].decision is AdmissionDecision.QUEUED
    assert out["short"].decision is AdmissionDecision.ADMITTED
    assert out["long"].decision is AdmissionDecision.QUEUED
    assert (out["long"].earliest_start or 0) >= 150.0


def test_priority_order_decides_who_goes_first() -> None:
    empty = Profile(CAP)
    out = _decisions([_task("low", 6.0, 50.0, priority=1), _task("high", 6.0, 50.0, priority=5)], empty)
    assert out["high"].decision is AdmissionDecision.ADMITTED
    assert out["low"].decision is AdmissionDecision.QUEUED


def test_a_task_waiting_past_the_bound_is_no_longer_overtaken() -> None:
    empty = Profile(CAP)
    old = _task("old", 6.0, 50.0, priority=1, queued_at=0.0)
    new = _task("new", 6.0, 50.0, priority=1000, queued_at=1999.0)
    out = _decisions([new, old], empty, now=2000.0, max_wait_s=1800.0)
    assert out["old"].decision is AdmissionDecision.ADMITTED
    assert out["new"].decision is AdmissionDecision.QUEUED


def test_a_plan_that_can_never_fit_falls_back_or_fails_fast() -> None:
    empty = Profile(CAP)
    out = _decisions([_task("huge", 11.0, 10.0)], empty)
    assert out["huge"].decision is AdmissionDecision.DECLARED_FALLBACK
    assert "never fit" in out["huge"].reason
    out = _decisions([_task("huge", 11.0, 10.0)], empty, fail_fast=True)
    assert out["huge"].decision is AdmissionDecision.FAILED_FAST


def test_admitted_tasks_together_never_exceed_the_pool() -> None:
    empty = Profile(CAP)
    queue = [_task(f"t{i}", 3.0, 30.0 + i) for i in range(10)]
    out = admit_round(queue, empty, 0.0, AdmissionSettings())
    admitted = [t for t, o in out if o.decision is AdmissionDecision.ADMITTED]
    assert len(admitted) == 3
    assert sum(t.plan.initial.limits.memory_bytes or 0 for t in admitted) <= 10.0
