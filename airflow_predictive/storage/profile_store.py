"""Task profiles, selection records and precomputed forecasts (the profiler's serving side).

Why: the scheduling path (executor, operator, planner) must never train or even import a model.
Training writes each task's champion, its backtest scores and a precomputed forecast here;
``ForecastCache.get`` is the only thing the hot path calls: one indexed row, parsed once and kept
in memory for ``ttl_s`` (p99 target 5 ms). Reads never raise for a missing or unreadable row:
they return None and log once, and the caller falls back to the declared resources.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import numpy as np
from sqlalchemy import and_, delete, insert, select, update

from airflow_predictive.core.model.resources import Metric
from airflow_predictive.core.model.runs import TaskKey
from airflow_predictive.core.model.series import DemandCurve, Forecast
from airflow_predictive.core.ports import SystemClock
from airflow_predictive.core.profiler.selection import CandidateScore, SelectionRecord
from airflow_predictive.storage.engine import guarded
from airflow_predictive.storage.tables import forecast_cache, selection_record, task_profile

if TYPE_CHECKING:
    from collections.abc import Mapping

    from sqlalchemy.engine import Engine, RowMapping

    from airflow_predictive.core.ports import Clock

log = logging.getLogger(__name__)


# -- serialisation (JSON only: nothing here is ever unpickled) ---------------------------------


def forecast_to_json(forecast: Forecast) -> tuple[str, str]:
    curves = {
        m.value: {
            "step_s": c.step_s,
            "q": {repr(q): [round(float(v), 6) for v in arr] for q, arr in c.quantiles.items()},
        }
        for m, c in forecast.curves.items()
    }
    duration = {repr(q): float(v) for q, v in forecast.duration_s.items() if math.isfinite(v)}
    return json.dumps(curves, separators=(",", ":")), json.dumps(duration)


def forecast_from_json(curves_text: str, duration_text: str, estimator: str, peak_only: bool) -> Forecast:
    """Parse a stored forecast; raises ValueError (with the reason) when the text is unusable."""
    try:
        raw = json.loads(curves_text)
        dur = json.loads(duration_text)
        curves = {}
        for name, body in raw.items():
            metric = Metric(name)
            qs = {float(q): np.array(v, dtype=float) for q, v in body["q"].items()}
            curves[metric] = DemandCurve(metric, float(body["step_s"]), qs)
        duration = {float(q): float(v) for q, v in dur.items()}
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"unreadable stored forecast: {exc}") from exc
    return Forecast(curves=curves, duration_s=duration, estimator=estimator, peak_only=peak_only)


def _finite(v: float) -> float | None:
    return v if math.isfinite(v) else None


def _scores_json(
    record: SelectionRecord, model_version: str | None = None, model_digest: str | None = None
) -> str:
    """Candidates' scores and the champion's calibration, as one JSON object; the calibration
    names the model version and content digest it was fitted for (``calibration_for``)."""
    return json.dumps(
        {
            "calibration_for": {"model_version": model_version, "digest": model_digest},
            "candidates": [
                {
                    "estimator": s.estimator,
                    "forecasts": s.forecasts,
                    "pinball": _finite(s.pinball),
                    "memory_under_rate": _finite(s.memory_under_rate),
                    "memory_shortfall": _finite(s.memory_shortfall),
                    "score": _finite(s.score),
                    "error": s.error,
                }
                for s in record.scores
            ],
            "calibration": {
                m.value: {repr(q): f for q, f in factors.items()} for m, factors in record.calibration.items()
            },
        }
    )


def _calibration_digest(text: str | None) -> str | None:
    """The model content digest a stored calibration was fitted for (None: not pinned)."""
    try:
        data = json.loads(text or "null")
        digest = data.get("calibration_for", {}).get("digest") if isinstance(data, dict) else None
    except (ValueError, AttributeError):
        return None
    return str(digest) if digest else None


def _scores_from_json(
    text: str | None,
) -> tuple[tuple[CandidateScore, ...], dict[Metric, dict[float, float]]]:
    if not text:
        return (), {}
    try:
        data = json.loads(text)
        items = data["candidates"] if isinstance(data, dict) else data
        scores = tuple(
            CandidateScore(
                estimator=str(i["estimator"]),
                forecasts=int(i["forecasts"]),
                pinball=math.inf if i["pinball"] is None else float(i["pinball"]),
                memory_under_rate=float(i["memory_under_rate"] or 0.0),
                memory_shortfall=float(i["memory_shortfall"] or 0.0),
                score=math.inf if i["score"] is None else float(i["score"]),
                error=i.get("error"),
            )
            for i in items
        )
        raw_cal = data.get("calibration", {}) if isinstance(data, dict) else {}
        cal = {Metric(m): {float(q): float(f) for q, f in fs.items()} for m, fs in raw_cal.items()}
    except (ValueError, KeyError, TypeError, AttributeError):
        log.warning("predictive: unreadable selection scores; showing none")
        return (), {}
    return scores, cal


def _aware(value: datetime | None) -> datetime:
    if value is None:
        return datetime.now(UTC)
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _where(table: Any, key: TaskKey) -> Any:
    c = table.c
    return and_(c.dag_id == key.dag_id, c.task_id == key.task_id, c.map_index == key.map_index)


# -- values read back -------------------------------------------------------------------------


@dataclass(frozen=True)
class TaskProfile:
    """A task's current champion, as training left it."""

    key: TaskKey
    champion: str | None
    model_version: str | None
    scores: tuple[CandidateScore, ...]
    reason: str | None
    runs: int
    updated_at: datetime
    calibration: Mapping[Metric, Mapping[float, float]] = field(default_factory=dict)
    calibration_digest: str | None = None  # content digest of the model the calibration was fitted for

    @property
    def calibration_version(self) -> str:
        """Names the calibration: the model it was fitted for and when it was selected."""
        pinned = (
            f"{self.model_version}#{self.calibration_digest[:12]}" if self.calibration_digest else "baseline"
        )
        return f"{pinned}@{self.updated_at.isoformat(timespec='seconds')}"


@dataclass(frozen=True, eq=False)
class CachedForecast:
    """A precomputed forecast with where it came from."""

    key: TaskKey
    forecast: Forecast
    model_version: str | None
    explanation: str | None
    created_at: datetime


# -- the stores -------------------------------------------------------------------------------


class ProfileStore:
    """Selection records (append-only history) and the current profile per task."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def record_selection(
        self, record: SelectionRecord, model_version: str | None = None, model_digest: str | None = None
    ) -> None:
        """Append the selection and make it the task's current profile. ``model_digest``: the
        content digest (``ModelManifest.digest``) of ``model_version``, pinned with the calibration."""
        key = record.key
        scores = _scores_json(record, model_version, model_digest)
        now = _aware(record.created_at)
        with guarded(self.engine, begin=True) as conn:
            conn.execute(
                insert(selection_record).values(
                    dag_id=key.dag_id,
                    task_id=key.task_id,
                    map_index=key.map_index,
                    champion=record.champion,
                    reason=record.reason,
                    scores=scores,
                    runs=record.runs,
                    folds=record.folds,
                    model_version=model_version,
                    created_at=now,
                )
            )
            values = {
                "champion": record.champion,
                "model_version": model_version,
                "scores": scores,
                "reason": record.reason,
                "runs": record.runs,
                "updated_at": now,
            }
            done = conn.execute(update(task_profile).where(_where(task_profile, key)).values(**values))
            if not done.rowcount:
                conn.execute(
                    insert(task_profile).values(
                        dag_id=key.dag_id, task_id=key.task_id, map_index=key.map_index, **values
                    )
                )

    def profile(self, key: TaskKey) -> TaskProfile | None:
        with guarded(self.engine, begin=False) as conn:
            row = conn.execute(select(task_profile).where(_where(task_profile, key))).mappings().first()
        if row is None:
            return None
        scores, cal = _scores_from_json(row["scores"])
        return TaskProfile(
            key=key,
            champion=row["champion"],
            model_version=row["model_version"],
            scores=scores,
            reason=row["reason"],
            runs=int(row["runs"] or 0),
            updated_at=_aware(row["updated_at"]),
            calibration=cal,
            calibration_digest=_calibration_digest(row["scores"]),
        )

    def profiles(self) -> list[TaskProfile]:
        with guarded(self.engine, begin=False) as conn:
            rows = list(
                conn.execute(select(task_profile.c.dag_id, task_profile.c.task_id, task_profile.c.map_index))
            )
        return [p for p in (self.profile(TaskKey(r[0], r[1], int(r[2]))) for r in rows) if p is not None]

    def selections(self, key: TaskKey, limit: int = 20) -> list[SelectionRecord]:
        """The newest ``limit`` selection records of a task, newest first."""
        c = selection_record.c
        q = (
            select(selection_record)
            .where(_where(selection_record, key))
            .order_by(c.created_at.desc(), c.id.desc())
        )
        with guarded(self.engine, begin=False) as conn:
            rows = list(conn.execute(q.limit(limit)).mappings())
        return [
            SelectionRecord(
                key=key,
                champion=r["champion"],
                scores=_scores_from_json(r["scores"])[0],
                runs=int(r["runs"] or 0),
                folds=int(r["folds"] or 0),
                reason=r["reason"] or "",
                created_at=_aware(r["created_at"]),
                calibration=_scores_from_json(r["scores"])[1],
            )
            for r in rows
        ]


class ForecastCache:
    """Precomputed forecasts per task: written by training, read by the scheduling path.

    ``get`` keeps parsed forecasts in memory for ``ttl_s`` seconds (``invalidate`` or a ``put``
    from this process drops them earlier), so repeated lookups cost a dict access.
    """

    def __init__(self, engine: Engine, *, ttl_s: float = 60.0, clock: Clock | None = None) -> None:
        self.engine = engine
        self.ttl_s = ttl_s
        self.clock = clock or SystemClock()
        self._memo: dict[TaskKey, tuple[float, CachedForecast | None]] = {}
        self._warned: set[TaskKey] = set()

    def put(
        self,
        key: TaskKey,
        forecast: Forecast,
        *,
        model_version: str | None = None,
        explanation: str | None = None,
        created_at: datetime | None = None,
    ) -> None:
        curves, duration = forecast_to_json(forecast)
        values = {
            "estimator": forecast.estimator[:100],
            "model_version": model_version,
            "curves": curves,
            "duration": duration,
            "peak_only": int(forecast.peak_only),
            "explanation": explanation,
            "created_at": _aware(created_at),
        }
        with guarded(self.engine, begin=True) as conn:
            done = conn.execute(update(forecast_cache).where(_where(forecast_cache, key)).values(**values))
            if not done.rowcount:
                conn.execute(
                    insert(forecast_cache).values(
                        dag_id=key.dag_id, task_id=key.task_id, map_index=key.map_index, **values
                    )
                )
        self._memo.pop(key, None)

    def get(self, key: TaskKey) -> CachedForecast | None:
        """The stored forecast for ``key``; None when there is none or it cannot be read."""
        now = self.clock.monotonic()
        hit = self._memo.get(key)
        if hit is not None and hit[0] > now:
            return hit[1]
        with guarded(self.engine, begin=False) as conn:
            row = conn.execute(select(forecast_cache).where(_where(forecast_cache, key))).mappings().first()
        value = self._parse(key, row) if row is not None else None
        self._memo[key] = (now + self.ttl_s, value)
        return value

    def _parse(self, key: TaskKey, row: RowMapping) -> CachedForecast | None:
        try:
            forecast = forecast_from_json(
                row["curves"], row["duration"], row["estimator"], bool(row["peak_only"])
            )
        except ValueError as exc:
            if key not in self._warned:
                self._warned.add(key)
                log.warning(
                    "predictive: cached forecast of %s is unusable (%s); using declared resources", key, exc
                )
            return None
        return CachedForecast(
            key=key,
            forecast=forecast,
            model_version=row["model_version"],
            explanation=row["explanation"],
            created_at=_aware(row["created_at"]),
        )

    def invalidate(self, key: TaskKey | None = None) -> None:
        if key is None:
            self._memo.clear()
        else:
            self._memo.pop(key, None)

    def delete(self, key: TaskKey) -> None:
        with guarded(self.engine, begin=True) as conn:
            conn.execute(delete(forecast_cache).where(_where(forecast_cache, key)))
        self._memo.pop(key, None)
