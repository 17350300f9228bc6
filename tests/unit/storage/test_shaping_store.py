"""Shaping events round-trip through the provider's database; a database that is down never
raises into the shaping loop."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

from sqlalchemy import create_engine

from airflow_predictive.core.model.resources import MIB, Metric
from airflow_predictive.core.shaping.events import Action, Cause, ShapingEvent, Verdict
from airflow_predictive.storage.shaping_store import SqlShapingEventStore

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine


def _event(subject: str, verdict: Verdict, t: float) -> ShapingEvent:
    return ShapingEvent(
        at=datetime(2026, 1, 1, tzinfo=UTC),
        t_s=t,
        subject=subject,
        backend="kubernetes",
        metric=Metric.MEMORY_BYTES,
        action=Action.GROW,
        cause=Cause.NEAR_LIMIT,
        verdict=verdict,
        reason="usage within 10% of the limit",
        before=256 * MIB,
        target=400 * MIB,
        after=400 * MIB if verdict is Verdict.APPLIED else 256 * MIB,
        usage=240 * MIB,
        predicted=None,
        run_key="d/t/-1/r/1",
    )


def test_events_round_trip_by_subject_and_run(db_engine: Engine) -> None:
    store = SqlShapingEventStore(db_engine)
    store.record(
        [_event("default/a", Verdict.DEFERRED_BY_NODE, 1.0), _event("default/b", Verdict.APPLIED, 2.0)]
    )
    store.record([_event("default/a", Verdict.APPLIED, 3.0)])
    got = store.events(subject="default/a")
    assert [e.verdict for e in got] == [Verdict.DEFERRED_BY_NODE, Verdict.APPLIED]
    assert got[1] == _event("default/a", Verdict.APPLIED, 3.0)
    assert len(store.events(run_key="d/t/-1/r/1")) == 3


def test_a_database_that_is_down_costs_the_events_never_an_exception(tmp_path) -> None:
    engine = create_engine(
        "postgresql+psycopg2://nobody@127.0.0.1:1/none", connect_args={"connect_timeout": 1}
    )
    store = SqlShapingEventStore(engine)
    store.record([_event("default/a", Verdict.APPLIED, 1.0)])  # no exception
    unmigrated = SqlShapingEventStore(create_engine(f"sqlite:///{tmp_path / 'empty.db'}"))
    unmigrated.record([_event("default/a", Verdict.APPLIED, 1.0)])  # schema missing: no exception
