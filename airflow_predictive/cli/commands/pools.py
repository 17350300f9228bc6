"""`airflow predictive pools [--json]`: each pool's capacity, present and coming, what is reserved
over time, and the tasks admission holds back with their reason (from the ledger and the stored
decisions).

JSON keys: ``pools[].capacity`` (present), ``pools[].coming[]`` (capacity on its way: ``ready_at``,
``in_s``, ``capacity``, ``source``, ``overdue``), ``pools[].capacity_over_time[]`` (``at``, ``in_s``,
``capacity``: present + coming ready by then), ``pools[].timeline[].reserved``,
``pools[].queued[]`` (vectors keyed by metric names such as ``memory_bytes``, ``cpu_cores``).
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

from airflow_predictive.core.model.resources import ResourceVector, format_bytes
from airflow_predictive.core.scheduling import codec
from airflow_predictive.core.scheduling.coming import OVERDUE_STEP_S, capacity_steps, is_overdue, pending
from airflow_predictive.runtime import get_runtime
from airflow_predictive.storage.engine import StorageUnavailable

ARGS: list[tuple[tuple[str, ...], dict[str, Any]]] = [
    (
        ("--horizon",),
        {"type": float, "default": 3600.0, "help": "seconds of timeline to show (default 3600)"},
    ),
    (("--json",), {"action": "store_true", "help": "print JSON instead of text"}),
]


def _flat(requests: ResourceVector, limits: ResourceVector) -> dict[str, float]:
    return codec.vector_to_dict(limits.combine(requests, lambda lim, _r: lim))


def _queued(pool: str) -> list[dict[str, Any]]:
    """Tries whose latest admission decision in ``pool`` is 'queued'."""
    latest: dict[tuple[Any, ...], dict[str, Any]] = {}
    for row in get_runtime().decision_log().recent(limit=2000):
        if row["kind"] != "admission" or row["pool"] != pool:
            continue
        ident = (row["dag_id"], row["task_id"], row["map_index"], row["run_id"], row["try_number"])
        latest.setdefault(ident, row)  # newest first
    out = []
    for (dag_id, task_id, map_index, run_id, try_number), row in latest.items():
        if row["decision"] != "queued":
            continue
        payload = row["payload"] or {}
        out.append(
            {
                "dag_id": dag_id,
                "task_id": task_id,
                "map_index": map_index,
                "run_id": run_id,
                "try_number": try_number,
                "since": row["at"].isoformat() if hasattr(row["at"], "isoformat") else str(row["at"]),
                "reason": row["reason"],
                "earliest_start": payload.get("earliest_start"),
                "bottleneck": payload.get("bottleneck"),
            }
        )
    return out


def build(now: float, horizon_s: float) -> dict[str, Any]:
    ledger = get_runtime().ledger()
    pools = []
    for pool in ledger.pools():
        timeline = ledger.timeline(pool.name, now, now + horizon_s)
        coming = ledger.coming(pool.name)
        counted = {c.ref or c.source for c in pending(coming, pool.name, now)}
        ahead = sorted(
            (c for c in coming if c.pool == pool.name and (c.ref or c.source) in counted),
            key=lambda c: (c.ready_at, c.ref),
        )
        pools.append(
            {
                "name": pool.name,
                "kind": pool.kind.value,
                "note": pool.note,
                "capacity": _flat(pool.capacity.requests, pool.capacity.limits),
                "capacity_detail": codec.capacity_to_dict(pool.capacity),
                "coming": [
                    {
                        "ready_at": c.ready_at,
                        "in_s": c.ready_at - now,
                        "capacity": _flat(c.amount.requests, c.amount.limits),
                        "capacity_detail": codec.capacity_to_dict(c.amount),
                        "source": c.source,
                        "ref": c.ref,
                        "overdue": is_overdue(c, now),
                    }
                    for c in ahead
                    if c.ready_at <= now + horizon_s
                ],
                "overdue": sum(1 for c in ahead if is_overdue(c, now)),
                "capacity_over_time": [
                    {
                        "at": step.at,
                        "in_s": step.at - now,
                        "capacity": _flat(step.capacity.requests, step.capacity.limits),
                        "sources": list(step.sources),
                    }
                    for step in capacity_steps(pool, coming, now)
                    if step.at <= now + horizon_s
                ],
                "timeline": [
                    {
                        "start": p.start,
                        "end": p.end,
                        "reserved": _flat(p.requests, p.limits),
                        "requests": codec.vector_to_dict(p.requests),
                    }
                    for p in timeline.points
                ],
                "reservations": len(ledger.reservations(pool.name)),
                "queued": _queued(pool.name),
            }
        )
    return {"now": now, "pools": pools}


def _vec(v: dict[str, float]) -> str:
    return ", ".join(f"{k}={format_bytes(x) if 'bytes' in k else f'{x:g}'}" for k, x in v.items()) or "-"


def render_text(out: dict[str, Any]) -> str:
    if not out["pools"]:
        return "no pools yet (a PredictiveExecutor publishes its pool when it starts)"
    lines = []
    now = out["now"]
    for p in out["pools"]:
        lines.append(f"pool {p['name']} ({p['kind']}): capacity {_vec(p['capacity'])}  [{p['note']}]")
        for c in p["coming"]:
            lines.append(
                f"  coming in {c['in_s']:>6.0f} s: +{_vec(c['capacity'])}  [{c['source'] or c['ref']}]"
            )
        if len(p["capacity_over_time"]) > 1:
            last = p["capacity_over_time"][-1]
            lines.append(f"  capacity in {last['in_s']:.0f} s: {_vec(last['capacity'])} (present + coming)")
        if p["overdue"]:
            lines.append(
                f"  {p['overdue']} coming amount(s) overdue: counted as ready in {OVERDUE_STEP_S:g} s, "
                "never as present"
            )
        lines.append(f"  {p['reservations']} active reservation(s)")
        for point in p["timeline"][:20]:
            lines.append(
                f"  +{point['start'] - now:>6.0f} s .. +{point['end'] - now:>6.0f} s: {_vec(point['reserved'])}"
            )
        for q in p["queued"]:
            lines.append(f"  queued {q['dag_id']}.{q['task_id']} try {q['try_number']}: {q['reason']}")
    return "\n".join(lines)


def run(args: Any) -> None:
    try:
        out = build(time.time(), float(getattr(args, "horizon", 3600.0)))
    except StorageUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    print(json.dumps(out, default=str) if args.json else render_text(out))
