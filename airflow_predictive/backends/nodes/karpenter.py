"""Karpenter ``NodePool`` objects (karpenter.sh/v1) to and from the core ``NodePool`` value.

Karpenter keeps instance types in its cloud provider, not in the API, so the allocatable and
price of each type come from the annotation ``predictive.airflow.apache.org/instance-types``
(a JSON list the cluster operator writes on the NodePool: ``[{"name": "m5.2xlarge", "cpu": "8",
"memory": "30Gi", "hourlyCost": 0.38}]``) and the expected boot time from
``predictive.airflow.apache.org/provisioning-delay`` (a Go duration, "90s"). Both the emulator and
the node-pool backend read pools through this one codec. Pure dict handling: no client.
"""

from __future__ import annotations

import json
import re
from typing import Any

from airflow_predictive.core.model.nodes import (
    DEFAULT_PROVISIONING_DELAY_S,
    InstanceType,
    InvalidNodePool,
    NodePool,
)
from airflow_predictive.core.model.quantity import format_cpu, format_memory, parse_quantity
from airflow_predictive.core.model.resources import ResourceVector

GROUP, VERSION, PLURAL = "karpenter.sh", "v1", "nodepools"
NODEPOOL_LABEL = "karpenter.sh/nodepool"
INSTANCE_TYPE_LABEL = "node.kubernetes.io/instance-type"
INSTANCE_TYPES_ANNOTATION = "predictive.airflow.apache.org/instance-types"
PROVISIONING_DELAY_ANNOTATION = "predictive.airflow.apache.org/provisioning-delay"
# when a booting node is expected Ready (the emulator writes it; a real node may not carry it)
READY_AT_ANNOTATION = "emulator.predictive.airflow.apache.org/ready-at"
DO_NOT_DISRUPT = "karpenter.sh/do-not-disrupt"
SAFE_TO_EVICT = "cluster-autoscaler.kubernetes.io/safe-to-evict"

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> float | None:
    """A Go duration ("90s", "1m30s", "500ms") in seconds; "Never" -> None."""
    if text == "Never":
        return None
    parts = _DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise InvalidNodePool(f"not a duration: {text!r}")
    return sum(float(n) * _UNIT_S[u] for n, u in parts)


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "Never"
    return f"{int(seconds * 1000)}ms" if seconds != int(seconds) else f"{int(seconds)}s"


def vector_of(resources: dict[str, Any]) -> ResourceVector:
    """cpu / memory quantities as a ResourceVector (other resources ignored)."""
    cpu, mem = resources.get("cpu"), resources.get("memory")
    return ResourceVector(
        cpu_cores=None if cpu is None else parse_quantity(cpu),
        memory_bytes=None if mem is None else parse_quantity(mem),
    )


def quantities_of(vector: ResourceVector) -> dict[str, str]:
    out: dict[str, str] = {}
    if vector.cpu_cores is not None:
        out["cpu"] = format_cpu(vector.cpu_cores)
    if vector.memory_bytes is not None:
        out["memory"] = format_memory(vector.memory_bytes)
    return out


def to_object(pool: NodePool) -> dict[str, Any]:
    """The karpenter.sh/v1 NodePool object that describes ``pool``."""
    catalog = [
        {"name": t.name, **quantities_of(t.allocatable), "hourlyCost": t.hourly_cost}
        for t in pool.instance_types
    ]
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "NodePool",
        "metadata": {
            "name": pool.name,
            "annotations": {
                INSTANCE_TYPES_ANNOTATION: json.dumps(catalog),
                PROVISIONING_DELAY_ANNOTATION: format_duration(pool.provisioning_delay_s),
            },
        },
        "spec": {
            "template": {
                "metadata": {"labels": dict(pool.labels)},
                "spec": {
                    "requirements": [
                        {
                            "key": INSTANCE_TYPE_LABEL,
                            "operator": "In",
                            "values": [t.name for t in pool.instance_types],
                        }
                    ],
                },
            },
            "limits": quantities_of(pool.limits),
            "disruption": {
                "consolidationPolicy": "WhenEmptyOrUnderutilized",
                "consolidateAfter": format_duration(pool.consolidate_after_s),
            },
        },
    }


def from_object(obj: dict[str, Any]) -> NodePool:
    """The core value of a NodePool object; raises ``InvalidNodePool`` when it cannot be read."""
    meta = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    annotations = meta.get("annotations") or {}
    try:
        catalog = json.loads(annotations.get(INSTANCE_TYPES_ANNOTATION) or "[]")
        allowed = _allowed_types(spec)
        types = tuple(
            InstanceType(
                str(entry["name"]),
                vector_of(entry),
                float(entry.get("hourlyCost", 0.0)),
            )
            for entry in catalog
            if allowed is None or entry.get("name") in allowed
        )
        delay_text = annotations.get(PROVISIONING_DELAY_ANNOTATION)
        delay = DEFAULT_PROVISIONING_DELAY_S if delay_text is None else parse_duration(delay_text)
        disruption = spec.get("disruption") or {}
        consolidate = parse_duration(str(disruption.get("consolidateAfter", "0s")))
        labels = tuple(sorted(((spec.get("template") or {}).get("metadata") or {}).get("labels", {}).items()))
        return NodePool(
            name=str(meta.get("name", "")),
            instance_types=types,
            limits=vector_of(spec.get("limits") or {}),
            provisioning_delay_s=DEFAULT_PROVISIONING_DELAY_S if delay is None else delay,
            consolidate_after_s=consolidate,
            labels=labels,
        )
    except (KeyError, TypeError, ValueError, json.JSONDecodeError) as exc:
        raise InvalidNodePool(f"NodePool {meta.get('name')!r}: {exc}") from exc


def _allowed_types(spec: dict[str, Any]) -> set[str] | None:
    reqs = (((spec.get("template") or {}).get("spec") or {}).get("requirements")) or []
    for req in reqs:
        if req.get("key") == INSTANCE_TYPE_LABEL and req.get("operator") == "In":
            return {str(v) for v in req.get("values") or []}
    return None


def node_labels(pool: NodePool, instance_type: InstanceType) -> dict[str, str]:
    """The labels a node of ``pool`` and ``instance_type`` carries (steering selects on them)."""
    return {**dict(pool.labels), NODEPOOL_LABEL: pool.name, INSTANCE_TYPE_LABEL: instance_type.name}
