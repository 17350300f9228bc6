"""What a caller asks the profiler before a try starts: "what will *this* run need?".

The executor, the operators and the CLI build a ``ForecastQuery`` from the try they are about to
start (its params, input size, try number, declared resources) and hand it to a
``ForecastService`` (core/ports.py). The answer is a ``ServedForecast``: the forecast plus which
model version and calibration produced it and which level of the fallback chain answered, so
plans and the UI can say where a number came from. Pure values: no Airflow, no TensorFlow.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING

from airflow_predictive.core.model.resources import ResourceVector

if TYPE_CHECKING:
    from collections.abc import Mapping

    from airflow_predictive.core.model.runs import FeatureValue, TaskKey
    from airflow_predictive.core.model.series import Forecast


@dataclass(frozen=True, slots=True)
class ForecastQuery:
    """The facts of one upcoming try that may change its demand.

    key: the task (dag, task, map index).
    features: what is known before the try starts, in the same vocabulary as
        ``RunRecord.features`` (numeric params such as ``input_mb``, ``input_size_bytes``,
        ``try_number`` ...). Values that are unknown are simply absent. Build them with
        ``core.profiler.features.run_features`` (the recorder uses the same function).
    declared: what the DAG author asked for (absent fields = not declared); the answer of last
        resort.
    """

    key: TaskKey
    features: Mapping[str, FeatureValue] = field(default_factory=dict)
    declared: ResourceVector = field(default_factory=ResourceVector)
    operator: str | None = None  # operator class name (cold start: the operator type's prior)
    run_id: str | None = None  # the DAG run of the try (a shadow run's re-forecast is served for it)

    @property
    def try_number(self) -> int:
        value = self.features.get("try_number")
        return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else 1


class ForecastSource(StrEnum):
    """Which level of the serving chain answered."""

    TASK = "task"  # the task's own profile (its champion estimator)
    GLOBAL = "global"  # the global model / cross-task prior
    OPERATOR = "operator"  # prior of the operator type
    DECLARED = "declared"  # nothing learned: the declared resources as a flat curve
    SHADOW = "shadow"  # re-forecast for this DAG run from its shadow run's observed prefix
    NONE = "none"  # nothing at all (no history, nothing declared)


@dataclass(frozen=True, slots=True)
class ServedForecast:
    """A forecast for one query, with its provenance.

    model_version: the stored model version that produced it (None for baselines computed from
        history, or declared).
    calibration_version: the calibration pinned with that model version (same id family; a
        forecast never mixes a model with another version's calibration).
    note: one line saying why this level answered (e.g. "no profile for this task yet").
    history_runs: how many earlier runs of the task the answer was made from (None: not known);
        the executors keep memory at the declared value until a task has ``trust_after_runs``.
    limit_bound: an earlier run of the task reached its declared memory limit (its need is at
        least the limit): the planner keeps its memory at the declared value, in the plan and in
        shaping (``planner.held_at_declared``).
    """

    forecast: Forecast | None
    source: ForecastSource
    model_version: str | None = None
    calibration_version: str | None = None
    note: str = ""
    history_runs: int | None = None  # earlier runs of the task it was made from (None: unknown)
    limit_bound: bool = False
