"""Example DAGs for Kubernetes, run against the project's API emulator with its process kubelet.

- ``kubernetes_executor_example``: a plain task; under ``[core] executor = KubernetesExecutor`` it
  runs in a worker pod (the emulator runs that pod's ``python -m airflow.sdk.execution_time.
  execute_workload ...`` as a real process, which reports back through the execution API).
- ``kubernetes_pod_example``: the plain KubernetesPodOperator of the cncf-kubernetes provider,
  through the ``kube_emulator`` connection (a ``kubernetes`` connection whose ``kube_config_path``
  is the emulator's kubeconfig; start one with ``airflow predictive kube-emulator --kubelet
  process``). ``hello_pod`` prints a few lines; ``oom_pod`` allocates past its 128Mi limit and is
  OOM-killed by the kernel, so that run fails on purpose; ``deferred_pod`` is ``hello_pod`` with
  ``deferrable=True`` (the trigger follows the pod through kubernetes_asyncio).

Why the guard: importing the KubernetesPodOperator costs seconds (the kubernetes client), and this
folder is parsed by every DAG test and scheduler here. The operator DAGs are only defined when the
provider is installed *and* the ``kube_emulator`` connection is set in the environment
(``AIRFLOW_CONN_KUBE_EMULATOR``); otherwise the file imports nothing heavy.
"""

from __future__ import annotations

import importlib.util
import os

from airflow.sdk import dag, task

CONN_ID = "kube_emulator"
RAMP = (
    "import time\n"
    "blocks = []\n"
    "for i in range(64):\n"
    "    blocks.append(bytearray(8 * 1024 * 1024))\n"
    "    print('allocated', (i + 1) * 8, 'MiB', flush=True)\n"
    "    time.sleep(0.02)\n"
)
HELLO = (
    "import os, time\n"
    "for i in range(3):\n"
    "    print('hello from the emulator pod', i, os.environ.get('GREETING'), flush=True)\n"
    "    time.sleep(0.2)\n"
)


@dag(dag_id="kubernetes_executor_example", schedule=None, catchup=False, tags=["predictive", "kubernetes"])
def kubernetes_executor_example() -> None:
    @task
    def where_am_i() -> str:
        import socket

        pod = os.environ.get("AIRFLOW_IS_K8S_EXECUTOR_POD", "")
        print(f"kubernetes executor pod: {pod!r}, host {socket.gethostname()}, pid {os.getpid()}")
        try:
            with open("/proc/self/cgroup") as f:
                memory = [line.strip() for line in f if ":memory:" in line or line.startswith("0::")]
        except OSError:
            memory = []
        print(f"task cgroup: {memory[0] if memory else 'unknown'}")
        return pod

    where_am_i()


kubernetes_executor_example()


def _operator_dags() -> None:
    from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
    from kubernetes.client import models as k8s

    def pod_task(task_id: str, script: str, memory: str, deferrable: bool = False) -> KubernetesPodOperator:
        return KubernetesPodOperator(
            deferrable=deferrable,
            poll_interval=1,
            task_id=task_id,
            name=task_id.replace("_", "-"),
            kubernetes_conn_id=CONN_ID,
            namespace="default",
            image="python:3.11-slim",
            cmds=["python", "-c"],
            arguments=[script],
            env_vars={"GREETING": "hi"},
            container_resources=k8s.V1ResourceRequirements(
                requests={"cpu": "250m", "memory": memory}, limits={"cpu": "1", "memory": memory}
            ),
            get_logs=True,
            on_finish_action="delete_pod",
            startup_timeout_seconds=60,
            retries=0,
        )

    @dag(dag_id="kubernetes_pod_example", schedule=None, catchup=False, tags=["predictive", "kubernetes"])
    def kubernetes_pod_example() -> None:
        pod_task("hello_pod", HELLO, "128Mi")
        pod_task("oom_pod", RAMP, "128Mi")  # fails on purpose: OOMKilled (137) by the kernel
        pod_task("deferred_pod", HELLO, "128Mi", deferrable=True)  # the trigger (kubernetes_asyncio) path

    kubernetes_pod_example()


if os.environ.get(f"AIRFLOW_CONN_{CONN_ID.upper()}") and importlib.util.find_spec(
    "airflow.providers.cncf.kubernetes"
):
    _operator_dags()
