"""Real Airflow against the emulator's process kubelet: the plain KubernetesPodOperator and the
plain KubernetesExecutor of the cncf-kubernetes provider, with nothing of this project in between.

One Airflow home (SQLite, migrated once) serves the module: ``airflow dags test`` runs the
KubernetesPodOperator DAG in-process (a pod that prints lines, a pod OOM-killed by the kernel, and
a deferrable one whose trigger runs inline through kubernetes_asyncio),
while the API server starts; then ``airflow dags test --use-executor`` with
``[core] executor = KubernetesExecutor`` sends a task to a worker pod whose
``python -m airflow.sdk.execution_time.execute_workload`` runs as a real process in its own cgroup
and reports the task's state through the execution API on loopback.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from typing import TYPE_CHECKING, Any

import pytest

from airflow_predictive.emulator.kubernetes.resources import EVENTS, PODS
from tests.integration.airflow_runs.airflow_env import AirflowEnv, free_port

if TYPE_CHECKING:
    from collections.abc import Iterator

    from airflow_predictive.emulator.kubernetes.emulator import Emulator

pytestmark = [pytest.mark.airflow, pytest.mark.cgroups]

POD_TEMPLATE = """apiVersion: v1
kind: Pod
metadata:
  name: placeholder
spec:
  restartPolicy: Never
  containers:
  - name: base
    image: python:3.11-slim
    env:
    - name: AIRFLOW_HOME
      value: {home}
    - name: AIRFLOW__CORE__DAGS_FOLDER
      value: {dags}
    - name: AIRFLOW__CORE__EXECUTION_API_SERVER_URL
      value: http://127.0.0.1:{port}/execution/
    - name: AIRFLOW__CORE__LOAD_EXAMPLES
      value: "False"
    resources:
      requests: {{cpu: 250m, memory: 512Mi}}
      limits: {{cpu: "2", memory: 2Gi}}
"""


class Run:
    def __init__(self, env: AirflowEnv, emulator: Emulator, api: threading.Thread) -> None:
        self.env, self.emulator, self.api = env, emulator, api
        self.api_error: BaseException | None = None

    def states(self, dag_id: str) -> dict[str, str]:
        with sqlite3.connect(self.env.home / "airflow.db") as db:
            rows = db.execute(
                "select task_id, state from task_instance where dag_id = ?", (dag_id,)
            ).fetchall()
        return {task: state for task, state in rows}


@pytest.fixture(scope="module")
def run(process_emulator: Emulator, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    home = tmp_path_factory.mktemp("airflow-k8s")
    kubeconfig = process_emulator.write_kubeconfig(home / "kubeconfig")
    port = free_port()
    template = home / "pod_template.yaml"
    from tests.integration.airflow_runs.airflow_env import REPO

    template.write_text(POD_TEMPLATE.format(home=home, dags=REPO / "dags", port=port))
    connection = {
        "conn_type": "kubernetes",
        "extra": {"kube_config_path": str(kubeconfig), "namespace": "default", "in_cluster": False},
    }
    env = AirflowEnv.create(
        home,
        {
            "AIRFLOW__API__PORT": str(port),
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
            "AIRFLOW__CORE__EXECUTOR": "KubernetesExecutor",
            "AIRFLOW__KUBERNETES_EXECUTOR__CONFIG_FILE": str(kubeconfig),
            "AIRFLOW__KUBERNETES_EXECUTOR__IN_CLUSTER": "False",
            "AIRFLOW__KUBERNETES_EXECUTOR__NAMESPACE": "default",
            "AIRFLOW__KUBERNETES_EXECUTOR__POD_TEMPLATE_FILE": str(template),
            "AIRFLOW__KUBERNETES_EXECUTOR__DELETE_WORKER_PODS": "False",
            "AIRFLOW_CONN_KUBE_EMULATOR": json.dumps(connection),
        },
    )
    env.migrate()
    holder: dict[str, BaseException] = {}

    def start_api() -> None:
        try:
            env.start_api_server()
        except BaseException as exc:  # reported by the test that needs the server
            holder["error"] = exc

    api = threading.Thread(target=start_api, daemon=True)
    api.start()  # comes up while the KubernetesPodOperator DAG runs (it does not need it)
    r = Run(env, process_emulator, api)
    try:
        yield r
    finally:
        api.join(timeout=150)
        env.stop()
    r.api_error = holder.get("error")


def _events(em: Emulator, pod_prefix: str) -> list[dict[str, object]]:
    return [
        e
        for e in em.store.list(EVENTS, "default")[0]
        if str(e["involvedObject"]["name"]).startswith(pod_prefix)
    ]


def test_pod_operator_streams_logs_defers_and_reports_a_real_oom_kill(run: Run) -> None:
    out = run.env.airflow("dags", "test", "kubernetes_pod_example", timeout=400)
    text = out.stdout + out.stderr
    states = run.states("kubernetes_pod_example")
    assert states == {"hello_pod": "success", "oom_pod": "failed", "deferred_pod": "success"}, text[-4000:]
    for i in range(3):
        assert f"[base] hello from the emulator pod {i} hi" in text  # the container's lines, via /log
        # deferrable=True: the trigger (kubernetes_asyncio) watched the pod, the operator read its logs
        assert f"[base] logs: hello from the emulator pod {i} hi" in text
    assert "'reason': 'OOMKilled'" in text and "'exit_code': 137" in text
    oom = [e for e in _events(run.emulator, "oom-pod") if e["reason"] == "OOMKilling"]
    assert oom and "kernel OOM killer" in str(oom[0]["message"])
    started = [e for e in _events(run.emulator, "hello-pod") if e["reason"] == "Started"]
    assert started
    # on_finish_action=delete_pod: the operator deleted both pods and the kubelet removed them
    left = [
        p
        for p in run.emulator.store.list(PODS, "default")[0]
        if "kubernetes_pod_operator" in (p["metadata"].get("labels") or {})
    ]
    assert left == [] or all(p["metadata"].get("deletionTimestamp") for p in left)


def test_kubernetes_executor_runs_the_task_in_a_process_backed_pod(run: Run) -> None:
    run.api.join(timeout=150)
    assert run.env.api is not None and run.env.api.poll() is None, "the API server did not start"
    out = run.env.dags_test("kubernetes_executor_example", {})
    assert run.states("kubernetes_executor_example") == {"where_am_i": "success"}, (out.stdout + out.stderr)[
        -4000:
    ]

    def worker_pods() -> list[dict[str, Any]]:
        return [
            p
            for p in run.emulator.store.list(PODS, "default")[0]
            if (p["metadata"].get("labels") or {}).get("kubernetes_executor") == "True"
        ]

    # the task reports success through the API before its worker process has exited
    deadline = time.monotonic() + 60
    while worker_pods() and worker_pods()[0]["status"]["phase"] == "Running" and time.monotonic() < deadline:
        time.sleep(0.2)
    pods = worker_pods()
    assert len(pods) == 1
    pod = pods[0]
    assert pod["status"]["phase"] == "Succeeded"
    base = pod["spec"]["containers"][0]
    assert base["name"] == "base" and base["args"][:3] == [
        "python",
        "-m",
        "airflow.sdk.execution_time.execute_workload",
    ]
    term = pod["status"]["containerStatuses"][0]["state"]["terminated"]
    assert term["exitCode"] == 0 and term["reason"] == "Completed"
    logs = list((run.env.home / "logs").rglob("attempt=1.log"))
    task_log = "\n".join(p.read_text() for p in logs if "kubernetes_executor_example" in str(p))
    assert "kubernetes executor pod: 'True'" in task_log
    # the worker reported the outcome itself, through the API server's execution API
    api_log = (run.env.home / "api-server.log").read_text()
    assert "new_state=success" in api_log and "execution_api" in api_log
    assert "/airflow-predictive/kube-default-" in task_log  # the task process ran in the pod's cgroup
