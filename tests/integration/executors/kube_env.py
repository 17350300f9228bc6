"""What the PredictiveKubernetesExecutor modules share: an Airflow home whose executor runs worker
pods on the emulator's process kubelet, a namespace quota, the seeded history of a stepped task,
and a watch of the pods' real cgroup limits."""

from __future__ import annotations

import shutil
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow_predictive.core.model.resources import MIB, ResourceVector
from airflow_predictive.core.model.runs import Outcome, RunIdentity, RunRecord, RunSource
from airflow_predictive.core.model.series import ResourceSample
from airflow_predictive.emulator.kubernetes.resources import QUOTAS
from tests.integration.airflow_runs.airflow_env import AirflowEnv, free_port
from tests.integration.kubernetes.test_kube_airflow import POD_TEMPLATE

if TYPE_CHECKING:
    from airflow_predictive.core.model.runs import TaskKey
    from airflow_predictive.emulator.kubernetes.emulator import Emulator
    from airflow_predictive.storage.run_store import SqlRunStore

HERE = Path(__file__).resolve().parent
EXECUTOR = "airflow_predictive.executors.kubernetes_executor.PredictiveKubernetesExecutor"


def executor_env(
    emulator: Emulator, home: Path, dag_file: str, quota_memory: str, extra: dict[str, str]
) -> AirflowEnv:
    """``home`` with ``dag_file`` (from this folder) as its only DAG, the executor on ``emulator``'s
    cluster (kubeconfig, pod template, worker pods kept), and a ResourceQuota ``test-q`` of
    ``quota_memory`` (requests and limits) in the namespace; ``extra``: more Airflow settings."""
    dags = home / "dags"
    dags.mkdir()
    shutil.copy(HERE / dag_file, dags / dag_file)
    kubeconfig = emulator.write_kubeconfig(home / "kubeconfig")
    port = free_port()
    template = home / "pod_template.yaml"
    template.write_text(POD_TEMPLATE.format(home=home, dags=dags, port=port))
    quota = {
        "metadata": {"name": "test-q", "namespace": "default"},
        "spec": {"hard": {"requests.memory": quota_memory, "limits.memory": quota_memory}},
    }
    emulator.store.create(QUOTAS, "default", quota)
    return AirflowEnv.create(
        home,
        {
            "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
            "AIRFLOW__API__PORT": str(port),
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
            "AIRFLOW__CORE__EXECUTOR": EXECUTOR,
            "AIRFLOW__KUBERNETES_EXECUTOR__CONFIG_FILE": str(kubeconfig),
            "AIRFLOW__KUBERNETES_EXECUTOR__IN_CLUSTER": "False",
            "AIRFLOW__KUBERNETES_EXECUTOR__NAMESPACE": "default",
            "AIRFLOW__KUBERNETES_EXECUTOR__POD_TEMPLATE_FILE": str(template),
            "AIRFLOW__KUBERNETES_EXECUTOR__DELETE_WORKER_PODS": "False",
            **extra,
        },
    )


def drop_quota(emulator: Emulator) -> None:
    emulator.store.delete(QUOTAS, "default", "test-q")


def seed_stepped(
    store: SqlRunStore, task: TaskKey, low_mib: int, high_mib: int, step_at_s: int, length_s: int = 20
) -> None:
    """Five earlier runs of ``task``: ``low_mib`` for ``step_at_s`` seconds, then ``high_mib``."""
    t0 = datetime(2026, 11, 1, tzinfo=UTC)
    for i in range(5):
        start = t0 + timedelta(hours=i)
        rec = RunRecord(
            identity=RunIdentity(task, f"seed{i}", 1, RunSource.TRACE),
            start=start,
            end=start + timedelta(seconds=length_s),
            outcome=Outcome.SUCCESS,
            peak=ResourceVector(memory_bytes=high_mib * MIB, cpu_cores=0.5),
        )
        pk = store.upsert_run(rec)
        store.add_samples(
            pk,
            [
                ResourceSample(
                    float(t),
                    ResourceVector(
                        memory_bytes=(low_mib if t < step_at_s else high_mib) * MIB, cpu_cores=0.5
                    ),
                )
                for t in range(length_s)
            ],
        )


class CgroupWatch(threading.Thread):
    """The memory limit and peak of every container cgroup the process kubelet made for pods named
    ``prefix...``, every 0.1 s, straight from the cgroup files (what the kernel enforces)."""

    def __init__(self, emulator: Emulator, prefix: str) -> None:
        super().__init__(daemon=True)
        self.kubelet: Any = emulator.kubelet
        self.prefix = prefix
        self.limits: dict[str, list[int]] = {}  # pod name -> distinct memory limits, in order seen
        self.peaks: dict[str, int] = {}
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            try:
                runtimes = list(self.kubelet.pods.values())
            except RuntimeError:  # changed while copied: next round
                runtimes = []
            for rt in runtimes:
                group = getattr(rt.containers.get("base"), "group", None)
                folder = None if group is None else group.dirs.get("memory")
                if not rt.name.startswith(self.prefix) or folder is None:
                    continue
                try:
                    limit = int(Path(folder, "memory.limit_in_bytes").read_text())
                    peak = int(Path(folder, "memory.max_usage_in_bytes").read_text())
                except (OSError, ValueError):
                    continue
                seen = self.limits.setdefault(rt.name, [])
                if not seen or seen[-1] != limit:
                    seen.append(limit)
                self.peaks[rt.name] = max(peak, self.peaks.get(rt.name, 0))
            time.sleep(0.1)

    def stop(self) -> None:
        self._halt.set()
        self.join(5)
