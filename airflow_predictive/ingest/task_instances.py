"""Turn Airflow's task_instance / task_instance_history rows into RunRecords (source INGEST).

So an existing deployment has a duration history on day one: durations, tries, states, operator,
pool, queue, executor_config. Only finished tries are taken (a running try is the listener's).
Reads Airflow's metadata DB through Airflow's session (CLI / maintenance DAG only, never a task),
writes through the provider's RunStore. Idempotent: re-ingesting updates the same rows.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from airflow_predictive.core.model.runs import Outcome, RunIdentity, RunRecord, RunSource, TaskKey
from airflow_predictive.listeners.task_facts import declared_resources, executor_config_json

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator
    from datetime import datetime

    from airflow_predictive.core.ports import RunStore

log = logging.getLogger(__name__)

_STATES = {
    "success": Outcome.SUCCESS,
    "failed": Outcome.FAILED,
    "up_for_retry": Outcome.FAILED,
    "skipped": Outcome.SKIPPED,
}


@dataclass(frozen=True)
class TaskInstanceRow:
    """The columns ingest reads, decoupled from Airflow's ORM classes."""

    dag_id: str
    task_id: str
    run_id: str
    map_index: int
    try_number: int
    state: str | None
    start_date: datetime | None
    end_date: datetime | None
    operator: str | None
    pool: str | None
    queue: str | None
    hostname: str | None
    executor_config: Any = None


@dataclass(frozen=True)
class IngestSummary:
    seen: int
    stored: int
    skipped_unfinished: int
    failed: int


def record_from_row(row: TaskInstanceRow) -> RunRecord | None:
    """The record of one finished try, or None for tries that never ran or are still running."""
    outcome = _STATES.get((row.state or "").lower())
    if outcome is None or row.start_date is None or row.try_number < 1:
        return None
    return RunRecord(
        identity=RunIdentity(
            key=TaskKey(row.dag_id, row.task_id, row.map_index if row.map_index is not None else -1),
            run_id=row.run_id,
            try_number=row.try_number,
            source=RunSource.INGEST,
        ),
        start=row.start_date,
        end=row.end_date,
        outcome=outcome,
        declared=declared_resources(row.executor_config, None),
        operator=row.operator,
        pool=row.pool,
        queue=row.queue,
        hostname=row.hostname,
        executor_config=executor_config_json(row.executor_config),
        note="backfilled from Airflow's task history",
    )


def ingest(rows: Iterable[TaskInstanceRow], store: RunStore) -> IngestSummary:
    seen = stored = unfinished = failed = 0
    for row in rows:
        seen += 1
        try:
            record = record_from_row(row)
        except ValueError as exc:
            failed += 1
            log.warning("predictive ingest: skipping %s.%s %s: %s", row.dag_id, row.task_id, row.run_id, exc)
            continue
        if record is None:
            unfinished += 1
            continue
        store.upsert_run(record)
        stored += 1
    return IngestSummary(seen, stored, unfinished, failed)


def airflow_rows(dag_id: str | None = None, since: datetime | None = None) -> Iterator[TaskInstanceRow]:
    """Rows of task_instance and task_instance_history (earlier tries) from Airflow's metadata DB."""
    from airflow.models.taskinstance import TaskInstance
    from airflow.models.taskinstancehistory import TaskInstanceHistory
    from airflow.utils.session import create_session
    from sqlalchemy import select

    for model in (TaskInstance, TaskInstanceHistory):
        base = [
            model.dag_id,
            model.task_id,
            model.run_id,
            model.map_index,
            model.try_number,
            model.state,
            model.start_date,
            model.end_date,
            model.operator,
            model.pool,
            model.queue,
            model.hostname,
        ]
        with create_session() as session:
            for with_config in (True, False):
                cols = [*base, model.executor_config] if with_config else base
                q = select(*cols)
                if dag_id:
                    q = q.where(model.dag_id == dag_id)
                if since:
                    q = q.where(model.start_date >= since)
                try:
                    result: list[Any] = list(session.execute(q).all())
                except Exception as exc:  # unreadable (pickled) executor_config: ingest without it
                    if not with_config:
                        raise
                    session.rollback()
                    log.warning(
                        "predictive ingest: executor_config unreadable (%s); ingesting without it", exc
                    )
                    continue
                for r in result:
                    yield TaskInstanceRow(
                        dag_id=r[0],
                        task_id=r[1],
                        run_id=r[2],
                        map_index=int(r[3]) if r[3] is not None else -1,
                        try_number=int(r[4] or 0),
                        state=str(r[5].value if hasattr(r[5], "value") else r[5]) if r[5] else None,
                        start_date=r[6],
                        end_date=r[7],
                        operator=r[8],
                        pool=r[9],
                        queue=r[10],
                        hostname=r[11],
                        executor_config=r[12] if with_config else None,
                    )
                break
