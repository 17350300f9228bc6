"""SqlLedger on SQLite and the real PostgreSQL; the race test runs real processes against one pool."""

from __future__ import annotations

import multiprocessing as mp
import time
from typing import TYPE_CHECKING

import pytest
from sqlalchemy import create_engine, text

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
from airflow_predictive.core.model.resources import GIB, Metric, ResourceVector
from airflow_predictive.core.model.runs import RunIdentity, TaskKey
from airflow_predictive.storage.engine import engine_for
from airflow_predictive.storage.ledger_store import DecisionLog, SqlLedger

if TYPE_CHECKING:
    from pathlib import Path

    from sqlalchemy.engine import Engine

CAP = 10.0 * GIB
POOL = Pool("local", PoolKind.LOCAL, PoolCapacity(limits=ResourceVector(memory_bytes=CAP, cpu_cores=4.0)))
T0 = 1_800_000_000.0


def _mem(gib: float) -> Allocation:
    return Allocation.exactly(ResourceVector(memory_bytes=gib * GIB))


def _request(
    task: str, gib: float, *, start: float = T0, duration: float = 100.0, holder: str = "h1"
) -> ReservationRequest:
    plan = AllocationPlan.flat(_mem(gib), duration, source=PlanSource.FORECAST, why="test")
    return ReservationRequest(
        "local", RunIdentity(TaskKey("d", task), "r1"), holder, plan, start, lease_s=60.0
    )


@pytest.fixture
def ledger(db_engine: Engine) -> SqlLedger:
    led = SqlLedger(db_engine, clock=lambda: T0)
    led.set_pool(POOL)
    return led


def test_pool_capacity_round_trips_and_updates(ledger: SqlLedger) -> None:
    ledger.set_pool(Pool("local", PoolKind.LOCAL, PoolCapacity(limits=ResourceVector(memory_bytes=5.0)), "x"))
    [pool] = ledger.pools()
    assert pool.capacity.limits.memory_bytes == 5.0 and pool.note == "x"
    assert pool.capacity.requests.is_empty()


def test_reserve_refuses_over_commit_and_keeps_the_plan(ledger: SqlLedger) -> None:
    plan = AllocationPlan(_mem(2), (PlanStep(50.0, _mem(6), "load"),), duration_s=100.0)
    first = ledger.reserve(
        ReservationRequest("local", RunIdentity(TaskKey("d", "a"), "r1"), "h1", plan, T0, priority=3)
    )
    assert first.status is LedgerStatus.RESERVED and first.reservation is not None
    stored = ledger.get(first.reservation.id)
    assert stored is not None and stored.plan == plan and stored.priority == 3
    assert ledger.reserve(_request("b", 7.0, duration=40.0)).ok  # before a's step
    refused = ledger.reserve(_request("c", 5.0, start=T0 + 60, duration=10.0))
    assert refused.status is LedgerStatus.REFUSED
    assert refused.bottleneck is not None and refused.bottleneck.metric is Metric.MEMORY_BYTES
    assert len(ledger.reservations("local")) == 2


def test_release_adjust_and_the_stored_timeline(ledger: SqlLedger) -> None:
    res = ledger.reserve(_request("a", 4.0)).reservation
    assert res is not None
    assert ledger.adjust(res.id, T0 + 10, _mem(6.0)).status is LedgerStatus.ADJUSTED
    done = ledger.release(res.id, at=T0 + 30)
    assert done.status is LedgerStatus.RELEASED
    assert ledger.release(res.id).status is LedgerStatus.UNKNOWN
    assert ledger.timeline("local", T0, T0 + 100).points == ()
    history = ledger.timeline("local", T0, T0 + 100, include_ended=True).points
    assert [(p.start - T0, p.end - T0, p.limits.memory_bytes) for p in history] == [
        (0.0, 10.0, 4 * GIB),
        (10.0, 30.0, 6 * GIB),
    ]


def test_a_crashed_holders_reservations_lapse(db_engine: Engine) -> None:
    now = [T0]
    ledger = SqlLedger(db_engine, clock=lambda: now[0])
    ledger.set_pool(POOL)
    assert ledger.reserve(_request("a", 8.0, holder="crashed")).ok
    assert ledger.reserve(_request("b", 1.0, holder="alive")).ok
    now[0] = T0 + 50
    assert ledger.renew("alive", until=T0 + 500) == 1
    now[0] = T0 + 70  # crashed's lease (T0+60) ended: a new reservation sees it lapse
    assert ledger.reserve(_request("c", 8.0, start=T0 + 70, holder="alive")).ok
    states = {r.run.key.task_id: r.state for r in [ledger.get(x.id) for x in ledger.reservations()] if r}
    assert states == {"b": ReservationState.ACTIVE, "c": ReservationState.ACTIVE}
    assert ledger.expire(now=T0 + 10_000) and not ledger.reservations()


def test_a_restarted_scheduler_takes_over_a_running_trys_reservation(db_engine: Engine) -> None:
    now = [T0]
    ledger = SqlLedger(db_engine, clock=lambda: now[0])
    ledger.set_pool(POOL)
    plan = AllocationPlan(_mem(2), (PlanStep(50.0, _mem(6), "load"),), duration_s=100.0)
    run = RunIdentity(TaskKey("d", "a"), "r1", 2)
    made = ledger.reserve(ReservationRequest("local", run, "old", plan, T0, lease_s=60.0)).reservation
    assert made is not None
    now[0] = T0 + 30  # the old scheduler is gone; its lease (T0+60) still runs
    taken = ledger.take_over(run, "new", until=T0 + 150)
    assert taken.status is LedgerStatus.ADJUSTED and "old" in taken.reason
    res = taken.reservation
    assert res is not None and res.id == made.id and res.holder == "new"
    assert res.plan == plan and res.start == T0 and res.expires_at == T0 + 150  # its clock, its plan
    now[0] = T0 + 100
    assert ledger.renew("old", until=T0 + 1_000) == 0 and ledger.renew("new", until=T0 + 200) == 1
    assert ledger.expire(now=T0 + 199) == []  # the new holder's lease holds it
    assert ledger.take_over(RunIdentity(TaskKey("d", "a"), "r1", 1), "new", T0 + 500).status is (
        LedgerStatus.UNKNOWN  # another try: nothing to take
    )
    assert ledger.release(made.id).ok
    assert ledger.take_over(run, "newer", T0 + 500).status is LedgerStatus.UNKNOWN  # released


def test_a_lapsed_reservation_is_not_taken_over(db_engine: Engine) -> None:
    now = [T0]
    ledger = SqlLedger(db_engine, clock=lambda: now[0])
    ledger.set_pool(POOL)
    made = ledger.reserve(_request("a", 1.0, holder="old")).reservation
    assert made is not None
    now[0] = T0 + 61  # its lease ended: the restart came too late
    assert ledger.take_over(made.run, "new", T0 + 200).status is LedgerStatus.UNKNOWN
    lapsed = ledger.get(made.id)
    assert lapsed is not None and lapsed.state is ReservationState.EXPIRED and lapsed.holder == "old"


def test_database_down_is_unavailable_not_an_exception(tmp_path: Path) -> None:
    engine = create_engine(
        "postgresql+psycopg2://nobody@127.0.0.1:1/none", connect_args={"connect_timeout": 1}
    )
    ledger = SqlLedger(engine)
    result = ledger.reserve(_request("a", 1.0))
    assert result.status is LedgerStatus.UNAVAILABLE and "unavailable" in result.reason
    assert ledger.release("x").status is LedgerStatus.UNAVAILABLE
    assert ledger.renew("h", 1.0) == 0
    assert ledger.take_over(RunIdentity(TaskKey("d", "a"), "r1"), "h", 1.0).status is LedgerStatus.UNAVAILABLE
    missing = SqlLedger(engine_for(f"sqlite:///{tmp_path / 'empty.db'}"))  # schema never migrated
    assert missing.reserve(_request("a", 1.0)).status is LedgerStatus.UNAVAILABLE


def test_decisions_are_stored(db_engine: Engine) -> None:
    log = DecisionLog(db_engine)
    run = RunIdentity(TaskKey("d", "a"), "r1", 2)
    assert log.record(
        kind="admission", decision="queued", run=run, reason="full", pool="local", payload={"x": 1}
    )
    [row] = list(log.recent(TaskKey("d", "a")))
    assert row["decision"] == "queued" and row["payload"] == {"x": 1} and row["try_number"] == 2


def test_the_latest_decision_of_a_kind_is_read_back_per_task_instance_and_try(db_engine: Engine) -> None:
    log = DecisionLog(db_engine)
    key = TaskKey("d", "a")
    for try_number, peak in ((1, 1.0), (2, 2.0)):
        run = RunIdentity(key, "r1", try_number)
        log.record(kind="oom", decision="oom_killed", run=run, reason="killed", payload={"peak": peak})
        log.record(kind="plan", decision="planned", run=run, reason="p", payload=None)
    log.record(kind="oom", decision="oom_killed", run=RunIdentity(key, "r2", 1), reason="other run")
    third = RunIdentity(key, "r1", 3)
    row = log.latest(third, kind="oom", before_try=3)
    assert row is not None and row["try_number"] == 2 and row["payload"] == {"peak": 2.0}
    second = log.latest(RunIdentity(key, "r1", 2), kind="oom", before_try=2)
    assert second is not None and second["payload"] == {"peak": 1.0}
    assert log.latest(RunIdentity(key, "r1", 1), kind="oom", before_try=1) is None
    assert log.latest(RunIdentity(TaskKey("d", "b"), "r1", 2), kind="oom") is None


def _racer(url: str, holder: str, attempts: int, go: mp.synchronize.Event, out: mp.Queue) -> None:  # type: ignore[name-defined]
    ledger = SqlLedger(create_engine(url), clock=time.time)
    go.wait(30)
    won = 0
    for i in range(attempts):
        result = ledger.reserve(_request(f"{holder}-{i}", 1.0, holder=holder, start=T0, duration=1000.0))
        won += result.status is LedgerStatus.RESERVED
        assert result.status in (LedgerStatus.RESERVED, LedgerStatus.REFUSED), result.reason
    out.put(won)


@pytest.mark.parametrize("processes", [4])
def test_racing_processes_never_over_commit_the_pool(db_engine: Engine, processes: int) -> None:
    SqlLedger(db_engine).set_pool(POOL)
    url = db_engine.url.render_as_string(hide_password=False)
    ctx = mp.get_context("spawn")
    go, out = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_racer, args=(url, f"p{i}", 8, go, out)) for i in range(processes)]
    for p in procs:
        p.start()
    time.sleep(2.0)  # let every process import and connect, then release them together
    go.set()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    won = sum(out.get(timeout=5) for _ in procs)
    assert won == 10  # 32 attempts at 1 GiB each on a 10 GiB pool: exactly 10 fit
    ledger = SqlLedger(db_engine)
    points = ledger.timeline("local", T0, T0 + 1000).points
    assert max(p.limits.memory_bytes or 0 for p in points) <= CAP
    with db_engine.connect() as conn:
        assert conn.execute(text("select count(*) from predictive_reservation")).scalar() == 10
