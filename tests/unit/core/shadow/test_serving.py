"""A shadow's re-forecast is served to the real try of its DAG run, and only to it."""

from __future__ import annotations

import numpy as np

from airflow_predictive.core.model.query import ForecastQuery, ForecastSource, ServedForecast
from airflow_predictive.core.model.resources import Metric
from airflow_predictive.core.model.runs import TaskKey
from airflow_predictive.core.model.series import DemandCurve, Forecast
from airflow_predictive.core.shadow.serving import ShadowOverlay, StoredShadowForecast

KEY = TaskKey("d", "t")
F = Forecast(
    {Metric.MEMORY_BYTES: DemandCurve(Metric.MEMORY_BYTES, 1.0, {0.5: np.ones(3)})}, {0.5: 3.0}, "x+shadow"
)


class Inner:
    def __init__(self) -> None:
        self.asked = 0

    def forecast_for(self, query):
        self.asked += 1
        return ServedForecast(None, ForecastSource.NONE, note="inner")

    def retrain_due(self):
        return ["k"]


class Lookup:
    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.calls = 0

    def get(self, key, run_id):
        self.calls += 1
        if self.fail:
            raise RuntimeError("database down")
        return StoredShadowForecast(key, run_id, F, "from shadow") if run_id == "r1" else None


def test_the_run_the_shadow_calibrated_gets_its_re_forecast():
    lookup = Lookup()
    overlay = ShadowOverlay(Inner(), lookup)
    served = overlay.forecast_for(ForecastQuery(KEY, run_id="r1"))
    assert served.source is ForecastSource.SHADOW and served.forecast is F and served.note == "from shadow"
    overlay.forecast_for(ForecastQuery(KEY, run_id="r1"))
    assert lookup.calls == 1  # memoised


def test_other_runs_and_queries_without_a_run_go_to_the_wrapped_service():
    inner = Inner()
    overlay = ShadowOverlay(inner, Lookup())
    assert overlay.forecast_for(ForecastQuery(KEY, run_id="r2")).note == "inner"
    assert overlay.forecast_for(ForecastQuery(KEY)).note == "inner"
    assert inner.asked == 2
    assert overlay.retrain_due() == ["k"]  # the rest of the service is the wrapped one's


def test_a_broken_shadow_store_falls_back_to_the_wrapped_service(caplog):
    overlay = ShadowOverlay(Inner(), Lookup(fail=True))
    for _ in range(3):
        assert overlay.forecast_for(ForecastQuery(KEY, run_id="r1")).note == "inner"
    assert sum("shadow re-forecasts unavailable" in r.message for r in caplog.records) == 1
