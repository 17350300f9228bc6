from __future__ import annotations

import pytest

from airflow_predictive.backends.nodes.autoscaler import (
    CA_PROVISIONING_DELAY_S,
    NodeGroup,
    UnreadableStatus,
    parse_status,
    pools_of,
)
from airflow_predictive.core.model.resources import GIB

YAML_STATUS = """
autoscalerStatus: Running
clusterWide:
  health:
    nodeCounts:
      registered: {ready: 4, total: 4}
    status: Healthy
nodeGroups:
- health:
    cloudProviderTarget: 3
    maxSize: 5
    minSize: 2
    nodeCounts:
      registered: {ready: 3, total: 3}
    status: Healthy
  name: aks-user-25795745-vmss
  scaleDown: {status: NoCandidates}
- health: {cloudProviderTarget: 0, maxSize: 4, minSize: 0, status: Healthy}
  name: gke-highmem
time: 2026-10-02 14:29:22.999645779 +0000 UTC
"""

LEGACY_STATUS = """Cluster-autoscaler status at 2021-10-19 19:06:40.008835646 +0000 UTC:
Cluster-wide:
  Health:      Healthy (ready=3 unready=0 notStarted=0 longNotStarted=0 registered=3 longUnregistered=0)
NodeGroups:
  Name:        MachineDeployment/default/aws-autoscale-01-md-0
  Health:      Healthy (ready=3 unready=0 notStarted=0 longNotStarted=0 registered=3 longUnregistered=0 cloudProviderTarget=3 (minSize=3, maxSize=10))
               LastProbeTime:      2021-10-19 19:06:40.008835646 +0000 UTC m=+433068.513173981
  ScaleUp:     NoActivity (ready=3 cloudProviderTarget=3)
"""


def _node(name: str, labels: dict[str, str], cpu: str = "8", memory: str = "64Gi") -> dict[str, object]:
    return {
        "metadata": {"name": name, "labels": labels},
        "status": {"allocatable": {"cpu": cpu, "memory": memory}},
    }


def test_the_yaml_status_gives_each_node_group_its_sizes() -> None:
    assert parse_status(YAML_STATUS) == [
        NodeGroup("aks-user-25795745-vmss", 2, 5, 3),
        NodeGroup("gke-highmem", 0, 4, 0),
    ]


def test_the_older_text_status_is_read_too() -> None:
    assert parse_status(LEGACY_STATUS) == [
        NodeGroup("MachineDeployment/default/aws-autoscale-01-md-0", 3, 10, 3)
    ]


@pytest.mark.parametrize("text", ["", "hello", "nodeGroups:\n- name: x\n  health: {minSize: a}\n", "[1, 2"])
def test_an_unparseable_status_is_an_error_not_a_guess(text: str) -> None:
    with pytest.raises(UnreadableStatus):
        parse_status(text)


def test_a_group_is_sized_from_one_of_its_nodes_and_selected_by_its_provider_label() -> None:
    nodes = [
        _node(
            "aks-user-1",
            {"kubernetes.azure.com/agentpool": "user", "node.kubernetes.io/instance-type": "E8s"},
        ),
        _node("kp-1", {"karpenter.sh/nodepool": "user", "kubernetes.azure.com/agentpool": "user"}),
    ]
    pools = pools_of(parse_status(YAML_STATUS), nodes)
    assert [p.name for p in pools] == ["aks-user-25795745-vmss"]  # gke-highmem has no node to learn from
    pool = pools[0]
    assert (
        pool.instance_types[0].name == "E8s" and pool.instance_types[0].allocatable.memory_bytes == 64 * GIB
    )
    assert pool.limits.memory_bytes == 5 * 64 * GIB and pool.limits.cpu_cores == 40
    assert pool.node_selector() == {"kubernetes.azure.com/agentpool": "user"}
    assert pool.provisioning_delay_s == CA_PROVISIONING_DELAY_S


def test_a_karpenter_pool_is_still_selected_by_its_nodepool_label() -> None:
    from airflow_predictive.core.model.nodes import InstanceType, NodePool
    from airflow_predictive.core.model.resources import ResourceVector

    pool = NodePool("highmem", (InstanceType("n2", ResourceVector(memory_bytes=GIB)),))
    assert pool.node_selector() == {"karpenter.sh/nodepool": "highmem"}
