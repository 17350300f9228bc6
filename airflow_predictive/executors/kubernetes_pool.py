"""A Kubernetes namespace as a ledger pool, and the plan as the worker pod's resources.

Capacity of a namespace pool: each ResourceQuota's ``hard`` (``requests.cpu``/``cpu``,
``requests.memory``/``memory``, ``limits.cpu``, ``limits.memory``; the tightest quota wins),
less what pods that are not ours already hold (``status.used`` minus our own pods' share, which
the ledger already counts), and the nodes' allocatable less every other pod's requests on the
requests side. Nothing known: capacity unknown (tasks are planned, never held back).

``with_planned_resources`` puts the plan's initial requests/limits on the base container of the
task's ``pod_override`` (a copy; the task's own override is kept otherwise), which
KubernetesExecutor's ``execute_async`` merges last (PodGenerator: containers by index, resources
replaced as a whole). Kubernetes objects stay in this adapter; the core sees ResourceVectors.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

from airflow_predictive.core.model.plan import Pool, PoolCapacity, PoolKind
from airflow_predictive.core.model.quantity import InvalidQuantity, parse_quantity
from airflow_predictive.core.model.resources import Metric, ResourceVector

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    from airflow_predictive.core.model.backend import Allocation, Capacity

_KEYS = {
    "requests": {
        "requests.cpu": Metric.CPU_CORES,
        "cpu": Metric.CPU_CORES,
        "requests.memory": Metric.MEMORY_BYTES,
        "memory": Metric.MEMORY_BYTES,
    },
    "limits": {"limits.cpu": Metric.CPU_CORES, "limits.memory": Metric.MEMORY_BYTES},
}


def _qty(value: Any) -> float | None:
    try:
        return parse_quantity(str(value))
    except (InvalidQuantity, ValueError):
        return None


def _side(values: Mapping[str, Any], side: str) -> dict[Metric, float]:
    out: dict[Metric, float] = {}
    for key, metric in _KEYS[side].items():
        v = _qty(values.get(key)) if key in values else None
        if v is not None:
            out[metric] = min(v, out.get(metric, v))
    return out


def namespace_capacity(
    quotas: Iterable[Mapping[str, Any]],
    ours_used: ResourceVector | None = None,
    ours_limits: ResourceVector | None = None,
    nodes: Capacity | None = None,
) -> PoolCapacity:
    """Pool capacity from ResourceQuota bodies (``spec.hard``, ``status.used``) and node capacity.

    ours_used / ours_limits: requests / limits of the pods this executor runs (in the ledger
    already), subtracted from ``status.used`` so that only other pods' holdings reduce capacity.
    """
    req: dict[Metric, float] = {}
    lim: dict[Metric, float] = {}
    for q in quotas:
        hard = (q.get("spec") or {}).get("hard") or {}
        used = (q.get("status") or {}).get("used") or {}
        for side, target, ours in (("requests", req, ours_used), ("limits", lim, ours_limits)):
            h, u = _side(hard, side), _side(used, side)
            for metric, cap in h.items():
                others = max(
                    0.0, u.get(metric, 0.0) - ((ours.get(metric) if ours is not None else None) or 0.0)
                )
                target[metric] = min(target.get(metric, cap - others), cap - others)
    if nodes is not None:
        free_total = nodes.allocatable.minus(nodes.allocated.minus(ours_used or ResourceVector()))
        for metric, value in free_total.present().items():
            if metric in (Metric.CPU_CORES, Metric.MEMORY_BYTES):
                req[metric] = min(req.get(metric, value), value)
    return PoolCapacity(
        requests=ResourceVector.from_mapping({m: max(0.0, v) for m, v in req.items()}),
        limits=ResourceVector.from_mapping({m: max(0.0, v) for m, v in lim.items()}),
    )


def namespace_pool(namespace: str, capacity: PoolCapacity, note: str = "") -> Pool:
    return Pool(
        f"k8s:{namespace}", PoolKind.KUBERNETES, capacity, note or f"namespace {namespace} quota + nodes"
    )


def _requirements(allocation: Allocation) -> dict[str, dict[str, str]]:
    def fmt(vector: ResourceVector) -> dict[str, str]:
        out = {}
        if vector.cpu_cores is not None:
            out["cpu"] = f"{max(1, round(vector.cpu_cores * 1000))}m"
        if vector.memory_bytes is not None:
            out["memory"] = str(int(vector.memory_bytes))
        return out

    return {"requests": fmt(allocation.requests), "limits": fmt(allocation.limits)}


def _with_base(executor_config: Mapping[str, Any] | None) -> tuple[dict[str, Any], Any]:
    """A copy of ``executor_config`` with its own copy of the pod_override, and that pod's base
    container (made, first, when the override has none)."""
    from kubernetes.client import models as k8s

    config = dict(executor_config or {})
    pod = copy.deepcopy(config.get("pod_override")) or k8s.V1Pod()
    if pod.spec is None:
        pod.spec = k8s.V1PodSpec(containers=[])
    containers = list(pod.spec.containers or [])
    base = next((c for c in containers if c.name == "base"), None)
    if base is None:
        base = k8s.V1Container(name="base")
        containers.insert(0, base)
    pod.spec.containers = containers
    config["pod_override"] = pod
    return config, base


def with_planned_resources(
    executor_config: Mapping[str, Any] | None, allocation: Allocation
) -> dict[str, Any]:
    """A copy of ``executor_config`` whose pod_override's base container carries ``allocation``."""
    from kubernetes.client import models as k8s

    config, base = _with_base(executor_config)
    res = _requirements(allocation)
    base.resources = k8s.V1ResourceRequirements(
        requests=res["requests"] or None, limits=res["limits"] or None
    )
    return config


def with_env(executor_config: Mapping[str, Any] | None, env: Mapping[str, str]) -> dict[str, Any]:
    """A copy of ``executor_config`` whose pod_override's base container also sets ``env`` (names
    it sets already keep their value; PodGenerator appends these to the template's)."""
    from kubernetes.client import models as k8s

    config, base = _with_base(executor_config)
    present = {e.name for e in base.env or []}
    extra = [k8s.V1EnvVar(name=k, value=v) for k, v in env.items() if k not in present]
    base.env = [*(base.env or []), *extra]
    return config
