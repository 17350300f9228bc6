"""The emulated node autoscaler, scheduling filters and priority preemption, on a manual clock."""

from __future__ import annotations

from typing import Any

from airflow_predictive.core.model.nodes import InstanceType, NodePool
from airflow_predictive.core.model.resources import GIB, ResourceVector
from airflow_predictive.emulator.kubernetes.emulator import Emulator, NodeSpec
from airflow_predictive.emulator.kubernetes.kubelet import KubeletConfig
from tests.unit.emulator.kubernetes.conftest import Cluster, StepClock, container

SMALL = InstanceType("s-2x8", ResourceVector(cpu_cores=2, memory_bytes=8 * GIB), hourly_cost=0.1)
LARGE = InstanceType("l-8x32", ResourceVector(cpu_cores=8, memory_bytes=32 * GIB), hourly_cost=0.4)


def pool_cluster(
    *, limits: ResourceVector | None = None, consolidate_after_s: float | None = 10.0, delay: float = 3.0
) -> Cluster:
    clock = StepClock()
    pool = NodePool(
        "batch",
        (LARGE, SMALL),
        limits=limits or ResourceVector(cpu_cores=64),
        provisioning_delay_s=delay,
        consolidate_after_s=consolidate_after_s,
    )
    em = Emulator(
        clock=clock,
        kubelet=KubeletConfig(start_delay_s=0.0, events=True),
        nodes=(NodeSpec(cpu="1", memory="2Gi"),),
        auto_tick=False,
        node_pools=(pool,),
    )
    return Cluster(em, clock)


def nodes(cluster: Cluster) -> dict[str, dict[str, Any]]:
    r = cluster.call("GET", "/api/v1/nodes")
    return {n["metadata"]["name"]: n for n in r.body["items"]}


def pool_nodes(cluster: Cluster) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in nodes(cluster).items() if "karpenter.sh/nodepool" in v["metadata"]["labels"]}


def ready(node: dict[str, Any]) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True" for c in node["status"]["conditions"])


def needs(cpu: str, memory: str = "1Gi") -> dict[str, Any]:
    return container(requests={"cpu": cpu, "memory": memory}, limits={"cpu": cpu, "memory": memory})


def add_priority_class(cluster: Cluster, name: str, value: int) -> None:
    body = {"metadata": {"name": name}, "value": value, "preemptionPolicy": "Never"}
    assert cluster.call("POST", "/apis/scheduling.k8s.io/v1/priorityclasses", body).status == 201


def test_a_pod_that_fits_no_node_gets_a_new_node_after_the_provisioning_delay() -> None:
    cluster = pool_cluster(delay=3.0)
    cluster.create_pod("big", needs("4", "8Gi"))
    cluster.advance(0.5)
    (name, node), *_ = pool_nodes(cluster).items()
    assert not ready(node) and node["metadata"]["labels"]["node.kubernetes.io/instance-type"] == "l-8x32"
    assert node["spec"]["taints"][0]["key"] == "node.kubernetes.io/not-ready"
    assert "nodeName" not in cluster.pod("big")["spec"]
    cluster.advance(2.0)
    assert "nodeName" not in cluster.pod("big")["spec"]
    cluster.advance(1.0)
    assert ready(pool_nodes(cluster)[name]) and cluster.pod("big")["spec"]["nodeName"] == name


def test_the_cheapest_instance_type_that_holds_the_pod_is_launched_and_pods_share_a_booting_node() -> None:
    cluster = pool_cluster()
    cluster.create_pod("a", needs("500m", "3Gi"))  # neither fits the 2Gi default node
    cluster.create_pod("b", needs("500m", "3Gi"))
    cluster.advance(4.0)
    (name, node), *rest = pool_nodes(cluster).items()
    assert not rest and node["metadata"]["labels"]["node.kubernetes.io/instance-type"] == "s-2x8"
    assert cluster.pod("a")["spec"]["nodeName"] == name == cluster.pod("b")["spec"]["nodeName"]


def test_pool_limits_cap_the_nodes_it_launches() -> None:
    cluster = pool_cluster(limits=ResourceVector(cpu_cores=8))
    cluster.create_pod("a", needs("6"))
    cluster.create_pod("b", needs("6"))
    cluster.advance(4.0)
    assert len(pool_nodes(cluster)) == 1
    pool = cluster.call("GET", "/apis/karpenter.sh/v1/nodepools/batch").body
    assert pool["status"]["resources"]["nodes"] == "1"
    assert cluster.pod("b")["status"]["conditions"][0]["reason"] == "Unschedulable"


def test_node_selector_steers_the_pod_and_an_unknown_pool_launches_nothing() -> None:
    cluster = pool_cluster()
    cluster.create_pod("small", needs("100m", "64Mi"), nodeSelector={"karpenter.sh/nodepool": "batch"})
    cluster.create_pod("lost", needs("100m", "64Mi"), nodeSelector={"karpenter.sh/nodepool": "gpu"})
    cluster.advance(4.0)
    assert cluster.pod("small")["spec"]["nodeName"].startswith("batch-")
    lost = cluster.pod("lost")
    assert "nodeName" not in lost["spec"]
    message = lost["status"]["conditions"][0]["message"]
    assert "didn't match Pod's node affinity/selector" in message
    assert len(pool_nodes(cluster)) == 1


def test_required_node_affinity_on_the_instance_type_is_honoured() -> None:
    cluster = pool_cluster()
    affinity = {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {
                        "matchExpressions": [
                            {
                                "key": "node.kubernetes.io/instance-type",
                                "operator": "In",
                                "values": ["l-8x32"],
                            }
                        ]
                    }
                ]
            }
        }
    }
    cluster.create_pod("p", needs("100m", "64Mi"), affinity=affinity)
    cluster.advance(4.0)
    node = pool_nodes(cluster)[cluster.pod("p")["spec"]["nodeName"]]
    assert node["metadata"]["labels"]["node.kubernetes.io/instance-type"] == "l-8x32"


def test_a_real_pod_preempts_a_negative_priority_placeholder() -> None:
    cluster = pool_cluster()
    add_priority_class(cluster, "placeholder", -10)
    cluster.create_pod(
        "hold", needs("6", "8Gi"), priorityClassName="placeholder", terminationGracePeriodSeconds=0
    )
    cluster.advance(4.0)
    node = cluster.pod("hold")["spec"]["nodeName"]
    assert cluster.pod("hold")["spec"]["priority"] == -10
    cluster.create_pod("real", needs("6", "8Gi"), nodeSelector={"karpenter.sh/nodepool": "batch"})
    cluster.advance(1.0)
    assert cluster.pod("real")["spec"]["nodeName"] == node
    assert cluster.call("GET", "/api/v1/namespaces/default/pods/hold").status == 404
    assert len(pool_nodes(cluster)) == 1  # no second node was launched for the real pod
    reasons = {e["reason"] for e in cluster.call("GET", "/api/v1/namespaces/default/events").body["items"]}
    assert "Preempted" in reasons


def test_an_unknown_priority_class_is_refused() -> None:
    cluster = pool_cluster()
    r = cluster.create_pod("p", needs("100m"), priorityClassName="nope")
    assert r.status == 403 and "no PriorityClass with name nope was found" in r.body["message"]


def test_an_empty_node_is_consolidated_after_the_delay() -> None:
    cluster = pool_cluster(consolidate_after_s=10.0)
    cluster.create_pod("p", needs("4", "8Gi"), restartPolicy="Never")
    cluster.advance(4.0)
    assert len(pool_nodes(cluster)) == 1
    cluster.call("DELETE", "/api/v1/namespaces/default/pods/p", gracePeriodSeconds="0")
    cluster.advance(9.0)
    assert len(pool_nodes(cluster)) == 1
    cluster.advance(2.0)
    assert pool_nodes(cluster) == {}
    assert "emulator-node-1" in nodes(cluster)  # nodes outside pools are never consolidated


def _underused_pair(cluster: Cluster, **annotations: str) -> tuple[str, str]:
    """Two LARGE nodes; the first keeps only a 1-cpu pod that would fit on the second."""
    cluster.create_pod("first", needs("5", "8Gi"))
    cluster.advance(4.0)
    cluster.create_pod("second", needs("5", "8Gi"))
    cluster.advance(4.0)
    body = {"metadata": {"name": "small", "annotations": annotations}, "spec": {"containers": [needs("1")]}}
    assert cluster.call("POST", "/api/v1/namespaces/default/pods", body).status == 201
    cluster.advance(0.5)
    first, second = cluster.pod("first")["spec"]["nodeName"], cluster.pod("second")["spec"]["nodeName"]
    assert cluster.pod("small")["spec"]["nodeName"] == first != second
    cluster.call("DELETE", "/api/v1/namespaces/default/pods/first", gracePeriodSeconds="0")
    cluster.advance(0.5)
    return first, second


def test_an_underused_node_is_drained_when_its_pods_fit_elsewhere() -> None:
    cluster = pool_cluster(consolidate_after_s=5.0)
    _, second = _underused_pair(cluster)
    cluster.advance(7.0)
    assert cluster.call("GET", "/api/v1/namespaces/default/pods/small").status == 404  # evicted
    assert set(pool_nodes(cluster)) == {second}


def test_a_do_not_disrupt_pod_keeps_its_node() -> None:
    cluster = pool_cluster(consolidate_after_s=5.0)
    first, _ = _underused_pair(cluster, **{"karpenter.sh/do-not-disrupt": "true"})
    cluster.advance(30.0)
    assert cluster.pod("small")["status"]["phase"] == "Running"
    assert cluster.pod("small")["spec"]["nodeName"] == first
    assert first in pool_nodes(cluster) and not pool_nodes(cluster)[first]["spec"].get("unschedulable")


def test_safe_to_evict_false_also_keeps_its_node() -> None:
    cluster = pool_cluster(consolidate_after_s=5.0)
    first, _ = _underused_pair(cluster, **{"cluster-autoscaler.kubernetes.io/safe-to-evict": "false"})
    cluster.advance(30.0)
    assert first in pool_nodes(cluster) and cluster.pod("small")["status"]["phase"] == "Running"


def test_without_pools_the_single_default_node_behaves_as_before() -> None:
    clock = StepClock()
    cluster = Cluster(Emulator(clock=clock, auto_tick=False), clock)
    cluster.create_pod("p", needs("64"))
    cluster.advance(100.0)
    assert list(nodes(cluster)) == ["emulator-node-1"]
    assert (
        cluster.pod("p")["status"]["conditions"][0]["message"]
        == "0/1 nodes are available: 1 Insufficient cpu."
    )
