"""`airflow predictive ingest`: backfill run history from Airflow's task_instance table."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from airflow_predictive.ingest.task_instances import airflow_rows, ingest
from airflow_predictive.runtime import get_runtime


def run(args: Any) -> None:
    since = datetime.fromisoformat(args.since) if args.since else None
    store = get_runtime().run_store()
    summary = ingest(airflow_rows(args.dag_id, since), store)
    print(
        f"ingested {summary.stored} finished tries from Airflow's task history "
        f"({summary.seen} rows read, {summary.skipped_unfinished} not finished, {summary.failed} unreadable)"
    )
