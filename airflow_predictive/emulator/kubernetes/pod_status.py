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
    from airflow_predictive.emulator.kubernetes.kubelet import Kubelet, PodRuntime
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

    running = any(c.running for c in rt.containers.values())
    ready = running and all(c.running for c in rt.containers.values())
    conditions = [
        cond("PodReadyToStartContainers", True),
        cond("Initialized", True),
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
        container_status(kubelet, c, rt) for c in pod["spec"]["containers"] if c["name"] in rt.containers
    ]
    exits = [cr.terminated["exitCode"] for cr in rt.containers.values() if cr.terminated]
    if not rt.finished:
        phase = "Running"
    else:
        phase = "Succeeded" if all(code == 0 for code in exits) else "Failed"
    return {
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


def container_status(kubelet: Kubelet, c: Obj, rt: PodRuntime) -> dict[str, Any]:
    cr = rt.containers[c["name"]]
    if cr.running:
        state: dict[str, Any] = {"running": {"startedAt": cr.started_ts}}
    elif cr.waiting_until is not None:
        state = {
            "waiting": {
                "reason": "CrashLoopBackOff",
                "message": f"back-off {int(kubelet.config.backoff_base_s * 2 ** (cr.restart_count - 1))}s "
                f"restarting failed container={cr.name} pod={rt.name}_{rt.namespace}({rt.uid})",
            }
        }
    else:
        state = {"terminated": dict(cr.terminated or {})}
    actual = rt.actual.get(c["name"], {})
    return {
        "name": c["name"],
        "image": c.get("image", ""),
        "imageID": f"docker.io/library/{c.get('image', '')}@sha256:{hashlib.sha256(c.get('image', '').encode()).hexdigest()}",
        "containerID": cr.container_id,
        "ready": cr.running,
        "started": cr.running,
        "restartCount": cr.restart_count,
        "state": state,
        "lastState": {"terminated": dict(cr.last_terminated)} if cr.last_terminated else {},
        "allocatedResources": dict((rt.allocated.get(c["name"], {}) or {}).get("requests") or {}),
        "resources": {k: dict(v) for k, v in actual.items() if v},
    }


def _pod_ip(uid: str) -> str:
    h = int(hashlib.sha256(uid.encode()).hexdigest()[:6], 16)
    return f"10.244.{(h >> 8) % 250 + 1}.{h % 250 + 2}"
