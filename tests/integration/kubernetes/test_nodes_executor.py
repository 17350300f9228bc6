"""Warm capacity made by the PredictiveKubernetesExecutor's own wiring, through real Airflow.

`airflow dags test --use-executor` runs ``prep >> big`` with the PredictiveKubernetesExecutor and
``[predictive] node_pools = True`` on the process-backed emulator (every container a real process
under its own cgroup), whose node autoscaler boots a ``highmem`` node in ``DELAY_S``. ``big`` plans
24Gi, which no Ready node holds. While ``prep`` runs, the executor sees ``big`` coming (its
upstream is running, its predicted start is prep's predicted end), makes a placeholder one boot
delay ahead, and ``big``'s pod, steered to ``highmem``, lands on the node that booted for it.
The test makes no placeholder and no node itself. ``run_scenario`` is shared with
``bench/nodes_warm_bench.py --executor`` (which compares with ``node_pools = False``).
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import pytest

from airflow_predictive.core.model.nodes import InstanceType, NodePool
from airflow_predictive.core.model.resources import GIB, ResourceVector
from airflow_predictive.emulator.kubernetes.emulator import Emulator, NodeSpec
from airflow_predictive.emulator.kubernetes.kubelet import KubeletConfig
from airflow_predictive.emulator.kubernetes.resources import NODES, PODS
from tests.integration.airflow_runs.airflow_env import AirflowEnv, free_port
from tests.integration.kubernetes.test_kube_airflow import POD_TEMPLATE

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = [
    pytest.mark.airflow,
    pytest.mark.cgroups,
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
]

DELAY_S = 8.0  # node boot; the bench uses 20 s
DAG_ID = "nodes_ahead"
DAG = """
from datetime import datetime

from airflow.sdk import dag, task


@dag(dag_id="nodes_ahead", schedule=None, start_date=datetime(2026, 1, 1), catchup=False)
def nodes_ahead():
    @task(executor_config={{"predictive": {{"memory": "256Mi", "cpu": "250m", "duration": {prep_plan_s}}}}})
    def prep():
        import time

        time.sleep({prep_s})
        return "prepared"

    @task(executor_config={{"predictive": {{"memory": "24Gi", "cpu": "1", "duration": 20}}}})
    def big(_):
        print("the big task ran", flush=True)
        return "done"

    big(prep())


nodes_ahead()
"""


def emulator(delay_s: float) -> Emulator:
    highmem = NodePool(
        "highmem",
        (InstanceType("n2-highmem-8", ResourceVector(cpu_cores=8, memory_bytes=64 * GIB), 0.52),),
        limits=ResourceVector(cpu_cores=64),
        provisioning_delay_s=delay_s,
        consolidate_after_s=None,
    )
    return Emulator(
        mode="process",
        kubelet=KubeletConfig(actuation_delay_s=0.5, backoff_base_s=0.5, metrics_window_s=2.0),
        nodes=(NodeSpec(cpu="4", memory="8Gi"),),
        watch_poll_s=0.05,
        node_pools=(highmem,),
    ).start()


@dataclass
class Seen:
    """What a 20 ms poll of the emulator's store saw: big's pod and the placeholders."""

    created: float | None = None  # epoch s
    running: float | None = None
    node: str | None = None
    nodes_at_create: set[str] = field(default_factory=set)
    ready_at_create: set[str] = field(default_factory=set)  # nodes Ready when big's pod was created
    placeholder_at: float | None = None  # first placeholder seen
    placeholders: set[str] = field(default_factory=set)
    placeholder_labels: dict[str, str] = field(default_factory=dict)
    big_labels: dict[str, str] = field(default_factory=dict)
    big_selector: dict[str, str] = field(default_factory=dict)
    big_requests: dict[str, str] = field(default_factory=dict)
    nodes: set[str] = field(default_factory=set)
    pods: dict[str, str] = field(default_factory=dict)  # every pod's last phase@node (for failures)


def _ready(node: dict[str, Any]) -> bool:
    conditions = (node.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


class Watch(threading.Thread):
    def __init__(self, em: Emulator) -> None:
        super().__init__(daemon=True)
        self.em, self.seen, self.stop = em, Seen(), threading.Event()

    def run(self) -> None:
        while not self.stop.wait(0.02):
            now = time.time()
            nodes = {n["metadata"]["name"]: n for n in self.em.store.snapshot(NODES)}
            self.seen.nodes |= set(nodes)
            for pod in self.em.store.snapshot(PODS):
                meta = pod["metadata"]
                self.seen.pods[meta["name"]] = f"{pod['status'].get('phase')}@{pod['spec'].get('nodeName')}"
                labels = meta.get("labels") or {}
                if labels.get("predictive.airflow.apache.org/role") == "placeholder":
                    if self.seen.placeholder_at is None:
                        self.seen.placeholder_at = now
                        self.seen.placeholder_labels = dict(labels)
                    self.seen.placeholders.add(meta["name"])
                    continue
                if labels.get("task_id") != "big":
                    continue
                s = self.seen
                if s.created is None:
                    s.created = now
                    s.nodes_at_create = set(nodes)
                    s.ready_at_create = {name for name, n in nodes.items() if _ready(n)}
                    s.big_labels = dict(labels)
                    s.big_selector = dict(pod["spec"].get("nodeSelector") or {})
                    s.big_requests = dict(pod["spec"]["containers"][0]["resources"].get("requests") or {})
                if s.running is None and pod["status"].get("phase") == "Running":
                    s.running, s.node = now, pod["spec"].get("nodeName")


@dataclass
class Result:
    node_pools: bool
    ok: bool
    states: dict[str, str]
    seen: Seen
    prep_end: float | None  # prep's end_date in Airflow (epoch s): when big could be queued
    output: str

    @property
    def wait_s(self) -> float | None:
        """big's pod created -> Running (its wait for capacity)."""
        s = self.seen
        return None if s.created is None or s.running is None else s.running - s.created

    @property
    def after_upstream_s(self) -> float | None:
        """prep's end (Airflow's end_date) -> big's pod Running (what the DAG run waits between the
        two tasks: Airflow's scheduling plus any wait for a node)."""
        s = self.seen
        return None if self.prep_end is None or s.running is None else s.running - self.prep_end

    def as_dict(self) -> dict[str, Any]:
        s = self.seen
        return {
            "node_pools": self.node_pools,
            "ok": self.ok,
            "wait_s": self.wait_s,
            "after_upstream_s": self.after_upstream_s,
            "node": s.node,
            "node_existed": s.node in s.nodes_at_create if s.node else False,
            "placeholder_lead_s": (s.created - s.placeholder_at)
            if s.created is not None and s.placeholder_at is not None
            else None,
            "nodes": sorted(s.nodes),
        }


def _ts(value: str | None) -> float | None:
    if not value:
        return None
    at = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return (at if at.tzinfo else at.replace(tzinfo=UTC)).timestamp()


def run_scenario(
    home: Path, *, node_pools: bool, delay_s: float = DELAY_S, prep_s: float = 10.0, prep_plan_s: float = 15.0
) -> Result:
    """One ``dags test --use-executor`` of ``prep >> big`` on a fresh emulator (see the docstring)."""
    em = emulator(delay_s)
    env: AirflowEnv | None = None
    try:
        home.mkdir(parents=True, exist_ok=True)
        dags = home / "dags"
        dags.mkdir(exist_ok=True)
        (dags / "nodes_ahead.py").write_text(DAG.format(prep_s=prep_s, prep_plan_s=prep_plan_s))
        kubeconfig = em.write_kubeconfig(home / "kubeconfig")
        port = free_port()
        template = home / "pod_template.yaml"
        template.write_text(POD_TEMPLATE.format(home=home, dags=dags, port=port))
        conn = {
            "conn_type": "kubernetes",
            "extra": {"kube_config_path": str(kubeconfig), "namespace": "default"},
        }
        env = AirflowEnv.create(
            home,
            {
                "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
                "AIRFLOW__API__PORT": str(port),
                "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
                "AIRFLOW__CORE__EXECUTOR": (
                    "airflow_predictive.executors.kubernetes_executor.PredictiveKubernetesExecutor"
                ),
                "AIRFLOW__KUBERNETES_EXECUTOR__CONFIG_FILE": str(kubeconfig),
                "AIRFLOW__KUBERNETES_EXECUTOR__IN_CLUSTER": "False",
                "AIRFLOW__KUBERNETES_EXECUTOR__NAMESPACE": "default",
                "AIRFLOW__KUBERNETES_EXECUTOR__POD_TEMPLATE_FILE": str(template),
                "AIRFLOW__KUBERNETES_EXECUTOR__DELETE_WORKER_PODS": "False",
                "AIRFLOW__PREDICTIVE__NODE_POOLS": str(node_pools),
                "AIRFLOW__PREDICTIVE__NODE_POOLS_INTERVAL": "1",
                "AIRFLOW__PREDICTIVE__KUBERNETES_CONN_ID": "kube_emulator",
                "AIRFLOW_CONN_KUBE_EMULATOR": json.dumps(conn),
            },
        )
        env.migrate()
        env.start_api_server()
        watch = Watch(em)
        watch.start()
        out = env.dags_test(DAG_ID, {})
        deadline = time.monotonic() + 10  # the watch sees the last phase change
        while watch.seen.running is None and time.monotonic() < deadline:
            time.sleep(0.1)
        watch.stop.set()
        watch.join()
        with sqlite3.connect(home / "airflow.db") as db:
            rows = db.execute(
                "select task_id, state, end_date from task_instance where dag_id = ?", (DAG_ID,)
            ).fetchall()
        states = {t: s for t, s, _ in rows}
        prep_end = next((_ts(e) for t, _, e in rows if t == "prep"), None)
        text = out.stdout + out.stderr
        return Result(
            node_pools,
            out.returncode == 0 and states == {"prep": "success", "big": "success"},
            states,
            watch.seen,
            prep_end,
            text,
        )
    finally:
        if env is not None:
            env.stop()
        em.stop()


@pytest.fixture(scope="module")
def warm(tmp_path_factory: pytest.TempPathFactory) -> Result:
    from tests.integration.kubernetes.conftest import require_cgroups

    require_cgroups()
    return run_scenario(tmp_path_factory.mktemp("nodes-ahead"), node_pools=True)


def test_the_executor_warms_a_node_ahead_and_the_big_task_lands_on_it_once_ready(warm: Result) -> None:
    s = warm.seen
    assert warm.ok, (warm.states, warm.output[-4000:])
    # the executor (nothing in this test) made a placeholder for big, before big was queued
    assert s.placeholder_at is not None and s.created is not None, warm.output[-3000:]
    assert warm.prep_end is not None and s.placeholder_at < warm.prep_end  # made while prep still ran
    assert "nodes_ahead.big.-1." in warm.output and "is coming (its upstream ends in" in warm.output
    assert s.placeholder_labels.get("predictive.airflow.apache.org/for-plan", "").startswith(
        "nodes_ahead.big."
    )
    # big's pod: steered to the pool, labelled with the same plan, planned 24Gi
    assert s.big_selector.get("karpenter.sh/nodepool") == "highmem"
    assert s.big_labels.get("predictive.airflow.apache.org/for-plan") == s.placeholder_labels.get(
        "predictive.airflow.apache.org/for-plan"
    )
    # it ran on a highmem node that already existed and was Ready when big's pod was created:
    # it did not wait for a node to boot
    assert s.node is not None and s.node.startswith("highmem"), s
    assert s.node in s.ready_at_create, s.ready_at_create
    assert [n for n in s.nodes if n.startswith("highmem")] == [s.node]  # one node, booted once
