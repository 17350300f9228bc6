"""Ports: the Protocols the core needs from the outside world (storage, clocks, usage sources).

Adapters (storage/, backends/, sampling/) implement them; the core only sees these shapes.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from airflow_predictive.core.model.backend import ResizeStatus

if TYPE_CHECKING:
    from collections.abc import Sequence

    from airflow_predictive.core.model.backend import (
        Allocation,
        Capabilities,
        Capacity,
        Handle,
        ProvisionSpec,
        ResizeResult,
        TaskState,
    )
    from airflow_predictive.core.model.plan import (
        LedgerResult,
        Pool,
        PoolTimeline,
        Reservation,
        ReservationRequest,
    )
    from airflow_predictive.core.model.query import ForecastQuery, ServedForecast
    from airflow_predictive.core.model.resources import ResourceVector
    from airflow_predictive.core.model.runs import Outcome, RunIdentity, RunRecord, TaskKey
    from airflow_predictive.core.model.series import ResourceSample, UsageSeries
    from airflow_predictive.core.scheduling.coming import ComingCapacity


class Clock(Protocol):
    """Injected time source: loops take one so that tests drive time instead of sleeping."""

    def monotonic(self) -> float: ...

    def now(self) -> datetime: ...


class SystemClock:
    def monotonic(self) -> float:
        return time.monotonic()

    def now(self) -> datetime:
        from datetime import UTC

        return datetime.now(UTC)


class RunStore(Protocol):
    """Run records and their samples (the product's shared history)."""

    def start_run(self, record: RunRecord) -> int:
        """Store a new try (or reset a try already stored under the same identity); returns its key."""
        ...

    def finish_run(
        self,
        run_pk: int,
        *,
        outcome: Outcome,
        end: datetime,
        peak: ResourceVector | None = None,
        exit_code: int | None = None,
        note: str | None = None,
        only_if_running: bool = False,
        leg: int | None = None,
    ) -> bool:
        """Record a try's end; ``leg``: only while that leg is the current one. True if recorded."""
        ...

    def upsert_run(self, record: RunRecord) -> int:
        """Insert or update a finished record as a whole (ingest, trace import)."""
        ...

    def add_samples(self, run_pk: int, samples: Sequence[ResourceSample]) -> int:
        """Append samples; invalid values are stored as absent; returns how many were stored."""
        ...

    def get_run(self, identity: RunIdentity) -> RunRecord | None: ...

    def runs(self, key: TaskKey | None = None, *, limit: int | None = None) -> list[RunRecord]:
        """Runs oldest first (by start), for one task or all."""
        ...

    def series(self, run_pk: int) -> UsageSeries: ...

    def task_keys(self) -> list[TaskKey]: ...


@runtime_checkable
class UsageSource(Protocol):
    """Something that can report current usage of one running task (process tree, cgroup, pod)."""

    def read(self) -> ResourceVector | None:
        """Current usage, or None when the target is gone."""
        ...


class ResourceBackend(Protocol):
    """One interface over local cgroups, Kubernetes pods, GPUs and volumes.

    Methods never raise for expected failures (capacity, validation, API errors): they return a
    result with an explicit status. ``provision`` raises ``ProvisionError`` when nothing started.
    """

    name: str

    def capabilities(self) -> Capabilities: ...

    def capacity(self) -> Capacity: ...

    def provision(self, spec: ProvisionSpec, allocation: Allocation) -> Handle: ...

    def resize(self, handle: Handle, allocation: Allocation) -> ResizeResult: ...

    def usage(self, handle: Handle) -> ResourceVector | None:
        """Current usage, or None when the task is gone."""
        ...

    def state(self, handle: Handle) -> TaskState: ...

    def release(self, handle: Handle) -> None:
        """Stop the task if still running and free everything it held (idempotent)."""
        ...


class ForecastService(Protocol):
    """Serves "what will this run need" from storage / cache, never training a model and never
    importing TensorFlow (it runs in the scheduler, executor and triggerer). Never raises for a
    missing or corrupt profile: the answer says which fallback level answered and why."""

    def forecast_for(self, query: ForecastQuery) -> ServedForecast: ...


class ReservationLedger(Protocol):
    """Per-pool, time-indexed reservations shared by every executor / scheduler on one database.

    Atomic: concurrent callers never over-commit a pool (row lock on PostgreSQL, a serialised
    transaction on SQLite). Times are wall-clock epoch seconds. Methods never raise for expected
    failures: storage errors come back as ``LedgerStatus.UNAVAILABLE`` so callers fall back.
    """

    def set_pool(self, pool: Pool) -> None:
        """Create or update a pool's capacity (local machine, namespace quota ...)."""
        ...

    def pools(self) -> list[Pool]: ...

    def reserve(self, request: ReservationRequest) -> LedgerResult:
        """Hold ``request.plan`` from ``request.start`` if it fits at every moment, else REFUSED
        with the bottleneck (which metric, when, by how much). Nothing changes when refused."""
        ...

    def adjust(
        self,
        reservation_id: str,
        at: float,
        allocated: Allocation,
        *,
        desired: Allocation | None = None,
        actual: ResourceVector | None = None,
        until: float | None = None,
        force: bool = True,
    ) -> LedgerResult:
        """Change what a reservation holds from ``at`` until ``until`` (default: its end), charged at
        max(desired, allocated, actual). Call it after every applied resize and every planned step.
        ``force=True`` (an applied resize is a fact) records it even when the pool ends over
        capacity (OVERCOMMITTED); ``force=False`` refuses a change that does not fit (REFUSED)."""
        ...

    def release(self, reservation_id: str, at: float | None = None) -> LedgerResult:
        """The task ended: free the rest of its timeline from ``at`` (default now). Idempotent."""
        ...

    def renew(self, holder: str, until: float) -> int:
        """Heartbeat: extend the lease of every active reservation of ``holder``; returns how many."""
        ...

    def take_over(self, run: RunIdentity, holder: str, until: float) -> LedgerResult:
        """The active reservation of ``run`` (one try) is ``holder``'s from now on, its lease at
        least until ``until``: a restarted scheduler adopting a running try. ADJUSTED with the
        reservation (its plan and start unchanged), UNKNOWN when none is active (released by a clean
        stop, or lapsed)."""
        ...

    def expire(self, now: float) -> list[Reservation]:
        """Lapse reservations whose lease ended before ``now`` (their holder crashed); returns them."""
        ...

    def get(self, reservation_id: str) -> Reservation | None: ...

    def reservations(self, pool: str | None = None) -> list[Reservation]:
        """Active reservations, optionally of one pool."""
        ...

    def timeline(self, pool: str, start: float, end: float) -> PoolTimeline:
        """What the pool holds over [start, end), summed per constant piece."""
        ...

    def set_coming(self, pool: str, coming: Sequence[ComingCapacity]) -> bool | None:
        """Replace the pool's coming capacity (nodes booting); its owner, the node-pool backend's
        wiring, says what is on its way. ``reserve`` / ``adjust`` count it at its ready time."""
        ...

    def coming(self, pool: str) -> tuple[ComingCapacity, ...]:
        """The pool's coming capacity as last set."""
        ...


class ProvisionError(RuntimeError):
    """A backend could not start the task at all (the caller falls back to declared resources).

    ``status`` says which kind of "no": INFEASIBLE (can never fit here, e.g. GPUs asked on a host
    without any), PENDING (would fit once others release what they hold), REJECTED (invalid spec)
    or ERROR (the backend failed). It defaults to ERROR.
    """

    def __init__(self, message: str, *, status: ResizeStatus = ResizeStatus.ERROR) -> None:
        super().__init__(message)
        self.status = status
