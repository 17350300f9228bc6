"""Which nodes a pod may land on: node readiness, cordons, nodeSelector and required node affinity.

The emulated default-scheduler filters nodes with these rules before it checks room, as the real
NodeUnschedulable, TaintToleration (not-ready only), NodeName and NodeAffinity plugins do; the
provisioner uses the same label rules to know which pool can host a Pending pod.
"""

from __future__ import annotations

from typing import Any

Obj = dict[str, Any]

NOT_READY = "node(s) had untolerated taint {node.kubernetes.io/not-ready: }"
UNSCHEDULABLE = "node(s) were unschedulable"
AFFINITY = "node(s) didn't match Pod's node affinity/selector"


def node_ready(node: Obj) -> bool:
    for cond in (node.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Ready":
            return bool(cond.get("status") == "True")
    return False


def labels_match(pod: Obj, labels: dict[str, str]) -> bool:
    """True when a node with ``labels`` satisfies the pod's nodeSelector and required affinity."""
    spec = pod.get("spec") or {}
    for key, value in (spec.get("nodeSelector") or {}).items():
        if labels.get(key) != value:
            return False
    required = ((spec.get("affinity") or {}).get("nodeAffinity") or {}).get(
        "requiredDuringSchedulingIgnoredDuringExecution"
    ) or {}
    terms = required.get("nodeSelectorTerms") or []
    return not terms or any(_term_matches(term, labels) for term in terms)


def unfit_reason(pod: Obj, node: Obj) -> str | None:
    """Why ``pod`` may not go to ``node`` whatever the room (None: it may)."""
    if not node_ready(node):
        return NOT_READY
    if (node.get("spec") or {}).get("unschedulable"):
        return UNSCHEDULABLE
    if not labels_match(pod, (node.get("metadata") or {}).get("labels") or {}):
        return AFFINITY
    return None


def _term_matches(term: Obj, labels: dict[str, str]) -> bool:
    return all(_expression_matches(e, labels) for e in term.get("matchExpressions") or [])


def _expression_matches(expr: Obj, labels: dict[str, str]) -> bool:
    key, op = expr.get("key", ""), expr.get("operator", "")
    values = [str(v) for v in expr.get("values") or []]
    present = key in labels
    value = labels.get(key)
    if op == "In":
        return present and value in values
    if op == "NotIn":
        return not present or value not in values
    if op == "Exists":
        return present
    if op == "DoesNotExist":
        return not present
    if op in ("Gt", "Lt") and present and values:
        try:
            have, bound = int(str(value)), int(values[0])
        except ValueError:
            return False
        return have > bound if op == "Gt" else have < bound
    return False
