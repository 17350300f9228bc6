"""Task identity and the record of one task try (what it declared, what happened, what it used)."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING

from airflow_predictive.core.model.resources import ResourceVector

if TYPE_CHECKING:
    from collections.abc import Mapping
    from datetime import datetime

FeatureValue = float | int | str | bool | None


@dataclass(frozen=True, slots=True, order=True)
class TaskKey:
    """A task as the profiler learns it: ``map_index`` -1 for unmapped tasks."""

    dag_id: str
    task_id: str
    map_index: int = -1

    def __post_init__(self) -> None:
        if not self.dag_id or not self.task_id:
            raise ValueError("dag_id and task_id must be non-empty")

    def __str__(self) -> str:
        suffix = f"[{self.map_index}]" if self.map_index >= 0 else ""
        return f"{self.dag_id}.{self.task_id}{suffix}"


class Outcome(StrEnum):
    """How a try ended. RUNNING until its end is recorded."""

    RUNNING = "running"
    SUCCESS = "success"
    FAILED = "failed"
    OOM_KILLED = "oom_killed"
    TIMED_OUT = "timed_out"
    SKIPPED = "skipped"
    UNKNOWN = "unknown"

    @property
    def finished(self) -> bool:
        return self is not Outcome.RUNNING


class RunSource(StrEnum):
    """Where a run record came from."""

    LISTENER = "listener"  # recorded live by the provider's listener and sampler
    INGEST = "ingest"  # backfilled from Airflow's task_instance table (no samples)
    TRACE = "trace"  # imported from a public trace (k-Segments, Nextflow)
    SHADOW = "shadow"  # a shadow run: a short calibration run before the real try (never trains)
    POD = "pod"  # the in-pod sampler's record of a pod's containers (feeds shaping; never trains)


@dataclass(frozen=True, slots=True)
class RunIdentity:
    """One try of one task instance."""

    key: TaskKey
    run_id: str
    try_number: int = 1
    source: RunSource = RunSource.LISTENER


@dataclass(frozen=True)
class RunRecord:
    """Everything known about one try.

    declared: the resources the DAG author asked for (None fields = not declared).
    peak: the measured peak per metric (from samples, or from a trace that only has peaks).
    features: what was known before the try started (params, input size, operator ...).
    """

    identity: RunIdentity
    start: datetime | None = None
    end: datetime | None = None
    outcome: Outcome = Outcome.RUNNING
    declared: ResourceVector = field(default_factory=ResourceVector)
    peak: ResourceVector = field(default_factory=ResourceVector)
    operator: str | None = None
    pool: str | None = None
    queue: str | None = None
    hostname: str | None = None
    exit_code: int | None = None
    features: Mapping[str, FeatureValue] = field(default_factory=dict)
    executor_config: str | None = None  # JSON text, as Airflow stored it
    sample_interval_s: float | None = None
    n_samples: int = 0
    note: str | None = None
    run_pk: int | None = None  # storage key, set once stored

    @property
    def key(self) -> TaskKey:
        return self.identity.key

    @property
    def duration_s(self) -> float | None:
        if self.start is None or self.end is None:
            return None
        return max(0.0, (self.end - self.start).total_seconds())


class LegEnd(StrEnum):
    """Why one leg (one task process) of a try ended. None on a leg that still runs."""

    FINISHED = "finished"  # the try's outcome was recorded in this leg
    DEFERRED = "deferred"  # handed to the triggerer; the try resumes in a new leg
    RESCHEDULED = "rescheduled"  # a sensor in reschedule mode: the try resumes in a new leg
    SUPERSEDED = "superseded"  # a newer leg started before this one's end was recorded
    VANISHED = "vanished"  # the task process disappeared without an end
    CLOSED = "closed"  # closed by upkeep (no sampler left to record its end)

    @property
    def resumes(self) -> bool:
        """The try goes on in a later leg: the time until that leg is waiting, not running."""
        return self in (LegEnd.DEFERRED, LegEnd.RESCHEDULED)


@dataclass(frozen=True, slots=True)
class RunLeg:
    """One task process of a try: when it ran on the samples' clock (seconds since the run's start)."""

    leg: int
    t_start_s: float | None
    t_end_s: float | None = None
    end: LegEnd | None = None


@dataclass(frozen=True, slots=True)
class WaitInterval:
    """Time between two legs when the try waited (deferred / rescheduled): no task process ran."""

    t_start_s: float
    t_end_s: float
    reason: LegEnd
