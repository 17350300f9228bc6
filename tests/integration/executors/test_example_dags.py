"""Airflow's own example DAGs run unharmed with the PredictiveLocalExecutor as the default executor
and ``[predictive] default_enabled`` on: every task is planned (nothing declared, no history: it
runs unlimited, as Airflow would, in its own cgroup) and every DAG run succeeds."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import airflow
import pytest

from airflow_predictive.core.model.runs import TaskKey
from airflow_predictive.storage.engine import engine_for
from airflow_predictive.storage.ledger_store import DecisionLog, SqlLedger
from tests.integration.airflow_runs.airflow_env import AirflowEnv, assert_nothing_left_reserved

if TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = pytest.mark.airflow

EXAMPLES = Path(airflow.__file__).parent / "example_dags"
# one DAG keeps the module near a minute (make test budget); its three TaskFlow tasks pass XComs
DAGS = {"tutorial_taskflow_api": ("extract", "transform", "load")}


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[AirflowEnv, dict[str, str]]]:
    home = tmp_path_factory.mktemp("af-examples-predictive")
    dags = home / "dags"
    dags.mkdir()
    for name in DAGS:
        shutil.copy(EXAMPLES / f"{name}.py", dags / f"{name}.py")
    env = AirflowEnv.create(
        home,
        {
            "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
            "AIRFLOW__CORE__EXECUTOR": "airflow_predictive.executors.local_executor.PredictiveLocalExecutor",
            "AIRFLOW__PREDICTIVE__DEFAULT_ENABLED": "True",
        },
    )
    env.migrate()
    env.start_api_server()
    outputs = {}
    try:
        for dag_id in DAGS:
            out = env.dags_test(dag_id, {})
            outputs[dag_id] = out.stdout + out.stderr
            assert out.returncode == 0, outputs[dag_id][-4000:]
        yield env, outputs
    finally:
        env.stop()


def test_example_dags_succeed_and_every_task_was_planned_and_admitted(
    runs: tuple[AirflowEnv, dict[str, str]],
) -> None:
    env, outputs = runs
    log = DecisionLog(engine_for(env.predictive_url))
    for dag_id, tasks in DAGS.items():
        assert "DagRun Finished" in outputs[dag_id] and "state=success" in outputs[dag_id]
        for task_id in tasks:
            kinds = {(r["kind"], r["decision"]) for r in log.recent(TaskKey(dag_id, task_id))}
            assert ("plan", "unplanned") in kinds and ("admission", "admitted") in kinds, (task_id, kinds)
    assert_nothing_left_reserved(SqlLedger(engine_for(env.predictive_url)), outputs.values())
