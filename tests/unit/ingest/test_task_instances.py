from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from airflow_predictive.core.model.runs import Outcome, RunSource, TaskKey
from airflow_predictive.ingest.task_instances import TaskInstanceRow, ingest, record_from_row

if TYPE_CHECKING:
    from airflow_predictive.storage.run_store import SqlRunStore

T0 = datetime(2026, 10, 1, tzinfo=UTC)


def _row(state: str | None, try_number: int = 1, **kw: object) -> TaskInstanceRow:
    base = dict(
        dag_id="d", task_id="t", run_id="r", map_index=-1, try_number=try_number, state=state,
        start_date=T0, end_date=T0 + timedelta(seconds=42), operator="BashOperator", pool="p",
        queue="q", hostname="h", executor_config={"predictive": {"memory": "1Gi"}},
    )  # fmt: skip
    base.update(kw)
    return TaskInstanceRow(**base)  # type: ignore[arg-type]


def test_finished_tries_become_ingest_records() -> None:
    rec = record_from_row(_row("success"))
    assert rec is not None
    assert rec.identity.source is RunSource.INGEST
    assert rec.duration_s == 42 and rec.outcome is Outcome.SUCCESS
    assert rec.declared.memory_bytes == 1024**3
    assert record_from_row(_row("up_for_retry")).outcome is Outcome.FAILED  # type: ignore[union-attr]


def test_unfinished_or_never_run_tries_are_skipped() -> None:
    assert record_from_row(_row("running")) is None
    assert record_from_row(_row("upstream_failed")) is None
    assert record_from_row(_row("success", start_date=None)) is None
    assert record_from_row(_row(None)) is None


def test_ingest_is_idempotent(run_store: SqlRunStore) -> None:
    rows = [_row("failed", 1), _row("success", 2), _row("queued", 3)]
    first = ingest(rows, run_store)
    second = ingest(rows, run_store)
    assert (first.stored, first.skipped_unfinished) == (2, 1)
    assert second.stored == 2
    runs = run_store.runs(TaskKey("d", "t"))
    assert [(r.identity.try_number, r.outcome) for r in runs] == [(1, Outcome.FAILED), (2, Outcome.SUCCESS)]
