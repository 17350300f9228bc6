"""Plans, allocations and capacities as plain JSON-ready dicts, and back (stdlib only).

One shape for storage, the CLI (``plan.initial.requests``, ``plan.steps[].at_s`` ...) and the API,
so every reader sees the same keys. Vectors are keyed by metric names (``memory_bytes``,
``cpu_cores``); absent metrics are left out, never written as zero. Parsing raises ValueError with
the reason: stored text is data, never code (no pickle).
"""

from __future__ import annotations

from typing import Any

from airflow_predictive.core.model.backend import Allocation
from airflow_predictive.core.model.plan import (
    AllocationPlan,
    PlanSource,
    PlanStep,
    PoolCapacity,
    TimedAllocation,
)
from airflow_predictive.core.model.resources import Metric, ResourceVector

JSON = dict[str, Any]


def vector_to_dict(vector: ResourceVector) -> dict[str, float]:
    return {m.value: v for m, v in vector.present().items()}


def vector_from_dict(raw: Any) -> ResourceVector:
    if raw is None:
        return ResourceVector()
    if not isinstance(raw, dict):
        raise ValueError(f"a resource vector is an object of metric names, got {type(raw).__name__}")
    return ResourceVector.from_mapping({Metric(k): float(v) for k, v in raw.items() if v is not None})


def allocation_to_dict(allocation: Allocation) -> JSON:
    return {"requests": vector_to_dict(allocation.requests), "limits": vector_to_dict(allocation.limits)}


def allocation_from_dict(raw: Any) -> Allocation:
    if not isinstance(raw, dict):
        raise ValueError("an allocation is an object with requests and limits")
    return Allocation(
        requests=vector_from_dict(raw.get("requests")), limits=vector_from_dict(raw.get("limits"))
    )


def plan_to_dict(plan: AllocationPlan) -> JSON:
    return {
        "initial": allocation_to_dict(plan.initial),
        "steps": [
            {"at_s": s.at_s, **allocation_to_dict(s.allocation), "reason": s.reason} for s in plan.steps
        ],
        "duration_s": plan.duration_s,
        "source": plan.source.value,
        "why": plan.why,
        "quantiles": {m.value: q for m, q in plan.quantiles.items()},
        "model_version": plan.model_version,
        "memory_floor": plan.memory_floor,
    }


def plan_from_dict(raw: Any) -> AllocationPlan:
    try:
        return AllocationPlan(
            initial=allocation_from_dict(raw["initial"]),
            steps=tuple(
                PlanStep(float(s["at_s"]), allocation_from_dict(s), str(s.get("reason", "")))
                for s in raw["steps"]
            ),
            duration_s=float(raw["duration_s"]),
            source=PlanSource(raw.get("source", PlanSource.FORECAST.value)),
            why=str(raw.get("why", "")),
            quantiles={Metric(k): float(v) for k, v in (raw.get("quantiles") or {}).items()},
            model_version=raw.get("model_version"),
            memory_floor=None if raw.get("memory_floor") is None else float(raw["memory_floor"]),
        )
    except (KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"unreadable plan: {exc!r}") from exc


def timeline_to_list(timeline: tuple[TimedAllocation, ...]) -> list[JSON]:
    return [{"at": p.at, **allocation_to_dict(p.allocation)} for p in timeline]


def timeline_from_list(raw: Any) -> tuple[TimedAllocation, ...]:
    try:
        return tuple(TimedAllocation(float(p["at"]), allocation_from_dict(p)) for p in raw)
    except (KeyError, TypeError) as exc:
        raise ValueError(f"unreadable reservation timeline: {exc!r}") from exc


def capacity_to_dict(capacity: PoolCapacity) -> JSON:
    return {"requests": vector_to_dict(capacity.requests), "limits": vector_to_dict(capacity.limits)}


def capacity_from_dict(raw: Any) -> PoolCapacity:
    if not isinstance(raw, dict):
        raise ValueError("a pool capacity is an object with requests and limits")
    return PoolCapacity(
        requests=vector_from_dict(raw.get("requests")), limits=vector_from_dict(raw.get("limits"))
    )


def coming_to_list(coming: Any) -> list[JSON]:
    """Coming capacity (``core/scheduling/coming.py::ComingCapacity``) as JSON-ready dicts."""
    return [
        {
            "pool": c.pool,
            "ready_at": c.ready_at,
            **capacity_to_dict(c.amount),
            "source": c.source,
            "ref": c.ref,
        }
        for c in coming
    ]


def coming_from_list(raw: Any) -> tuple[Any, ...]:
    from airflow_predictive.core.scheduling.coming import ComingCapacity

    if raw is None:
        return ()
    try:
        return tuple(
            ComingCapacity(
                pool=str(c["pool"]),
                amount=capacity_from_dict(c),
                ready_at=float(c["ready_at"]),
                source=str(c.get("source", "")),
                ref=str(c.get("ref", "")),
            )
            for c in raw
        )
    except (KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"unreadable coming capacity: {exc!r}") from exc


def start_choice_to_dict(choice: Any) -> JSON:
    """The payload stored with a ``start`` decision (``core/scheduling/start_choice.py``)."""
    b = choice.bottleneck
    return {
        "decision": choice.decision.value,
        "start": choice.start,
        "ready_at": choice.ready_at,
        "waits_for": choice.waits_for,
        "plan": plan_to_dict(choice.plan),
        "bottleneck": None
        if b is None
        else {
            "metric": b.metric.value,
            "side": b.side,
            "at": b.at,
            "needed": b.needed,
            "available": b.available,
            "capacity": b.capacity,
        },
    }
