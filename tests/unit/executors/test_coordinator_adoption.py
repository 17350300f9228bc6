"""A restarted scheduler's executor adopts running tries (``Coordinator.adopted``) on a real ledger
(SQLite / PostgreSQL): the try's reservation is taken over with its plan and clock, steps resume
without replaying the past, and a try whose reservation is gone is reserved anew or runs on
unreserved, never refused."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from sqlalchemy import create_engine

from airflow_predictive.core.model.backend import Allocation
from airflow_predictive.core.model.plan import (
    AllocationPlan,
    PlanStep,
    Pool,
    PoolCapacity,
    PoolKind,
    ReservationRequest,
)
from airflow_predictive.core.model.query import ForecastQuery
from airflow_predictive.core.model.resources import GIB, ResourceVector
from airflow_predictive.core.model.runs import RunIdentity, TaskKey
from airflow_predictive.executors.coordinator import Coordinator, CoordinatorSettings
from airflow_predictive.executors.opt_in import task_settings
from airflow_predictive.storage.ledger_store import DecisionLog, SqlLedger
from tests.unit.executors.test_coordinator import POOL, Forecasts

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

RUN = RunIdentity(TaskKey("d", "t"), "r1", 1)
SETTINGS = task_settings({"predictive": {"memory": "1Gi"}})
QUERY = ForecastQuery(RUN.key, declared=SETTINGS.declared)


def _mem(gib: float) -> Allocation:
    return Allocation.exactly(ResourceVector(memory_bytes=gib * GIB))


STEPPED = AllocationPlan(
    _mem(1),
    (PlanStep(30.0, _mem(2), "load"), PlanStep(60.0, _mem(3), "join"), PlanStep(200.0, _mem(1), "tail")),
    duration_s=300.0,
)


def _coordinator(
    ledger: SqlLedger, holder: str, engine: Engine | None = None, pool: Pool = POOL
) -> Coordinator:
    return Coordinator(
        ledger=ledger,
        forecasts=Forecasts(),  # type: ignore[arg-type]
        pool=pool,
        holder=holder,
        settings=CoordinatorSettings(lease_s=120.0),
        decisions=None if engine is None else DecisionLog(engine),
    )


def test_the_old_reservation_is_taken_over_and_its_steps_resume_on_its_clock(db_engine: Engine) -> None:
    ledger = SqlLedger(db_engine)
    old = _coordinator(ledger, "old")  # publishes the pool
    began = time.time() - 70.0  # launched 70 s ago: "load" and "join" were due
    made = ledger.reserve(ReservationRequest(POOL.name, RUN, "old", STEPPED, began, lease_s=120.0))
    assert made.reservation is not None and old.running == {}
    new = _coordinator(ledger, "new", db_engine)
    item, forecast = new.adopted("k", RUN, SETTINGS, QUERY, handle="sel", allocation=_mem(3), started=None)
    assert item.reservation_id == made.reservation.id and item.plan == STEPPED
    assert item.started == began and item.end == began + 300.0 and item.allocation == _mem(3)
    assert forecast is not None  # the served one: what shaping would compare usage with
    [(_, target, reason)] = new.due_steps(time.time())  # the latest due step, once; "load" never
    assert reason == "join" and target == _mem(3) and new.due_steps(time.time()) == []
    held = ledger.get(made.reservation.id)
    assert held is not None and held.holder == "new" and held.expires_at > time.time() + 100
    [row] = [r for r in DecisionLog(db_engine).recent(RUN.key) if r["kind"] == "adoption"]
    assert "taken over from old" in row["reason"]
    new.finished("k")  # its end releases what was taken over
    assert ledger.reservations(POOL.name) == []


def test_a_try_whose_reservation_was_released_is_planned_and_reserved_from_its_pod_start(
    db_engine: Engine,
) -> None:
    ledger = SqlLedger(db_engine)
    new = _coordinator(ledger, "new")
    started = time.time() - 20.0
    item, _ = new.adopted("k", RUN, SETTINGS, QUERY, handle="sel", allocation=_mem(4), started=started)
    [res] = ledger.reservations(POOL.name)
    assert item.reservation_id == res.id and res.holder == "new" and res.start == started
    assert item.plan is not None and res.plan == item.plan  # planned from the forecast, now
    assert item.plan.initial.limits.memory_bytes == 4 * GIB  # Forecasts' flat 4 GiB


def test_a_full_pool_or_a_dead_ledger_leaves_the_adopted_try_running_unreserved(db_engine: Engine) -> None:
    ledger = SqlLedger(db_engine)
    tiny = Pool("local", PoolKind.LOCAL, PoolCapacity(limits=ResourceVector(memory_bytes=1 * GIB)))
    full = _coordinator(ledger, "new", pool=tiny)
    item, _ = full.adopted("k", RUN, SETTINGS, QUERY, handle="sel", allocation=_mem(4), started=None)
    assert item.reservation_id is None and "k" in full.running and ledger.reservations() == []
    assert full.finished("k") is item
    down = SqlLedger(
        create_engine("postgresql+psycopg2://x@127.0.0.1:1/none", connect_args={"connect_timeout": 1})
    )
    lost = _coordinator(down, "new")
    item, _ = lost.adopted("k", RUN, SETTINGS, QUERY, handle="sel", allocation=None, started=None)
    assert item.reservation_id is None and item.plan is not None and "k" in lost.running


def test_a_try_that_ended_while_its_executor_was_down_is_released_and_its_oom_remembered(
    db_engine: Engine,
) -> None:
    ledger = SqlLedger(db_engine)
    _coordinator(ledger, "old")
    made = ledger.reserve(
        ReservationRequest(POOL.name, RUN, "old", STEPPED, time.time() - 70.0, lease_s=120.0)
    )
    assert made.reservation is not None
    new = _coordinator(ledger, "new", db_engine)
    ended = new.ended_elsewhere("k", RUN, oom_killed=True)
    assert ended is not None and ended.reservation_id == made.reservation.id
    assert ledger.reservations(POOL.name) == [] and "k" not in new.running  # released now, not at lease end
    [oom] = [r for r in DecisionLog(db_engine).recent(RUN.key) if r["kind"] == "oom"]
    assert oom["payload"]["peak"]["memory_bytes"] == 3 * GIB  # what the ledger held at the kill ("join")
    assert new.ended_elsewhere("k", RUN) is None  # nothing left to release
