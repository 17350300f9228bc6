"""Sampler: buffering, peaks, bad readings and a database that goes down and comes back."""

from __future__ import annotations

import logging
import math
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from sqlalchemy import create_engine
from sqlalchemy.pool import NullPool

from airflow_predictive.core.model.resources import Metric, ResourceVector
from airflow_predictive.core.model.runs import RunIdentity, RunRecord, TaskKey
from airflow_predictive.core.model.series import ResourceSample
from airflow_predictive.sampling.sampler import MAX_CONSECUTIVE_ERRORS, FlushStatus, Sampler
from airflow_predictive.storage import migrate
from airflow_predictive.storage.run_store import SqlRunStore

if TYPE_CHECKING:
    from collections.abc import Sequence
    from pathlib import Path

    import pytest

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


class FakeClock:
    def __init__(self) -> None:
        self.t = 100.0

    def monotonic(self) -> float:
        return self.t

    def now(self) -> datetime:
        return T0


class ListSource:
    """Returns the queued readings, then None (the target is gone)."""

    def __init__(self, readings: Sequence[object]) -> None:
        self.readings = list(readings)

    def read(self) -> ResourceVector | None:
        item = self.readings.pop(0) if self.readings else None
        if isinstance(item, Exception):
            raise item
        return item  # type: ignore[return-value]


class RawReading:
    """A reading from a source that did not validate its numbers (the duck type of ResourceVector)."""

    def __init__(self, **values: float) -> None:
        self.values = values

    def get(self, metric: Metric) -> float | None:
        return self.values.get(metric.value)


def _start(store: SqlRunStore) -> int:
    return store.start_run(RunRecord(RunIdentity(TaskKey("d", "t"), "r1"), start=T0))


def test_buffers_readings_with_times_since_the_run_start_and_tracks_the_peak(run_store: SqlRunStore) -> None:
    clock = FakeClock()
    source = ListSource(
        [
            ResourceVector(cpu_cores=0.5, memory_bytes=100.0),
            ResourceVector(cpu_cores=2.0, memory_bytes=50.0),
            ResourceVector(memory_bytes=300.0),
        ]
    )
    pk = _start(run_store)
    sampler = Sampler(pk, source, clock, store=run_store, offset_s=0.25)
    for _ in range(3):
        assert sampler.tick()
        clock.t += 1.0
    assert sampler.peak == ResourceVector(cpu_cores=2.0, memory_bytes=300.0)
    assert sampler.flush() is FlushStatus.WRITTEN
    assert [s.t_s for s in run_store.samples(pk)] == [0.25, 1.25, 2.25]
    assert sampler.flush() is FlushStatus.EMPTY
    assert not sampler.tick()  # the source says the target is gone
    assert sampler.stats.written == 3


def test_nan_and_negative_readings_are_stored_as_absent(run_store: SqlRunStore) -> None:
    clock = FakeClock()
    raw = ResourceVector.lenient(
        {Metric.CPU_CORES: math.nan, Metric.MEMORY_BYTES: -5.0, Metric.NET_RX_BPS: 7.0}
    )
    unvalidated = RawReading(cpu_cores=math.inf, memory_bytes=math.nan, disk_read_bps=-1.0, gpu_util=0.5)
    pk = _start(run_store)
    sampler = Sampler(pk, ListSource([raw, unvalidated]), clock, store=run_store)
    sampler.tick()
    clock.t += 1
    sampler.tick()
    sampler.flush()
    stored = run_store.samples(pk)
    assert stored[0].usage == ResourceVector(net_rx_bps=7.0)
    assert stored[1].usage == ResourceVector(gpu_util=0.5)
    assert sampler.peak == ResourceVector(net_rx_bps=7.0, gpu_util=0.5)


def test_a_failing_source_is_logged_once_and_sampling_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    source = ListSource([RuntimeError("boom"), RuntimeError("boom"), ResourceVector(memory_bytes=1.0)])
    sampler = Sampler(1, source, clock)
    with caplog.at_level(logging.WARNING):
        for _ in range(3):
            assert sampler.tick()
            clock.t += 1
    assert sum("reading usage failed" in r.message for r in caplog.records) == 1
    assert sampler.stats.read_errors == 2 and sampler.stats.samples == 1


def test_a_source_that_never_reads_stops_the_sampler() -> None:
    clock = FakeClock()
    sampler = Sampler(1, ListSource([OSError("no /proc")] * MAX_CONSECUTIVE_ERRORS), clock)
    results = []
    for _ in range(MAX_CONSECUTIVE_ERRORS):
        results.append(sampler.tick())
        clock.t += 1
    assert results[-1] is False and all(results[:-1])


def test_a_clock_that_does_not_move_gives_one_sample_per_instant() -> None:
    clock = FakeClock()
    sampler = Sampler(1, ListSource([ResourceVector(memory_bytes=1.0)] * 3), clock)
    for _ in range(3):
        sampler.tick()
    assert sampler.stats.samples == 1


class _SqliteFile:
    """A migrated SQLite file in its own folder; moving the folder makes the database unreachable."""

    def __init__(self, tmp: Path) -> None:
        self.folder = tmp / "db"
        self.folder.mkdir()
        self.parked = tmp / "parked"
        engine = create_engine(f"sqlite:///{self.folder / 'p.db'}", poolclass=NullPool)
        migrate.upgrade(engine)
        self.store = SqlRunStore(engine)

    def down(self) -> None:
        self.folder.rename(self.parked)

    def up(self) -> None:
        self.parked.rename(self.folder)


def test_database_down_keeps_samples_warns_once_and_writes_them_when_it_is_back(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    db = _SqliteFile(tmp_path)
    pk = _start(db.store)
    clock = FakeClock()
    sampler = Sampler(pk, ListSource([ResourceVector(memory_bytes=float(i)) for i in range(1, 7)]), clock,
                      store=db.store)  # fmt: skip
    db.down()
    with caplog.at_level(logging.WARNING):
        for _ in range(3):
            sampler.tick()
            clock.t += 1
            assert sampler.flush() is FlushStatus.FAILED
    assert sum("cannot write samples" in r.message for r in caplog.records) == 1
    assert sampler.stats.buffered == 3
    db.up()
    for _ in range(3):
        sampler.tick()
        clock.t += 1
    assert sampler.flush() is FlushStatus.WRITTEN
    assert [s.usage.memory_bytes for s in db.store.samples(pk)] == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    assert any("reachable again" in r.message for r in caplog.records)


def test_full_buffer_drops_the_oldest_samples_and_counts_them(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    db = _SqliteFile(tmp_path)
    pk = _start(db.store)
    clock = FakeClock()
    readings = [ResourceVector(memory_bytes=float(i)) for i in range(1, 11)]
    sampler = Sampler(pk, ListSource(readings), clock, store=db.store, max_buffer=4)
    db.down()
    with caplog.at_level(logging.WARNING):
        for _ in range(10):
            sampler.tick()
            clock.t += 1
            sampler.flush()
    assert sampler.stats.dropped == 6
    assert sum("dropping the oldest" in r.message for r in caplog.records) == 1
    db.up()
    assert sampler.flush() is FlushStatus.WRITTEN
    assert [s.usage.memory_bytes for s in db.store.samples(pk)] == [7.0, 8.0, 9.0, 10.0]


def test_postgresql_on_a_closed_port_keeps_samples_buffered(caplog: pytest.LogCaptureFixture) -> None:
    engine = create_engine("postgresql+psycopg2://u:p@127.0.0.1:9/none", connect_args={"connect_timeout": 2})
    clock = FakeClock()
    sampler = Sampler(1, ListSource([ResourceVector(memory_bytes=1.0)]), clock, store=SqlRunStore(engine))
    sampler.tick()
    with caplog.at_level(logging.WARNING):
        assert sampler.flush() is FlushStatus.FAILED
        assert sampler.flush() is FlushStatus.FAILED
    assert sampler.stats.buffered == 1
    assert sum("cannot write samples" in r.message for r in caplog.records) == 1


def test_without_a_store_samples_wait_in_the_buffer() -> None:
    sampler = Sampler(1, ListSource([ResourceVector(memory_bytes=1.0)]), FakeClock())
    sampler.tick()
    assert sampler.flush() is FlushStatus.NO_STORE
    assert sampler.pending() == [ResourceSample(0.0, ResourceVector(memory_bytes=1.0))]
