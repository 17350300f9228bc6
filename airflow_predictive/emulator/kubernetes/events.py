"""Core/v1 Events the emulated scheduler and kubelet record about pods.

Why it exists: the KubernetesPodOperator lists ``/api/v1/namespaces/{ns}/events`` with
``fieldSelector=involvedObject.name=<pod>`` to explain a pod that failed or does not start, and
users read them with ``kubectl get events``. Events repeat like the real recorder: the same
(object, reason, message) bumps ``count`` and ``lastTimestamp`` instead of adding a new object.
Recording an event must never fail the caller (a vanished namespace is ignored).
"""

from __future__ import annotations

import hashlib
import time
from typing import TYPE_CHECKING, Any

from airflow_predictive.emulator.kubernetes.errors import ApiError
from airflow_predictive.emulator.kubernetes.resources import EVENTS

if TYPE_CHECKING:
    from airflow_predictive.emulator.kubernetes.store import Obj, Store


def record(
    store: Store,
    pod: Obj,
    reason: str,
    message: str,
    ts: str,
    *,
    type_: str = "Normal",
    component: str = "kubelet",
    field_path: str | None = None,
    names: dict[str, str] | None = None,
) -> None:
    """``names`` remembers the event object of each (pod, reason, message, field) for repeats;
    new events are named ``<pod>.<hex nanoseconds>`` like the real recorder (time-ordered)."""
    meta = pod["metadata"]
    ns = meta.get("namespace", "default")
    key = hashlib.sha256(f"{meta.get('uid')}/{reason}/{message}/{field_path}".encode()).hexdigest()
    known = names.get(key) if names is not None else None
    name = known or f"{meta['name']}.{time.time_ns():x}"
    if names is not None:
        names[key] = name
    host = (pod.get("spec") or {}).get("nodeName") or ""
    involved: dict[str, Any] = {
        "kind": "Pod",
        "namespace": ns,
        "name": meta["name"],
        "uid": meta.get("uid", ""),
        "apiVersion": "v1",
        "resourceVersion": meta.get("resourceVersion", ""),
    }
    if field_path:
        involved["fieldPath"] = field_path
    if known is None:
        body = {
            "metadata": {"name": name, "namespace": ns},
            "involvedObject": involved,
            "reason": reason,
            "message": message,
            "source": {"component": component, **({"host": host} if host else {})},
            "firstTimestamp": ts,
            "lastTimestamp": ts,
            "eventTime": None,
            "count": 1,
            "type": type_,
            "reportingComponent": component,
            "reportingInstance": host if component == "kubelet" else "",
        }
        try:
            store.create(EVENTS, ns, body)
        except ApiError:
            pass
        return

    def bump(cur: Obj) -> Obj:
        cur["count"] = int(cur.get("count") or 1) + 1
        cur["lastTimestamp"] = ts
        return cur

    try:
        store.replace(EVENTS, ns, name, bump, spec_changes_generation=False)
    except ApiError:
        pass
