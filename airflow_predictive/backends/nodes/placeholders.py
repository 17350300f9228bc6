"""Placeholder pods: the over-provisioning pattern that makes a node exist before a task needs it.

A placeholder is a pause container at a negative priority (the PriorityClass
``predictive-placeholder``, value -1 by default: below every real pod, so the scheduler preempts it
for them, and not below the cluster autoscaler's expendable cutoff of -10, so its Pending state
still triggers a scale-up), sized to the task's predicted peak and pinned to the pool the task is
steered to. Its labels say which plan it holds capacity for, its annotations until when.
Pure dict building: no client.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from airflow_predictive.backends.nodes.karpenter import NODEPOOL_LABEL, quantities_of

if TYPE_CHECKING:
    from airflow_predictive.core.model.nodes import WarmCapacity

ROLE_LABEL = "predictive.airflow.apache.org/role"
PLAN_LABEL = "predictive.airflow.apache.org/for-plan"
EXPIRES_ANNOTATION = "predictive.airflow.apache.org/expires-at"
READY_BY_ANNOTATION = "predictive.airflow.apache.org/ready-by"
MANAGED_BY = ("app.kubernetes.io/managed-by", "airflow-predictive")
PLACEHOLDER = "placeholder"
SELECTOR = f"{ROLE_LABEL}={PLACEHOLDER}"
_LABEL_VALUE = re.compile(r"[^A-Za-z0-9_.-]")


@dataclass(frozen=True, slots=True)
class PlaceholderSettings:
    """priority_class / priority: the PriorityClass placeholders run at (created when missing).
    image: the pause image. container_name: the placeholder's container."""

    priority_class: str = "predictive-placeholder"
    priority: int = -1
    image: str = "registry.k8s.io/pause:3.10"
    container_name: str = "pause"


def plan_label(for_plan: str) -> str:
    """``for_plan`` as a label value (<= 63 chars of [A-Za-z0-9_.-], a hash suffix if changed)."""
    clean = _LABEL_VALUE.sub("_", for_plan).strip("_.-")
    if clean == for_plan and len(clean) <= 63:
        return clean
    digest = hashlib.sha256(for_plan.encode()).hexdigest()[:10]
    return f"{clean[:52].strip('_.-')}-{digest}"


def is_placeholder(pod: dict[str, Any]) -> bool:
    """True for a placeholder pod body (its role label)."""
    return ((pod.get("metadata") or {}).get("labels") or {}).get(ROLE_LABEL) == PLACEHOLDER


def pod_name(for_plan: str) -> str:
    """A DNS-1123 pod name for the placeholder of ``for_plan`` (stable: one per plan)."""
    base = re.sub(r"[^a-z0-9-]", "-", for_plan.lower()).strip("-")[:40].strip("-") or "plan"
    digest = hashlib.sha256(for_plan.encode()).hexdigest()[:8]
    return f"warm-{base}-{digest}"


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_iso(text: str) -> float | None:
    try:
        return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC).timestamp()
    except (TypeError, ValueError):
        return None


def priority_class(settings: PlaceholderSettings) -> dict[str, Any]:
    return {
        "apiVersion": "scheduling.k8s.io/v1",
        "kind": "PriorityClass",
        "metadata": {"name": settings.priority_class, "labels": dict([MANAGED_BY])},
        "value": settings.priority,
        "globalDefault": False,
        "preemptionPolicy": "Never",
        "description": "airflow-predictive warm capacity: preempted by any real pod",
    }


def placeholder_pod(
    warm: WarmCapacity, settings: PlaceholderSettings, selector: dict[str, str] | None = None
) -> dict[str, Any]:
    """The placeholder pod holding ``warm.size`` in ``warm.pool`` until ``warm.expires_at``.
    selector: the pool's nodeSelector (default: Karpenter's ``karpenter.sh/nodepool: <pool>``)."""
    size = quantities_of(warm.size)
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": pod_name(warm.for_plan),
            "labels": {
                MANAGED_BY[0]: MANAGED_BY[1],
                ROLE_LABEL: PLACEHOLDER,
                PLAN_LABEL: plan_label(warm.for_plan),
                NODEPOOL_LABEL: warm.pool,
            },
            "annotations": {
                READY_BY_ANNOTATION: _iso(warm.ready_by),
                EXPIRES_ANNOTATION: _iso(warm.expires_at),
            },
        },
        "spec": {
            "priorityClassName": settings.priority_class,
            "terminationGracePeriodSeconds": 0,
            "restartPolicy": "Always",
            "automountServiceAccountToken": False,
            "nodeSelector": dict(selector) if selector else {NODEPOOL_LABEL: warm.pool},
            "containers": [
                {
                    "name": settings.container_name,
                    "image": settings.image,
                    "resources": {"requests": dict(size), "limits": dict(size)},
                }
            ],
        },
    }


def steer(pod_spec: dict[str, Any], pool: str) -> dict[str, Any]:
    """``pod_spec`` (a pod's ``spec``) with a nodeSelector on ``karpenter.sh/nodepool: pool``;
    the spec's own selectors are kept. Returns a new dict."""
    out = dict(pod_spec)
    out["nodeSelector"] = {**(pod_spec.get("nodeSelector") or {}), NODEPOOL_LABEL: pool}
    return out
