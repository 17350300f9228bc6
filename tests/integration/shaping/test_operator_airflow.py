"""PredictiveKubernetesPodOperator through real Airflow (`airflow dags test`) against the emulator's
process kubelet (containers are real processes under cgroups; 1.8 s actuation): the shaped pod is
resized in place mid-flight, its cgroup memory limit really changes, and it succeeds, in both
modes (non-deferrable: a worker thread shapes; deferrable: its trigger waits for the pod and
shapes it); the same ramp without shaping is OOM-killed by the kernel. No forecast exists yet, so it is sized from
its declared container_resources (the fallback) and shaping does the rest."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from airflow_predictive.core.shaping.events import Action, Verdict
from airflow_predictive.emulator.kubernetes.emulator import Emulator, NodeSpec
from airflow_predictive.emulator.kubernetes.kubelet import KubeletConfig
from airflow_predictive.emulator.kubernetes.resources import PODS
from airflow_predictive.storage.engine import engine_for
from airflow_predictive.storage.shaping_store import SqlShapingEventStore
from tests.integration.airflow_runs.airflow_env import AirflowEnv, free_port

if TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = [pytest.mark.airflow, pytest.mark.cgroups]
HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def emulator() -> Iterator[Emulator]:
    from airflow_predictive.backends.cgroups.hierarchy import detect

    layout = detect()
    if not layout.enforcing:
        pytest.skip(f"no writable cgroup hierarchy: {layout.reason}")
    em = Emulator(
        mode="process",
        kubelet=KubeletConfig(actuation_delay_s=1.8, metrics_window_s=1.0),
        nodes=(NodeSpec(cpu="4", memory="8Gi"),),
        watch_poll_s=0.05,
    ).start()
    yield em
    em.stop()


def test_operator_pod_is_resized_in_place_and_completes_unshaped_is_oom_killed(
    emulator: Emulator, tmp_path: Path
) -> None:
    kubeconfig = emulator.write_kubeconfig(tmp_path / "kc")
    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / "predictive_pod.py").symlink_to(HERE / "dags" / "predictive_pod.py")
    connection = {
        "conn_type": "kubernetes",
        "extra": {"kube_config_path": str(kubeconfig), "namespace": "default"},
    }
    env = AirflowEnv.create(
        tmp_path / "home",
        {
            "AIRFLOW_CONN_KUBE_EMULATOR": json.dumps(connection),
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
            "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
        },
        dags_folder=dags,
    )
    env.migrate()
    out = env.airflow("dags", "test", "predictive_pod", timeout=400)
    text = out.stdout + out.stderr
    with sqlite3.connect(env.home / "airflow.db") as db:
        states = dict(
            db.execute("select task_id, state from task_instance where dag_id = 'predictive_pod'").fetchall()
        )
    assert states == {"shaped": "success", "unshaped": "failed", "deferred": "success"}, text[-5000:]
    pods = {p["metadata"]["name"]: p for p in emulator.store.list(PODS, "default")[0]}
    shaped = next(p for n, p in pods.items() if n.startswith("shaped-ramp"))
    unshaped = next(p for n, p in pods.items() if n.startswith("unshaped-ramp"))
    assert shaped["metadata"]["generation"] > 1  # resized in place (pods/resize bumps generation)
    in_force = shaped["status"]["containerStatuses"][0]["resources"]["limits"]["memory"]
    assert in_force != "128Mi"
    term = unshaped["status"]["containerStatuses"][0]["state"]["terminated"]
    assert term["reason"] == "OOMKilled" and term["exitCode"] == 137
    events = SqlShapingEventStore(engine_for(env.predictive_url)).events()
    grows = [e for e in events if e.action is Action.GROW and e.verdict is Verdict.APPLIED]
    assert {e.subject.split("/")[1].split("-ramp")[0] for e in grows} == {"shaped", "deferred"}
    for mode in ("shaped", "deferred"):  # both operator modes: the real cgroup limit moved past the ramp
        assert max(e.after or 0 for e in grows if f"/{mode}-ramp" in e.subject) > 256 * 1024 * 1024
    deferred = next(p for n, p in pods.items() if n.startswith("deferred-ramp"))
    assert deferred["metadata"]["generation"] > 1
