from __future__ import annotations

from airflow_predictive.core.model.backend import Allocation
from airflow_predictive.core.model.plan import (
    AllocationPlan,
    LedgerStatus,
    PlanSource,
    PlanStep,
    Pool,
    PoolCapacity,
    PoolKind,
    ReservationRequest,
    ReservationState,
)
from airflow_predictive.core.model.resources import ResourceVector
from airflow_predictive.core.model.runs import RunIdentity, TaskKey
from airflow_predictive.core.scheduling.ledger import InMemoryLedger

POOL = Pool("local", PoolKind.LOCAL, PoolCapacity(limits=ResourceVector(memory_bytes=10.0)))


def _mem(v: float) -> Allocation:
    return Allocation.exactly(ResourceVector(memory_bytes=v))


def _req(
    task: str, mem: float, start: float = 0.0, duration: float = 100.0, holder: str = "h"
) -> ReservationRequest:
    plan = AllocationPlan.flat(_mem(mem), duration, source=PlanSource.FORECAST, why="test")
    return ReservationRequest(
        POOL.name, RunIdentity(TaskKey("d", task), "r"), holder, plan, start, lease_s=60.0
    )


def _ledger(now: list[float]) -> InMemoryLedger:
    ledger = InMemoryLedger(clock=lambda: now[0])
    ledger.set_pool(POOL)
    return ledger


def test_reserve_refuses_what_would_over_commit_and_changes_nothing() -> None:
    ledger = _ledger([0.0])
    assert ledger.reserve(_req("a", 6.0)).status is LedgerStatus.RESERVED
    refused = ledger.reserve(_req("b", 6.0))
    assert refused.status is LedgerStatus.REFUSED and refused.bottleneck is not None
    assert refused.bottleneck.over_by == 2.0
    assert len(ledger.reservations()) == 1


def test_a_planned_step_only_counts_from_its_time() -> None:
    ledger = _ledger([0.0])
    plan = AllocationPlan(_mem(2.0), (PlanStep(50.0, _mem(8.0), "peak"),), duration_s=100.0)
    ledger.reserve(ReservationRequest("local", RunIdentity(TaskKey("d", "a"), "r"), "h", plan, 0.0))
    assert ledger.reserve(_req("b", 7.0, duration=40.0)).ok  # fits before the step
    assert not ledger.reserve(_req("c", 3.0, start=40.0, duration=20.0)).ok  # collides with it


def test_release_early_frees_the_rest_of_the_timeline() -> None:
    ledger = _ledger([0.0])
    first = ledger.reserve(_req("a", 6.0)).reservation
    assert first is not None
    done = ledger.release(first.id, at=30.0)
    assert done.status is LedgerStatus.RELEASED and done.reservation is not None
    assert done.reservation.end == 30.0 and done.reservation.state is ReservationState.RELEASED
    assert ledger.reserve(_req("b", 6.0, start=30.0)).ok
    assert ledger.release(first.id).status is LedgerStatus.UNKNOWN  # idempotent, says so


def test_adjust_charges_the_max_of_desired_allocated_and_actual() -> None:
    ledger = _ledger([0.0])
    res = ledger.reserve(_req("a", 4.0)).reservation
    assert res is not None
    ok = ledger.adjust(res.id, 20.0, _mem(5.0), desired=_mem(6.0), actual=ResourceVector(memory_bytes=5.5))
    assert ok.status is LedgerStatus.ADJUSTED
    tl = ledger.timeline("local", 0.0, 100.0)
    assert [(p.start, p.limits.memory_bytes) for p in tl.points] == [(0.0, 4.0), (20.0, 6.0)]
    # a grow that does not fit is refused when not forced, recorded as over-commit when forced
    ledger.reserve(_req("b", 4.0))
    refused = ledger.adjust(res.id, 30.0, _mem(7.0), force=False)
    assert refused.status is LedgerStatus.REFUSED
    forced = ledger.adjust(res.id, 30.0, _mem(7.0))
    assert forced.status is LedgerStatus.OVERCOMMITTED


def test_adjust_until_restores_the_plan_afterwards() -> None:
    ledger = _ledger([0.0])
    res = ledger.reserve(_req("a", 4.0)).reservation
    assert res is not None
    ledger.adjust(res.id, 10.0, _mem(2.0), until=20.0)
    pts = ledger.timeline("local", 0.0, 100.0).points
    assert [(p.start, p.end, p.limits.memory_bytes) for p in pts] == [
        (0.0, 10.0, 4.0),
        (10.0, 20.0, 2.0),
        (20.0, 100.0, 4.0),
    ]


def test_a_holder_that_stops_renewing_loses_its_reservations() -> None:
    now = [0.0]
    ledger = _ledger(now)
    ledger.reserve(_req("a", 6.0, holder="crashed"))
    ledger.reserve(_req("b", 2.0, holder="alive"))
    now[0] = 50.0
    assert ledger.renew("alive", until=200.0) == 1
    lapsed = ledger.expire(now=70.0)
    assert [r.run.key.task_id for r in lapsed] == ["a"]
    assert lapsed[0].state is ReservationState.EXPIRED
    assert ledger.reserve(_req("c", 6.0, start=70.0)).ok


def test_a_new_holder_takes_over_a_live_reservation_of_the_same_try_only() -> None:
    now = [0.0]
    ledger = _ledger(now)
    made = ledger.reserve(_req("a", 6.0, holder="old")).reservation
    assert made is not None
    now[0] = 30.0
    other = RunIdentity(TaskKey("d", "a"), "r", 2)  # the next try: not this reservation's
    assert ledger.take_over(other, "new", until=200.0).status is LedgerStatus.UNKNOWN
    taken = ledger.take_over(made.run, "new", until=200.0)
    assert taken.status is LedgerStatus.ADJUSTED and taken.reservation is not None
    assert taken.reservation.holder == "new" and taken.reservation.timeline == made.timeline
    assert ledger.expire(now=150.0) == [] and ledger.renew("new", until=300.0) == 1
    now[0] = 400.0  # the new holder stopped renewing too: it lapses, and is not taken again
    assert ledger.take_over(made.run, "newer", until=900.0).status is LedgerStatus.UNKNOWN


def test_an_adjust_past_the_predicted_end_keeps_the_task_charged_until_then() -> None:
    now = [95.0]
    ledger = _ledger(now)
    first = ledger.reserve(_req("a", 6.0)).reservation  # predicted to end at 100 s
    assert first is not None
    result = ledger.adjust(first.id, 95.0, _mem(6.0), until=160.0)  # still running: renewed to 160 s
    assert result.reservation is not None and result.reservation.end == 160.0
    assert not ledger.reserve(_req("b", 6.0, start=120.0, duration=10.0)).ok  # the pool is still held
    assert ledger.reserve(_req("c", 6.0, start=160.0, duration=10.0)).ok
