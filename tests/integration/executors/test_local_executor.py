"""Real Airflow with the PredictiveLocalExecutor (`airflow dags test --use-executor`, API server,
SQLite): four tasks whose combined predicted memory is twice the pool run with two held back and
admitted later; the stored timeline never reserves more than the pool; the tasks' real cgroups
never use more than the pool; an OOM-killed try is retried from its observed peak and succeeds;
nothing is left reserved and no cgroup is left behind. One Airflow home for the module."""

from __future__ import annotations

import glob
import shutil
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest

from airflow_predictive.core.model.query import ForecastQuery
from airflow_predictive.core.model.resources import MIB, Metric, ResourceVector
from airflow_predictive.core.model.runs import Outcome, RunIdentity, RunRecord, RunSource, TaskKey
from airflow_predictive.core.model.series import ResourceSample
from airflow_predictive.core.scheduling.planner import PlanSettings, plan_from_forecast
from airflow_predictive.storage.engine import engine_for
from airflow_predictive.storage.ledger_store import DecisionLog, SqlLedger
from airflow_predictive.storage.run_store import SqlRunStore
from airflow_predictive.training.serving import StoredForecastService
from tests._real_parts import require_cgroups
from tests.integration.airflow_runs.airflow_env import (
    AirflowEnv,
    assert_no_cgroup_left,
    assert_nothing_left_reserved,
)

if TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = [pytest.mark.airflow, pytest.mark.cgroups]

HERE = Path(__file__).resolve().parent
DAG = "predictive_admission"
HOGS = [f"hog_{i}" for i in range(4)]
SEED_PEAK_MIB = 300
EXECUTOR = "airflow_predictive.executors.local_executor.PredictiveLocalExecutor"


def _seed_history(store: SqlRunStore) -> None:
    """Five earlier runs per hog: a ramp to SEED_PEAK_MIB over 8 s (what the forecast learns)."""
    t0 = datetime(2026, 11, 1, tzinfo=UTC)
    for task in HOGS:
        for i in range(5):
            start = t0 + timedelta(hours=i)
            rec = RunRecord(
                identity=RunIdentity(TaskKey(DAG, task), f"seed{i}", 1, RunSource.TRACE),
                start=start,
                end=start + timedelta(seconds=10),
                outcome=Outcome.SUCCESS,
                declared=ResourceVector(memory_bytes=1024 * MIB),
                peak=ResourceVector(memory_bytes=SEED_PEAK_MIB * MIB, cpu_cores=1.0),
            )
            pk = store.upsert_run(rec)
            samples = [
                ResourceSample(
                    float(t),
                    ResourceVector(memory_bytes=SEED_PEAK_MIB * MIB * min(1.0, (t + 1) / 8), cpu_cores=1.0),
                )
                for t in range(10)
            ]
            store.add_samples(pk, samples)


class CgroupWatch(threading.Thread):
    """Sums the memory the DAG's task cgroups really use, every 0.1 s (the pool's real usage)."""

    def __init__(self, prefix: str) -> None:
        super().__init__(daemon=True)
        self.prefix = prefix
        self.max_total = 0.0
        self.groups: set[str] = set()
        self.max_concurrent = 0
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            total, live = 0.0, 0
            for d in glob.glob(
                f"/sys/fs/cgroup/memory/**/airflow-predictive/{self.prefix}*/", recursive=True
            ):
                try:
                    usage = int(Path(d, "memory.usage_in_bytes").read_text())
                    procs = Path(d, "cgroup.procs").read_text().split()
                except OSError:
                    continue
                self.groups.add(d)
                total += usage
                live += bool(procs)
            self.max_total = max(self.max_total, total)
            self.max_concurrent = max(self.max_concurrent, live)
            time.sleep(0.1)

    def stop(self) -> None:
        self._halt.set()
        self.join(5)


class Run:
    def __init__(self, env: AirflowEnv, pool_bytes: float, plan_bytes: float, watch: CgroupWatch) -> None:
        self.env = env
        self.pool_bytes = pool_bytes
        self.plan_bytes = plan_bytes
        self.watch = watch
        self.engine = engine_for(env.predictive_url)
        self.started = time.time()
        self.admission_out = ""
        self.oom_out = ""


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    require_cgroups("memory", "cpu")  # fails in CI, skips on a machine without writable cgroups
    home = tmp_path_factory.mktemp("airflow-home")
    dags = home / "dags"
    dags.mkdir()
    shutil.copy(HERE / "dags_admission.py", dags / "dags_admission.py")
    env = AirflowEnv.create(
        home,
        {
            "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
            "AIRFLOW__CORE__EXECUTOR": EXECUTOR,
        },
    )
    env.migrate()
    engine = engine_for(env.predictive_url)
    _seed_history(SqlRunStore(engine))
    # what the executor will plan for one hog (the same service and planner, on the same history)
    served = StoredForecastService(engine).forecast_for(ForecastQuery(TaskKey(DAG, "hog_0")))
    plan = plan_from_forecast(served.forecast, declared=ResourceVector(), settings=PlanSettings()).plan
    plan_bytes = float(plan.peak().limits.memory_bytes or 0)
    assert plan_bytes >= SEED_PEAK_MIB * MIB, (served.source, served.note)
    pool_bytes = 2 * plan_bytes * 1.02  # two hogs fit, a third does not: 4 predicted = ~2x the pool
    env.env["AIRFLOW__PREDICTIVE__POOL_MEMORY"] = str(int(pool_bytes))
    env.env["AIRFLOW__PREDICTIVE__POOL_CPUS"] = "64"  # memory is the dimension under test
    env.start_api_server()
    watch = CgroupWatch(DAG)
    watch.start()
    result = Run(env, pool_bytes, plan_bytes, watch)
    try:
        out = env.dags_test(DAG, {})
        result.admission_out = out.stdout + out.stderr
        watch.stop()
        assert out.returncode == 0, result.admission_out[-4000:]
        out = env.dags_test("predictive_oom_retry", {})
        result.oom_out = out.stdout + out.stderr
        assert out.returncode == 0, result.oom_out[-4000:]
        yield result
    finally:
        watch.stop()
        env.stop()


def _admissions(run: Run, task: str) -> list[dict]:  # type: ignore[type-arg]
    rows = DecisionLog(run.engine).recent(TaskKey(DAG, task), limit=50)
    return [r for r in rows if r["kind"] == "admission"]


def test_tasks_beyond_the_pool_are_held_back_and_admitted_later(run: Run) -> None:
    waited = []
    queued = 0
    for task in HOGS:
        decisions = _admissions(run, task)
        admitted = [d for d in decisions if d["decision"] == "admitted"]
        assert len(admitted) == 1, decisions
        waited.append(admitted[0]["payload"]["waited_s"])
        queued += any(d["decision"] == "queued" for d in decisions)
    reasons = {d["reason"] for t in HOGS for d in _admissions(run, t) if d["decision"] == "queued"}
    print(f"pool {run.pool_bytes / MIB:.0f} MiB, plan {run.plan_bytes / MIB:.0f} MiB/task, waited {waited}")
    print("queued because:", *sorted(reasons)[:3], sep="\n  ")
    assert queued >= 2
    assert sorted(waited)[-2] > 1.0  # two tasks waited for the first two to finish
    assert "held back" in run.admission_out


def test_the_stored_timeline_never_reserves_more_than_the_pool(run: Run) -> None:
    ledger = SqlLedger(run.engine)
    timeline = ledger.timeline("local", run.started - 60, time.time() + 3600, include_ended=True)
    reserved = [p.limits.memory_bytes or 0.0 for p in timeline.points]
    assert reserved, "nothing was reserved"
    assert max(reserved) <= run.pool_bytes
    assert max(reserved) >= 1.9 * run.plan_bytes  # two tasks really ran side by side
    assert timeline.pool.capacity.limits.memory_bytes == pytest.approx(int(run.pool_bytes))


def test_the_tasks_real_cgroups_never_use_more_than_the_pool(run: Run) -> None:
    print(f"max real usage {run.watch.max_total / MIB:.0f} MiB of {run.pool_bytes / MIB:.0f} MiB")
    assert len(run.watch.groups) >= 4  # each hog had its own group
    assert 0 < run.watch.max_total <= run.pool_bytes
    assert run.watch.max_concurrent <= 2


def test_the_tasks_were_recorded_through_their_cgroup(run: Run) -> None:
    store = SqlRunStore(run.engine)
    for task in HOGS:
        live = [r for r in store.runs(TaskKey(DAG, task)) if r.identity.source is RunSource.LISTENER]
        assert live and live[-1].outcome is Outcome.SUCCESS
        mem = store.series(live[-1].run_pk).get(Metric.MEMORY_BYTES)  # type: ignore[arg-type]
        assert mem is not None and np.nanmax(mem) >= 150 * MIB


def test_an_oom_killed_try_is_retried_from_its_peak_and_succeeds(run: Run) -> None:
    rows = list(DecisionLog(run.engine).recent(TaskKey("predictive_oom_retry", "grows"), limit=20))
    plans = {r["try_number"]: r for r in rows if r["kind"] == "plan"}
    assert set(plans) == {1, 2}, rows
    first = plans[1]["payload"]["plan"]["initial"]["limits"]["memory_bytes"]
    retry = plans[2]["payload"]["plan"]
    assert retry["source"] == "oom_retry" and "OOM retry: peak" in retry["why"]
    assert retry["initial"]["limits"]["memory_bytes"] >= max(first + 100 * MIB, 1.2 * first)
    store = SqlRunStore(run.engine)
    tries = {r.identity.try_number: r for r in store.runs(TaskKey("predictive_oom_retry", "grows"))}
    assert tries[2].outcome is Outcome.SUCCESS
    assert tries[1].outcome is not Outcome.SUCCESS
    assert "was OOM-killed" in run.oom_out


def test_nothing_is_left_reserved_and_no_cgroup_is_left_behind(run: Run) -> None:
    assert_nothing_left_reserved(SqlLedger(run.engine), (run.admission_out, run.oom_out))
    assert_no_cgroup_left((DAG, "predictive_oom_retry"), (run.admission_out, run.oom_out), run.started)
