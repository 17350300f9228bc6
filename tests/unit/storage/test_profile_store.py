from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import numpy as np
import pytest
from sqlalchemy import update

from airflow_predictive.core.model.resources import Metric
from airflow_predictive.core.model.runs import TaskKey
from airflow_predictive.core.model.series import DemandCurve, Forecast
from airflow_predictive.core.profiler.selection import CandidateScore, SelectionRecord
from airflow_predictive.storage.profile_store import ForecastCache, ProfileStore
from airflow_predictive.storage.tables import forecast_cache

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

KEY = TaskKey("wf", "bwa")


class FakeClock:
    def __init__(self) -> None:
        self.t = 0.0

    def monotonic(self) -> float:
        return self.t

    def now(self) -> datetime:
        return datetime(2024, 1, 1, tzinfo=UTC)


def _forecast(level: float = 2.0, name: str = "lstm") -> Forecast:
    mem = DemandCurve(
        Metric.MEMORY_BYTES, 5.0, {0.5: np.linspace(1, level, 4), 0.99: np.full(4, level * 1.5)}
    )
    return Forecast({Metric.MEMORY_BYTES: mem}, {0.5: 20.0, 0.9: 25.0}, name)


def test_forecast_round_trips_through_storage(db_engine: Engine) -> None:
    cache = ForecastCache(db_engine)
    cache.put(KEY, _forecast(), model_version="v3", explanation="memory peaks at ...")
    got = ForecastCache(db_engine).get(KEY)
    assert got is not None
    curve = got.forecast.curve(Metric.MEMORY_BYTES)
    assert curve is not None and curve.step_s == 5.0
    assert list(curve.at(0.5)) == pytest.approx([1, 4 / 3, 5 / 3, 2])
    assert got.forecast.duration_s == {0.5: 20.0, 0.9: 25.0}
    assert (got.model_version, got.explanation, got.forecast.estimator) == (
        "v3",
        "memory peaks at ...",
        "lstm",
    )


def test_unknown_task_has_no_forecast(db_engine: Engine) -> None:
    assert ForecastCache(db_engine).get(TaskKey("wf", "never-seen")) is None


def test_lookups_are_memoised_until_ttl_or_put(db_engine: Engine) -> None:
    clock = FakeClock()
    reader = ForecastCache(db_engine, ttl_s=30, clock=clock)
    writer = ForecastCache(db_engine)
    writer.put(KEY, _forecast(2.0, "first"))
    assert reader.get(KEY).forecast.estimator == "first"  # type: ignore[union-attr]
    writer.put(KEY, _forecast(3.0, "second"))  # another process retrained
    assert reader.get(KEY).forecast.estimator == "first"  # type: ignore[union-attr]
    clock.t = 31
    assert reader.get(KEY).forecast.estimator == "second"  # type: ignore[union-attr]
    reader.put(KEY, _forecast(3.0, "third"))
    assert reader.get(KEY).forecast.estimator == "third"  # type: ignore[union-attr]


def test_corrupt_row_falls_back_with_one_log_line(
    db_engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    cache = ForecastCache(db_engine, ttl_s=0)
    cache.put(KEY, _forecast())
    with db_engine.begin() as conn:
        conn.execute(update(forecast_cache).values(curves='{"memory_bytes": {"q": {"0.5": [NaN]}}}'))
    with caplog.at_level(logging.WARNING):
        assert cache.get(KEY) is None
        assert cache.get(KEY) is None
    assert len([r for r in caplog.records if "unusable" in r.message]) == 1


def test_selection_history_and_current_profile(db_engine: Engine) -> None:
    store = ProfileStore(db_engine)
    scores = (
        CandidateScore("vpa", 9, 0.05, 0.0, 0.0, 0.05),
        CandidateScore("lstm", 0, float("inf"), 1.0, 1.0, float("inf"), "predict: boom"),
    )
    store.record_selection(
        SelectionRecord(KEY, "vpa", scores, 12, 3, "best", created_at=datetime(2024, 1, 1, tzinfo=UTC)), "v1"
    )
    store.record_selection(
        SelectionRecord(
            KEY,
            "lstm",
            (),
            20,
            3,
            "better",
            created_at=datetime(2024, 1, 2, tzinfo=UTC),
            calibration={Metric.MEMORY_BYTES: {0.9: 1.1, 0.99: 1.4}},
        ),
        "v2",
    )
    profile = store.profile(KEY)
    assert profile is not None and (profile.champion, profile.model_version, profile.runs) == (
        "lstm",
        "v2",
        20,
    )
    history = store.selections(KEY)
    assert [r.champion for r in history] == ["lstm", "vpa"]
    old = history[1].scores
    assert old[0] == scores[0]
    assert old[1].error == "predict: boom" and not old[1].eligible
    assert store.profile(TaskKey("wf", "other")) is None
    assert [p.key for p in store.profiles()] == [KEY]
