"""SqlLedger's coming capacity on SQLite and the real PostgreSQL: stored, counted from ready_at only."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from sqlalchemy import update

from airflow_predictive.core.model.backend import Allocation
from airflow_predictive.core.model.plan import (
    AllocationPlan,
    LedgerStatus,
    PlanSource,
    Pool,
    PoolCapacity,
    PoolKind,
    ReservationRequest,
)
from airflow_predictive.core.model.resources import GIB, ResourceVector
from airflow_predictive.core.model.runs import RunIdentity, TaskKey
from airflow_predictive.core.scheduling.coming import ComingCapacity
from airflow_predictive.storage.ledger_store import SqlLedger
from airflow_predictive.storage.tables import ledger_pool

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

T0 = 1_800_000_000.0
POOL = Pool("k8s:ns", PoolKind.KUBERNETES, PoolCapacity(requests=ResourceVector(memory_bytes=8 * GIB)))
NODE = ComingCapacity(
    "k8s:ns", PoolCapacity(requests=ResourceVector(memory_bytes=16 * GIB)), T0 + 90, "node n1", "n1"
)


def _request(task: str, gib: float, start: float) -> ReservationRequest:
    plan = AllocationPlan.flat(
        Allocation.exactly(ResourceVector(memory_bytes=gib * GIB)), 300.0, source=PlanSource.FORECAST, why="t"
    )
    return ReservationRequest(
        "k8s:ns", RunIdentity(TaskKey("d", task), "r1"), "h1", plan, start, lease_s=600.0
    )


@pytest.fixture
def ledger(db_engine: Engine) -> SqlLedger:
    led = SqlLedger(db_engine, clock=lambda: T0)
    led.set_pool(POOL)
    return led


@pytest.mark.postgres
@pytest.mark.parametrize("db_engine", ["sqlite", "postgresql"], indirect=True)
def test_coming_capacity_round_trips_and_survives_a_pool_refresh(ledger: SqlLedger) -> None:
    assert ledger.set_coming("k8s:ns", [NODE])
    assert ledger.coming("k8s:ns") == (NODE,)
    ledger.set_pool(POOL)  # the capacity refresh of another writer leaves the coming capacity alone
    assert ledger.coming("k8s:ns") == (NODE,)
    assert not ledger.set_coming("no-such-pool", [])


@pytest.mark.postgres
@pytest.mark.parametrize("db_engine", ["sqlite", "postgresql"], indirect=True)
def test_reserve_fits_coming_capacity_only_once_it_is_ready(ledger: SqlLedger) -> None:
    ledger.set_coming("k8s:ns", [NODE])
    assert ledger.reserve(_request("now", 12, T0)).status is LedgerStatus.REFUSED
    assert ledger.reserve(_request("later", 12, T0 + 90)).status is LedgerStatus.RESERVED
    profile = ledger.profile("k8s:ns")
    pieces = [(0.0, 60.0, Allocation.exactly(ResourceVector(memory_bytes=12 * GIB)))]
    assert profile.earliest_start(pieces, T0) == T0 + 90  # 24 GiB from +90, 12 of them held
    assert ledger.reserve(_request("third", 12, T0 + 90)).status is LedgerStatus.RESERVED
    assert ledger.reserve(_request("fourth", 1, T0 + 120)).status is LedgerStatus.REFUSED
    assert ledger.profile("k8s:ns", with_coming=False).earliest_start(pieces, T0) is None


@pytest.mark.parametrize("db_engine", ["sqlite"], indirect=True)
def test_unreadable_coming_capacity_counts_as_nothing_coming(ledger: SqlLedger, db_engine: Engine) -> None:
    with db_engine.begin() as conn:
        conn.execute(update(ledger_pool).values(coming="{not json"))
    assert ledger.coming("k8s:ns") == ()
    assert ledger.reserve(_request("now", 4, T0)).status is LedgerStatus.RESERVED
