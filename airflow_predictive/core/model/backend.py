"""Values exchanged with resource backends (cgroups, Kubernetes pods, GPUs, volumes, fakes).

A backend provisions a task with an ``Allocation``, resizes it live where it can, reports usage
as a ``ResourceVector`` and says what it can do through ``Capabilities``. Every resize returns a
``ResizeResult`` with an explicit status and a reason: callers never infer success from silence.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING

from airflow_predictive.core.model.resources import MIB, Metric, ResourceVector, format_bytes

if TYPE_CHECKING:
    from collections.abc import Mapping


@dataclass(frozen=True, slots=True)
class Allocation:
    """What a task gets: ``requests`` (reserved, used for placement) and ``limits`` (enforced).

    A metric absent from ``limits`` is not enforced. Backends that have no request/limit split
    (cgroups) enforce ``limits`` and use ``requests`` only as a weight or for accounting.
    """

    requests: ResourceVector = field(default_factory=ResourceVector)
    limits: ResourceVector = field(default_factory=ResourceVector)

    def __post_init__(self) -> None:
        for metric, req in self.requests.present().items():
            lim = self.limits.get(metric)
            if lim is not None and req > lim:
                raise ValueError(f"{metric.value}: request {req:g} exceeds limit {lim:g}")

    @classmethod
    def exactly(cls, vector: ResourceVector) -> Allocation:
        return cls(requests=vector, limits=vector)


@dataclass(frozen=True, slots=True)
class ProvisionSpec:
    """What to run and under which name.

    name: a unique, DNS-1123-safe name for the task's container / cgroup / pod.
    command: the process to start (argv); empty for backends that adopt an existing process.
    image: container image (Kubernetes); ignored locally.
    labels: free-form identity (dag_id, task_id, run_id, try) stored with the handle.
    gpus: whole GPU devices asked for at provision time (never resized in place).
    annotations: runtime metadata that is not identity (Kubernetes pod annotations); ignored locally.
    deadline_s: a hard end the cluster enforces by itself even when its caller dies (Kubernetes:
        ``activeDeadlineSeconds``); None: none. Local backends ignore it (their caller stops the task).
    """

    name: str
    command: tuple[str, ...] = ()
    image: str | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    labels: Mapping[str, str] = field(default_factory=dict)
    gpus: int = 0
    annotations: Mapping[str, str] = field(default_factory=dict)
    deadline_s: float | None = None


@dataclass(frozen=True, slots=True)
class Handle:
    """A provisioned task as a backend knows it (opaque ``ref``: cgroup path, pod name ...)."""

    backend: str
    name: str
    ref: str
    allocation: Allocation
    pid: int | None = None


class ResizeStatus(StrEnum):
    """How a resize ended. Only APPLIED means the new limits are in force."""

    APPLIED = "applied"
    PENDING = "pending"  # accepted, waiting for capacity (Kubernetes Deferred / InProgress)
    INFEASIBLE = "infeasible"  # can never fit (above node / pool capacity)
    REJECTED = "rejected"  # refused by policy or validation (QoS change, below usage ...)
    ERROR = "error"  # the backend failed (API error, cgroup write failed)
    UNSUPPORTED = "unsupported"  # this backend cannot resize that metric live (observe-only ...)


@dataclass(frozen=True, slots=True)
class ResizeResult:
    status: ResizeStatus
    reason: str
    allocation: Allocation | None = None  # the allocation now in force, when known

    @property
    def applied(self) -> bool:
        return self.status is ResizeStatus.APPLIED


class ExitKind(StrEnum):
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    OOM_KILLED = "oom_killed"
    GONE = "gone"  # vanished without a known exit


@dataclass(frozen=True, slots=True)
class TaskState:
    """Where a provisioned task stands."""

    kind: ExitKind
    exit_code: int | None = None
    reason: str = ""
    oom_events: int = 0


@dataclass(frozen=True, slots=True)
class Bounds:
    minimum: float
    maximum: float
    granularity: float  # smallest step the backend distinguishes, in the metric's unit


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What a backend can do, per metric.

    live: metrics whose limits change while the task runs.
    provision_only: metrics set only when the task starts (GPU count, volumes on some classes).
    enforcing: False in observe-only mode (limits are recorded, not enforced).
    """

    live: frozenset[Metric]
    provision_only: frozenset[Metric]
    bounds: Mapping[Metric, Bounds]
    enforcing: bool = True
    note: str = ""


@dataclass(frozen=True, slots=True)
class Capacity:
    """What the pool behind a backend holds: total allocatable and currently allocated."""

    allocatable: ResourceVector
    allocated: ResourceVector

    @property
    def free(self) -> ResourceVector:
        """Allocatable less allocated, never below zero. A metric the pool does not hold (no
        GPUs on any node) stays absent: something allocated elsewhere never shows up as free."""
        out: dict[Metric, float | None] = {}
        for metric, total in self.allocatable.items():
            used = self.allocated.get(metric)
            out[metric] = None if total is None else total if used is None else max(0.0, total - used)
        return ResourceVector.from_mapping(out)


@dataclass(frozen=True, slots=True)
class MemoryMargin:
    """Headroom a memory limit must keep above current usage when it is lowered live.

    A limit at or just above the working set makes the kernel reclaim or OOM-kill at once, so a
    shrink below ``usage + max(minimum_bytes, fraction * usage)`` is refused (REJECTED).
    """

    fraction: float = 0.1
    minimum_bytes: float = 16 * MIB

    def floor(self, usage_bytes: float) -> float:
        return usage_bytes + max(self.minimum_bytes, self.fraction * usage_bytes)


def changed_metrics(current: Allocation, target: Allocation) -> frozenset[Metric]:
    """Metrics whose request or limit differs between two allocations."""
    return frozenset(
        m
        for m in Metric
        if current.requests.get(m) != target.requests.get(m) or current.limits.get(m) != target.limits.get(m)
    )


def precheck_resize(
    current: Allocation,
    target: Allocation,
    capabilities: Capabilities,
    capacity: Capacity,
    usage: ResourceVector | None,
    margin: MemoryMargin,
) -> ResizeResult | None:
    """The outcome of a resize that must not be attempted, or None when the backend may try it.

    Order: UNSUPPORTED (a changed metric is not live, or the backend is observe-only),
    INFEASIBLE (above a bound or above what the pool can ever hold), REJECTED (below a bound, or
    a memory limit below current usage + margin). Pure: backends call it before touching anything.
    """
    changed = changed_metrics(current, target)
    if not capabilities.enforcing and changed:
        return ResizeResult(
            ResizeStatus.UNSUPPORTED, f"observe-only: limits are not enforced here ({capabilities.note})"
        )
    not_live = sorted(m.value for m in changed if m not in capabilities.live)
    if not_live:
        return ResizeResult(
            ResizeStatus.UNSUPPORTED,
            f"{', '.join(not_live)} cannot be resized live (provision-time only or not enforced)",
        )
    for metric in sorted(changed, key=lambda m: m.value):
        bounds = capabilities.bounds.get(metric)
        for value in (target.requests.get(metric), target.limits.get(metric)):
            if value is None or bounds is None:
                continue
            if value > bounds.maximum:
                return ResizeResult(
                    ResizeStatus.INFEASIBLE,
                    f"{metric.value} {value:g} is above the maximum {bounds.maximum:g}",
                )
            if value < bounds.minimum:
                return ResizeResult(
                    ResizeStatus.REJECTED, f"{metric.value} {value:g} is below the minimum {bounds.minimum:g}"
                )
    for metric in sorted(changed, key=lambda m: m.value):
        total = capacity.allocatable.get(metric)
        want = target.requests.get(metric)
        if want is None:
            want = target.limits.get(metric)
        if total is not None and want is not None and want > total:
            return ResizeResult(
                ResizeStatus.INFEASIBLE,
                f"{metric.value} {want:g} exceeds what the pool can ever hold ({total:g})",
            )
    new_limit = target.limits.get(Metric.MEMORY_BYTES)
    old_limit = current.limits.get(Metric.MEMORY_BYTES)
    used = None if usage is None else usage.memory_bytes
    shrinking = new_limit is not None and (old_limit is None or new_limit < old_limit)
    if shrinking and used is not None and new_limit is not None and new_limit < margin.floor(used):
        return ResizeResult(
            ResizeStatus.REJECTED,
            f"memory limit {format_bytes(new_limit)} is below current usage {format_bytes(used)} "
            f"+ margin (needs >= {format_bytes(margin.floor(used))})",
        )
    return None
