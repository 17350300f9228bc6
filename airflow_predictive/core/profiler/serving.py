"""Answering "what will *this* run need": one query, the task's history and profile -> a forecast.

Why: plans, reservations and shaping are made per try, and tries of one task differ (a run with
twice the ``input_mb`` needs more). Training leaves per task a champion estimator, its calibration
and the model version both were fitted with; this module evaluates that champion for the query's
own features (input size, try number, params) against the task's recent history, calibrates it,
and says which level answered and why. Baselines are numpy arithmetic over the history; the LSTM
is evaluated by its numpy forward pass (``estimators/lstm_numpy``): nothing here trains, reads
storage or imports TensorFlow. The storage-backed service is ``training/serving.py``.

Levels, in order: the champion (TASK), the cold-start chain's answer (its per-task history level
-> TASK, operator prior -> OPERATOR, declared resources -> DECLARED), else NONE. A champion that
fails to answer never fails the caller: the next level answers and the note says why.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from airflow_predictive.core.model.query import ForecastSource, ServedForecast
from airflow_predictive.core.model.resources import FORECAST_METRICS, Metric
from airflow_predictive.core.profiler.estimators.base import ForecastQuery as EstimatorQuery
from airflow_predictive.core.profiler.features import reached_declared_memory
from airflow_predictive.core.profiler.selection import calibrated

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from airflow_predictive.core.model.query import ForecastQuery
    from airflow_predictive.core.model.series import Forecast
    from airflow_predictive.core.profiler.estimators.base import Estimator, RunExample

log = logging.getLogger(__name__)

# which ForecastSource each cold-start level stands for
CHAIN_SOURCES: dict[str, ForecastSource] = {
    "scaled_curve": ForecastSource.TASK,
    "autopilot": ForecastSource.TASK,
    "median_peak": ForecastSource.TASK,
    "last_run": ForecastSource.TASK,
    "operator_prior": ForecastSource.OPERATOR,
    "declared": ForecastSource.DECLARED,
}
SERVED_METRICS: tuple[Metric, ...] = FORECAST_METRICS


@dataclass(frozen=True)
class ServingProfile:
    """A task's champion as loaded for serving.

    estimator: the champion ready to forecast (None: not servable here, see ``note``).
    precomputed: the forecast training cached, used when the champion cannot be evaluated per
        query (statsmodels champions refit at every call: too slow for the hot path).
    model_version / calibration_version: the pinned pair that produced the calibration.
    """

    champion: str | None
    estimator: Estimator | None = None
    calibration: Mapping[Metric, Mapping[float, float]] = field(default_factory=dict)
    model_version: str | None = None
    calibration_version: str | None = None
    precomputed: Forecast | None = None
    note: str = ""


def estimator_query(
    query: ForecastQuery, history: Sequence[RunExample], metrics: tuple[Metric, ...] = SERVED_METRICS
) -> EstimatorQuery:
    """The estimators' question for this try: its own features, the task's history (oldest first)."""
    operator = query.operator or next(
        (e.record.operator for e in reversed(history) if e.record.operator), None
    )
    return EstimatorQuery(
        key=query.key,
        features=query.features,
        declared=query.declared,
        operator=operator,
        history=tuple(history),
        metrics=metrics,
        try_number=query.try_number,
    )


def serve(
    query: ForecastQuery,
    history: Sequence[RunExample],
    profile: ServingProfile | None,
    chain: Estimator,
    *,
    metrics: tuple[Metric, ...] = SERVED_METRICS,
) -> ServedForecast:
    """The forecast of this try from the first level that can answer (never raises)."""
    q = estimator_query(query, history, metrics)
    why: list[str] = []
    bound = reached_declared_memory(history)
    if profile is not None and profile.estimator is not None:
        try:
            forecast = calibrated(profile.estimator.predict(q), profile.calibration)
            return ServedForecast(
                forecast,
                ForecastSource.TASK,
                model_version=profile.model_version,
                calibration_version=profile.calibration_version,
                note=f"champion {profile.champion} for this run's features ({len(history)} earlier runs)",
                history_runs=len(history),
                limit_bound=bound,
            )
        except Exception as exc:
            why.append(f"champion {profile.champion} could not answer ({type(exc).__name__}: {exc})")
    elif profile is not None and profile.precomputed is not None:
        return ServedForecast(
            profile.precomputed,
            ForecastSource.TASK,
            model_version=profile.model_version,
            calibration_version=profile.calibration_version,
            note=f"{profile.note}; precomputed forecast of champion {profile.champion}",
            history_runs=len(history),
            limit_bound=bound,
        )
    elif profile is not None and profile.note:
        why.append(profile.note)
    elif profile is None:
        why.append("no trained profile for this task yet")
    try:
        forecast = chain.predict(q)
    except Exception as exc:
        why.append(f"nothing else could answer ({type(exc).__name__}: {exc})")
        return ServedForecast(None, ForecastSource.NONE, note="; ".join(why))
    source = CHAIN_SOURCES.get(forecast.estimator, ForecastSource.GLOBAL)
    why.append(f"{forecast.estimator} answered")
    return ServedForecast(forecast, source, note="; ".join(why), history_runs=len(history), limit_bound=bound)
