"""The executor-agnostic coordinator on a real ledger (SQLite / PostgreSQL): plan, admit, step,
release, and the faults (database down, forecast missing or corrupt, capacity unknown, quota
changed under a running plan, an executor killed mid-plan)."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import time
from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np
import pytest
from sqlalchemy import create_engine

from airflow_predictive.core.model.backend import Allocation
from airflow_predictive.core.model.plan import (
    AdmissionDecision,
    AllocationPlan,
    PlanSource,
    PlanStep,
    Pool,
    PoolCapacity,
    PoolKind,
)
from airflow_predictive.core.model.query import ForecastQuery, ForecastSource, ServedForecast
from airflow_predictive.core.model.resources import GIB, Metric, ResourceVector
from airflow_predictive.core.model.runs import RunIdentity, TaskKey
from airflow_predictive.core.model.series import DemandCurve, Forecast
from airflow_predictive.executors.coordinator import Coordinator, CoordinatorSettings
from airflow_predictive.executors.opt_in import task_settings
from airflow_predictive.storage.ledger_store import DecisionLog, SqlLedger

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

POOL = Pool("local", PoolKind.LOCAL, PoolCapacity(limits=ResourceVector(memory_bytes=10 * GIB)))


class Forecasts:
    """A ForecastService answering a flat memory curve per task (or failing, or nothing)."""

    def __init__(self, gib: float | None = 4.0, *, fail: bool = False, corrupt: bool = False) -> None:
        self.gib, self.fail, self.corrupt = gib, fail, corrupt

    def forecast_for(self, query: ForecastQuery) -> ServedForecast:
        if self.fail:
            raise RuntimeError("model store exploded")
        if self.gib is None:
            return ServedForecast(None, ForecastSource.NONE, note="no history")
        curve = DemandCurve(Metric.MEMORY_BYTES, 10.0, {0.99: np.full(6, self.gib * GIB)})
        duration = {0.9: float("nan")} if self.corrupt else {0.9: 60.0}
        forecast = Forecast({Metric.MEMORY_BYTES: curve}, duration, "test")
        if self.corrupt:
            object.__setattr__(forecast, "curves", {Metric.MEMORY_BYTES: "not a curve"})
        return ServedForecast(forecast, ForecastSource.TASK, model_version="v1")


def _coordinator(ledger: object, forecasts: object = None, holder: str = "h1", **kw: object) -> Coordinator:
    return Coordinator(
        ledger=ledger,  # type: ignore[arg-type]
        forecasts=forecasts if forecasts is not None else Forecasts(),  # type: ignore[arg-type]
        pool=kw.pop("pool", POOL),  # type: ignore[arg-type]
        holder=holder,
        settings=CoordinatorSettings(lease_s=float(kw.pop("lease_s", 120.0))),  # type: ignore[arg-type]
        decisions=kw.pop("decisions", None),  # type: ignore[arg-type]
    )


def _submit(c: Coordinator, task: str, declared: str = "1Gi", try_number: int = 1) -> None:
    run = RunIdentity(TaskKey("d", task), "r1", try_number)
    settings = task_settings({"predictive": {"memory": declared}})
    c.submit(task, run, settings, ForecastQuery(run.key, declared=settings.declared), priority=1)


@pytest.fixture
def ledger(db_engine: Engine) -> SqlLedger:
    return SqlLedger(db_engine)


def test_tasks_beyond_the_pool_wait_and_start_when_capacity_frees(
    ledger: SqlLedger, db_engine: Engine
) -> None:
    c = _coordinator(ledger, decisions=DecisionLog(db_engine))
    for t in ("a", "b", "c"):
        _submit(c, t)
    launched = c.admit()
    assert [x.key for x in launched] == ["a", "b"] and set(c.waiting) == {"c"}
    assert all(x.plan is not None and x.plan.source is PlanSource.FORECAST for x in launched)
    for x in launched:
        c.started(x)
    assert c.admit() == []
    c.finished("a")
    [third] = c.admit()
    assert third.key == "c" and third.decision is AdmissionDecision.ADMITTED
    kinds = [(r["kind"], r["decision"]) for r in DecisionLog(db_engine).recent(TaskKey("d", "c"))]
    assert (
        ("admission", "queued") in kinds
        and ("admission", "admitted") in kinds
        and ("plan", "planned") in kinds
    )


def test_database_down_runs_the_task_on_its_declared_resources(caplog: pytest.LogCaptureFixture) -> None:
    down = SqlLedger(
        create_engine("postgresql+psycopg2://x@127.0.0.1:1/none", connect_args={"connect_timeout": 1})
    )
    c = _coordinator(down)
    _submit(c, "a", declared="3Gi")
    _submit(c, "b", declared="3Gi")
    launched = c.admit()
    assert {x.decision for x in launched} == {AdmissionDecision.DECLARED_FALLBACK}
    assert all(x.allocation is not None and x.allocation.limits.memory_bytes == 3 * GIB for x in launched)
    assert sum("declared resources" in r.message for r in caplog.records if r.levelname == "WARNING") == 1


@pytest.mark.parametrize("forecasts", [Forecasts(None), Forecasts(fail=True), Forecasts(corrupt=True)])
def test_a_missing_failing_or_corrupt_forecast_plans_the_declared_resources(
    ledger: SqlLedger, forecasts: Forecasts
) -> None:
    c = _coordinator(ledger, forecasts)
    _submit(c, "a", declared="2Gi")
    [launch] = c.admit()
    assert launch.decision is AdmissionDecision.ADMITTED
    assert launch.plan is not None and launch.plan.source is PlanSource.DECLARED
    assert launch.allocation is not None and launch.allocation.limits.memory_bytes == 2 * GIB


def test_unknown_pool_capacity_never_holds_tasks_back(ledger: SqlLedger) -> None:
    unknown = Pool("local", PoolKind.LOCAL, PoolCapacity())
    c = _coordinator(ledger, pool=unknown)
    for t in ("a", "b", "c", "d"):
        _submit(c, t)
    assert len(c.admit()) == 4


def test_a_quota_cut_under_a_running_plan_keeps_it_running_and_holds_new_tasks(ledger: SqlLedger) -> None:
    c = _coordinator(ledger)
    _submit(c, "a")
    [a] = c.admit()
    c.started(a)
    c.set_capacity(Pool("local", PoolKind.LOCAL, PoolCapacity(limits=ResourceVector(memory_bytes=5 * GIB))))
    _submit(c, "b")
    assert c.admit() == [] and "b" in c.waiting  # 4 GiB running + 4 GiB > 5 GiB: waits
    assert "a" in c.running
    c.finished("a")
    assert [x.key for x in c.admit()] == ["b"]


def test_a_plan_that_can_never_fit_runs_declared_or_fails_fast(ledger: SqlLedger) -> None:
    small = Pool("local", PoolKind.LOCAL, PoolCapacity(limits=ResourceVector(memory_bytes=2 * GIB)))
    c = _coordinator(ledger, pool=small)
    _submit(c, "a", declared="1Gi")
    [launch] = c.admit()
    assert launch.decision is AdmissionDecision.DECLARED_FALLBACK
    assert launch.allocation is not None and launch.allocation.limits.memory_bytes == 1 * GIB
    c.settings.admission = type(c.settings.admission)(fail_fast=True)
    _submit(c, "b")
    [failed] = c.admit()
    assert failed.decision is AdmissionDecision.FAILED_FAST and "never fit" in failed.reason


def test_an_oom_killed_try_plans_the_next_from_its_peak(ledger: SqlLedger) -> None:
    c = _coordinator(ledger, Forecasts(2.0))
    _submit(c, "a")
    [launch] = c.admit()
    c.started(launch)
    c.finished("a", oom_killed=True, peak=ResourceVector(memory_bytes=2 * GIB), still_rising=True)
    _submit(c, "a", try_number=2)
    [retry] = c.admit()
    assert retry.plan is not None and retry.plan.source is PlanSource.OOM_RETRY
    assert retry.allocation is not None and retry.allocation.limits.memory_bytes == 3 * GIB


def test_a_fresh_coordinator_plans_the_retry_from_the_oom_stored_by_another(db_engine: Engine) -> None:
    """The OOM kill is stored: a restarted executor (or the other one of an HA pair on the same
    database) plans the next try from its peak, not from the forecast that was killed."""
    killed = _coordinator(SqlLedger(db_engine), Forecasts(2.0), decisions=DecisionLog(db_engine))
    _submit(killed, "a")
    [launch] = killed.admit()
    killed.started(launch)
    killed.finished("a", oom_killed=True, peak=ResourceVector(memory_bytes=2 * GIB), still_rising=True)
    del killed  # its process state is gone

    fresh = _coordinator(SqlLedger(db_engine), Forecasts(2.0), holder="h2", decisions=DecisionLog(db_engine))
    assert fresh.oom == {}
    _submit(fresh, "a", try_number=2)
    [retry] = fresh.admit()
    assert retry.plan is not None and retry.plan.source is PlanSource.OOM_RETRY
    assert retry.allocation is not None and retry.allocation.limits.memory_bytes == 3 * GIB  # x1.5 rising
    assert "OOM retry: peak 2.0 GiB" in retry.plan.why
    stored = [r for r in DecisionLog(db_engine).recent(TaskKey("d", "a")) if r["kind"] == "oom"]
    assert [r["try_number"] for r in stored] == [1] and stored[0]["payload"]["still_rising"] is True


def test_a_retry_queued_before_its_killed_try_was_seen_to_end_waits_and_plans_from_the_kill(
    ledger: SqlLedger,
) -> None:
    """Airflow may queue try 2 (short retry_delay) before the executor sees try 1's pod end, where
    the OOM kill becomes known: the retry waits for that end (bounded), then plans from the kill."""
    c = _coordinator(ledger, Forecasts(2.0))
    _submit(c, "a")
    [first] = c.admit()
    c.started(first)
    run2 = RunIdentity(TaskKey("d", "a"), "r1", 2)
    settings = task_settings({"predictive": {"memory": "1Gi"}})
    c.submit("a2", run2, settings, ForecastQuery(run2.key, declared=settings.declared), priority=1)
    assert c.admit() == [] and "a2" in c.waiting  # fits, but its earlier try has not ended yet
    c.finished("a", oom_killed=True, peak=ResourceVector(memory_bytes=2 * GIB), still_rising=False)
    [retry] = c.admit()
    assert retry.key == "a2" and retry.plan is not None and retry.plan.source is PlanSource.OOM_RETRY
    assert retry.allocation is not None and retry.allocation.limits.memory_bytes == pytest.approx(2.4 * GIB)


def test_an_unreadable_stored_oom_record_plans_the_retry_from_the_forecast(
    db_engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    log = DecisionLog(db_engine)
    run = RunIdentity(TaskKey("d", "a"), "r1", 1)
    log.record(kind="oom", decision="oom_killed", run=run, reason="x", payload={"peak": "lots"})
    c = _coordinator(SqlLedger(db_engine), Forecasts(2.0), decisions=log)
    _submit(c, "a", try_number=2)
    [launch] = c.admit()
    assert launch.plan is not None and launch.plan.source is not PlanSource.OOM_RETRY
    assert "stored OOM record unreadable" in caplog.text


def test_a_short_plan_keeps_its_planned_step_reserved_across_heartbeats(ledger: SqlLedger) -> None:
    """A plan shorter than the extension window: the heartbeat's renewal must not re-charge it at
    its initial allocation (that erased the planned step from the ledger)."""
    clock = [1_000.0]
    c = _coordinator(ledger, Forecasts(1.0))
    c.clock = lambda: clock[0]
    run = RunIdentity(TaskKey("d", "short"), "r1")
    settings = task_settings({"predictive": True})
    c.submit("short", run, settings, ForecastQuery(run.key), 1)
    step = PlanStep(5.0, Allocation.exactly(ResourceVector(memory_bytes=2 * GIB)), "grows")
    plan = AllocationPlan(Allocation.exactly(ResourceVector(memory_bytes=GIB)), (step,), 20.0)
    c.waiting["short"].outcome = replace(c.waiting["short"].outcome, plan=plan)
    [launch] = c.admit()
    item = c.started(launch, handle="h")
    clock[0] += 1.0
    c.keep_alive(clock[0])
    [held] = ledger.reservations("local")
    assert [p.allocation.limits.memory_bytes for p in held.timeline] == [GIB, 2 * GIB]
    clock[0] += 5.0
    [(due, target, _why)] = c.due_steps(clock[0])
    c.step_applied(due, target, "grows", status="applied", detail="", allocated=target)
    c.keep_alive(clock[0])
    [held] = ledger.reservations("local")
    assert held.charge_at(clock[0] + 1).limits.memory_bytes == 2 * GIB and item.allocation == target


def _hold_and_die(url: str, ready: mp.synchronize.Event) -> None:  # type: ignore[name-defined]
    c = _coordinator(SqlLedger(create_engine(url)), holder="doomed", lease_s=2.0)
    _submit(c, "a", declared="1Gi")
    [launch] = c.admit()
    c.started(launch)
    ready.set()
    time.sleep(600)


def test_an_executor_killed_mid_plan_leaves_no_reservation_behind(
    ledger: SqlLedger, db_engine: Engine
) -> None:
    ledger.set_pool(POOL)
    ctx = mp.get_context("spawn")
    ready = ctx.Event()
    proc = ctx.Process(
        target=_hold_and_die, args=(db_engine.url.render_as_string(hide_password=False), ready)
    )
    proc.start()
    assert ready.wait(60)
    assert len(ledger.reservations("local")) == 1
    os.kill(proc.pid, signal.SIGKILL)  # type: ignore[arg-type]
    proc.join(10)
    time.sleep(2.5)  # its lease (2 s) runs out
    c = _coordinator(ledger, Forecasts(8.0), holder="survivor")
    _submit(c, "b")
    [launch] = c.admit()  # 8 GiB fits only once the dead executor's 4 GiB lapsed
    assert launch.decision is AdmissionDecision.ADMITTED
    assert [r.holder for r in ledger.reservations("local")] == ["survivor"]


def test_tasks_that_fit_but_have_no_free_worker_wait_unreserved(ledger: SqlLedger) -> None:
    c = _coordinator(ledger, Forecasts(1.0))
    for t in ("a", "b", "c"):
        _submit(c, t)
    assert [x.key for x in c.admit(slots=1)] == ["a"]
    assert set(c.waiting) == {"b", "c"} and len(ledger.reservations("local")) == 1
    assert c.admit(slots=0) == []
    assert len(c.admit(slots=2)) == 2


def test_a_finished_try_tells_the_forecast_service_its_task_has_a_new_run(ledger: SqlLedger) -> None:
    """The online-update hook: the service's ``run_finished`` hears of the task (no I/O there)."""

    class Listening(Forecasts):
        def __init__(self) -> None:
            super().__init__(2.0)
            self.finished: list[TaskKey] = []

        def run_finished(self, key: TaskKey) -> None:
            self.finished.append(key)

    forecasts = Listening()
    c = _coordinator(ledger, forecasts)
    _submit(c, "a")
    [launch] = c.admit()
    c.started(launch)
    assert forecasts.finished == []
    c.finished("a")
    assert forecasts.finished == [TaskKey("d", "a")]


class Thin(Forecasts):
    """A forecast of 0.5 GiB made from ``runs`` earlier runs."""

    def __init__(self, runs: int | None) -> None:
        super().__init__(0.5)
        self.runs = runs

    def forecast_for(self, query: ForecastQuery) -> ServedForecast:
        served = super().forecast_for(query)
        return ServedForecast(served.forecast, served.source, history_runs=self.runs)


@pytest.mark.parametrize(("runs", "planned_gib"), [(0, 2.0), (2, 2.0), (3, 0.5), (None, 0.5)])
def test_memory_is_never_planned_below_the_declared_value_on_a_thin_history(
    ledger: SqlLedger, runs: int | None, planned_gib: float
) -> None:
    c = _coordinator(ledger, Thin(runs))
    run = RunIdentity(TaskKey("d", "t"), "r1", 1)
    settings = task_settings({"predictive": {"memory": "2Gi"}})
    outcome = c.plan_for(run, settings, ForecastQuery(run.key, declared=settings.declared))
    assert outcome.plan.source is PlanSource.FORECAST
    limit = outcome.plan.peak().limits.memory_bytes
    assert limit is not None and limit == pytest.approx(planned_gib * GIB, rel=0.05)


def test_a_thin_history_may_still_plan_above_the_declared_value(ledger: SqlLedger) -> None:
    c = _coordinator(ledger, Thin(1))
    run = RunIdentity(TaskKey("d", "t"), "r1", 1)
    settings = task_settings({"predictive": {"memory": "256Mi"}})
    outcome = c.plan_for(run, settings, ForecastQuery(run.key, declared=settings.declared))
    assert (outcome.plan.peak().limits.memory_bytes or 0) >= 0.5 * GIB


class AtLimit(Forecasts):
    """A forecast of 0.5 GiB from 10 earlier runs, one of which reached its declared memory."""

    def forecast_for(self, query: ForecastQuery) -> ServedForecast:
        served = super().forecast_for(query)
        return ServedForecast(served.forecast, served.source, history_runs=10, limit_bound=True)


def test_a_task_whose_runs_reached_their_declared_memory_is_planned_and_shaped_at_it(
    ledger: SqlLedger,
) -> None:
    c = _coordinator(ledger, AtLimit(0.5))
    run = RunIdentity(TaskKey("d", "t"), "r1", 1)
    settings = task_settings({"predictive": {"memory": "2Gi"}})
    outcome = c.plan_for(run, settings, ForecastQuery(run.key, declared=settings.declared))
    assert outcome.plan.source is PlanSource.FORECAST
    assert outcome.plan.initial.limits.memory_bytes == pytest.approx(2 * GIB)
    assert outcome.plan.memory_floor == pytest.approx(2 * GIB)  # shaping never reclaims below it
    plain = _coordinator(ledger, Thin(10)).plan_for(
        run, settings, ForecastQuery(run.key, declared=settings.declared)
    )
    assert (plain.plan.initial.limits.memory_bytes or 0) < GIB and plain.plan.memory_floor is None


def test_a_running_task_is_extended_only_near_its_predicted_end_and_stays_charged_past_it(
    ledger: SqlLedger,
) -> None:
    clock = [1_000.0]
    c = _coordinator(ledger, Forecasts(1.0))
    c.clock = lambda: clock[0]
    run = RunIdentity(TaskKey("d", "long"), "r1")
    c.submit("long", run, task_settings({"predictive": True}), ForecastQuery(run.key), 1)
    plan = AllocationPlan(Allocation.exactly(ResourceVector(memory_bytes=GIB)), (), 40.0)
    c.waiting["long"].outcome = replace(c.waiting["long"].outcome, plan=plan)
    [launch] = c.admit()
    c.started(launch, handle="h")
    clock[0] = 1_015.0
    c.keep_alive(clock[0])
    [held] = ledger.reservations("local")
    assert held.end == pytest.approx(1_040.0, abs=1.0)  # 25 s from its end: not extended yet
    clock[0] = 1_035.0
    c.keep_alive(clock[0])
    [held] = ledger.reservations("local")
    assert held.end == pytest.approx(1_035.0 + c.settings.extend_s)
    clock[0] = 1_060.0  # past the predicted end, still running: still charged
    assert held.charge_at(clock[0]).limits.memory_bytes == GIB
