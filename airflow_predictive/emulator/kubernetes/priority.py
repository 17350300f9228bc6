"""Pod priority: PriorityClass admission and the scheduler's preemption of lower-priority pods.

At creation a pod's ``priorityClassName`` becomes ``spec.priority`` (and ``preemptionPolicy``) as
the Priority admission plugin does; an unknown class is refused with 403. When a pod fits no
node, the scheduler looks for a node where evicting pods of lower priority (lowest first) makes
room: the victims get a ``DisruptionTarget`` condition and are deleted with their grace period,
and the preemptor is ``nominatedNodeName``'d there until they are gone. Placeholder pods at a
negative priority are the usual victims (the over-provisioning pattern).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from airflow_predictive.emulator.kubernetes.errors import ApiError
from airflow_predictive.emulator.kubernetes.resources import PRIORITY_CLASSES

if TYPE_CHECKING:
    from airflow_predictive.emulator.kubernetes.store import Store

Obj = dict[str, Any]

BUILT_IN = (("system-cluster-critical", 2000000000), ("system-node-critical", 2000001000))


def builtin_classes() -> list[Obj]:
    return [
        {
            "apiVersion": "scheduling.k8s.io/v1",
            "kind": "PriorityClass",
            "metadata": {"name": name},
            "value": value,
            "globalDefault": False,
            "preemptionPolicy": "PreemptLowerPriority",
            "description": "Used for system critical pods that must run in the cluster.",
        }
        for name, value in BUILT_IN
    ]


def admit(store: Store, pod: Obj) -> None:
    """Set ``spec.priority`` / ``spec.preemptionPolicy`` from the pod's PriorityClass (or the
    global default, else 0). Raises 403 for an unknown class, as the API server does."""
    spec = pod.setdefault("spec", {})
    name = spec.get("priorityClassName")
    classes = store.snapshot(PRIORITY_CLASSES)
    chosen: Obj | None
    if name:
        chosen = next((c for c in classes if c["metadata"]["name"] == name), None)
        if chosen is None:
            pod_name = pod.get("metadata", {}).get("name", "")
            raise ApiError(
                403,
                "Forbidden",
                f'pods "{pod_name}" is forbidden: no PriorityClass with name {name} was found',
            )
    else:
        chosen = next((c for c in classes if c.get("globalDefault")), None)
        if chosen is not None:
            spec["priorityClassName"] = chosen["metadata"]["name"]
    spec["priority"] = int(chosen.get("value", 0)) if chosen else int(spec.get("priority") or 0)
    spec.setdefault("preemptionPolicy", (chosen or {}).get("preemptionPolicy") or "PreemptLowerPriority")


def priority_of(pod: Obj) -> int:
    try:
        return int((pod.get("spec") or {}).get("priority") or 0)
    except (TypeError, ValueError):
        return 0


@dataclass(frozen=True, slots=True)
class Candidate:
    """A pod bound to a node: its priority, its requests and its key."""

    namespace: str
    name: str
    priority: int
    requests: dict[str, int]


def victims_for(
    want: dict[str, int],
    allocatable: dict[str, int],
    used: dict[str, int],
    bound: list[Candidate],
    priority: int,
) -> list[Candidate] | None:
    """The fewest lower-priority pods (lowest priority first) whose removal lets ``want`` fit;
    None when even removing them all would not."""
    lower = sorted((c for c in bound if c.priority < priority), key=lambda c: (c.priority, c.name))
    free = dict(used)
    chosen: list[Candidate] = []

    def fits() -> bool:
        return all(v <= 0 or free.get(r, 0) + v <= allocatable.get(r, 0) for r, v in want.items())

    for victim in lower:
        if fits():
            break
        chosen.append(victim)
        free["pods"] = free.get("pods", 0) - 1
        for r, v in victim.requests.items():
            free[r] = free.get(r, 0) - v
    return chosen if chosen and fits() else None
