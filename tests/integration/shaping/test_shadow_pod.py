"""The pod operator's shadow run on the process-backed emulator (containers are real processes
under cgroups): before the real pod is sized, a shadow pod of the same image and command runs with
the small shadow resources, AIRFLOW_PREDICTIVE_SHADOW=1 and a hard deadline (deleted when it is
reached); its prefix raises the real pod's plan above what was declared. A shadow the cluster
refuses leaves the declared resources. One emulator for the module."""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Any

import pytest
from kubernetes.client import models as k8s

from airflow_predictive import runtime
from airflow_predictive.core.model.quantity import parse_quantity
from airflow_predictive.core.model.resources import MIB
from airflow_predictive.core.model.runs import Outcome, RunSource, TaskKey
from airflow_predictive.emulator.kubernetes.emulator import Emulator, NodeSpec
from airflow_predictive.emulator.kubernetes.kubelet import KubeletConfig
from airflow_predictive.storage import migrate
from tests._real_parts import require_cgroups

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

pytestmark = [pytest.mark.cgroups]

HOLD = "import time\nb = bytearray(b'\\x01') * (120 << 20)\nprint('holding', flush=True)\ntime.sleep(30)\n"
DECLARED = k8s.V1ResourceRequirements(
    requests={"cpu": "200m", "memory": "64Mi"}, limits={"cpu": "1", "memory": "64Mi"}
)


class PodWatch(threading.Thread):
    """Every pod the cluster shows, when first and last seen, with its container spec."""

    def __init__(self, kubeconfig: Path) -> None:
        super().__init__(daemon=True)
        from kubernetes import client, config

        self.api = client.CoreV1Api(config.new_client_from_config(config_file=str(kubeconfig)))
        self.seen: dict[str, dict[str, Any]] = {}
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            try:
                pods = self.api.list_namespaced_pod("default").items
            except Exception:
                pods = []
            now = time.monotonic()
            for p in pods:
                entry = self.seen.setdefault(
                    p.metadata.name, {"first": now, "container": p.spec.containers[0]}
                )
                entry["last"] = now
            time.sleep(0.1)

    def stop(self) -> None:
        self._halt.set()
        self.join(5)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Emulator, Path]]:
    require_cgroups("cpu", "memory")
    em = Emulator(
        mode="process",
        kubelet=KubeletConfig(actuation_delay_s=0.5, backoff_base_s=0.5, metrics_window_s=1.0),
        nodes=(NodeSpec(cpu="4", memory="8Gi"),),
        watch_poll_s=0.05,
    ).start()
    home = tmp_path_factory.mktemp("shadow-pod")
    kubeconfig = em.write_kubeconfig(home / "kc")
    try:
        yield em, kubeconfig
    finally:
        em.stop()


@pytest.fixture(autouse=True)
def _store(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    monkeypatch.setenv("AIRFLOW__PREDICTIVE__SQL_ALCHEMY_CONN", f"sqlite:///{tmp_path / 'p.db'}")
    monkeypatch.setenv("AIRFLOW__PREDICTIVE__SHADOW_DEADLINE", "4")
    monkeypatch.setenv("AIRFLOW__PREDICTIVE__KUBERNETES_CONN_ID", "kube_emulator_unused")
    runtime.reset_runtime()
    migrate.upgrade(runtime.get_runtime().engine())
    yield
    runtime.reset_runtime()


class _TI:
    def __init__(self, task_id: str) -> None:
        self.dag_id, self.task_id, self.map_index, self.try_number = "shadow_pod", task_id, -1, 1


def _operator(kubeconfig: Path, name: str, **kwargs: Any) -> Any:
    from airflow.sdk import DAG

    from airflow_predictive.operators.kubernetes_pod import PredictiveKubernetesPodOperator

    with DAG("shadow_pod", schedule=None):
        return PredictiveKubernetesPodOperator(
            task_id=name,
            name=name,
            image="python:3.11-slim",
            cmds=["python", "-c", HOLD],
            config_file=str(kubeconfig),
            namespace="default",
            container_resources=DECLARED,
            **kwargs,
        )


def test_the_shadow_pod_runs_small_with_a_deadline_before_the_real_pod_is_sized(
    cluster: tuple[Emulator, Path],
) -> None:
    _, kubeconfig = cluster
    watch = PodWatch(kubeconfig)
    watch.start()
    op = _operator(kubeconfig, "cold")
    began = time.monotonic()
    try:
        pod = op.build_pod_request_obj({"run_id": "manual__1", "ti": _TI("cold"), "dag": op.dag})
    finally:
        watch.stop()
    took = time.monotonic() - began
    summary = op.shadow_summary
    assert summary is not None and summary["shadowed"] and summary["reason"] == "cold_start", summary
    assert summary["end"] == "budget" and summary["reforecast_stored"], summary
    [name] = [n for n in watch.seen if n.endswith("-shadow")]
    shadow = watch.seen[name]
    res = shadow["container"].resources
    assert parse_quantity(res.limits["memory"]) == 512 * MIB  # a hard limit
    assert parse_quantity(res.requests["cpu"]) == 0.5  # the backend keeps pods Burstable: CPU by request
    assert {e.name: e.value for e in shadow["container"].env}["AIRFLOW_PREDICTIVE_SHADOW"] == "1"
    assert shadow["container"].image == "python:3.11-slim"
    assert shadow["last"] - shadow["first"] < 4 + 5  # deleted at its 4 s deadline (the command holds 30 s)
    assert took < 4 + 15
    # the shadow is recorded under the real task, as a shadow run
    store = runtime.get_runtime().run_store()
    [rec] = store.runs(TaskKey("shadow_pod", "cold"), source=RunSource.SHADOW)
    assert rec.outcome is Outcome.TIMED_OUT and (rec.peak.memory_bytes or 0) >= 100 * MIB
    # the real pod is planned from the shadow's re-forecast: above the declared 64Mi
    base = pod.spec.containers[0]
    assert parse_quantity(base.resources.limits["memory"]) >= 1.25 * 100 * MIB
    assert "shadow" in op.plan_note, op.plan_note


def test_a_shadow_whose_cluster_cannot_be_reached_leaves_the_declared_resources(
    cluster: tuple[Emulator, Path], tmp_path: Path
) -> None:
    from airflow_predictive.emulator.kubernetes.emulator import write_kubeconfig
    from tests.integration.airflow_runs.airflow_env import free_port

    closed = write_kubeconfig(tmp_path / "kc", f"http://127.0.0.1:{free_port()}")  # nothing listens
    op = _operator(closed, "unreachable")
    began = time.monotonic()
    pod = op.build_pod_request_obj({"run_id": "manual__2", "ti": _TI("unreachable"), "dag": op.dag})
    assert time.monotonic() - began < 30
    summary = op.shadow_summary
    assert summary is not None and summary["end"] == "not_started", summary
    assert not summary["reforecast_stored"]
    assert pod.spec.containers[0].resources.limits["memory"] == "64Mi"  # no forecast: declared
