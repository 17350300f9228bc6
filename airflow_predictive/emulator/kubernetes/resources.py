"""The API resources the emulator serves, and the discovery documents that describe them.

Discovery is what kubectl reads first (``/api``, ``/apis``, ``/api/v1``, ``/apis/<group>/<v>``);
it must list exactly what the emulator implements, never more.
"""

from __future__ import annotations

from typing import Any

from airflow_predictive.emulator.kubernetes.store import Resource

EMULATED_VERSION = {
    "major": "1",
    "minor": "35",
    "emulationMajor": "1",
    "emulationMinor": "35",
    "minCompatibilityMajor": "1",
    "minCompatibilityMinor": "34",
    "gitVersion": "v1.35.0-predictive-emulator",
    "gitCommit": "0000000000000000000000000000000000000000",
    "gitTreeState": "clean",
    "buildDate": "2026-01-01T00:00:00Z",
    "goVersion": "go1.24.0",
    "compiler": "gc",
    "platform": "linux/amd64",
}

_RW = ("create", "delete", "get", "list", "patch", "update", "watch")

PODS = Resource(
    "pods", "Pod", "", "v1", True, (*_RW, "deletecollection"), ("po",), ("status", "resize", "log")
)
NODES = Resource("nodes", "Node", "", "v1", False, _RW, ("no",), ("status",))
NAMESPACES = Resource("namespaces", "Namespace", "", "v1", False, _RW, ("ns",), ("status",))
PVCS = Resource("persistentvolumeclaims", "PersistentVolumeClaim", "", "v1", True, _RW, ("pvc",), ("status",))
QUOTAS = Resource("resourcequotas", "ResourceQuota", "", "v1", True, _RW, ("quota",), ("status",))
EVENTS = Resource("events", "Event", "", "v1", True, _RW, ("ev",))
# e.g. kube-system/cluster-autoscaler-status (node groups)
CONFIGMAPS = Resource("configmaps", "ConfigMap", "", "v1", True, _RW, ("cm",))
STORAGE_CLASSES = Resource("storageclasses", "StorageClass", "storage.k8s.io", "v1", False, _RW, ("sc",))
POD_METRICS = Resource("pods", "PodMetrics", "metrics.k8s.io", "v1beta1", True, ("get", "list"))
NODE_METRICS = Resource("nodes", "NodeMetrics", "metrics.k8s.io", "v1beta1", False, ("get", "list"))
PRIORITY_CLASSES = Resource(
    "priorityclasses", "PriorityClass", "scheduling.k8s.io", "v1", False, _RW, ("pc",)
)
NODEPOOLS = Resource("nodepools", "NodePool", "karpenter.sh", "v1", False, _RW, (), ("status",))

STORED: tuple[Resource, ...] = (
    PODS,
    NODES,
    NAMESPACES,
    PVCS,
    QUOTAS,
    EVENTS,
    STORAGE_CLASSES,
    PRIORITY_CLASSES,
    NODEPOOLS,
    CONFIGMAPS,
)
GROUPS: dict[tuple[str, str], tuple[Resource, ...]] = {
    ("", "v1"): (PODS, NODES, NAMESPACES, PVCS, QUOTAS, EVENTS, CONFIGMAPS),
    ("storage.k8s.io", "v1"): (STORAGE_CLASSES,),
    ("metrics.k8s.io", "v1beta1"): (POD_METRICS, NODE_METRICS),
    ("scheduling.k8s.io", "v1"): (PRIORITY_CLASSES,),
    ("karpenter.sh", "v1"): (NODEPOOLS,),
}


def lookup(group: str, version: str, plural: str) -> Resource | None:
    for r in GROUPS.get((group, version), ()):
        if r.plural == plural:
            return r
    return None


def api_versions() -> dict[str, Any]:
    return {
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}],
    }


def api_group_list() -> dict[str, Any]:
    groups = []
    for group, version in GROUPS:
        if not group:
            continue
        gv = {"groupVersion": f"{group}/{version}", "version": version}
        groups.append({"name": group, "versions": [gv], "preferredVersion": gv})
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}


def api_group(group: str) -> dict[str, Any] | None:
    for g in api_group_list()["groups"]:
        if g["name"] == group:
            return {"kind": "APIGroup", "apiVersion": "v1", **g}
    return None


def resource_list(group: str, version: str) -> dict[str, Any] | None:
    resources = GROUPS.get((group, version))
    if resources is None:
        return None
    out: list[dict[str, Any]] = []
    for r in resources:
        out.append(
            {
                "name": r.plural,
                "singularName": r.singular,
                "namespaced": r.namespaced,
                "kind": r.kind,
                "verbs": list(r.verbs),
                "shortNames": list(r.short_names),
            }
        )
        for sub in r.subresources:
            kind = "Pod" if sub in ("resize", "log") else r.kind
            out.append(
                {
                    "name": f"{r.plural}/{sub}",
                    "singularName": "",
                    "namespaced": r.namespaced,
                    "kind": kind,
                    "verbs": ["get"] if sub == "log" else ["get", "patch", "update"],
                }
            )
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": f"{group}/{version}" if group else version,
        "resources": out,
    }
