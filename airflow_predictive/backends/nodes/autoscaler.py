"""Cluster-autoscaler node groups, read through the Kubernetes API only: the status ConfigMap.

Why: clusters without Karpenter grow through the cluster autoscaler, whose node groups (a GKE
node pool, an EKS managed node group, an AKS VM scale set) are not Kubernetes objects. The
autoscaler publishes its view in the ConfigMap ``cluster-autoscaler-status`` (namespace
``kube-system``, key ``status``): per node group its name, ``minSize``, ``maxSize``,
``cloudProviderTarget`` and node counts. Two documented formats exist: YAML (autoscaler 1.30 and
later: ``nodeGroups: [{name, health: {minSize, maxSize, cloudProviderTarget, nodeCounts}}]``) and
the older text (``Name: <group>`` then ``Health: Healthy (ready=.. cloudProviderTarget=N
(minSize=a, maxSize=b))``). Both are parsed.

The status names no instance type, so a group's shape comes from one of its nodes (the node
labels the providers set: GKE ``cloud.google.com/gke-nodepool``, EKS
``eks.amazonaws.com/nodegroup``, AKS ``kubernetes.azure.com/agentpool``, or the generic
``node.kubernetes.io/instance-type`` with allocatable); a group without a node to learn from is
skipped (it cannot be sized). Its limits are ``maxSize`` nodes of that shape, and steering
selects its nodes by that provider label (``NodePool.selector``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from airflow_predictive.backends.nodes import karpenter
from airflow_predictive.core.model.nodes import InstanceType, NodePool
from airflow_predictive.core.model.resources import ResourceVector

if TYPE_CHECKING:
    from collections.abc import Iterable

STATUS_CONFIGMAP = "cluster-autoscaler-status"
STATUS_NAMESPACE = "kube-system"
STATUS_KEY = "status"
GROUP_LABELS = (
    "cloud.google.com/gke-nodepool",
    "eks.amazonaws.com/nodegroup",
    "kubernetes.azure.com/agentpool",
)
CA_PROVISIONING_DELAY_S = 210.0  # the autoscaler FAQ: 3-4 minutes on GCE
CA_SCALE_DOWN_UNNEEDED_S = 600.0  # --scale-down-unneeded-time default

_LEGACY = re.compile(
    r"Name:\s+(?P<name>\S+)\s*\n\s*Health:\s+\w+\s*\((?P<body>[^\n]*?)\(minSize=(?P<min>\d+),\s*maxSize=(?P<max>\d+)\)",
    re.M,
)


class UnreadableStatus(ValueError):
    """The status ConfigMap's text is in neither documented format."""


@dataclass(frozen=True, slots=True)
class NodeGroup:
    name: str
    min_size: int
    max_size: int
    target: int | None = None  # cloudProviderTarget: the size the autoscaler asked for


def parse_status(text: str) -> list[NodeGroup]:
    """The node groups of a ``cluster-autoscaler-status`` text (YAML or the older text format)."""
    groups = _yaml_groups(text)
    if groups is not None:
        return groups
    legacy = [
        NodeGroup(
            m["name"],
            int(m["min"]),
            int(m["max"]),
            int(t.group(1)) if (t := re.search(r"cloudProviderTarget=(\d+)", m["body"])) else None,
        )
        for m in _LEGACY.finditer(text)
    ]
    if legacy or (re.search(r"^\s*NodeGroups:\s*$", text, re.M) and "Name:" not in text):
        return legacy
    raise UnreadableStatus("cluster-autoscaler-status: no node group in a known format")


def _yaml_groups(text: str) -> list[NodeGroup] | None:
    import yaml

    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError:
        return None
    if not isinstance(doc, dict) or "nodeGroups" not in doc:
        return None
    out = []
    for item in doc.get("nodeGroups") or []:
        try:
            health = item.get("health") or {}
            target = health.get("cloudProviderTarget")
            out.append(
                NodeGroup(
                    str(item["name"]),
                    int(health.get("minSize", 0)),
                    int(health["maxSize"]),
                    None if target is None else int(target),
                )
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise UnreadableStatus(f"cluster-autoscaler-status: node group {item!r}: {exc}") from exc
    return out


def _group_label(labels: dict[str, str], group: str) -> tuple[str, str] | None:
    """The provider label of a node that belongs to ``group`` (AKS names the scale set
    ``aks-<pool>-<id>-vmss``, the label carries ``<pool>``; clusters API prefixes a kind)."""
    for key in GROUP_LABELS:
        value = labels.get(key)
        if value and (value == group or group.endswith("/" + value) or f"-{value}-" in f"-{group}-"):
            return key, value
    return None


def pools_of(groups: Iterable[NodeGroup], nodes: Iterable[dict[str, Any]]) -> list[NodePool]:
    """A NodePool per node group one of whose nodes shows its shape (other groups are skipped)."""
    nodes = list(nodes)
    out = []
    for group in groups:
        for node in nodes:
            meta = node.get("metadata") or {}
            labels = meta.get("labels") or {}
            if karpenter.NODEPOOL_LABEL in labels:
                continue
            selector = _group_label(labels, group.name)
            alloc = (node.get("status") or {}).get("allocatable") or {}
            if selector is None or "memory" not in alloc or "cpu" not in alloc:
                continue
            shape = karpenter.vector_of({"cpu": alloc["cpu"], "memory": alloc["memory"]})
            itype = InstanceType(labels.get(karpenter.INSTANCE_TYPE_LABEL) or f"{group.name}-node", shape)
            out.append(
                NodePool(
                    group.name,
                    (itype,),
                    limits=_times(shape, group.max_size),
                    provisioning_delay_s=CA_PROVISIONING_DELAY_S,
                    consolidate_after_s=CA_SCALE_DOWN_UNNEEDED_S,
                    labels=(selector,),
                    selector=(selector,),
                )
            )
            break
    return out


def _times(shape: ResourceVector, n: int) -> ResourceVector:
    return ResourceVector(
        cpu_cores=None if shape.cpu_cores is None else shape.cpu_cores * n,
        memory_bytes=None if shape.memory_bytes is None else shape.memory_bytes * n,
    )
