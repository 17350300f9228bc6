"""Shaping events on the provider's database: the controller's ``EventSink``, and their reads.

Why: every shaping decision (grown, reclaimed, held back by hysteresis, deferred by the node ...)
must be visible after the fact, in the UI and in tests, with its reason. Writes never raise into
a shaping loop: a database that is down costs the events of that tick (one log line per outage),
never the task.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from sqlalchemy import insert, select
from sqlalchemy.exc import SQLAlchemyError

from airflow_predictive.core.model.resources import Metric
from airflow_predictive.core.shaping.events import Action, Cause, ShapingEvent, Verdict
from airflow_predictive.storage.engine import StorageUnavailable, guarded
from airflow_predictive.storage.tables import shaping_event

if TYPE_CHECKING:
    from collections.abc import Sequence

    from sqlalchemy.engine import Engine, RowMapping

log = logging.getLogger(__name__)


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


class SqlShapingEventStore:
    """``EventSink`` (core/shaping/controller.py) plus reads by subject or run."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._down = False

    def record(self, events: Sequence[ShapingEvent]) -> None:
        if not events:
            return
        rows = [
            {
                "at": _aware(e.at),
                "t_s": float(e.t_s),
                "subject": e.subject[:250],
                "backend": e.backend[:32],
                "run_key": e.run_key[:1000],
                "metric": e.metric.value,
                "action": e.action.value,
                "cause": e.cause.value,
                "verdict": e.verdict.value,
                "reason": e.reason,
                "before_value": e.before,
                "target_value": e.target,
                "after_value": e.after,
                "usage_value": e.usage,
                "predicted_value": e.predicted,
            }
            for e in events
        ]
        try:
            with guarded(self._engine, begin=True) as conn:
                conn.execute(insert(shaping_event), rows)
        except (StorageUnavailable, SQLAlchemyError) as exc:
            if not self._down:
                log.warning(
                    "shaping events not stored (database unavailable): %s", str(exc).splitlines()[0][:300]
                )
            self._down = True
            return
        if self._down:
            log.info("shaping events stored again")
        self._down = False

    def events(
        self, *, subject: str | None = None, run_key: str | None = None, limit: int = 1000
    ) -> list[ShapingEvent]:
        """Events oldest first, for one shaped task (subject) or one try (run_key), or all."""
        query = select(shaping_event).order_by(shaping_event.c.id)
        if subject is not None:
            query = query.where(shaping_event.c.subject == subject)
        if run_key is not None:
            query = query.where(shaping_event.c.run_key == run_key)
        with guarded(self._engine, begin=False) as conn:
            rows = conn.execute(query.limit(limit)).mappings().all()
        return [_event(r) for r in rows]


def _event(row: RowMapping) -> ShapingEvent:
    return ShapingEvent(
        at=_aware(row["at"]),
        t_s=row["t_s"],
        subject=row["subject"],
        backend=row["backend"],
        metric=Metric(row["metric"]),
        action=Action(row["action"]),
        cause=Cause(row["cause"]),
        verdict=Verdict(row["verdict"]),
        reason=row["reason"],
        before=row["before_value"],
        target=row["target_value"],
        after=row["after_value"],
        usage=row["usage_value"],
        predicted=row["predicted_value"],
        run_key=row["run_key"],
    )
