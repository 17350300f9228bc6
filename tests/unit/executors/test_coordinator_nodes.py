"""The coordinator's admission with node pools: coming capacity read from the ledger, the start
choice (stored as kind ``start``), starting smaller at the head of the queue, and the grow wait of
a plan above present + coming capacity (a real ledger and decision log on SQLite)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pytest

from airflow_predictive.core.model.backend import Allocation
from airflow_predictive.core.model.plan import (
    AdmissionDecision,
    AllocationPlan,
    LedgerStatus,
    PlanSource,
    Pool,
    PoolCapacity,
    PoolKind,
    ReservationRequest,
)
from airflow_predictive.core.model.query import ForecastQuery, ForecastSource, ServedForecast
from airflow_predictive.core.model.resources import GIB, Metric, ResourceVector
from airflow_predictive.core.model.runs import RunIdentity, TaskKey
from airflow_predictive.core.model.series import DemandCurve, Forecast
from airflow_predictive.core.scheduling.coming import ComingCapacity
from airflow_predictive.core.scheduling.start_choice import StartDecision
from airflow_predictive.executors.coordinator import Coordinator, CoordinatorSettings
from airflow_predictive.executors.opt_in import task_settings
from airflow_predictive.storage.ledger_store import DecisionLog, SqlLedger
from tests._databases import migrated_engine

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from sqlalchemy.engine import Engine

T0 = 1_767_225_600.0
POOL = Pool("k8s:ns", PoolKind.KUBERNETES, PoolCapacity(requests=ResourceVector(memory_bytes=10 * GIB)))


class Clock:
    def __init__(self) -> None:
        self.t = T0

    def __call__(self) -> float:
        return self.t


class CpuForecasts:
    """One core (p90) and 1 GiB (p99) for 60 s."""

    def forecast_for(self, query: ForecastQuery) -> ServedForecast:
        cpu = DemandCurve(Metric.CPU_CORES, 10.0, {0.9: np.full(6, 1.0)})
        mem = DemandCurve(Metric.MEMORY_BYTES, 10.0, {0.99: np.full(6, 1.0 * GIB)})
        forecast = Forecast({Metric.CPU_CORES: cpu, Metric.MEMORY_BYTES: mem}, {0.9: 60.0}, "test")
        return ServedForecast(forecast, ForecastSource.TASK, model_version="v1")


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    with migrated_engine("sqlite", tmp_path) as e:
        yield e


def _coordinator(
    engine: Engine,
    clock: Clock,
    *,
    pool: Pool = POOL,
    grow_wait_s: float | None = None,
    forecasts: object = None,
) -> tuple[Coordinator, SqlLedger]:
    ledger = SqlLedger(engine, clock=clock)
    c = Coordinator(
        ledger=ledger,
        forecasts=forecasts,  # type: ignore[arg-type]
        pool=pool,
        holder="h1",
        settings=CoordinatorSettings(grow_wait_s=grow_wait_s),
        decisions=DecisionLog(engine),
        clock=clock,
    )
    return c, ledger


def _submit(c: Coordinator, task: str, memory: str | None = "15Gi", priority: int = 1) -> RunIdentity:
    run = RunIdentity(TaskKey("d", task), "r1")
    settings = task_settings({"predictive": {"memory": memory}} if memory else {"predictive": True})
    c.submit(task, run, settings, ForecastQuery(run.key, declared=settings.declared), priority=priority)
    return run


def _kinds(engine: Engine, run: RunIdentity) -> list[tuple[str, str]]:
    return [(r["kind"], r["decision"]) for r in DecisionLog(engine).recent(run.key)]


def test_a_task_above_present_capacity_waits_for_the_coming_node_and_starts_once_it_is_present(
    engine: Engine,
) -> None:
    clock = Clock()
    c, ledger = _coordinator(engine, clock)
    node = ComingCapacity(
        POOL.name, PoolCapacity(requests=ResourceVector(memory_bytes=16 * GIB)), T0 + 90, "node n1"
    )
    assert ledger.set_coming(POOL.name, [node])
    run = _submit(c, "big")
    assert c.admit() == []  # not the declared fallback: 15 GiB fits once the node is there
    item = c.waiting["big"]
    assert item.start is not None and item.start.decision is StartDecision.WAIT_FOR_COMING
    assert item.start.waits_for == "node n1" and item.earliest_start == pytest.approx(T0 + 90)
    clock.t += 91
    ledger.set_coming(POOL.name, [])  # the owner made it present
    c.set_capacity(Pool(POOL.name, POOL.kind, PoolCapacity(requests=ResourceVector(memory_bytes=26 * GIB))))
    (launch,) = c.admit()
    assert launch.decision is AdmissionDecision.ADMITTED
    assert ("start", "wait_for_coming") in _kinds(engine, run)


def test_without_coming_capacity_a_never_fitting_plan_still_runs_declared_at_once(engine: Engine) -> None:
    c, _ = _coordinator(engine, Clock())
    _submit(c, "big")
    (launch,) = c.admit()
    assert launch.decision is AdmissionDecision.DECLARED_FALLBACK


def test_a_growing_pool_holds_a_never_fitting_plan_for_the_grow_wait_then_runs_it_declared(
    engine: Engine,
) -> None:
    clock = Clock()
    c, _ = _coordinator(engine, clock, grow_wait_s=60.0)
    run = _submit(c, "big")
    assert c.admit() == []
    item = c.waiting["big"]
    assert item.start is not None and item.start.decision is StartDecision.NEVER_FITS
    assert item.earliest_start is None  # no start known: its warm capacity is wanted now
    clock.t += 30
    assert c.admit() == []
    clock.t += 31
    (launch,) = c.admit()
    assert launch.decision is AdmissionDecision.DECLARED_FALLBACK
    assert launch.allocation is not None and launch.allocation.limits.memory_bytes == 15 * GIB
    assert ("start", "never_fits") in _kinds(engine, run)


def test_the_head_of_the_queue_starts_now_on_a_smaller_plan_when_only_cpu_is_short(engine: Engine) -> None:
    clock = Clock()
    pool = Pool(
        "k8s:ns",
        PoolKind.KUBERNETES,
        PoolCapacity(requests=ResourceVector(cpu_cores=2, memory_bytes=10 * GIB)),
    )
    c, ledger = _coordinator(engine, clock, pool=pool, forecasts=CpuForecasts())
    other = AllocationPlan.flat(
        Allocation(requests=ResourceVector(cpu_cores=1.5)), 300.0, source=PlanSource.FORECAST, why="other"
    )
    held = ledger.reserve(
        ReservationRequest(
            pool=pool.name,
            run=RunIdentity(TaskKey("d", "o"), "r"),
            holder="x",
            plan=other,
            start=clock.t,
            lease_s=900,
        )
    )
    assert held.status is LedgerStatus.RESERVED
    run = _submit(c, "a", memory=None)
    (launch,) = c.admit()
    assert launch.decision is AdmissionDecision.ADMITTED and launch.plan is not None
    assert launch.plan.initial.requests.cpu_cores == pytest.approx(0.5)  # capped to what is free
    assert launch.plan.initial.requests.memory_bytes == pytest.approx(GIB)  # memory kept at its p99
    assert ("start", "start_smaller") in _kinds(engine, run)
