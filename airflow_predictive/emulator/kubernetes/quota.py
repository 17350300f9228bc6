"""ResourceQuota admission: pod creation and resizes that would exceed a namespace's quota are
refused with 403 "exceeded quota", like the API server's quota admission plugin.

Usage is computed from the stored non-terminal pods each time (no controller lag); ``status.used``
of a quota is filled in when it is read.
"""

from __future__ import annotations

from decimal import Decimal
from typing import TYPE_CHECKING

from airflow_predictive.emulator.kubernetes import quantity
from airflow_predictive.emulator.kubernetes.errors import forbidden_quota
from airflow_predictive.emulator.kubernetes.resources import PODS, QUOTAS

if TYPE_CHECKING:
    from airflow_predictive.emulator.kubernetes.store import Obj, Store

_TRACKED = ("cpu", "memory")


def pod_usage(pod: Obj) -> dict[str, Decimal]:
    """What one pod counts against quota: requests.*, limits.*, cpu/memory (= requests), pods."""
    phase = (pod.get("status") or {}).get("phase")
    if phase in ("Succeeded", "Failed"):
        return {}
    out: dict[str, Decimal] = {"pods": Decimal(1)}
    for c in pod.get("spec", {}).get("containers", []):
        res = c.get("resources") or {}
        for part in ("requests", "limits"):
            for name, value in (res.get(part) or {}).items():
                key = f"{part}.{name}"
                out[key] = out.get(key, Decimal(0)) + quantity.parse(value)
                if part == "requests" and name in _TRACKED:
                    out[name] = out.get(name, Decimal(0)) + quantity.parse(value)
    return out


def _fmt(name: str, value: Decimal) -> str:
    base = name.split(".", 1)[-1]
    return f"{name}={quantity.canonical('cpu' if base == 'cpu' else 'memory' if base == 'memory' else base, value)}"


def namespace_usage(store: Store, namespace: str, exclude_uid: str | None = None) -> dict[str, Decimal]:
    total: dict[str, Decimal] = {}
    for pod in store.list(PODS, namespace)[0]:
        if pod["metadata"].get("uid") == exclude_uid:
            continue
        for k, v in pod_usage(pod).items():
            total[k] = total.get(k, Decimal(0)) + v
    return total


def admit(store: Store, namespace: str, name: str, new: Obj, old: Obj | None = None) -> None:
    """Raise 403 when ``new`` (replacing ``old``) would push any hard limit over its value."""
    quotas = store.list(QUOTAS, namespace)[0]
    if not quotas:
        return
    new_usage = pod_usage(new)
    old_usage = pod_usage(old) if old is not None else {}
    used = namespace_usage(store, namespace, exclude_uid=(old or {}).get("metadata", {}).get("uid"))
    for q in quotas:
        hard = {k: quantity.parse(v) for k, v in (q.get("spec", {}).get("hard") or {}).items()}
        requested, used_s, limited = [], [], []
        for key, limit in sorted(hard.items()):
            delta = new_usage.get(key, Decimal(0)) - old_usage.get(key, Decimal(0))
            if delta <= 0:
                continue
            already = used.get(key, Decimal(0)) + old_usage.get(key, Decimal(0))
            if already + delta > limit:
                requested.append(_fmt(key, delta))
                used_s.append(_fmt(key, already))
                limited.append(_fmt(key, limit))
        if requested:
            raise forbidden_quota(
                "Pod",
                name,
                f"exceeded quota: {q['metadata']['name']}, requested: {','.join(requested)}, "
                f"used: {','.join(used_s)}, limited: {','.join(limited)}",
            )


def with_status(store: Store, quota: Obj) -> Obj:
    used = namespace_usage(store, quota["metadata"]["namespace"])
    hard = quota.get("spec", {}).get("hard") or {}
    quota["status"] = {
        "hard": dict(hard),
        "used": {k: quantity.canonical(k.split(".", 1)[-1], used.get(k, Decimal(0))) for k in hard},
    }
    return quota
