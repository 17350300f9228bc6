"""Node pools through the real HTTP API: the node-pool backend on the emulator (manual clock).

The done-when of issue 15 at the API level: a task whose predicted peak needs a new node starts
without waiting for it when placeholders were provisioned ahead from its plan, and waits the
provisioning delay without them; a shaped pod (do-not-disrupt) is never consolidated away.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

from airflow_predictive.backends.nodes import placeholders
from airflow_predictive.backends.nodes.backend import Mechanism, NodePoolBackend
from airflow_predictive.backends.nodes.disruption import set_protected
from airflow_predictive.core.model.backend import Allocation, ExitKind, ProvisionSpec
from airflow_predictive.core.model.nodes import InstanceType, NodePool, NodeState, WarmCapacity
from airflow_predictive.core.model.resources import GIB, ResourceVector
from airflow_predictive.emulator.kubernetes.emulator import Emulator, NodeSpec
from airflow_predictive.emulator.kubernetes.kubelet import KubeletConfig
from airflow_predictive.emulator.kubernetes.resources import PODS as _PODS
from tests.integration.kubernetes.conftest import StepClock

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

DELAY_S = 90.0  # GKE's documented 80-120 s; the clock is manual, so tests do not wait for it
EPOCH0 = 1767225600.0  # StepClock.now() at t=0 (2026-01-01T00:00:00Z)
DEFAULT = InstanceType("e2-standard-4", ResourceVector(cpu_cores=4, memory_bytes=16 * GIB), 0.13)
HIGHMEM = InstanceType("n2-highmem-8", ResourceVector(cpu_cores=8, memory_bytes=64 * GIB), 0.52)
PEAK = ResourceVector(cpu_cores=2, memory_bytes=40 * GIB)  # fits no default node

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


class Cluster:
    def __init__(self, tmp_path: Path, consolidate_after_s: float | None = 30.0) -> None:
        self.clock = StepClock()
        pools = (
            NodePool(
                "general", (DEFAULT,), limits=ResourceVector(cpu_cores=16), provisioning_delay_s=DELAY_S
            ),
            NodePool(
                "highmem",
                (HIGHMEM,),
                limits=ResourceVector(cpu_cores=32),
                provisioning_delay_s=DELAY_S,
                consolidate_after_s=consolidate_after_s,
            ),
        )
        self.em = Emulator(
            clock=self.clock,
            kubelet=KubeletConfig(start_delay_s=0.5),
            nodes=(NodeSpec(cpu="4", memory="16Gi"),),
            auto_tick=False,
            watch_poll_s=0.05,
            node_pools=pools,
        ).start()
        kubeconfig = self.em.write_kubeconfig(tmp_path / "kubeconfig")
        self.backend = NodePoolBackend.from_kubeconfig(str(kubeconfig), now=lambda: EPOCH0 + self.clock.t)
        from kubernetes import client, config

        self.core = client.CoreV1Api(config.new_client_from_config(config_file=str(kubeconfig)))

    def advance(self, seconds: float, step: float = 0.5) -> None:
        self.em.tick()
        end = self.clock.t + seconds
        while self.clock.t < end - 1e-9:
            self.clock.t = min(end, self.clock.t + step)
            self.em.tick()

    def create_task_pod(self, name: str, peak: ResourceVector, plan: str, **spec: Any) -> None:
        size = placeholders.quantities_of(peak)
        body = {
            "metadata": {"name": name, "labels": {placeholders.PLAN_LABEL: placeholders.plan_label(plan)}},
            "spec": {
                "restartPolicy": "Never",
                "containers": [
                    {"name": "base", "image": "python", "resources": {"requests": size, "limits": size}}
                ],
                **spec,
            },
        }
        self.core.create_namespaced_pod("default", body)

    def pod(self, name: str) -> dict[str, Any] | None:
        pods = {p["metadata"]["name"]: p for p in self.em.store.snapshot(_PODS)}
        return pods.get(name)

    def seconds_until_running(self, name: str, limit_s: float = 300.0) -> float:
        start = self.clock.t
        while self.clock.t - start < limit_s:
            pod = self.pod(name)
            if pod is not None and pod["status"].get("phase") == "Running":
                return self.clock.t - start
            self.advance(0.5)
        raise AssertionError(f"{name} not running after {limit_s} s")

    def close(self) -> None:
        self.backend.close()
        self.em.stop()


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(tmp_path)
    yield c
    c.close()


def test_pools_and_their_coming_nodes_are_read_through_the_api(cluster: Cluster) -> None:
    pools = {p.name: p for p in cluster.backend.pools()}
    assert set(pools) == {"general", "highmem"}
    assert pools["highmem"].instance_types[0].allocatable == HIGHMEM.allocatable
    assert pools["highmem"].provisioning_delay_s == DELAY_S and pools["highmem"].limits.cpu_cores == 32
    assert cluster.backend.mechanism() is Mechanism.PLACEHOLDERS  # no CapacityBuffer API served
    cluster.create_task_pod("t", PEAK, "plan-a", nodeSelector={"karpenter.sh/nodepool": "highmem"})
    cluster.advance(1.0)
    (state,) = [s for s in cluster.backend.pool_states() if s.pool.name == "highmem"]
    (node,) = state.nodes
    assert node.state is NodeState.PROVISIONING and state.coming.memory_bytes == 64 * GIB
    assert node.ready_at == pytest.approx(EPOCH0 + 0.5 + DELAY_S, abs=1.0)
    assert state.present.memory_bytes == 0
    cluster.advance(DELAY_S)
    (state,) = [s for s in cluster.backend.pool_states() if s.pool.name == "highmem"]
    assert state.nodes[0].state is NodeState.READY and state.present.memory_bytes == 64 * GIB
    assert cluster.backend.capacity().allocated.memory_bytes == PEAK.memory_bytes


def test_steering_picks_the_pool_whose_node_holds_the_peak(cluster: Cluster) -> None:
    choice = cluster.backend.steer(PEAK)
    assert choice is not None and choice.pool.name == "highmem"
    small = cluster.backend.steer(ResourceVector(cpu_cores=1, memory_bytes=4 * GIB))
    assert small is not None and small.pool.name == "general"
    assert cluster.backend.steer(ResourceVector(memory_bytes=512 * GIB)) is None
    spec = placeholders.steer({"nodeSelector": {"disk": "ssd"}}, choice.pool.name)
    assert spec["nodeSelector"] == {"disk": "ssd", "karpenter.sh/nodepool": "highmem"}


def test_warm_capacity_lets_the_task_start_without_waiting_for_its_node(cluster: Cluster) -> None:
    start_at = EPOCH0 + 120.0  # the plan: the task starts in 120 s with PEAK
    choice = cluster.backend.steer(PEAK)
    assert choice is not None
    warm = WarmCapacity(
        choice.pool.name, PEAK, ready_by=start_at, expires_at=start_at + 600, for_plan="run-1"
    )
    assert cluster.backend.provision_due([warm]) == []  # too early: 120 s > delay + margin
    cluster.advance(20.0)
    (handle,) = cluster.backend.provision_due([warm])
    assert cluster.backend.state(handle).reason == "pending: node coming"
    cluster.advance(100.0)  # t = 120: the node booted while the task was not there yet
    assert cluster.backend.state(handle).kind is ExitKind.RUNNING
    cluster.create_task_pod("task", PEAK, "run-1", nodeSelector={"karpenter.sh/nodepool": "highmem"})
    waited = cluster.seconds_until_running("task")
    assert waited < 5.0  # preempted the placeholder: no provisioning delay on the task's path
    assert cluster.backend.state(handle).kind is ExitKind.GONE
    assert len([n for s in cluster.backend.pool_states() for n in s.nodes]) == 1  # no second node


def test_without_warm_capacity_the_same_task_waits_the_provisioning_delay(cluster: Cluster) -> None:
    cluster.advance(120.0)
    cluster.create_task_pod("task", PEAK, "run-1", nodeSelector={"karpenter.sh/nodepool": "highmem"})
    waited = cluster.seconds_until_running("task")
    assert waited >= DELAY_S


def test_placeholders_go_when_the_real_pod_lands_elsewhere_or_the_plan_lapses(cluster: Cluster) -> None:
    small = ResourceVector(cpu_cores=0.5, memory_bytes=GIB)
    a = WarmCapacity("general", small, ready_by=EPOCH0, expires_at=EPOCH0 + 60, for_plan="lapses")
    b = WarmCapacity("general", small, ready_by=EPOCH0, expires_at=EPOCH0 + 600, for_plan="lands")
    cluster.backend.warm(a)
    cluster.backend.warm(b)
    cluster.backend.warm(b)  # idempotent
    cluster.advance(1.0)
    assert len(cluster.backend.placeholders()) == 2
    cluster.create_task_pod("real", small, "lands")  # fits the default node: no preemption
    cluster.advance(1.0)
    assert cluster.backend.settle() == 1
    assert [p["metadata"]["labels"][placeholders.PLAN_LABEL] for p in cluster.backend.placeholders()] == [
        "lapses"
    ]
    cluster.advance(60.0)
    assert cluster.backend.settle() == 1 and cluster.backend.placeholders() == []


def test_provision_through_the_backend_interface_and_release(cluster: Cluster) -> None:
    spec = ProvisionSpec(name="plan-x")
    handle = cluster.backend.provision(spec, Allocation.exactly(PEAK))
    cluster.advance(1.0)
    pod = cluster.pod(handle.ref)
    assert pod is not None and pod["spec"]["nodeSelector"] == {"karpenter.sh/nodepool": "highmem"}
    assert pod["spec"]["priority"] == -1 and pod["spec"]["containers"][0]["image"].startswith(
        "registry.k8s.io/pause"
    )
    cluster.backend.release(handle)
    cluster.backend.release(handle)  # idempotent
    cluster.advance(0.5)
    assert cluster.backend.state(handle).kind is ExitKind.GONE


def test_a_shaped_pod_is_never_consolidated_away_while_it_runs(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path, consolidate_after_s=10.0)
    highmem = {"nodeSelector": {"karpenter.sh/nodepool": "highmem"}}
    try:
        for name in ("a", "b"):
            cluster.create_task_pod(name, ResourceVector(cpu_cores=1, memory_bytes=30 * GIB), name, **highmem)
        cluster.advance(DELAY_S + 5)
        # no room next to a and b: c gets a second node; once b ends, c would fit next to a, so
        # c's node is underused and a consolidation candidate
        cluster.create_task_pod("c", ResourceVector(cpu_cores=1, memory_bytes=20 * GIB), "c", **highmem)
        cluster.advance(DELAY_S + 5)
        node_a, node_c = (cluster.pod(n)["spec"]["nodeName"] for n in ("a", "c"))  # type: ignore[index]
        assert node_a != node_c
        for name in ("a", "c"):  # both shaped: what the pod shaper does when it adopts a pod
            assert set_protected(cluster.core, "default", name, on=True)
        cluster.core.delete_namespaced_pod("b", "default", grace_period_seconds=0)
        cluster.advance(60.0)
        pod = cluster.pod("c")
        assert pod is not None and pod["status"]["phase"] == "Running" and pod["spec"]["nodeName"] == node_c
        assert set_protected(cluster.core, "default", "c", on=False)  # c's shaping ended
        annotations = cluster.pod("c")["metadata"].get("annotations") or {}  # type: ignore[index]
        assert "karpenter.sh/do-not-disrupt" not in annotations
        cluster.advance(30.0)
        assert cluster.pod("c") is None  # unprotected: consolidation evicts it (the contrast)
        assert cluster.pod("a")["spec"]["nodeName"] == node_a  # type: ignore[index]
        names = {n.name for s in cluster.backend.pool_states() for n in s.nodes}
        assert names == {node_a}
    finally:
        cluster.close()


def test_the_pod_shaper_protects_the_pods_it_shapes_until_shaping_ends(tmp_path: Path) -> None:
    import json

    from airflow_predictive.backends.kubernetes.backend import KubernetesPodBackend
    from airflow_predictive.backends.kubernetes.settings import KubernetesSettings
    from airflow_predictive.core.model.resources import MIB, Metric
    from airflow_predictive.core.shaping.policy import ShapingSettings
    from airflow_predictive.emulator.kubernetes.workload import WORKLOAD_ANNOTATION
    from airflow_predictive.triggers.pod_shaper import PodShaper, PodTarget

    cluster = Cluster(tmp_path)
    try:
        kubeconfig = str(tmp_path / "kubeconfig")
        pods = KubernetesPodBackend.from_kubeconfig(
            kubeconfig,
            settings=KubernetesSettings(backoff_base_s=0.05),
            clock=cluster.clock,
            sleep=cluster.advance,
        )
        workload = {"points": [{"t": 0, "cpu": 0.1, "memory": "64Mi"}], "duration": 5}
        spec = ProvisionSpec(
            name="shaped-1",
            image="python:3.11-slim",
            command=("python", "-c", "pass"),
            annotations={WORKLOAD_ANNOTATION: json.dumps(workload)},
        )
        vec = ResourceVector(cpu_cores=0.5, memory_bytes=256 * MIB)
        handle = pods.provision(spec, Allocation(vec, vec))
        cluster.advance(1.0)
        shaper = PodShaper(
            PodTarget(selector=f"predictive.airflow.apache.org/task={handle.name}", container="task"),
            ShapingSettings(metrics=(Metric.MEMORY_BYTES,)),
            backend=pods,
            clock=cluster.clock,
        )
        shaper.round()
        annotations = cluster.pod(handle.name)["metadata"]["annotations"]  # type: ignore[index]
        assert annotations["karpenter.sh/do-not-disrupt"] == "true"
        assert annotations["cluster-autoscaler.kubernetes.io/safe-to-evict"] == "false"
        cluster.advance(6.0)
        report = shaper.round()
        assert report.done
        annotations = cluster.pod(handle.name)["metadata"].get("annotations") or {}  # type: ignore[index]
        assert "karpenter.sh/do-not-disrupt" not in annotations
        assert "cluster-autoscaler.kubernetes.io/safe-to-evict" not in annotations
        shaper.close()
    finally:
        cluster.close()


CA_STATUS = """autoscalerStatus: Running
nodeGroups:
- health: {cloudProviderTarget: 1, maxSize: 6, minSize: 1, status: Healthy}
  name: gke-std
- health: {cloudProviderTarget: 0, maxSize: 3, minSize: 0, status: Healthy}
  name: gke-empty
"""


def _ca_status(cluster: Cluster, text: str) -> None:
    from kubernetes.client.exceptions import ApiException

    try:
        cluster.core.create_namespace({"metadata": {"name": "kube-system"}})
    except ApiException as exc:
        assert exc.status == 409
    body = {"metadata": {"name": "cluster-autoscaler-status"}, "data": {"status": text}}
    try:
        cluster.core.create_namespaced_config_map("kube-system", body)
    except ApiException as exc:
        assert exc.status == 409
        cluster.core.replace_namespaced_config_map("cluster-autoscaler-status", "kube-system", body)


def test_cluster_autoscaler_node_groups_come_from_its_status_configmap_and_are_steered_by_their_label(
    cluster: Cluster, caplog: pytest.LogCaptureFixture
) -> None:
    labels = {"cloud.google.com/gke-nodepool": "gke-std", "node.kubernetes.io/instance-type": "e2-standard-4"}
    cluster.core.patch_node("emulator-node-1", {"metadata": {"labels": labels}})
    assert {p.name for p in cluster.backend.pools()} == {"general", "highmem"}  # no ConfigMap: no group
    _ca_status(cluster, CA_STATUS)
    pools = {p.name: p for p in cluster.backend.pools()}
    assert set(pools) == {"general", "highmem", "gke-std"}  # gke-empty has no node to size it from
    std = pools["gke-std"]
    assert std.instance_types[0].name == "e2-standard-4"
    assert std.instance_types[0].allocatable.memory_bytes == 16 * GIB
    assert std.limits.memory_bytes == 6 * 16 * GIB
    assert std.node_selector() == {"cloud.google.com/gke-nodepool": "gke-std"}
    # unparseable: no group, one warning, the NodePools still read
    _ca_status(cluster, "this is not a status")
    with caplog.at_level("WARNING"):
        assert {p.name for p in cluster.backend.pools()} == {"general", "highmem"}
        assert {p.name for p in cluster.backend.pools()} == {"general", "highmem"}
    lines = [r for r in caplog.records if "cluster-autoscaler node groups unreadable" in r.getMessage()]
    assert len(lines) == 1
