"""The executor's node-pool wiring through the real HTTP API of the emulator (manual clock).

The coordinator (as the PredictiveKubernetesExecutor drives it) and ``NodeWiring`` on a real
ledger (SQLite): a task whose plan fits no Ready node waits for a node instead of falling back,
its placeholder makes one, the booting node is published as coming capacity and admission queues
the task for its ready time; once Ready the task is admitted, steered to the pool, preempts the
placeholder and runs without waiting for a node. Faults: cluster API down or 403 on NodePools ->
no steering, no placeholders, one log line, the task is admitted as before.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import pytest
from kubernetes.client import ApiClient

from airflow_predictive.backends.nodes import placeholders
from airflow_predictive.backends.nodes.backend import NodePoolBackend
from airflow_predictive.core.model.nodes import InstanceType, NodePool
from airflow_predictive.core.model.plan import AdmissionDecision
from airflow_predictive.core.model.query import ForecastQuery
from airflow_predictive.core.model.resources import GIB, ResourceVector
from airflow_predictive.core.model.runs import RunIdentity, TaskKey
from airflow_predictive.core.scheduling.start_choice import StartDecision
from airflow_predictive.emulator.kubernetes.emulator import Emulator, NodeSpec
from airflow_predictive.emulator.kubernetes.faults import FaultRule
from airflow_predictive.emulator.kubernetes.kubelet import KubeletConfig
from airflow_predictive.emulator.kubernetes.resources import PODS
from airflow_predictive.executors.coordinator import Coordinator, CoordinatorSettings
from airflow_predictive.executors.kubernetes_nodes import NodeWiring, plan_key, plan_peak, warms_for_waiting
from airflow_predictive.executors.kubernetes_pool import namespace_capacity, namespace_pool
from airflow_predictive.executors.opt_in import task_settings
from airflow_predictive.storage import migrate
from airflow_predictive.storage.engine import engine_for
from airflow_predictive.storage.ledger_store import DecisionLog, SqlLedger
from tests.integration.kubernetes.conftest import StepClock

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

DELAY_S = 90.0
EPOCH0 = 1767225600.0  # StepClock.now() at t=0
DEFAULT = InstanceType("e2-standard-4", ResourceVector(cpu_cores=4, memory_bytes=16 * GIB), 0.13)
HIGHMEM = InstanceType("n2-highmem-8", ResourceVector(cpu_cores=8, memory_bytes=64 * GIB), 0.52)
POOLS = (
    NodePool("general", (DEFAULT,), limits=ResourceVector(cpu_cores=16), provisioning_delay_s=DELAY_S),
    NodePool("highmem", (HIGHMEM,), limits=ResourceVector(cpu_cores=32), provisioning_delay_s=DELAY_S),
)
RUN = RunIdentity(TaskKey("d", "big"), "r1")


class Setup:
    def __init__(self, tmp_path: Path) -> None:
        self.clock = StepClock()
        self.em = Emulator(
            clock=self.clock,
            kubelet=KubeletConfig(start_delay_s=0.5),
            nodes=(NodeSpec(cpu="4", memory="16Gi"),),
            auto_tick=False,
            watch_poll_s=0.05,
            node_pools=POOLS,
        ).start()
        self.kubeconfig = str(self.em.write_kubeconfig(tmp_path / "kubeconfig"))
        engine = engine_for(f"sqlite:///{tmp_path / 'predictive.db'}")
        migrate.upgrade(engine)
        self.engine = engine
        self.ledger = SqlLedger(engine, clock=self.now)
        self.decisions = DecisionLog(engine)
        from kubernetes import client, config

        self.core = client.CoreV1Api(config.new_client_from_config(config_file=self.kubeconfig))

    def now(self) -> float:
        return EPOCH0 + self.clock.t

    def wiring(self, kubeconfig: str | None = None) -> NodeWiring:
        backend = NodePoolBackend.from_kubeconfig(kubeconfig or self.kubeconfig, now=self.now)
        return NodeWiring(backend, self.ledger, "k8s:default", clock=self.now)

    def coordinator(self, wiring: NodeWiring, quota: str | None = None) -> Coordinator:
        """As the executor builds it: the node bound, and a grow wait while pools are known."""
        quotas = [{"spec": {"hard": {"requests.memory": quota}}}] if quota else []
        return Coordinator(
            ledger=self.ledger,
            forecasts=None,
            pool=namespace_pool("default", namespace_capacity(quotas, nodes=wiring.node_capacity())),
            grows=lambda: wiring.node_capacity() is not None,
            holder="h1",
            settings=CoordinatorSettings(grow_wait_s=300.0),
            decisions=self.decisions,
            clock=self.now,
        )

    def pool(self, wiring: NodeWiring) -> Any:
        return namespace_pool("default", namespace_capacity([], nodes=wiring.node_capacity()))

    def advance(self, seconds: float, step: float = 0.5) -> None:
        self.em.tick()
        end = self.clock.t + seconds
        while self.clock.t < end - 1e-9:
            self.clock.t = min(end, self.clock.t + step)
            self.em.tick()

    def pods(self) -> dict[str, dict[str, Any]]:
        return {p["metadata"]["name"]: p for p in self.em.store.snapshot(PODS)}

    def placeholders(self) -> list[str]:
        return [n for n, p in self.pods().items() if placeholders.is_placeholder(p)]

    def create_from_override(self, name: str, config: dict[str, Any]) -> None:
        """The worker pod as KubernetesExecutor builds it: its base pod reconciled with our
        pod_override by Airflow's PodGenerator (labels, nodeSelector, base container resources)."""
        from airflow.providers.cncf.kubernetes.pod_generator import PodGenerator
        from kubernetes.client import models as k8s

        base = k8s.V1Pod(
            metadata=k8s.V1ObjectMeta(name=name, namespace="default", labels={"airflow-worker": "1"}),
            spec=k8s.V1PodSpec(
                restart_policy="Never", containers=[k8s.V1Container(name="base", image="python")]
            ),
        )
        pod = ApiClient().sanitize_for_serialization(
            PodGenerator.reconcile_pods(base, config["pod_override"])
        )
        self.core.create_namespaced_pod("default", pod)

    def close(self) -> None:
        self.em.stop()
        self.engine.dispose()


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[Setup]:
    s = Setup(tmp_path)
    yield s
    s.close()


def _submit(c: Coordinator, memory: str = "40Gi", cpu: float = 2) -> None:
    settings = task_settings({"predictive": {"memory": memory, "cpu": cpu}})
    c.submit("big", RUN, settings, ForecastQuery(RUN.key, declared=settings.declared), priority=1)


def _kinds(s: Setup) -> list[tuple[str, str]]:
    return [(r["kind"], r["decision"]) for r in s.decisions.recent(RUN.key)]


def test_a_task_that_needs_a_node_waits_for_the_node_its_placeholder_made_and_starts_on_it(
    setup: Setup,
) -> None:
    s = setup
    wiring = s.wiring()
    assert wiring.round().pools == 2 and wiring.node_capacity() is not None
    c = s.coordinator(wiring)
    _submit(c)
    assert c.admit() == []  # no Ready node of the pools holds 40Gi: it waits for one, not declared
    item = c.waiting["big"]
    assert item.start is not None and item.start.decision is StartDecision.NEVER_FITS
    (warm,) = warms_for_waiting(wiring, c.waiting.values(), s.now())
    assert warm.pool == "highmem" and warm.size.memory_bytes == 40 * GIB
    wiring.want([warm])
    assert wiring.round().made == 1
    s.advance(1.0)  # the emulator's autoscaler sees the Pending placeholder: a node boots
    assert wiring.round().coming == 1
    (coming,) = s.ledger.coming("k8s:default")
    assert coming.ready_at == pytest.approx(s.now() + DELAY_S, abs=2.0)
    s.clock.t += 5.0  # past the start choice's refresh interval
    assert c.admit() == []
    assert item.start is not None and item.start.decision is StartDecision.WAIT_FOR_COMING
    assert item.earliest_start == pytest.approx(coming.ready_at, abs=1.0)
    s.advance(DELAY_S)
    wiring.round()
    c.set_capacity(s.pool(wiring))  # what the executor's heartbeat does with the cached node bound
    assert s.ledger.coming("k8s:default") == ()
    (launch,) = c.admit()
    assert launch.decision is AdmissionDecision.ADMITTED and launch.plan is not None
    config = wiring.steer({}, plan_peak(launch.plan), plan_key(launch.run))
    pod = config["pod_override"]
    assert pod.spec.node_selector == {"karpenter.sh/nodepool": "highmem"}
    assert pod.metadata.labels[placeholders.PLAN_LABEL] == placeholders.plan_label(plan_key(RUN))
    from airflow_predictive.executors.kubernetes_pool import with_planned_resources

    s.create_from_override("big-worker", with_planned_resources(config, launch.allocation))
    waited = 0.0
    while s.pods()["big-worker"]["status"].get("phase") != "Running":
        s.advance(0.5)
        waited += 0.5
        assert waited < DELAY_S
    assert waited < 5.0  # preempted the placeholder on the node made for it: no boot on its path
    wiring.round()
    assert s.placeholders() == []
    nodes = [n for st in wiring.backend.pool_states() for n in st.nodes]
    assert len(nodes) == 1 and s.pods()["big-worker"]["spec"]["nodeName"] == nodes[0].name
    kinds = _kinds(s)
    assert ("start", "never_fits") in kinds and ("start", "wait_for_coming") in kinds
    assert ("admission", "admitted") in kinds


def _assert_runs_as_before(s: Setup, wiring: NodeWiring, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        first, second = wiring.round(), wiring.round()
    assert first.pools == 0 and first.error and second.error == first.error
    assert wiring.pools() == () and wiring.node_capacity() is None
    peak = ResourceVector(cpu_cores=2, memory_bytes=40 * GIB)
    assert wiring.steer({"x": 1}, peak, "p") == {"x": 1}  # no steering: default placement
    c = s.coordinator(wiring)
    _submit(c)
    (launch,) = c.admit()  # no node bound: admitted as without node pools (quota only)
    assert launch.decision is AdmissionDecision.ADMITTED and launch.plan is not None
    assert wiring.warm_for(launch.plan, plan_key(RUN), s.now()) is None  # no pool known: no placeholder
    wiring.round()
    assert s.placeholders() == []
    c = s.coordinator(wiring, quota="10Gi")
    _submit(c)  # 40Gi under a 10Gi quota never fits: declared at once, no wait for a node
    (declared,) = c.admit()
    assert declared.decision is AdmissionDecision.DECLARED_FALLBACK
    unavailable = [r for r in caplog.records if "node pools unavailable" in r.getMessage()]
    assert len(unavailable) == 1


def test_cluster_api_down_means_no_steering_no_placeholders_one_log_line(
    setup: Setup, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import re
    from pathlib import Path as _Path

    text = _Path(setup.kubeconfig).read_text()
    dead = tmp_path / "dead-kubeconfig"
    dead.write_text(re.sub(r"server: \S+", "server: http://127.0.0.1:1", text))
    wiring = setup.wiring(str(dead))
    _assert_runs_as_before(setup, wiring, caplog)


def test_forbidden_node_pools_mean_no_steering_no_placeholders_one_log_line(
    setup: Setup, caplog: pytest.LogCaptureFixture
) -> None:
    setup.em.faults.add(FaultRule(path=r"/nodepools", method="GET", status=403, times=None))
    wiring = setup.wiring()
    _assert_runs_as_before(setup, wiring, caplog)
    assert "Forbidden" in wiring.round().error


@pytest.fixture
def node_pools_on(setup: Setup, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    import json

    from airflow_predictive import runtime

    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path))
    monkeypatch.setenv("AIRFLOW__PREDICTIVE__NODE_POOLS", "True")
    monkeypatch.setenv("AIRFLOW__PREDICTIVE__KUBERNETES_CONN_ID", "emu_nodes")
    monkeypatch.setenv("AIRFLOW__PREDICTIVE__KUBERNETES_REQUEST_TIMEOUT", "3")
    body = {"conn_type": "kubernetes", "extra": {"kube_config_path": setup.kubeconfig}}
    monkeypatch.setenv("AIRFLOW_CONN_EMU_NODES", json.dumps(body))
    runtime.reset_runtime()
    yield
    runtime.reset_runtime()


def _operator_pod() -> Any:
    from kubernetes.client import models as k8s

    return k8s.V1Pod(
        metadata=k8s.V1ObjectMeta(name="op", namespace="default"),
        spec=k8s.V1PodSpec(node_selector={"disk": "ssd"}, containers=[k8s.V1Container(name="base")]),
    )


def test_the_pod_operator_steers_its_pod_to_the_pool_that_holds_its_planned_peak(
    setup: Setup, node_pools_on: None
) -> None:
    from airflow_predictive.operators.kubernetes_pod import PredictiveKubernetesPodOperator

    op = PredictiveKubernetesPodOperator(task_id="t", image="python", name="op")
    pod = _operator_pod()
    op._steer(pod, ResourceVector(cpu_cores=2, memory_bytes=40 * GIB))
    assert pod.spec.node_selector == {"disk": "ssd", "karpenter.sh/nodepool": "highmem"}
    small = _operator_pod()
    op._steer(small, ResourceVector(cpu_cores=1, memory_bytes=4 * GIB))
    assert small.spec.node_selector["karpenter.sh/nodepool"] == "general"
    setup.em.faults.add(FaultRule(path=r"/nodepools", method="GET", status=403, times=None))
    forbidden = _operator_pod()
    op._steer(forbidden, ResourceVector(cpu_cores=2, memory_bytes=40 * GIB))
    assert forbidden.spec.node_selector == {"disk": "ssd"}  # default placement, the pod runs as before


def test_nodes_unreadable_keep_steering_but_bound_nothing_and_wait_for_no_node(
    setup: Setup, caplog: pytest.LogCaptureFixture
) -> None:
    setup.em.faults.add(FaultRule(path=r"/api/v1/nodes", method="GET", status=403, times=None))
    wiring = setup.wiring()
    with caplog.at_level(logging.WARNING):
        result = wiring.round()
        wiring.round()
    assert result.pools == 2 and "Forbidden" in result.error
    assert wiring.node_capacity() is None and setup.ledger.coming("k8s:default") == ()
    config = wiring.steer({}, ResourceVector(cpu_cores=2, memory_bytes=40 * GIB), "p")
    assert config["pod_override"].spec.node_selector == {"karpenter.sh/nodepool": "highmem"}
    c = setup.coordinator(wiring, quota="10Gi")
    _submit(c)
    (declared,) = c.admit()  # no node bound known: no grow wait, declared at once as before
    assert declared.decision is AdmissionDecision.DECLARED_FALLBACK
    assert len([r for r in caplog.records if "unreadable" in r.getMessage()]) == 1
