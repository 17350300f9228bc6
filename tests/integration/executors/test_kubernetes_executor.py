"""Real Airflow (`dags test --use-executor`, API server) with the PredictiveKubernetesExecutor on the
emulator's process kubelet: two tasks plan 600Mi each under a 1Gi ResourceQuota. The second waits
(QUEUED, held by admission) instead of its pod being refused by the quota, runs once the first
ends, and each worker pod carries the planned requests/limits."""

from __future__ import annotations

import json
import shutil
import sqlite3
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from airflow_predictive.core.model.quantity import parse_quantity
from airflow_predictive.core.model.runs import TaskKey
from airflow_predictive.emulator.kubernetes.resources import PODS, QUOTAS
from airflow_predictive.storage.engine import engine_for
from airflow_predictive.storage.ledger_store import DecisionLog, SqlLedger
from tests.integration.airflow_runs.airflow_env import AirflowEnv, free_port
from tests.integration.kubernetes.test_kube_airflow import POD_TEMPLATE

if TYPE_CHECKING:
    from collections.abc import Iterator

    from airflow_predictive.emulator.kubernetes.emulator import Emulator

pytestmark = [pytest.mark.airflow, pytest.mark.cgroups]

HERE = Path(__file__).resolve().parent
DAG = "predictive_k8s_quota"
MI = 1024**2


@pytest.fixture(scope="module")
def run(
    process_emulator: Emulator, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[AirflowEnv, str]]:
    home = tmp_path_factory.mktemp("airflow-k8s-predictive")
    dags = home / "dags"
    dags.mkdir()
    shutil.copy(HERE / "dags_kubernetes.py", dags / "dags_kubernetes.py")
    kubeconfig = process_emulator.write_kubeconfig(home / "kubeconfig")
    port = free_port()
    template = home / "pod_template.yaml"
    template.write_text(POD_TEMPLATE.format(home=home, dags=dags, port=port))
    quota = {
        "metadata": {"name": "predictive-q", "namespace": "default"},
        "spec": {"hard": {"requests.memory": "1Gi", "limits.memory": "1Gi"}},
    }
    process_emulator.store.create(QUOTAS, "default", quota)
    env = AirflowEnv.create(
        home,
        {
            "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
            "AIRFLOW__API__PORT": str(port),
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
            "AIRFLOW__CORE__EXECUTOR": "airflow_predictive.executors.kubernetes_executor.PredictiveKubernetesExecutor",
            "AIRFLOW__KUBERNETES_EXECUTOR__CONFIG_FILE": str(kubeconfig),
            "AIRFLOW__KUBERNETES_EXECUTOR__IN_CLUSTER": "False",
            "AIRFLOW__KUBERNETES_EXECUTOR__NAMESPACE": "default",
            "AIRFLOW__KUBERNETES_EXECUTOR__POD_TEMPLATE_FILE": str(template),
            "AIRFLOW__KUBERNETES_EXECUTOR__DELETE_WORKER_PODS": "False",
        },
    )
    env.migrate()
    env.start_api_server()
    try:
        out = env.dags_test(DAG, {})
        yield env, out.stdout + out.stderr
    finally:
        env.stop()
        process_emulator.store.delete(QUOTAS, "default", "predictive-q")


def test_the_second_task_waits_for_the_quota_instead_of_failing_and_both_succeed(
    run: tuple[AirflowEnv, str], process_emulator: Emulator
) -> None:
    env, out = run
    with sqlite3.connect(env.home / "airflow.db") as db:
        states = dict(
            db.execute("select task_id, state from task_instance where dag_id = ?", (DAG,)).fetchall()
        )
    assert states == {"pod_0": "success", "pod_1": "success"}, out[-4000:]
    log = DecisionLog(engine_for(env.predictive_url))
    decisions = {
        t: [r["decision"] for r in log.recent(TaskKey(DAG, t)) if r["kind"] == "admission"] for t in states
    }
    assert sorted(len(d) for d in decisions.values()) == [1, 2], decisions
    assert any("queued" in d for d in decisions.values())
    assert "exceeded quota" not in out
    assert SqlLedger(engine_for(env.predictive_url)).reservations() == []


def test_each_worker_pod_carries_the_planned_resources(
    run: tuple[AirflowEnv, str], process_emulator: Emulator
) -> None:
    def ours() -> list[dict]:  # type: ignore[type-arg]
        return [
            p
            for p in process_emulator.store.list(PODS, "default")[0]
            if (p["metadata"].get("labels") or {}).get("dag_id") == DAG
        ]

    # a task reports success through the API before its worker process has exited
    deadline = time.monotonic() + 60
    while any(p["status"]["phase"] == "Running" for p in ours()) and time.monotonic() < deadline:
        time.sleep(0.2)
    pods = ours()
    assert len(pods) == 2, [p["metadata"]["name"] for p in pods]
    for pod in pods:
        res = pod["spec"]["containers"][0]["resources"]
        assert (
            parse_quantity(res["requests"]["memory"]) == 600 * MI == parse_quantity(res["limits"]["memory"])
        )
        assert pod["status"]["phase"] == "Succeeded", json.dumps(pod["status"])[:500]
