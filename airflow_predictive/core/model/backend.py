"""Values exchanged with resource backends (cgroups, Kubernetes pods, GPUs, volumes, fakes).

A backend provisions a task with an ``Allocation``, resizes it live where it can, reports usage
as a ``ResourceVector`` and says what it can do through ``Capabilities``. Every resize returns a
``ResizeResult`` with an explicit status and a reason: callers never infer success from silence.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from airflow_predictive.core.model.resources import Metric, ResourceVector


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
    """

    name: str
    command: tuple[str, ...] = ()
    image: str | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    labels: Mapping[str, str] = field(default_factory=dict)
    gpus: int = 0


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
        return self.allocatable.combine(self.allocated, lambda a, b: max(0.0, a - b))
