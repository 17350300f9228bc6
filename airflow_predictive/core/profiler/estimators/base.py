"""The estimator contract every forecaster follows: ``fit -> self``, ``predict -> Forecast``, save/load.

Estimators see runs as ``RunExample`` (the stored record plus its measured series, or None when
only peaks are known, as with Nextflow traces) and are asked for one run at a time through a
``ForecastQuery`` (the task, what is known before it starts, and optionally an observed prefix).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, Self

from airflow_predictive.core.model.resources import Metric, ResourceVector

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from datetime import datetime
    from pathlib import Path

    from airflow_predictive.core.model.runs import FeatureValue, RunRecord, TaskKey
    from airflow_predictive.core.model.series import Forecast, UsageSeries


@dataclass(frozen=True, eq=False)
class RunExample:
    """One finished run as training data: its record and its series (None = peaks only).

    ``facts``: numbers derived from the run (peaks, duration, input size, normalised shapes),
    memoised by the profiler's estimators on first use; a run is immutable, so they never go stale (a
    ``dataclasses.replace`` copy starts with an empty memo).
    """

    record: RunRecord
    series: UsageSeries | None
    facts: dict[object, object] = field(default_factory=dict, init=False, repr=False, compare=False)

    @property
    def key(self) -> TaskKey:
        return self.record.key


@dataclass(frozen=True, eq=False)
class ForecastQuery:
    """Everything known when a forecast is asked for.

    history: earlier finished runs of the same task, oldest first (may be empty: cold start).
    prefix: the part of the current run already observed (shadow run or live run), if any.
    metrics: which metrics to forecast (an estimator skips those it cannot, never invents them).
    start: when the run starts (or started), for time-of-day / week features; None = unknown.
    try_number: the try being forecast (retries after an OOM tend to differ).
    """

    key: TaskKey
    features: Mapping[str, FeatureValue] = field(default_factory=dict)
    declared: ResourceVector = field(default_factory=ResourceVector)
    operator: str | None = None
    history: Sequence[RunExample] = ()
    prefix: UsageSeries | None = None
    metrics: tuple[Metric, ...] = (Metric.CPU_CORES, Metric.MEMORY_BYTES)
    start: datetime | None = None
    try_number: int = 1


class NotFitted(RuntimeError):
    """predict() before fit(), or on a task the estimator has never seen and cannot generalise to."""


class Estimator(Protocol):
    """A forecaster. ``name`` identifies it in selection records and the UI."""

    name: str

    def fit(self, examples: Sequence[RunExample]) -> Self: ...

    def predict(self, query: ForecastQuery) -> Forecast: ...

    def save(self, directory: Path) -> None:
        """Write the fitted state into ``directory`` (JSON / npz / Keras native; never pickle)."""
        ...

    @classmethod
    def load(cls, directory: Path) -> Self: ...
