"""Pure translations between core values and Kubernetes payloads, shared by the sync and async
backends: pod manifests, resize bodies that keep the pod Burstable, how far a resize got, task
state and usage.

Nothing here performs I/O or touches a client object; every function is deterministic, so the
backends' behaviour can be tested without a cluster.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

from airflow_predictive.core.model.backend import Allocation, ExitKind, TaskState
from airflow_predictive.core.model.quantity import InvalidQuantity, format_cpu, format_memory, parse_quantity
from airflow_predictive.core.model.resources import Metric, ResourceVector

if TYPE_CHECKING:
    from airflow_predictive.backends.kubernetes.payloads import (
        Condition,
        Container,
        Pod,
        PodMetrics,
        ResourceRequirements,
    )
    from airflow_predictive.backends.kubernetes.settings import KubernetesSettings
    from airflow_predictive.core.model.backend import ProvisionSpec

GPU_RESOURCE = "nvidia.com/gpu"
MANAGED_BY = ("app.kubernetes.io/managed-by", "airflow-predictive")
TASK_LABEL = "predictive.airflow.apache.org/task"
RESIZE_CONDITIONS = ("PodResizePending", "PodResizeInProgress")
_KUBE = {Metric.CPU_CORES: "cpu", Metric.MEMORY_BYTES: "memory"}
_LABEL_VALUE = re.compile(r"[^A-Za-z0-9_.-]")


def _fmt(metric: Metric, value: float) -> str:
    return format_cpu(value) if metric is Metric.CPU_CORES else format_memory(value)


def _qty(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        return parse_quantity(text)
    except InvalidQuantity:
        return None


def resource_requirements(
    allocation: Allocation,
    defaults: ResourceVector,
    *,
    gpus: int = 0,
    current: ResourceRequirements | None = None,
) -> ResourceRequirements:
    """Requests and limits for ``allocation`` such that the pod is Burstable and stays so.

    A pod whose cpu and memory requests both equal their limits would be Guaranteed, and a QoS
    class never changes in place. Then the CPU limit is left out (CPU is weighted by its request,
    not capped) unless the pod already carries one, which cannot be removed: then it is set one
    millicore above the request. Requests absent from the allocation take ``defaults``. A pod that
    is Guaranteed already (``current``) keeps requests == limits: its class cannot change either.
    """
    requests: dict[str, str] = {}
    limits: dict[str, str] = {}
    for metric, name in _KUBE.items():
        req = allocation.requests.get(metric)
        lim = allocation.limits.get(metric)
        if req is None:
            req = lim if lim is not None else defaults.get(metric)
        if req is not None:
            requests[name] = _fmt(metric, req)
        if lim is not None:
            limits[name] = _fmt(metric, lim)
    guaranteed = all(name in limits and limits[name] == requests.get(name) for name in ("cpu", "memory"))
    if guaranteed and current is not None and is_guaranteed(current):
        pass  # a Guaranteed pod (e.g. a user's KubernetesPodOperator pod) stays Guaranteed
    elif guaranteed:
        has_cpu_limit = current is not None and "cpu" in (current.get("limits") or {})
        if has_cpu_limit:
            limits["cpu"] = f"{round(parse_quantity(requests['cpu']) * 1000) + 1}m"
        else:
            del limits["cpu"]
    if gpus:
        requests[GPU_RESOURCE] = str(gpus)
        limits[GPU_RESOURCE] = str(gpus)
    out: ResourceRequirements = {"requests": requests}
    if limits:
        out["limits"] = limits
    return out


def is_guaranteed(res: ResourceRequirements) -> bool:
    """cpu and memory requests set and equal to their limits (a missing request defaults to the limit)."""
    requests = res.get("requests") or {}
    limits = res.get("limits") or {}
    for name in ("cpu", "memory"):
        lim = _qty(limits.get(name))
        req = _qty(requests.get(name, limits.get(name)))
        if lim is None or req is None or not math.isclose(lim, req):
            return False
    return True


def same_resources(a: ResourceRequirements | None, b: ResourceRequirements | None) -> bool:
    """cpu / memory requests and limits equal by value ('1024Mi' == '1Gi')."""
    ra: dict[str, dict[str, str]] = dict(a or {})  # type: ignore[arg-type]
    rb: dict[str, dict[str, str]] = dict(b or {})  # type: ignore[arg-type]
    for part in ("requests", "limits"):
        pa, pb = ra.get(part) or {}, rb.get(part) or {}
        for name in ("cpu", "memory"):
            va, vb = _qty(pa.get(name)), _qty(pb.get(name))
            if (va is None) != (vb is None) or (
                va is not None and vb is not None and not math.isclose(va, vb)
            ):
                return False
    return True


def allocation_of(res: ResourceRequirements | None) -> Allocation:
    """The cpu / memory requests and limits of a container as an Allocation."""
    parts: dict[str, dict[str, str]] = dict(res or {})  # type: ignore[arg-type]
    values: dict[str, dict[Metric, float | None]] = {"requests": {}, "limits": {}}
    for part in values:
        for metric, name in _KUBE.items():
            values[part][metric] = _qty((parts.get(part) or {}).get(name))
    return Allocation(
        requests=ResourceVector.from_mapping(values["requests"]),
        limits=ResourceVector.from_mapping(values["limits"]),
    )


def label_value(value: str) -> str:
    """A valid label value: <= 63 chars of [A-Za-z0-9_.-], alphanumeric at both ends."""
    clean = _LABEL_VALUE.sub("_", value)[:63].strip("_.-")
    return clean


def pod_manifest(spec: ProvisionSpec, allocation: Allocation, settings: KubernetesSettings) -> Pod:
    labels = {k: label_value(v) for k, v in spec.labels.items() if _valid_label_key(k)}
    labels[MANAGED_BY[0]] = MANAGED_BY[1]
    labels[TASK_LABEL] = label_value(spec.name)
    container: Container = {
        "name": settings.container_name,
        "image": spec.image or settings.image,
        "resources": resource_requirements(allocation, settings.default_requests, gpus=spec.gpus),
        "resizePolicy": [
            {"resourceName": "cpu", "restartPolicy": "NotRequired"},
            {"resourceName": "memory", "restartPolicy": "NotRequired"},
        ],
    }
    if spec.command:
        container["command"] = list(spec.command)
    if spec.env:
        container["env"] = [{"name": k, "value": v} for k, v in sorted(spec.env.items())]
    pod: Pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": spec.name,
            "namespace": settings.namespace,
            "labels": labels,
            "annotations": dict(spec.annotations),
        },
        "spec": {"containers": [container], "restartPolicy": settings.restart_policy},
    }
    if settings.service_account:
        pod["spec"]["serviceAccountName"] = settings.service_account
    if spec.deadline_s is not None:  # the kubelet ends the pod itself, even if its caller died
        pod["spec"]["activeDeadlineSeconds"] = max(1, math.ceil(spec.deadline_s))
    return pod


def _valid_label_key(key: str) -> bool:
    return bool(re.fullmatch(r"([a-z0-9.-]+/)?[A-Za-z0-9]([A-Za-z0-9_.-]{0,61}[A-Za-z0-9])?", key))


def resize_body(container: str, requirements: ResourceRequirements) -> dict[str, object]:
    """Strategic-merge patch for ``pods/{name}/resize``: only this container's resources."""
    return {"spec": {"containers": [{"name": container, "resources": requirements}]}}


def container_spec(pod: Pod, name: str) -> Container | None:
    return next((c for c in pod.get("spec", {}).get("containers", []) if c.get("name") == name), None)


class Progress(StrEnum):
    """How far a resize got, read from the pod's status."""

    DONE = "done"  # observed, no resize condition, actual == spec
    WAITING = "waiting"  # the kubelet has not observed the generation yet
    IN_PROGRESS = "in_progress"
    IN_PROGRESS_ERROR = "in_progress_error"  # allocated but actuation fails (e.g. below usage)
    DEFERRED = "deferred"
    INFEASIBLE = "infeasible"
    GONE = "gone"  # the pod finished or is being deleted


@dataclass(frozen=True, slots=True)
class Observation:
    progress: Progress
    message: str = ""


def _conditions(pod: Pod) -> dict[str, Condition]:
    return {c.get("type", ""): c for c in pod.get("status", {}).get("conditions", [])}


def observe_resize(pod: Pod, generation: int, container: str) -> Observation:
    """Where a resize that produced ``generation`` stands.

    Done means: ``status.observedGeneration >= generation``, no ``PodResizePending`` /
    ``PodResizeInProgress`` condition, and the container's actual resources equal its spec.
    Clusters older than 1.33 have no observedGeneration: then the last two decide.
    """
    status = pod.get("status", {})
    if pod.get("metadata", {}).get("deletionTimestamp") or status.get("phase") in ("Succeeded", "Failed"):
        return Observation(Progress.GONE, f"pod is {status.get('phase') or 'being deleted'}")
    observed = status.get("observedGeneration")
    conds = _conditions(pod)
    pending = conds.get("PodResizePending")
    if pending is not None and pending.get("status") == "True":
        seen = pending.get("observedGeneration", observed)
        if seen is None or seen >= generation:
            kind = Progress.INFEASIBLE if pending.get("reason") == "Infeasible" else Progress.DEFERRED
            return Observation(kind, pending.get("message", pending.get("reason", "")))
    progress = conds.get("PodResizeInProgress")
    if progress is not None and progress.get("status") == "True":
        if progress.get("reason") == "Error":
            return Observation(Progress.IN_PROGRESS_ERROR, progress.get("message", "resize failed"))
        return Observation(Progress.IN_PROGRESS)
    if observed is not None and observed < generation:
        return Observation(Progress.WAITING)
    spec = container_spec(pod, container)
    actual = next((s for s in status.get("containerStatuses", []) if s.get("name") == container), None)
    if spec is None or actual is None:
        return Observation(Progress.WAITING)
    if same_resources(spec.get("resources"), actual.get("resources")):
        return Observation(Progress.DONE)
    return Observation(Progress.WAITING)


def actual_resources(pod: Pod, container: str) -> ResourceRequirements | None:
    status = next(
        (s for s in pod.get("status", {}).get("containerStatuses", []) if s.get("name") == container), None
    )
    return None if status is None else status.get("resources")


def task_state(pod: Pod | None, container: str) -> TaskState:
    """ExitKind from the pod: OOMKilled read from the container's state / lastState (Airflow
    itself only sees "Failed", apache/airflow#8722)."""
    if pod is None:
        return TaskState(ExitKind.GONE, reason="pod not found")
    status = pod.get("status", {})
    cs = next((s for s in status.get("containerStatuses", []) if s.get("name") == container), None)
    term = (cs or {}).get("state", {}).get("terminated")
    last = (cs or {}).get("lastState", {}).get("terminated")
    ooms = sum(1 for t in (term, last) if t and t.get("reason") == "OOMKilled")
    if term is not None:
        code = term.get("exitCode")
        reason = term.get("reason", "")
        if reason == "OOMKilled":
            return TaskState(
                ExitKind.OOM_KILLED,
                code,
                f"OOMKilled: container {container} exceeded its memory limit",
                max(1, ooms),
            )
        if code == 0:
            return TaskState(ExitKind.SUCCEEDED, 0, reason or "Completed", ooms)
        return TaskState(ExitKind.FAILED, code, term.get("message") or reason or "Error", ooms)
    phase = status.get("phase", "Pending")
    if pod.get("metadata", {}).get("deletionTimestamp"):
        return TaskState(ExitKind.GONE, reason="pod is being deleted", oom_events=ooms)
    if phase == "Succeeded":
        return TaskState(ExitKind.SUCCEEDED, 0, "Succeeded", ooms)
    if phase == "Failed":
        return TaskState(
            ExitKind.FAILED, None, status.get("reason") or status.get("message") or "Failed", ooms
        )
    waiting = (cs or {}).get("state", {}).get("waiting") or {}
    return TaskState(ExitKind.RUNNING, reason=waiting.get("reason", phase), oom_events=ooms)


def usage_of(metrics: PodMetrics) -> ResourceVector:
    """CPU (cores, a rate over the window) and memory (working set) summed over containers."""
    cpu = mem = 0.0
    seen_cpu = seen_mem = False
    for c in metrics.get("containers", []):
        usage = c.get("usage", {})
        v = _qty(usage.get("cpu"))
        if v is not None:
            cpu, seen_cpu = cpu + v, True
        v = _qty(usage.get("memory"))
        if v is not None:
            mem, seen_mem = mem + v, True
    return ResourceVector.lenient(
        {Metric.CPU_CORES: cpu if seen_cpu else None, Metric.MEMORY_BYTES: mem if seen_mem else None}
    )


def pod_requests(pod: Pod) -> ResourceVector:
    """Summed cpu / memory requests of a pod's containers (what it holds on a node)."""
    cpu = mem = 0.0
    for c in pod.get("spec", {}).get("containers", []):
        req = (c.get("resources") or {}).get("requests") or {}
        cpu += _qty(req.get("cpu")) or 0.0
        mem += _qty(req.get("memory")) or 0.0
    gpus = sum(
        _qty(((c.get("resources") or {}).get("requests") or {}).get(GPU_RESOURCE)) or 0.0
        for c in pod.get("spec", {}).get("containers", [])
    )
    return ResourceVector(cpu_cores=cpu, memory_bytes=mem, gpu_util=gpus or None)
