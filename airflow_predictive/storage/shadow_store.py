"""Shadow re-forecasts on the provider's database (table ``predictive_shadow_forecast``, revision 0009).

Why: a shadow run and the real try it calibrates run in different processes (a setup task and
the task; the operator and the scheduler's planner). The shadow writes its re-forecast here once,
keyed by task and DAG run; ``core.shadow.serving.ShadowOverlay`` reads it when that run's try is
planned. The shadow's own usage is a run of source ``shadow`` in ``predictive_task_run`` (it never
overwrites the real try, whose source is ``listener``). Forecasts are stored as JSON (never pickled).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import and_, insert, select, update

from airflow_predictive.core.model.runs import TaskKey
from airflow_predictive.core.shadow.serving import StoredShadowForecast
from airflow_predictive.storage.engine import guarded
from airflow_predictive.storage.profile_store import forecast_from_json, forecast_to_json
from airflow_predictive.storage.tables import shadow_forecast

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine, RowMapping


def _aware(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


class SqlShadowForecastStore:
    """``ShadowForecastLookup`` (core/shadow/serving.py) plus the shadow's write."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def put(self, stored: StoredShadowForecast) -> None:
        """Store (or replace: a shadow of the same run re-ran) the re-forecast of one DAG run."""
        curves, duration = forecast_to_json(stored.forecast)
        values = {
            "shadow_run_pk": stored.shadow_run_pk,
            "estimator": stored.forecast.estimator[:100],
            "model_version": stored.model_version,
            "curves": curves,
            "duration": duration,
            "peak_only": int(stored.forecast.peak_only),
            "note": stored.note,
            "created_at": _aware(stored.created_at) or datetime.now(UTC),
        }
        where = self._where(stored.key, stored.run_id)
        with guarded(self.engine, begin=True) as conn:
            if not conn.execute(update(shadow_forecast).where(where).values(**values)).rowcount:
                conn.execute(
                    insert(shadow_forecast).values(
                        dag_id=stored.key.dag_id,
                        task_id=stored.key.task_id,
                        map_index=stored.key.map_index,
                        run_id=stored.run_id,
                        **values,
                    )
                )

    def get(self, key: TaskKey, run_id: str) -> StoredShadowForecast | None:
        """The re-forecast for this DAG run of ``key``; None when no shadow left one.
        Raises ``StorageUnavailable`` when the database cannot be read, ValueError on a corrupt row."""
        with guarded(self.engine, begin=False) as conn:
            row = conn.execute(select(shadow_forecast).where(self._where(key, run_id))).mappings().first()
        return None if row is None else self._parse(row)

    @staticmethod
    def _where(key: TaskKey, run_id: str) -> Any:
        c = shadow_forecast.c
        return and_(
            c.dag_id == key.dag_id, c.task_id == key.task_id, c.map_index == key.map_index, c.run_id == run_id
        )

    @staticmethod
    def _parse(row: RowMapping) -> StoredShadowForecast:
        forecast = forecast_from_json(
            row["curves"], row["duration"], row["estimator"], bool(row["peak_only"])
        )
        return StoredShadowForecast(
            key=TaskKey(row["dag_id"], row["task_id"], int(row["map_index"])),
            run_id=row["run_id"],
            forecast=forecast,
            note=row["note"] or "",
            shadow_run_pk=row["shadow_run_pk"],
            model_version=row["model_version"],
            created_at=_aware(row["created_at"]),
        )
