"""On-demand re-forecast of running tasks from their observed prefixes (the shaping loop's call).

Holds fitted estimators by name and each task's champion; ``reforecast`` answers many running
tasks at once (champions that forecast at start only are conditioned on the prefix by
``core/profiler/prefix.condition_on_prefix``, in numpy), batching the queries of estimators that offer ``predict_many`` (the LSTM) into one
network call. A task whose champion cannot answer falls back to the cold-start chain; one that
nothing can answer is left out of the result (the caller keeps its current allocation).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from airflow_predictive.core.profiler.prefix import PrefixPolicy, condition_on_prefix, needs_conditioning
from airflow_predictive.core.profiler.selection import calibrated

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from airflow_predictive.core.model.resources import Metric
    from airflow_predictive.core.model.runs import TaskKey
    from airflow_predictive.core.model.series import Forecast
    from airflow_predictive.core.profiler.estimators.base import Estimator, ForecastQuery

log = logging.getLogger(__name__)


class Reforecaster:
    def __init__(
        self,
        estimators: Mapping[str, Estimator],
        champions: Mapping[TaskKey, str | None],
        fallback: Estimator,
        calibrations: Mapping[TaskKey, Mapping[Metric, Mapping[float, float]]] | None = None,
        prefix_policy: PrefixPolicy | None = None,
    ) -> None:
        self.estimators = dict(estimators)
        self.champions = dict(champions)
        self.fallback = fallback
        self.calibrations = dict(calibrations or {})
        self.prefix_policy = prefix_policy or PrefixPolicy()

    def _with_prefix(self, estimator: Estimator, query: ForecastQuery, forecast: Forecast) -> Forecast:
        """Estimators that forecast at start only are conditioned on the observed prefix here."""
        if query.prefix is None or not needs_conditioning(estimator):
            return forecast
        return condition_on_prefix(forecast, query.prefix, self.prefix_policy)

    def reforecast(self, queries: Sequence[ForecastQuery]) -> dict[TaskKey, Forecast]:
        groups: dict[str, list[ForecastQuery]] = {}
        for q in queries:
            name = self.champions.get(q.key)
            groups.setdefault(name if name in self.estimators else "", []).append(q)
        out: dict[TaskKey, Forecast] = {}
        for name, group in groups.items():
            if name:
                est = self.estimators[name]
                many = getattr(est, "predict_many", None)
                try:
                    forecasts = many(group) if many is not None else [est.predict(q) for q in group]
                    out.update(
                        {
                            q.key: self._with_prefix(est, q, calibrated(f, self.calibrations.get(q.key, {})))
                            for q, f in zip(group, forecasts, strict=True)
                        }
                    )
                    continue
                except Exception as exc:
                    log.warning("predictive: %s could not re-forecast %d tasks (%s)", name, len(group), exc)
            for q in group:
                try:
                    out[q.key] = self._with_prefix(self.fallback, q, self.fallback.predict(q))
                except Exception as exc:
                    log.info("predictive: no re-forecast for %s (%s)", q.key, exc)
        return out
