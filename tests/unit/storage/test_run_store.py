"""SqlRunStore on SQLite and on the real PostgreSQL started by `make test` (fixture db_engine)."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import create_engine, insert, text

from airflow_predictive.core.model.resources import Metric, ResourceVector
from airflow_predictive.core.model.runs import Outcome, RunIdentity, RunRecord, RunSource, TaskKey
from airflow_predictive.core.model.series import ResourceSample
from airflow_predictive.storage.engine import StorageUnavailable
from airflow_predictive.storage.run_store import SqlRunStore
from airflow_predictive.storage.tables import task_run

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
KEY = TaskKey("etl", "transform")


def _record(run_id: str = "r1", try_number: int = 1, start: datetime = T0, **kw: object) -> RunRecord:
    return RunRecord(
        identity=RunIdentity(KEY, run_id, try_number),
        start=start,
        declared=ResourceVector(cpu_cores=2.0, memory_bytes=4 * 1024**3),
        operator="PythonOperator",
        features={"param.input_mb": 512, "predictive": True},
        **kw,  # type: ignore[arg-type]
    )


def test_records_a_try_its_samples_and_its_end(run_store: SqlRunStore) -> None:
    pk = run_store.start_run(_record())
    samples = [
        ResourceSample(float(t), ResourceVector(cpu_cores=1.0, memory_bytes=100.0 * t)) for t in range(5)
    ]
    assert run_store.add_samples(pk, samples) == 5
    run_store.finish_run(
        pk, outcome=Outcome.SUCCESS, end=T0 + timedelta(seconds=30), peak=run_store.series(pk).peaks()
    )
    [run] = run_store.runs(KEY)
    assert run.outcome is Outcome.SUCCESS
    assert run.duration_s == pytest.approx(30.0)
    assert run.peak.memory_bytes == 400.0
    assert run.declared.cpu_cores == 2.0
    assert run.features == {"param.input_mb": 512, "predictive": True}
    assert run.n_samples == 5
    assert run_store.series(pk).get(Metric.MEMORY_BYTES).tolist() == [0, 100, 200, 300, 400]


def test_nan_and_negative_readings_are_stored_as_absent(run_store: SqlRunStore) -> None:
    pk = run_store.start_run(_record())
    bad = ResourceVector.lenient({Metric.CPU_CORES: math.nan, Metric.MEMORY_BYTES: -5.0})
    run_store.add_samples(
        pk, [ResourceSample(0.0, bad), ResourceSample(math.nan, ResourceVector(cpu_cores=1))]
    )
    series = run_store.series(pk)
    assert len(series) == 1
    assert series.get(Metric.CPU_CORES) is None  # never a fake zero


def test_the_same_try_recorded_again_starts_afresh(run_store: SqlRunStore) -> None:
    pk = run_store.start_run(_record())
    run_store.add_samples(pk, [ResourceSample(0.0, ResourceVector(cpu_cores=1.0))])
    assert run_store.start_run(_record()) == pk
    assert len(run_store.series(pk)) == 0
    assert run_store.runs(KEY)[0].n_samples == 0


def test_runs_are_oldest_first_and_limit_keeps_the_newest(run_store: SqlRunStore) -> None:
    for i in range(5):
        run_store.upsert_run(_record(f"r{i}", start=T0 + timedelta(hours=i), outcome=Outcome.SUCCESS))
    assert [r.identity.run_id for r in run_store.runs(KEY)] == ["r0", "r1", "r2", "r3", "r4"]
    assert [r.identity.run_id for r in run_store.runs(KEY, limit=2)] == ["r3", "r4"]
    assert run_store.task_keys() == [KEY]


def test_upsert_is_idempotent_per_identity_and_source(run_store: SqlRunStore) -> None:
    a = run_store.upsert_run(_record(outcome=Outcome.FAILED))
    b = run_store.upsert_run(_record(outcome=Outcome.SUCCESS))
    ingested = RunRecord(identity=RunIdentity(KEY, "r1", 1, RunSource.INGEST), start=T0)
    c = run_store.upsert_run(ingested)
    assert a == b != c
    assert run_store.get_run(RunIdentity(KEY, "r1", 1)).outcome is Outcome.SUCCESS  # type: ignore[union-attr]


def test_finish_only_if_running_leaves_recorded_ends_alone(run_store: SqlRunStore) -> None:
    pk = run_store.start_run(_record())
    run_store.finish_run(pk, outcome=Outcome.OOM_KILLED, end=T0 + timedelta(seconds=5))
    run_store.finish_run(pk, outcome=Outcome.UNKNOWN, end=T0 + timedelta(seconds=9), only_if_running=True)
    run = run_store.get_run_by_pk(pk)
    assert run is not None and run.outcome is Outcome.OOM_KILLED and run.duration_s == 5.0


def test_stale_running_finds_tries_whose_end_was_never_recorded(run_store: SqlRunStore) -> None:
    pk = run_store.start_run(_record())
    run_store.start_run(_record("r2", start=T0 + timedelta(days=1)))
    assert [r.run_pk for r in run_store.stale_running(T0 + timedelta(hours=1))] == [pk]


def test_series_many_reads_many_runs_at_once(run_store: SqlRunStore) -> None:
    pks = [run_store.start_run(_record(f"r{i}")) for i in range(3)]
    for i, pk in enumerate(pks):
        run_store.add_samples(
            pk, [ResourceSample(float(t), ResourceVector(cpu_cores=float(i))) for t in range(4)]
        )
    many = run_store.series_many(pks)
    assert [many[pk].peak(Metric.CPU_CORES) for pk in pks] == [0.0, 1.0, 2.0]


def test_corrupt_rows_come_back_with_the_unreadable_part_absent(run_store: SqlRunStore) -> None:
    with run_store.engine.begin() as conn:
        conn.execute(
            insert(task_run).values(
                source="nonsense",
                dag_id="etl",
                task_id="transform",
                map_index=-1,
                run_id="corrupt",
                try_number=1,
                outcome="exploded",
                features="{not json",
                n_samples=0,
                peak_memory_bytes=-12.0,
                declared_cpu_cores=float("inf") if run_store.engine.dialect.name == "postgresql" else 1e400,
            )
        )
    [run] = run_store.runs(KEY)
    assert run.outcome is Outcome.UNKNOWN
    assert run.features == {}
    assert run.peak.memory_bytes is None
    assert run.declared.cpu_cores is None


def test_a_database_that_is_down_raises_storage_unavailable(tmp_path) -> None:
    missing = tmp_path / "no" / "such" / "dir" / "x.db"
    store = SqlRunStore(create_engine(f"sqlite:///{missing}"))
    with pytest.raises(StorageUnavailable):
        store.start_run(_record())


def test_a_database_without_the_tables_says_to_migrate(tmp_path) -> None:
    store = SqlRunStore(create_engine(f"sqlite:///{tmp_path / 'empty.db'}"))
    with pytest.raises(StorageUnavailable, match="airflow db migrate"):
        store.runs(KEY)


def test_postgres_down_raises_storage_unavailable() -> None:
    store = SqlRunStore(
        create_engine("postgresql+psycopg2://nobody@127.0.0.1:1/none", connect_args={"connect_timeout": 2})
    )
    with pytest.raises(StorageUnavailable):
        store.runs(KEY)


def test_deleting_a_run_deletes_its_samples(run_store: SqlRunStore) -> None:
    pk = run_store.start_run(_record())
    run_store.add_samples(pk, [ResourceSample(0.0, ResourceVector(cpu_cores=1.0))])
    with run_store.engine.begin() as conn:
        conn.execute(text("DELETE FROM predictive_task_run WHERE id = :pk"), {"pk": pk})
    assert len(run_store.series(pk)) == 0
