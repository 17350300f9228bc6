"""Shadow run through real Airflow (`airflow dags test --use-executor`, API server, the
PredictiveLocalExecutor on real cgroups): ``ShadowRunOperator >> work`` on a cold-start task that
declared too little memory. The shadow is recorded as a run of kind ``shadow`` (the real try keeps
its own row), and the real try's plan is made from the shadow's re-forecast, so the task gets the
memory it needs and succeeds. The same DAG has a task that asks the executor for a shadow
(``shadow_run: True``, no ShadowRunOperator: the executor's pre-stage replays its bash_command) and
one whose shadow command fails (it runs on its declared resources). One Airflow run for the module."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from airflow_predictive.core.model.resources import MIB
from airflow_predictive.core.model.runs import Outcome, RunSource, TaskKey
from airflow_predictive.storage.engine import engine_for
from airflow_predictive.storage.ledger_store import DecisionLog
from airflow_predictive.storage.run_store import SqlRunStore
from airflow_predictive.storage.shadow_store import SqlShadowForecastStore
from tests._real_parts import require_cgroups
from tests.integration.airflow_runs.airflow_env import AirflowEnv, wait_recorded

if TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = [pytest.mark.airflow, pytest.mark.cgroups]

HERE = Path(__file__).resolve().parent
DAG = "predictive_shadow_local"
WORK = TaskKey(DAG, "work")
LOCAL = TaskKey(DAG, "work_local")
BAD = TaskKey(DAG, "work_bad_shadow")
EXECUTOR = "airflow_predictive.executors.local_executor.PredictiveLocalExecutor"


class Run:
    def __init__(self, env: AirflowEnv, out: str) -> None:
        self.env = env
        self.out = out
        self.engine = engine_for(env.predictive_url)
        self.store = SqlRunStore(self.engine)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    require_cgroups("memory", "cpu")
    home = tmp_path_factory.mktemp("airflow-shadow")
    dags = home / "dags"
    dags.mkdir()
    shutil.copy(HERE / "dags" / "shadow_local.py", dags / "shadow_local.py")
    env = AirflowEnv.create(home, {"AIRFLOW__CORE__EXECUTOR": EXECUTOR}, dags_folder=dags)
    env.migrate()
    env.start_api_server()
    try:
        out = env.dags_test(DAG, {})
        text = out.stdout + out.stderr
        assert out.returncode == 0, text[-4000:]
        result = Run(env, text)
        wait_recorded(result.store)
        yield result
    finally:
        env.stop()


def test_the_shadow_is_recorded_as_a_shadow_run_of_the_real_task(run: Run) -> None:
    [shadow] = run.store.runs(WORK, source=RunSource.SHADOW)
    assert shadow.outcome is Outcome.TIMED_OUT  # stopped at its 3 s deadline (the command holds 6 s)
    assert shadow.n_samples >= 3
    assert shadow.peak.memory_bytes is not None and shadow.peak.memory_bytes >= 140 * MIB
    assert shadow.declared.memory_bytes == 512 * MIB  # its small resources
    assert "core-s" in (shadow.note or "")  # its cost
    assert (shadow.duration_s or 0) < 10


def test_the_real_try_keeps_its_own_run_and_succeeds(run: Run) -> None:
    real = [r for r in run.store.runs(WORK) if r.identity.source is RunSource.LISTENER]
    assert len(real) == 1 and real[0].outcome is Outcome.SUCCESS, real
    assert real[0].identity.run_id == run.store.runs(WORK, source=RunSource.SHADOW)[0].identity.run_id


def test_the_real_trys_plan_is_made_from_the_shadows_re_forecast(run: Run) -> None:
    run_id = run.store.runs(WORK, source=RunSource.SHADOW)[0].identity.run_id
    stored = SqlShadowForecastStore(run.engine).get(WORK, run_id)
    assert stored is not None and stored.forecast.estimator == "shadow_prefix"
    plans = [r for r in DecisionLog(run.engine).recent(WORK, limit=20) if r["kind"] == "plan"]
    assert plans, "the executor made no plan"
    plan = plans[-1]["payload"]["plan"]
    assert "shadow_prefix" in plan["why"], plan["why"]
    assert plan["initial"]["limits"]["memory_bytes"] >= 150 * MIB * 1.25  # not the declared 64 MiB


def _decisions(run: Run, key: TaskKey) -> list[dict[str, Any]]:
    return list(reversed(list(DecisionLog(run.engine).recent(key, limit=50))))


def test_a_cold_local_task_asking_for_a_shadow_is_planned_from_it_without_a_shadow_operator(run: Run) -> None:
    [shadow] = run.store.runs(LOCAL, source=RunSource.SHADOW)
    assert shadow.operator == "PredictiveLocalExecutor"
    assert shadow.outcome is Outcome.TIMED_OUT  # stopped at its 5 s budget (the command holds 6 s)
    assert shadow.peak.memory_bytes is not None and shadow.peak.memory_bytes >= 140 * MIB
    assert shadow.declared.memory_bytes == 512 * MIB
    decisions = _decisions(run, LOCAL)
    held = [d for d in decisions if d["kind"] == "admission" and d["decision"] == "queued"]
    assert held and held[0]["reason"].startswith("shadow run in progress"), decisions
    plans = [d for d in decisions if d["kind"] == "plan"]
    assert len(plans) == 1 and plans[0]["id"] > held[0]["id"]  # planned once, after its shadow
    plan = plans[0]["payload"]["plan"]
    assert "shadow_prefix" in plan["why"], plan["why"]
    assert plan["initial"]["limits"]["memory_bytes"] >= 150 * MIB * 1.25  # not the declared 64 MiB
    real = [r for r in run.store.runs(LOCAL) if r.identity.source is RunSource.LISTENER]
    assert len(real) == 1 and real[0].outcome is Outcome.SUCCESS, real


def test_a_failing_shadow_command_leaves_the_task_on_its_declared_resources(run: Run) -> None:
    [shadow] = run.store.runs(BAD, source=RunSource.SHADOW)
    assert shadow.outcome is Outcome.FAILED
    assert SqlShadowForecastStore(run.engine).get(BAD, shadow.identity.run_id) is None
    decisions = _decisions(run, BAD)
    assert [d["decision"] for d in decisions if d["kind"] == "shadow"] == ["failed"]
    [plan] = [d["payload"]["plan"] for d in decisions if d["kind"] == "plan"]
    assert "shadow" not in plan["why"] and plan["initial"]["limits"]["memory_bytes"] == 256 * MIB, plan
    real = [r for r in run.store.runs(BAD) if r.identity.source is RunSource.LISTENER]
    assert len(real) == 1 and real[0].outcome is Outcome.SUCCESS, real
