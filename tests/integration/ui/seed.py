"""Real rows for the UI's tests and benchmark, written through the provider's own stores.

One visible DAG (``ui_demo.transform``: tries with a memory ramp and a spike, a forecast, a
champion, a plan, shaping events, a pool and a held-back task) and one DAG the permission tests
hide (``ui_secret.hidden``). Values are chosen so a test can assert them after the round trip.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import numpy as np

from airflow_predictive.core.model.backend import Allocation
from airflow_predictive.core.model.plan import (
    AllocationPlan,
    PlanSource,
    PlanStep,
    Pool,
    PoolCapacity,
    PoolKind,
    ReservationRequest,
)
from airflow_predictive.core.model.resources import GIB, MIB, Metric, ResourceVector
from airflow_predictive.core.model.runs import Outcome, RunIdentity, RunRecord, TaskKey
from airflow_predictive.core.model.series import DemandCurve, Forecast, ResourceSample
from airflow_predictive.core.profiler.selection import CandidateScore, SelectionRecord
from airflow_predictive.core.shaping.events import Action, Cause, ShapingEvent, Verdict
from airflow_predictive.storage.ledger_store import DecisionLog, SqlLedger
from airflow_predictive.storage.profile_store import ForecastCache, ProfileStore
from airflow_predictive.storage.run_store import SqlRunStore
from airflow_predictive.storage.shaping_store import SqlShapingEventStore

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

DEMO = TaskKey("ui_demo", "transform")
SECRET = TaskKey("ui_secret", "hidden")
POOL = "ui-pool"
SPIKE_BYTES = 700 * MIB  # the one-sample spike every demo try has (must survive downsampling)
SPIKE_AT_S = 301.0
DECLARED = ResourceVector(cpu_cores=2.0, memory_bytes=1 * GIB)
FORECAST_P99_PEAK = 760 * MIB
PLAN_INITIAL = 512 * MIB
PLAN_STEP = 800 * MIB
SHAPED_TO = 900 * MIB


@dataclass(frozen=True)
class Seeded:
    latest: RunRecord  # the newest demo try (it has the plan and the shaping events)
    run_id: str
    runs: int
    samples: int


def _samples(n: int, spike: bool = True) -> list[ResourceSample]:
    out = []
    for i in range(n):
        t = float(i)
        mem = (100 + 300 * min(1.0, t / max(1.0, n * 0.8))) * MIB
        if spike and t == SPIKE_AT_S:
            mem = SPIKE_BYTES
        cpu = 0.5 + 0.5 * np.sin(t / 30.0) ** 2
        out.append(ResourceSample(t, ResourceVector(cpu_cores=float(cpu), memory_bytes=float(mem))))
    return out


def seed(engine: Engine, *, runs: int = 3, samples: int = 600, hidden: bool = True) -> Seeded:
    """Write ``runs`` demo tries of ``samples`` one-second readings each (the newest last)."""
    store = SqlRunStore(engine)
    now = datetime.now(UTC)
    base = now - timedelta(seconds=(runs - 1) * 3600 + samples + 60)  # the newest try ended a minute ago
    latest: RunRecord | None = None
    readings = _samples(samples)
    peak = ResourceVector(
        cpu_cores=max(s.usage.cpu_cores or 0.0 for s in readings),
        memory_bytes=max(s.usage.memory_bytes or 0.0 for s in readings),
    )
    for i in range(runs):
        start = base + timedelta(hours=i)
        run_id = f"scheduled__{start:%Y%m%dT%H%M%S}"
        ident = RunIdentity(DEMO, run_id, 1)
        record = RunRecord(identity=ident, start=start, declared=DECLARED, operator="PythonOperator")
        pk = store.start_run(record)
        store.add_samples(pk, readings)
        outcome = Outcome.OOM_KILLED if i == 0 and runs > 2 else Outcome.SUCCESS
        store.finish_run(pk, outcome=outcome, end=start + timedelta(seconds=samples), peak=peak)
        latest = store.get_run_by_pk(pk)
    assert latest is not None
    if hidden:
        pk = store.start_run(
            RunRecord(identity=RunIdentity(SECRET, "manual__1", 1), start=base, declared=DECLARED)
        )
        store.add_samples(pk, _samples(20, spike=False))
        store.finish_run(pk, outcome=Outcome.SUCCESS, end=base + timedelta(seconds=20), peak=DECLARED)

    steps = max(1, samples // 10)
    mem = np.linspace(150 * MIB, FORECAST_P99_PEAK * 0.8, steps)
    forecast = Forecast(
        curves={
            Metric.MEMORY_BYTES: DemandCurve(
                Metric.MEMORY_BYTES,
                10.0,
                {0.5: mem * 0.8, 0.9: mem * 0.9, 0.99: np.append(mem[:-1], FORECAST_P99_PEAK)},
            ),
            Metric.CPU_CORES: DemandCurve(
                Metric.CPU_CORES,
                10.0,
                {0.5: np.full(steps, 0.8), 0.9: np.full(steps, 1.0), 0.99: np.full(steps, 1.2)},
            ),
        },
        duration_s={0.5: float(samples), 0.9: samples * 1.1},
        estimator="scaled_curve",
    )
    ForecastCache(engine).put(DEMO, forecast, model_version="v3", explanation="champion of 3 backtest folds")
    ProfileStore(engine).record_selection(
        SelectionRecord(
            key=DEMO,
            champion="scaled_curve",
            scores=(
                CandidateScore("scaled_curve", 12, 0.042, 0.083, 0.01, 0.05),
                CandidateScore("flat_peak", 12, 0.090, 0.0, 0.0, 0.09),
            ),
            runs=runs,
            folds=3,
            reason="lowest score among 2 eligible candidates",
        ),
        model_version="v3",
    )

    ledger = SqlLedger(engine)
    ledger.set_pool(
        Pool(
            POOL,
            PoolKind.LOCAL,
            PoolCapacity(requests=ResourceVector(cpu_cores=4.0, memory_bytes=4 * GIB)),
            "test pool",
        )
    )
    plan = AllocationPlan(
        initial=Allocation.exactly(ResourceVector(cpu_cores=1.0, memory_bytes=PLAN_INITIAL)),
        steps=(
            PlanStep(
                200.0,
                Allocation.exactly(ResourceVector(cpu_cores=1.0, memory_bytes=PLAN_STEP)),
                "forecast p99 rises above the limit",
            ),
        ),
        duration_s=float(samples),
        source=PlanSource.FORECAST,
        why="memory at p99, CPU at p90 of the forecast",
        quantiles={Metric.MEMORY_BYTES: 0.99, Metric.CPU_CORES: 0.9},
        model_version="v3",
    )
    # the newest try's reservation, from its start: it shows (reserved and used) in the pool's last hour
    started = (latest.start or now).timestamp()
    result = ledger.reserve(
        ReservationRequest(pool=POOL, run=latest.identity, holder="ui-test", plan=plan, start=started)
    )
    assert result.ok, result.reason
    DecisionLog(engine).record(
        kind="admission",
        decision="queued",
        run=RunIdentity(DEMO, "queued__1", 1),
        reason="memory: needs 3.5 GiB at +0 s, 0.5 GiB free",
        pool=POOL,
    )
    DecisionLog(engine).record(
        kind="admission",
        decision="queued",
        run=RunIdentity(SECRET, "queued__2", 1),
        reason="secret",
        pool=POOL,
    )
    ident = latest.identity
    at = (latest.start or now) + timedelta(seconds=250)
    SqlShapingEventStore(engine).record(
        [
            ShapingEvent(
                at=at,
                t_s=250.0,
                subject="predictive/ui_demo",
                backend="cgroups",
                metric=Metric.MEMORY_BYTES,
                action=Action.GROW,
                cause=Cause.NEAR_LIMIT,
                verdict=Verdict.APPLIED,
                reason="usage within 10% of the limit",
                before=PLAN_STEP,
                target=SHAPED_TO,
                after=SHAPED_TO,
                usage=760 * MIB,
                predicted=700 * MIB,
                run_key=f"{DEMO.dag_id}/{DEMO.task_id}/{DEMO.map_index}/{ident.run_id}/{ident.try_number}",
            )
        ]
    )
    return Seeded(latest=latest, run_id=ident.run_id, runs=runs, samples=samples)
