"""Pod status as the simulated kubelet reports it: conditions, container statuses, phase.

Pure formatting of the kubelet's per-pod state (``PodRuntime``) into the API's shapes
(``conditions[].observedGeneration``, ``allocatedResources``, ``resources``, ``lastState``); it
never changes that state.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any

from airflow_predictive.emulator.kubernetes.validation import compute_qos

if TYPE_CHECKING:
    from airflow_predictive.emulator.kubernetes.kubelet import ContainerRuntime, Kubelet, PodRuntime
    from airflow_predictive.emulator.kubernetes.store import Obj


def pod_status(kubelet: Kubelet, pod: Obj, rt: PodRuntime) -> dict[str, Any]:
    old = pod.get("status") or {}
    gen = rt.observed_generation
    old_conds = {c.get("type"): c for c in old.get("conditions", [])}

    def cond(
        type_: str, ok: bool, reason: str | None = None, message: str | None = None, ts: str | None = None
    ) -> dict[str, Any]:
        prev = old_conds.get(type_)
        value = "True" if ok else "False"
        keep = prev is not None and prev.get("status") == value and prev.get("reason") == reason
        body: dict[str, Any] = {
            "type": type_,
            "status": value,
            "lastProbeTime": None,
            "lastTransitionTime": prev["lastTransitionTime"] if keep and prev else (ts or kubelet.ts()),
            "observedGeneration": gen,
        }
        if reason:
            body["reason"] = reason
        if message:
            body["message"] = message
        return body

    sidecars = [c for c in rt.init_containers.values() if c.sidecar]
    running = any(c.running for c in rt.containers.values())
    ready = running and all(c.running for c in (*rt.containers.values(), *sidecars))
    pending_init = [n for n, c in rt.init_containers.items() if not c.sidecar and not _completed(c)]
    pending_init += [n for n, c in rt.init_containers.items() if c.sidecar and not c.running]
    initialized = rt.initialized
    conditions = [
        cond("PodReadyToStartContainers", True),
        cond(
            "Initialized",
            initialized,
            None if initialized else "ContainersNotInitialized",
            None if initialized else f"containers with incomplete status: [{' '.join(pending_init)}]",
        ),
        cond("Ready", ready, None if ready else "PodCompleted" if rt.finished else "ContainersNotReady"),
        cond(
            "ContainersReady",
            ready,
            None if ready else "PodCompleted" if rt.finished else "ContainersNotReady",
        ),
        cond("PodScheduled", True),
    ]
    if rt.pending is not None:
        conditions.append(cond("PodResizePending", True, rt.pending[0], rt.pending[1], rt.pending_ts))
    if rt.allocated != rt.actual:
        conditions.append(
            cond(
                "PodResizeInProgress",
                True,
                "Error" if rt.in_progress_error else None,
                rt.in_progress_error,
                rt.in_progress_ts,
            )
        )
    statuses = [
        container_status(kubelet, c, rt.containers[c["name"]], rt)
        for c in pod["spec"]["containers"]
        if c["name"] in rt.containers
    ]
    init_statuses = [
        container_status(kubelet, c, rt.init_containers[c["name"]], rt)
        for c in pod["spec"].get("initContainers") or []
        if c["name"] in rt.init_containers
    ]
    exits = [cr.terminated["exitCode"] for cr in rt.containers.values() if cr.terminated]
    if rt.init_failed or rt.deadline_exceeded:
        phase = "Failed"
    elif not initialized or all(_never_started(c) for c in rt.containers.values()):
        phase = "Pending"  # e.g. an image that cannot be pulled: no container ever started
    elif not rt.finished:
        phase = "Running"
    else:
        phase = "Succeeded" if exits and all(code == 0 for code in exits) else "Failed"
    body: dict[str, Any] = {
        "observedGeneration": gen,
        "phase": phase,
        "conditions": conditions,
        "hostIP": "10.0.0.1",
        "hostIPs": [{"ip": "10.0.0.1"}],
        "podIP": old.get("podIP") or _pod_ip(rt.uid),
        "podIPs": [{"ip": old.get("podIP") or _pod_ip(rt.uid)}],
        "startTime": rt.start_ts,
        "containerStatuses": statuses,
        "qosClass": old.get("qosClass") or compute_qos(pod),
    }
    if init_statuses:
        body["initContainerStatuses"] = init_statuses
    if rt.deadline_exceeded:
        body["reason"] = "DeadlineExceeded"
        body["message"] = "Pod was active on the node longer than the specified deadline"
    return body


def _never_started(cr: ContainerRuntime) -> bool:
    return cr.waiting is not None and cr.last_terminated is None and cr.terminated is None


def _completed(cr: ContainerRuntime) -> bool:
    return cr.terminated is not None and cr.terminated.get("exitCode") == 0


def container_status(kubelet: Kubelet, c: Obj, cr: ContainerRuntime, rt: PodRuntime) -> dict[str, Any]:
    if cr.running:
        state: dict[str, Any] = {"running": {"startedAt": cr.started_ts}}
    elif cr.waiting is not None:
        state = {
            "waiting": {"reason": cr.waiting[0], **({"message": cr.waiting[1]} if cr.waiting[1] else {})}
        }
    elif cr.waiting_until is not None:
        state = {
            "waiting": {
                "reason": "CrashLoopBackOff",
                "message": f"back-off {int(kubelet.config.backoff_base_s * 2 ** (cr.restart_count - 1))}s "
                f"restarting failed container={cr.name} pod={rt.name}_{rt.namespace}({rt.uid})",
            }
        }
    elif cr.terminated is not None:
        state = {"terminated": dict(cr.terminated)}
    else:
        state = {"waiting": {"reason": "ContainerCreating"}}
    actual = rt.actual.get(c["name"], {})
    started = cr.running
    body: dict[str, Any] = {
        "name": c["name"],
        "image": c.get("image", ""),
        "imageID": f"docker.io/library/{c.get('image', '')}@sha256:{hashlib.sha256(c.get('image', '').encode()).hexdigest()}",
        "containerID": cr.container_id,
        "ready": cr.running,
        "started": started,
        "restartCount": cr.restart_count,
        "state": state,
        "lastState": {"terminated": dict(cr.last_terminated)} if cr.last_terminated else {},
    }
    if c["name"] in rt.allocated:
        body["allocatedResources"] = dict((rt.allocated.get(c["name"], {}) or {}).get("requests") or {})
        body["resources"] = {k: dict(v) for k, v in actual.items() if v}
    if "containerID" in body and cr.waiting is not None and not cr.started_ts:
        body.pop("containerID")
    return body


def _pod_ip(uid: str) -> str:
    h = int(hashlib.sha256(uid.encode()).hexdigest()[:6], 16)
    return f"10.244.{(h >> 8) % 250 + 1}.{h % 250 + 2}"
