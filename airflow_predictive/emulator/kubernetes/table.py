"""Server-side printing: the ``meta.k8s.io/v1`` Table kubectl asks for (``Accept: ...;as=Table``).

kubectl renders what the server puts in the table; without one it prints only NAME and AGE.
Pods get kubectl's usual columns (NAME READY STATUS RESTARTS AGE, plus IP and NODE for -o wide);
other resources NAME and AGE. Only read-only formatting happens here.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow_predictive.emulator.kubernetes.store import Obj, Resource


def wants_table(accept: str) -> bool:
    return "as=Table" in accept


def _age(created: str | None, now: datetime) -> str:
    if not created:
        return "<unknown>"
    try:
        then = datetime.strptime(created, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    except ValueError:
        return "<unknown>"
    s = max(0, int((now - then).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if s >= 2 * size:
            return f"{s // size}{unit}"
    return f"{s}s"


def _is_sidecar(pod: Obj, name: Any) -> bool:
    inits: list[dict[str, Any]] = pod.get("spec", {}).get("initContainers") or []
    spec: dict[str, Any] = next((c for c in inits if c.get("name") == name), {})
    return spec.get("restartPolicy") == "Always"


def _pod_cells(pod: Obj) -> list[Any]:
    status = pod.get("status") or {}
    statuses = status.get("containerStatuses") or []
    total = len(pod.get("spec", {}).get("containers", []))
    ready = sum(1 for c in statuses if c.get("ready"))
    restarts = sum(int(c.get("restartCount", 0)) for c in statuses)
    reason = status.get("phase", "Pending")
    inits = [c for c in status.get("initContainerStatuses") or [] if not _is_sidecar(pod, c.get("name"))]
    initializing = False
    for i, c in enumerate(inits):  # kubectl: Init:<reason> or Init:<done>/<total>
        state = c.get("state") or {}
        term, wait = state.get("terminated"), state.get("waiting")
        if term and term.get("exitCode") == 0:
            continue
        initializing = True
        if term:
            reason = f"Init:{term.get('reason') or 'ExitCode:' + str(term.get('exitCode'))}"
        elif wait and wait.get("reason") and wait["reason"] != "PodInitializing":
            reason = f"Init:{wait['reason']}"
        else:
            reason = f"Init:{i}/{len(inits)}"
        break
    for c in [] if initializing else reversed(statuses):
        state = c.get("state") or {}
        if "waiting" in state and state["waiting"].get("reason"):
            reason = state["waiting"]["reason"]
        elif "terminated" in state and state["terminated"].get("reason"):
            reason = state["terminated"]["reason"]
    if pod.get("metadata", {}).get("deletionTimestamp"):
        reason = "Terminating"
    return [f"{ready}/{total}", reason, restarts]


def table(
    resource: Resource, items: list[Obj], resource_version: str, now: datetime, full: bool
) -> dict[str, Any]:
    if resource.kind == "Event":
        return _event_table(items, resource_version, now, full)
    is_pod = resource.kind == "Pod"
    columns: list[dict[str, Any]] = [
        {
            "name": "Name",
            "type": "string",
            "format": "name",
            "description": "Name of the object",
            "priority": 0,
        }
    ]
    if is_pod:
        columns += [
            {
                "name": "Ready",
                "type": "string",
                "format": "",
                "description": "ready containers",
                "priority": 0,
            },
            {"name": "Status", "type": "string", "format": "", "description": "pod status", "priority": 0},
            {
                "name": "Restarts",
                "type": "integer",
                "format": "",
                "description": "container restarts",
                "priority": 0,
            },
        ]
    columns.append(
        {"name": "Age", "type": "string", "format": "", "description": "time since creation", "priority": 0}
    )
    if is_pod:
        columns += [
            {"name": "IP", "type": "string", "format": "", "description": "pod IP", "priority": 1},
            {"name": "Node", "type": "string", "format": "", "description": "node name", "priority": 1},
        ]
    rows = []
    for obj in items:
        meta = obj.get("metadata") or {}
        cells: list[Any] = [meta.get("name", "")]
        if is_pod:
            cells += _pod_cells(obj)
        cells.append(_age(meta.get("creationTimestamp"), now))
        if is_pod:
            cells += [
                (obj.get("status") or {}).get("podIP", "<none>"),
                obj.get("spec", {}).get("nodeName", "<none>"),
            ]
        row_object = (
            obj
            if full
            else {
                "kind": "PartialObjectMetadata",
                "apiVersion": "meta.k8s.io/v1",
                "metadata": meta,
            }
        )
        rows.append({"cells": cells, "object": row_object})
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": resource_version},
        "columnDefinitions": columns,
        "rows": rows,
    }


def _col(name: str, priority: int = 0, type_: str = "string", fmt: str = "") -> dict[str, Any]:
    return {"name": name, "type": type_, "format": fmt, "description": name, "priority": priority}


def _event_table(items: list[Obj], resource_version: str, now: datetime, full: bool) -> dict[str, Any]:
    """Like the API server's event printer: kubectl shows LAST SEEN TYPE REASON OBJECT MESSAGE."""
    columns = [
        _col("Last Seen"),
        _col("Type"),
        _col("Reason"),
        _col("Object"),
        _col("Subobject", 1),
        _col("Source", 1),
        _col("Message"),
        _col("First Seen", 1),
        _col("Count", 1, "integer"),
        _col("Name", 1, fmt="name"),
    ]
    rows = []
    for ev in sorted(items, key=lambda e: str(e.get("lastTimestamp") or "")):
        meta = ev.get("metadata") or {}
        obj = ev.get("involvedObject") or {}
        source = ev.get("source") or {}
        cells = [
            _age(ev.get("lastTimestamp"), now),
            ev.get("type", ""),
            ev.get("reason", ""),
            f"{str(obj.get('kind', '')).lower()}/{obj.get('name', '')}",
            obj.get("fieldPath", ""),
            ", ".join(v for v in (source.get("component"), source.get("host")) if v),
            ev.get("message", ""),
            _age(ev.get("firstTimestamp"), now),
            int(ev.get("count") or 1),
            meta.get("name", ""),
        ]
        row_object = (
            ev
            if full
            else {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": meta}
        )
        rows.append({"cells": cells, "object": row_object})
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": resource_version},
        "columnDefinitions": columns,
        "rows": rows,
    }
