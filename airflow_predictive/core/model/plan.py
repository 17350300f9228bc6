"""Allocation plans, reservations, pools and the decisions taken about them.

The scheduler turns a forecast into an ``AllocationPlan`` (what the task gets when it starts and
at which moments that changes, each step with its reason), reserves the plan in a pool's ledger
as a ``Reservation`` (a piecewise-constant timeline in wall-clock seconds), and admits, queues or
falls back with an explicit ``AdmissionDecision``. Pure values: no Airflow, no database.

Time: plan steps are seconds after the task's start (``at_s``); ledger times are wall-clock epoch
seconds (``time.time()``), because several executor processes share one ledger.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING

from airflow_predictive.core.model.backend import Allocation
from airflow_predictive.core.model.resources import Metric, ResourceVector, format_bytes

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping

    from airflow_predictive.core.model.runs import RunIdentity


class PlanSource(StrEnum):
    """Where a plan's numbers came from."""

    FORECAST = "forecast"  # the forecast's risk quantile curve
    DECLARED = "declared"  # no usable forecast: the declared resources, flat
    OOM_RETRY = "oom_retry"  # the previous try's peak before its OOM kill, plus margin
    NONE = "none"  # nothing known and nothing declared: no limits at all


class PlanDecision(StrEnum):
    """What the planner made of the forecast."""

    PLANNED = "planned"  # the plan follows the forecast within every bound
    CLAMPED = "clamped"  # the plan was cut to the task's max / the backend's bounds
    DEGRADED = "degraded"  # fewer or coarser steps than the curve asks (max steps, granularity, pool)
    DECLARED = "declared"  # no forecast: the declared resources are the plan
    UNPLANNED = "unplanned"  # nothing to plan from: the task runs unlimited, as Airflow would


class AdmissionDecision(StrEnum):
    """What admission did with a task whose plan is ready."""

    ADMITTED = "admitted"  # reserved; the task may start now
    QUEUED = "queued"  # the plan does not fit now; the task waits (reason + bottleneck say why)
    DECLARED_FALLBACK = "declared_fallback"  # runs on its declared resources (prediction/ledger failed
    # or the plan can never fit the pool)
    FAILED_FAST = "failed_fast"  # the plan can never fit and ``[predictive]`` says to fail


class ReservationState(StrEnum):
    ACTIVE = "active"
    RELEASED = "released"  # the task ended (possibly before its predicted end)
    EXPIRED = "expired"  # its holder stopped renewing the lease (a crashed executor)


class LedgerStatus(StrEnum):
    """How a ledger operation ended. Only RESERVED / ADJUSTED / RELEASED changed something as asked."""

    RESERVED = "reserved"
    ADJUSTED = "adjusted"
    RELEASED = "released"
    REFUSED = "refused"  # it would over-commit the pool; nothing changed
    OVERCOMMITTED = "overcommitted"  # recorded because it is a fact (an applied resize), pool over capacity
    UNKNOWN = "unknown"  # no active reservation with that id (released, expired, never made)
    UNAVAILABLE = "unavailable"  # the ledger's storage failed; the caller falls back


class PoolKind(StrEnum):
    LOCAL = "local"  # this machine (its memory and cores, or the [predictive] capacity options)
    KUBERNETES = "kubernetes"  # a namespace: ResourceQuota and node allocatable less other pods
    CUSTOM = "custom"


@dataclass(frozen=True, slots=True)
class PlanStep:
    """At ``at_s`` seconds after the task's start, its requests and limits become ``allocation``."""

    at_s: float
    allocation: Allocation
    reason: str

    def __post_init__(self) -> None:
        if not self.at_s > 0:
            raise ValueError(f"a plan step starts after the task does (at_s > 0), got {self.at_s!r}")


@dataclass(frozen=True)
class AllocationPlan:
    """An initial allocation plus timed steps over the task's predicted duration.

    duration_s: how long the plan (and its reservation) lasts; the predicted duration at the risk
        quantile, or the declared/default duration.
    source: where the numbers came from; why: one line for logs and the UI.
    quantiles: the risk quantile used per metric (e.g. memory 0.99, CPU 0.9), empty when not
        planned from a forecast.
    model_version: the forecast's model version, when there was one.
    memory_floor: shaping never reclaims memory below this (bytes; None: no such floor). Set for a
        task whose earlier runs reached their declared memory limit (``planner.held_at_declared``).
    """

    initial: Allocation
    steps: tuple[PlanStep, ...] = ()
    duration_s: float = 3600.0
    source: PlanSource = PlanSource.FORECAST
    why: str = ""
    quantiles: Mapping[Metric, float] = field(default_factory=dict)
    model_version: str | None = None
    memory_floor: float | None = None

    def __post_init__(self) -> None:
        if not self.duration_s > 0:
            raise ValueError(f"duration_s must be positive, got {self.duration_s!r}")
        object.__setattr__(self, "steps", tuple(self.steps))
        last = 0.0
        for step in self.steps:
            if step.at_s <= last:
                raise ValueError("plan steps must be in strictly increasing time order")
            if step.at_s >= self.duration_s:
                raise ValueError(
                    f"step at {step.at_s:g} s is not before the plan's end ({self.duration_s:g} s)"
                )
            last = step.at_s

    @classmethod
    def flat(
        cls, allocation: Allocation, duration_s: float, *, source: PlanSource, why: str
    ) -> AllocationPlan:
        return cls(initial=allocation, duration_s=duration_s, source=source, why=why)

    def allocation_at(self, t_s: float) -> Allocation:
        """The allocation in force ``t_s`` seconds after start (the last one past the end)."""
        current = self.initial
        for step in self.steps:
            if step.at_s > t_s:
                break
            current = step.allocation
        return current

    def segments(self) -> Iterator[tuple[float, float, Allocation]]:
        """(start_s, end_s, allocation) for each constant piece, covering [0, duration_s)."""
        starts = [0.0, *(s.at_s for s in self.steps)]
        allocs = [self.initial, *(s.allocation for s in self.steps)]
        ends = [*starts[1:], self.duration_s]
        yield from zip(starts, ends, allocs, strict=True)

    def peak(self) -> Allocation:
        """Element-wise maximum of requests and limits over the whole plan."""
        req, lim = self.initial.requests, self.initial.limits
        for step in self.steps:
            req, lim = req.maximum(step.allocation.requests), lim.maximum(step.allocation.limits)
        return Allocation(requests=req.minimum(lim) if not lim.is_empty() else req, limits=lim)

    def next_step_after(self, t_s: float) -> PlanStep | None:
        return next((s for s in self.steps if s.at_s > t_s), None)

    def segment_end(self, elapsed_s: float, now: float) -> float | None:
        """When (on ``now``'s clock) the segment in force ``elapsed_s`` into the run ends: at the
        plan's next step; None after the last one (the reservation's end). A change applied now
        holds only this segment in the ledger, the plan's later steps stay as planned."""
        step = self.next_step_after(elapsed_s)
        return None if step is None else now + max(0.0, step.at_s - elapsed_s)


def charge_of(allocation: Allocation) -> Allocation:
    """What an allocation holds in a pool: requests (a limit stands in for a missing request, as
    Kubernetes defaults it) and limits (a request stands in for a missing limit: it holds at least that)."""
    return Allocation(
        requests=allocation.requests.combine(allocation.limits, lambda r, _lim: r),
        limits=allocation.limits.combine(allocation.requests, lambda lim, _r: lim),
    )


def resized_charge(
    allocated: Allocation, desired: Allocation | None = None, actual: ResourceVector | None = None
) -> Allocation:
    """Charge of a resized pod: the maximum of desired, allocated and actual (as Kubernetes' quota
    charges a pod during an in-place resize), so that a resize can never slip past the pool."""
    charge = charge_of(allocated)
    req, lim = charge.requests, charge.limits
    if desired is not None:
        d = charge_of(desired)
        req, lim = req.maximum(d.requests), lim.maximum(d.limits)
    if actual is not None:
        req, lim = req.maximum(actual), lim.maximum(actual)
    return Allocation(requests=req.minimum(lim), limits=lim)


@dataclass(frozen=True, slots=True)
class PoolCapacity:
    """What a pool can hold, checked separately for the sum of requests and the sum of limits.

    A metric absent from ``requests`` (or ``limits``) is not constrained on that side: a local
    machine constrains limits (what cgroups enforce), a Kubernetes namespace may constrain both
    (ResourceQuota ``requests.memory`` / ``limits.memory``; node allocatable bounds requests).
    """

    requests: ResourceVector = field(default_factory=ResourceVector)
    limits: ResourceVector = field(default_factory=ResourceVector)

    def is_unknown(self) -> bool:
        return self.requests.is_empty() and self.limits.is_empty()


@dataclass(frozen=True, slots=True)
class Pool:
    """One pool of capacity that reservations are charged against."""

    name: str
    kind: PoolKind
    capacity: PoolCapacity
    note: str = ""  # where the capacity came from ("cgroup memory.limit + nproc", "quota q1 ...")


@dataclass(frozen=True, slots=True)
class TimedAllocation:
    """From wall-clock ``at`` (epoch s) on, the reservation holds ``allocation`` (already a charge)."""

    at: float
    allocation: Allocation


@dataclass(frozen=True)
class Reservation:
    """A task's hold on a pool: a piecewise-constant timeline from ``start`` to ``end`` (epoch s).

    holder: the executor instance that made it and renews its lease; ``expires_at`` is the lease
    end (a holder that stops renewing loses the reservation at that time, no leak).
    plan: the plan it was made from (None when it was reserved from a bare allocation).
    """

    id: str
    pool: str
    run: RunIdentity
    holder: str
    start: float
    end: float
    timeline: tuple[TimedAllocation, ...]
    expires_at: float
    state: ReservationState = ReservationState.ACTIVE
    plan: AllocationPlan | None = None
    priority: int = 0

    def __post_init__(self) -> None:
        if not self.end > self.start:
            raise ValueError("a reservation ends after it starts")
        if not self.timeline or self.timeline[0].at != self.start:
            raise ValueError("a reservation's timeline starts at its start")

    def charge_at(self, t: float) -> Allocation | None:
        """What it holds at wall-clock ``t`` (None outside [start, end))."""
        if not self.start <= t < self.end:
            return None
        current = self.timeline[0].allocation
        for piece in self.timeline:
            if piece.at > t:
                break
            current = piece.allocation
        return current

    def pieces(self) -> Iterator[tuple[float, float, Allocation]]:
        """(from, to, charge) per constant piece, wall-clock."""
        ends = [p.at for p in self.timeline[1:]] + [self.end]
        for piece, end in zip(self.timeline, ends, strict=True):
            if end > piece.at:
                yield piece.at, end, piece.allocation

    @classmethod
    def timeline_of(cls, plan: AllocationPlan, start: float) -> tuple[TimedAllocation, ...]:
        """A plan's steps as wall-clock charges from ``start``."""
        return tuple(TimedAllocation(start + s, charge_of(a)) for s, _e, a in plan.segments())


@dataclass(frozen=True, slots=True)
class Bottleneck:
    """Why a plan does not fit: which metric, on which side, when, and by how much.

    side: "requests" or "limits" (which capacity sum is exceeded).
    at: wall-clock epoch seconds of the first moment it would not fit.
    needed: what the plan adds at that moment; available: what is still free there.
    """

    metric: Metric
    side: str
    at: float
    needed: float
    available: float
    capacity: float

    @property
    def over_by(self) -> float:
        return max(0.0, self.needed - self.available)

    def describe(self, start: float | None = None) -> str:
        when = f"+{self.at - start:.0f} s" if start is not None else f"t={self.at:.0f}"

        def fmt(v: float) -> str:
            return format_bytes(v) if "bytes" in self.metric.value else f"{v:g}"

        return (
            f"{self.metric.value} ({self.side}) at {when}: needs {fmt(self.needed)}, "
            f"{fmt(self.available)} free of {fmt(self.capacity)} (over by {fmt(self.over_by)})"
        )


@dataclass(frozen=True, slots=True)
class ReservationRequest:
    """Ask the ledger to hold ``plan`` in ``pool`` from ``start`` (epoch s) for ``lease_s`` renewable seconds."""

    pool: str
    run: RunIdentity
    holder: str
    plan: AllocationPlan
    start: float
    lease_s: float = 120.0
    priority: int = 0


@dataclass(frozen=True, slots=True)
class LedgerResult:
    """The outcome of one ledger operation, with its reason (never inferred from silence)."""

    status: LedgerStatus
    reason: str
    reservation: Reservation | None = None
    bottleneck: Bottleneck | None = None

    @property
    def ok(self) -> bool:
        return self.status in (LedgerStatus.RESERVED, LedgerStatus.ADJUSTED, LedgerStatus.RELEASED)


@dataclass(frozen=True, slots=True)
class TimelinePoint:
    """What a pool holds during [start, end) (wall-clock), summed over active reservations."""

    start: float
    end: float
    requests: ResourceVector
    limits: ResourceVector


@dataclass(frozen=True, slots=True)
class PoolTimeline:
    pool: Pool
    points: tuple[TimelinePoint, ...]


@dataclass(frozen=True, slots=True)
class PlanOutcome:
    """The planner's answer: the plan, what it decided and why (and what limited it)."""

    plan: AllocationPlan
    decision: PlanDecision
    reason: str
    bottleneck: Bottleneck | None = None


@dataclass(frozen=True, slots=True)
class AdmissionOutcome:
    """Admission's answer for one task.

    reservation: set when ADMITTED. earliest_start: the predicted start (epoch s) when QUEUED and
    known. bottleneck: what keeps it waiting (or can never fit).
    """

    decision: AdmissionDecision
    reason: str
    reservation: Reservation | None = None
    bottleneck: Bottleneck | None = None
    earliest_start: float | None = None
