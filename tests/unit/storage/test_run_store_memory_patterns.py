"""Anon / file memory (revision 0013) round-trip through SqlRunStore on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from airflow_predictive.core.model.resources import Metric, ResourceVector
from airflow_predictive.core.model.runs import Outcome, RunIdentity, RunRecord, TaskKey
from airflow_predictive.core.model.series import ResourceSample

if TYPE_CHECKING:
    from airflow_predictive.storage.run_store import SqlRunStore

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
KEY = TaskKey("etl", "scan")
MIB = 1024.0**2


def test_samples_and_peaks_keep_anon_and_file_memory(run_store: SqlRunStore) -> None:
    pk = run_store.start_run(RunRecord(RunIdentity(KEY, "r1"), start=T0))
    readings = [
        ResourceVector(memory_bytes=100 * MIB, memory_anon_bytes=40 * MIB, memory_file_bytes=60 * MIB),
        ResourceVector(memory_bytes=300 * MIB, memory_anon_bytes=50 * MIB, memory_file_bytes=250 * MIB),
        ResourceVector(memory_bytes=90 * MIB),  # a tick whose memory.stat was unreadable
    ]
    run_store.add_samples(pk, [ResourceSample(float(t), r) for t, r in enumerate(readings)])
    series = run_store.series(pk)
    anon, file = series.get(Metric.MEMORY_ANON_BYTES), series.get(Metric.MEMORY_FILE_BYTES)
    assert anon is not None and file is not None
    assert anon[:2].tolist() == [40 * MIB, 50 * MIB]
    assert file[:2].tolist() == [60 * MIB, 250 * MIB]
    [*_, last] = run_store.samples(pk)
    assert last.usage.memory_anon_bytes is None and last.usage.memory_file_bytes is None  # NULL, not 0

    run_store.finish_run(pk, outcome=Outcome.SUCCESS, end=T0 + timedelta(seconds=3), peak=series.peaks())
    [run] = run_store.runs(KEY)
    assert run.peak.memory_anon_bytes == 50 * MIB
    assert run.peak.memory_file_bytes == 250 * MIB
    assert run.declared.memory_anon_bytes is None


def test_runs_recorded_without_the_patterns_read_them_as_absent(run_store: SqlRunStore) -> None:
    pk = run_store.start_run(RunRecord(RunIdentity(KEY, "old"), start=T0))
    run_store.add_samples(pk, [ResourceSample(0.0, ResourceVector(cpu_cores=1.0, memory_bytes=5 * MIB))])
    assert run_store.series(pk).get(Metric.MEMORY_ANON_BYTES) is None
