"""The API calls the Kubernetes backends make, as values, and the retry policy around them.

Procedures (``procedures``) yield ``Call`` / ``Sleep`` values and receive ``Reply`` values; the
sync and async backends execute them with their own client. So both share one implementation of
the behaviour and differ only in I/O. ``VERBS`` is the single list of RBAC permissions those
calls need; the RBAC manifest is tested against it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class Verb(StrEnum):
    READ_POD = "read_pod"
    LIST_PODS = "list_pods"
    WATCH_PODS = "watch_pods"
    CREATE_POD = "create_pod"
    DELETE_POD = "delete_pod"
    PATCH_RESIZE = "patch_resize"
    READ_POD_METRICS = "read_pod_metrics"
    LIST_POD_METRICS = "list_pod_metrics"
    LIST_NODES = "list_nodes"
    NODE_SUMMARY = "node_summary"
    READ_PVC = "read_pvc"
    PATCH_PVC = "patch_pvc"


@dataclass(frozen=True, slots=True)
class Permission:
    group: str
    resource: str
    verb: str
    optional: bool = False  # the backend degrades gracefully without it (403 handled)


# Which RBAC permission each call needs. docker/kubernetes/rbac.yaml must grant exactly the
# required ones (tests/unit/backends/kubernetes/test_kube_rbac.py checks it).
VERBS: dict[Verb, Permission] = {
    Verb.READ_POD: Permission("", "pods", "get"),
    Verb.LIST_PODS: Permission("", "pods", "list"),
    Verb.WATCH_PODS: Permission("", "pods", "watch"),
    Verb.CREATE_POD: Permission("", "pods", "create"),
    Verb.DELETE_POD: Permission("", "pods", "delete"),
    Verb.PATCH_RESIZE: Permission("", "pods/resize", "patch"),
    Verb.READ_POD_METRICS: Permission("metrics.k8s.io", "pods", "get"),
    Verb.LIST_POD_METRICS: Permission("metrics.k8s.io", "pods", "list"),
    Verb.LIST_NODES: Permission("", "nodes", "list", optional=True),
    Verb.NODE_SUMMARY: Permission("", "nodes/proxy", "get", optional=True),
    Verb.READ_PVC: Permission("", "persistentvolumeclaims", "get"),
    Verb.PATCH_PVC: Permission("", "persistentvolumeclaims", "patch"),
}

RETRYABLE = frozenset({0, 409, 429, 500, 502, 503, 504})


@dataclass(frozen=True, slots=True)
class Call:
    """One API request: ``verb`` on ``name`` (namespace from the backend) with ``body``/``query``."""

    verb: Verb
    name: str = ""
    body: Any = None
    query: tuple[tuple[str, str], ...] = ()
    retry: bool = True  # only idempotent calls are retried (all of ours are, by construction)


@dataclass(frozen=True, slots=True)
class Sleep:
    seconds: float


@dataclass(frozen=True, slots=True)
class Reply:
    """HTTP status (0 = no answer: connection error / timeout), JSON body, Retry-After seconds."""

    status: int
    body: Any = None
    retry_after_s: float | None = None
    attempts: int = 1
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    @property
    def message(self) -> str:
        if isinstance(self.body, dict) and self.body.get("message"):
            return str(self.body["message"])
        return "no answer from the API server" if self.status == 0 else f"HTTP {self.status}"


def backoff_s(attempt: int, reply: Reply, base_s: float, max_s: float) -> float:
    """Seconds before retry ``attempt`` (0-based): Retry-After when given, else exponential."""
    if reply.retry_after_s is not None:
        return min(max_s, max(0.0, reply.retry_after_s))
    return float(min(max_s, base_s * 2**attempt))


def should_retry(call: Call, reply: Reply, attempt: int, max_retries: int) -> bool:
    """Retry 429 / 5xx / connection errors and 409 Conflict, never 409 AlreadyExists."""
    if reply.status == 409 and isinstance(reply.body, dict) and reply.body.get("reason") == "AlreadyExists":
        return False
    return call.retry and reply.status in RETRYABLE and attempt < max_retries


def parse_retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        return None


def reply_body(data: Any) -> Any:
    """An API response body as JSON; a body that is not JSON becomes {"message": <its text>}."""
    if not data:
        return None
    try:
        return json.loads(data)
    except (TypeError, ValueError):
        return {"message": str(data)[:500]}
