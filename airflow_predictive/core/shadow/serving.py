"""Serving a shadow run's re-forecast to the real try it calibrated.

Why: the real try is planned wherever its forecast is asked (the executor in the scheduler, the
pod operator in the worker, the CLI); a shadow stores its re-forecast once, keyed by task and DAG
run, and ``ShadowOverlay`` answers with it for a query of that run (``ForecastQuery.run_id``).
Every other query, and every failure of the lookup, goes to the wrapped service unchanged: a
broken shadow store never stops a task from being planned. Pure: the lookup is a port.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from airflow_predictive.core.model.query import ForecastSource, ServedForecast

if TYPE_CHECKING:
    from datetime import datetime

    from airflow_predictive.core.model.query import ForecastQuery
    from airflow_predictive.core.model.runs import TaskKey
    from airflow_predictive.core.model.series import Forecast
    from airflow_predictive.core.ports import ForecastService

log = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class StoredShadowForecast:
    """A shadow run's re-forecast for one DAG run of one task."""

    key: TaskKey
    run_id: str
    forecast: Forecast
    note: str
    shadow_run_pk: int | None = None
    model_version: str | None = None
    created_at: datetime | None = None


class ShadowForecastLookup(Protocol):
    def get(self, key: TaskKey, run_id: str) -> StoredShadowForecast | None: ...


class ShadowOverlay:
    """A ``ForecastService`` that answers a query of a shadowed DAG run with its re-forecast.
    Anything else (``observe``, ``retrain_due`` ...) is the wrapped service's."""

    def __init__(
        self, inner: ForecastService, lookup: ShadowForecastLookup | None, *, memo: int = 256
    ) -> None:
        self.inner = inner
        self.lookup = lookup
        self._hits: dict[tuple[TaskKey, str], StoredShadowForecast] = {}
        self._memo = memo
        self._warned = False
        self._lock = threading.Lock()

    def forecast_for(self, query: ForecastQuery) -> ServedForecast:
        stored = self.stored_for(query)
        if stored is None:
            return self.inner.forecast_for(query)
        return ServedForecast(
            stored.forecast,
            ForecastSource.SHADOW,
            model_version=stored.model_version,
            note=stored.note,
        )

    def stored_for(self, query: ForecastQuery) -> StoredShadowForecast | None:
        if not query.run_id or self.lookup is None:
            return None
        memo_key = (query.key, query.run_id)
        hit = self._hits.get(memo_key)
        if hit is not None:
            return hit
        try:
            hit = self.lookup.get(query.key, query.run_id)
        except Exception as exc:  # the shadow store is optional: plan without it
            with self._lock:
                if not self._warned:
                    self._warned = True
                    log.warning(
                        "predictive: shadow re-forecasts unavailable (%s); un-shadowed forecasts", exc
                    )
            return None
        if hit is not None and len(self._hits) < self._memo:
            self._hits[memo_key] = hit
        return hit

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)
