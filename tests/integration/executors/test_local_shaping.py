"""Real Airflow with the PredictiveLocalExecutor shaping local tasks (`airflow dags test
--use-executor`: the executor's own loop, supervised task processes in real cgroups, API server,
SQLite). One DAG, one run for the module: the same memory ramp past its 160 MiB limit completes
with shaping on (its limit grown in place, every grow stored and reserved) and is OOM-killed by the
kernel with shaping off; a task whose use drops after a busy start gets memory and CPU reclaimed,
never below its usage; nothing is left reserved and no cgroup is left behind."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from airflow_predictive.core.model.quantity import parse_quantity
from airflow_predictive.core.model.resources import MIB, Metric
from airflow_predictive.core.model.runs import Outcome, RunSource, TaskKey
from airflow_predictive.core.shaping.events import Action, ShapingEvent, Verdict
from airflow_predictive.storage.engine import engine_for
from airflow_predictive.storage.ledger_store import DecisionLog, SqlLedger
from airflow_predictive.storage.run_store import SqlRunStore
from airflow_predictive.storage.shaping_store import SqlShapingEventStore
from tests._real_parts import require_cgroups
from tests.integration.airflow_runs.airflow_env import (
    AirflowEnv,
    assert_no_cgroup_left,
    assert_nothing_left_reserved,
    wait_recorded,
)

if TYPE_CHECKING:
    from collections.abc import Iterator

    from sqlalchemy.engine import Engine

pytestmark = [pytest.mark.airflow, pytest.mark.cgroups]

HERE = Path(__file__).resolve().parent
DAG = "shaping_local"  # not predictive_*: test_local_executor.py checks no predictive_* group is left
EXECUTOR = "airflow_predictive.executors.local_executor.PredictiveLocalExecutor"
LIMIT = parse_quantity("160Mi")
MEM, CPU = Metric.MEMORY_BYTES, Metric.CPU_CORES


class Run:
    def __init__(self, env: AirflowEnv, out: str, started: float) -> None:
        self.env = env
        self.out = out
        self.started = started
        self.engine: Engine = engine_for(env.predictive_url)
        self.events = SqlShapingEventStore(self.engine).events(limit=100_000)

    def of(self, task: str) -> list[ShapingEvent]:
        return [e for e in self.events if e.run_key.startswith(f"{DAG}/{task}/")]

    def applied(self, task: str, metric: Metric, action: Action) -> list[ShapingEvent]:
        return [
            e
            for e in self.of(task)
            if e.metric is metric and e.action is action and e.verdict is Verdict.APPLIED
        ]

    def outcome(self, task: str) -> Outcome:
        runs = [
            r
            for r in SqlRunStore(self.engine).runs(TaskKey(DAG, task))
            if r.identity.source is RunSource.LISTENER
        ]
        assert runs, f"{task} was not recorded"
        return runs[-1].outcome

    def reservation(self, task: str) -> str:
        rows = DecisionLog(self.engine).recent(TaskKey(DAG, task), limit=20)
        ids = [r["payload"]["reservation"] for r in rows if r["kind"] == "admission" and r["payload"]]
        assert ids, rows
        return str(ids[0])


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    require_cgroups("memory", "cpu")  # fails in CI, skips on a machine without writable cgroups
    home = tmp_path_factory.mktemp("af-local-shaping")
    dags = home / "dags"
    dags.mkdir()
    shutil.copy(HERE / "dags" / "dags_local_shaping.py", dags / "dags_local_shaping.py")
    env = AirflowEnv.create(
        home,
        {
            "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
            "AIRFLOW__CORE__EXECUTOR": EXECUTOR,
            "AIRFLOW__PREDICTIVE__LOCAL_SHAPING_INTERVAL": "0.5",
            "AIRFLOW__PREDICTIVE__POOL_CPUS": "64",  # the pool is not under test here
        },
    )
    env.migrate()
    env.start_api_server()
    try:
        started = time.time()
        out = env.dags_test(DAG, {})  # fails: ramp_unshaped is OOM-killed, as it must be
        result = Run(env, out.stdout + out.stderr, started)
        (home / "dags-test.log").write_text(result.out)  # for a failure's post-mortem
        wait_recorded(SqlRunStore(result.engine), timeout=30)
        yield result
    finally:
        env.stop()


def test_the_ramp_completes_with_shaping_and_is_oom_killed_without(run: Run) -> None:
    assert run.outcome("ramp_shaped") is Outcome.SUCCESS, run.out[-4000:]
    assert run.outcome("ramp_unshaped") is not Outcome.SUCCESS
    assert f"{DAG}.ramp_unshaped ended in its cgroup: oom_killed" in run.out, run.out[-4000:]
    assert f"{DAG}.ramp_shaped ended in its cgroup: oom_killed" not in run.out
    assert run.of("ramp_unshaped") == []  # shaping off: nothing decided, nothing stored


def test_the_shaped_ramp_events_show_the_grows_past_its_limit(run: Run) -> None:
    grows = run.applied("ramp_shaped", MEM, Action.GROW)
    print([(round(e.t_s, 1), (e.before or 0) // MIB, (e.after or 0) // MIB, e.cause.value) for e in grows])
    assert grows, [(e.metric.value, e.action.value, e.verdict.value, e.reason) for e in run.of("ramp_shaped")]
    assert grows[0].before == pytest.approx(LIMIT)
    afters = [e.after or 0.0 for e in grows]
    used = max(e.usage or 0.0 for e in run.of("ramp_shaped"))
    assert afters == sorted(afters) and afters[-1] > max(used, 1.3 * LIMIT)
    for e in grows:  # each grow went above what the task used when it was decided
        assert e.usage is not None and e.after is not None and e.after > e.usage


def test_the_reservation_follows_every_applied_grow(run: Run) -> None:
    res = SqlLedger(run.engine).get(run.reservation("ramp_shaped"))
    assert res is not None
    charged = [p.allocation.limits.memory_bytes or 0.0 for p in res.timeline]
    grows = run.applied("ramp_shaped", MEM, Action.GROW)
    print("reserved memory MiB:", [round(c / MIB) for c in charged])
    assert charged[0] == pytest.approx(LIMIT)
    assert max(charged) >= max(e.after or 0.0 for e in grows)  # the largest grow was reserved
    assert len(set(charged)) >= 2


def test_a_task_whose_use_drops_gets_memory_and_cpu_reclaimed_never_below_usage(run: Run) -> None:
    assert run.outcome("drops") is Outcome.SUCCESS
    for metric in (MEM, CPU):
        reclaims = run.applied("drops", metric, Action.RECLAIM)
        print(metric.value, [(round(e.t_s, 1), e.before, e.after, e.usage) for e in reclaims])
        assert reclaims, [
            (e.metric.value, e.action.value, e.verdict.value, e.reason) for e in run.of("drops")
        ]
        for e in reclaims:
            assert e.after is not None and e.before is not None and e.usage is not None
            assert e.usage <= e.after < e.before
    mem = run.applied("drops", MEM, Action.RECLAIM)
    assert all((e.after or 0) >= (e.usage or 0) + 16 * MIB for e in mem)  # the memory margin floor
    res = SqlLedger(run.engine).get(run.reservation("drops"))
    assert res is not None
    charged = [p.allocation.limits.memory_bytes or 0.0 for p in res.timeline]
    assert min(charged) < charged[0]  # the reclaimed memory was given back to the pool


def test_nothing_is_left_reserved_and_no_cgroup_is_left_behind(run: Run) -> None:
    assert_nothing_left_reserved(SqlLedger(run.engine), (run.out,))
    assert_no_cgroup_left((DAG,), (run.out,), run.started)
