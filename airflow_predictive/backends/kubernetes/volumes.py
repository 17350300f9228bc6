"""PVC expansion: grow a task's volume where its StorageClass allows it (``allowVolumeExpansion``).

Volumes only grow: a smaller size is REJECTED before any call. The result follows the same rules
as pod resizes: APPLIED when ``status.capacity`` reached the new size, PENDING while the
expansion runs (``Resizing`` / ``FileSystemResizePending``), UNSUPPORTED when the StorageClass
cannot expand (403 from the API server), REJECTED for validation errors, ERROR for API failures.
The core's ResourceVector has no capacity metric, so sizes here are plain bytes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow_predictive.backends.kubernetes.calls import Call, Sleep, Verb
from airflow_predictive.backends.kubernetes.procedures import Proc, drive
from airflow_predictive.core.model.backend import ResizeResult, ResizeStatus
from airflow_predictive.core.model.quantity import InvalidQuantity, format_memory, parse_quantity
from airflow_predictive.core.model.resources import format_bytes

if TYPE_CHECKING:
    from airflow_predictive.backends.kubernetes.backend import KubernetesPodBackend
    from airflow_predictive.backends.kubernetes.payloads import PersistentVolumeClaim


def _size(pvc: PersistentVolumeClaim, where: str) -> float | None:
    if where == "spec":
        text = (pvc.get("spec", {}).get("resources") or {}).get("requests", {}).get("storage")
    else:
        text = (pvc.get("status", {}).get("capacity") or {}).get("storage")
    try:
        return None if text is None else parse_quantity(text)
    except InvalidQuantity:
        return None


def expand(claim: str, size_bytes: float, *, settle_s: float, poll_s: float, now: Any) -> Proc[ResizeResult]:
    reply = yield Call(Verb.READ_PVC, claim)
    assert reply is not None
    if reply.status == 404:
        return ResizeResult(ResizeStatus.ERROR, f"persistentvolumeclaim {claim} not found")
    if not reply.ok:
        return ResizeResult(ResizeStatus.ERROR, f"reading {claim} failed: {reply.message}")
    pvc: PersistentVolumeClaim = reply.body
    current = _size(pvc, "status") or _size(pvc, "spec")
    if current is not None and size_bytes < current:
        return ResizeResult(
            ResizeStatus.REJECTED, f"volumes only grow: {format_bytes(size_bytes)} < {format_bytes(current)}"
        )
    if current is None or size_bytes > current:
        body = {"spec": {"resources": {"requests": {"storage": format_memory(size_bytes)}}}}
        patched = yield Call(Verb.PATCH_PVC, claim, body)
        assert patched is not None
        if patched.status == 403:
            return ResizeResult(ResizeStatus.UNSUPPORTED, f"cannot expand {claim}: {patched.message}")
        if patched.status == 422:
            return ResizeResult(ResizeStatus.REJECTED, f"refused by the API server: {patched.message}")
        if not patched.ok:
            return ResizeResult(ResizeStatus.ERROR, f"expanding {claim} failed: {patched.message}")
    want = parse_quantity(format_memory(size_bytes))
    deadline = now() + settle_s
    while True:
        reply = yield Call(Verb.READ_PVC, claim)
        assert reply is not None
        if reply.ok:
            have = _size(reply.body, "status")
            if have is not None and have >= want:
                return ResizeResult(ResizeStatus.APPLIED, f"{claim} is {format_bytes(have)}")
        if now() >= deadline:
            conds = (
                [c.get("type", "") for c in (reply.body or {}).get("status", {}).get("conditions", [])]
                if reply.ok
                else []
            )
            return ResizeResult(
                ResizeStatus.PENDING, f"expansion of {claim} in progress ({', '.join(conds) or 'waiting'})"
            )
        yield Sleep(poll_s)


class KubernetesVolumeBackend:
    """Expands PVCs in the pod backend's namespace, through the pod backend's client and retries."""

    name = "kubernetes-volumes"

    def __init__(self, pods: KubernetesPodBackend) -> None:
        self._pods = pods

    def expand(self, claim: str, size_bytes: float) -> ResizeResult:
        s = self._pods.settings
        clock = self._pods._procs.clock
        proc = expand(
            claim, size_bytes, settle_s=s.settle_timeout_s, poll_s=s.poll_interval_s, now=clock.monotonic
        )
        result: ResizeResult = drive(proc, self._pods._execute)
        return result

    def size(self, claim: str) -> float | None:
        reply = self._pods._execute(Call(Verb.READ_PVC, claim))
        if reply is None or not reply.ok:
            return None
        return _size(reply.body, "status")
