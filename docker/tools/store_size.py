"""Measure what one stored resource sample costs on PostgreSQL (docs/operations.md, "Sizing").

Creates a scratch database next to the given one, migrates it, stores 100 runs x 1,000 samples
with every metric filled (the worst case: a GPU task), prints bytes per sample (table, primary
key and the (run_pk, t_s) index together) and per run row, and drops the database.

    .venv/bin/python docker/tools/store_size.py postgresql+psycopg2://postgres@127.0.0.1:55432/postgres
"""

from __future__ import annotations

import datetime as dt
import sys
import uuid

from sqlalchemy import create_engine, insert, text

from airflow_predictive.storage import migrate, tables
from airflow_predictive.storage.engine import engine_for

RUNS, SAMPLES = 100, 1000


def main(url: str) -> int:
    name = f"store_size_{uuid.uuid4().hex[:8]}"
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    engine = engine_for(url.rsplit("/", 1)[0] + "/" + name)
    try:
        migrate.upgrade(engine)
        metrics = [c.name for c in tables.resource_sample.columns if c.name not in ("id", "run_pk", "t_s")]
        with engine.begin() as conn:
            for r in range(RUNS):
                pk = conn.execute(
                    insert(tables.task_run)
                    .values(
                        source="airflow",
                        dag_id="sizing",
                        task_id=f"task_{r % 10}",
                        map_index=-1,
                        run_id=f"scheduled__{r}",
                        try_number=1,
                        outcome="success",
                        n_samples=SAMPLES,
                        start_date=dt.datetime.now(dt.UTC),
                    )
                    .returning(tables.task_run.c.id)
                ).scalar()
                rows = [
                    {"run_pk": pk, "t_s": float(i), **{m: 1.0e6 + i for m in metrics}} for i in range(SAMPLES)
                ]
                conn.execute(insert(tables.resource_sample), rows)
        with engine.connect() as conn:
            samples = conn.execute(
                text("SELECT pg_total_relation_size('predictive_resource_sample')")
            ).scalar()
            runs = conn.execute(text("SELECT pg_total_relation_size('predictive_task_run')")).scalar()
        print(
            f"{len(metrics)} metrics, {RUNS * SAMPLES} samples: {samples / (RUNS * SAMPLES):.0f} bytes per sample, "
            f"{runs / RUNS:.0f} bytes per run row"
        )
    finally:
        engine.dispose()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
