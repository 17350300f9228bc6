"""The sidecar's pieces driven by a fake clock: schedule, stop reasons, and recording a vanished task."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import pytest

from airflow_predictive.core.model.resources import ResourceVector
from airflow_predictive.core.model.runs import Outcome, RunIdentity, RunRecord, TaskKey
from airflow_predictive.sampling.sampler import Sampler
from airflow_predictive.sampling.sidecar import (
    VANISHED_NOTE,
    SidecarLoop,
    StopReason,
    final_flush,
    parse_args,
    record_if_vanished,
    run_loop,
    safe_url,
)
from airflow_predictive.sampling.sources import source_oom_killed

if TYPE_CHECKING:
    from airflow_predictive.storage.run_store import SqlRunStore

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


class FakeClock:
    def __init__(self) -> None:
        self.t = 0.0

    def monotonic(self) -> float:
        return self.t

    def now(self) -> datetime:
        return T0 + timedelta(seconds=self.t)

    def wait(self, seconds: float) -> None:
        self.t += seconds


class CountingSource:
    """Memory grows by 10 per reading; gone after ``alive_for`` readings."""

    def __init__(self, alive_for: int) -> None:
        self.left = alive_for
        self.reads = 0

    def read(self) -> ResourceVector | None:
        if self.left <= 0:
            return None
        self.left -= 1
        self.reads += 1
        return ResourceVector(memory_bytes=10.0 * self.reads, cpu_cores=1.0)


def test_parses_the_command_line_the_listener_builds() -> None:
    args = parse_args(
        ["--run-pk", "7", "--pid", "123", "--url", "sqlite:///x.db", "--interval", "0.5", "--flush", "2",
         "--cgroup", "/sys/fs/cgroup/t", "--gpu", "off", "--ready-fd", "9", "--grace", "0"]
    )  # fmt: skip
    assert (args.run_pk, args.pid, args.interval, args.flush, args.cgroup, args.gpu, args.ready_fd, args.grace) == (
        7, 123, 0.5, 2.0, "/sys/fs/cgroup/t", "off", 9, 0.0,
    )  # fmt: skip


@pytest.mark.parametrize(
    "bad", [["--interval", "0"], ["--interval", "nan"], ["--gpu", "cuda"], ["--grace", "-1"]]
)
def test_rejects_bad_arguments(bad: list[str]) -> None:
    with pytest.raises(SystemExit):
        parse_args(["--run-pk", "1", "--pid", "1", "--url", "sqlite://", *bad])


def test_samples_on_the_interval_and_flushes_on_its_own_period(run_store: SqlRunStore) -> None:
    pk = run_store.start_run(RunRecord(RunIdentity(TaskKey("d", "t"), "r"), start=T0))
    clock = FakeClock()
    sampler = Sampler(pk, CountingSource(alive_for=100), clock, store=run_store)
    loop = SidecarLoop(sampler, clock, interval=1.0, flush_every=5.0)
    stops = iter([False] * 12 + [True])
    reason = run_loop(loop, clock.wait, lambda: next(stops))
    assert reason is StopReason.REQUESTED
    # 12 steps: t = 0 (nothing due), then a tick at t = 1..11; flushes at t = 5 and t = 10
    assert sampler.stats.samples == 11
    assert [s.t_s for s in run_store.samples(pk)] == [float(t) for t in range(1, 11)]
    assert final_flush(sampler, clock.wait)
    assert [s.t_s for s in run_store.samples(pk)] == [float(t) for t in range(1, 12)]


def test_a_stalled_machine_skips_missed_ticks_instead_of_bursting() -> None:
    clock = FakeClock()
    source = CountingSource(alive_for=100)
    loop = SidecarLoop(Sampler(1, source, clock), clock, interval=1.0, flush_every=100.0)
    clock.t = 7.5  # the sidecar was not scheduled for 7.5 s
    delay = loop.step()
    assert source.reads == 1
    assert delay == pytest.approx(0.5)  # back on the grid: next tick at t = 8


def test_stops_when_the_target_is_gone() -> None:
    clock = FakeClock()
    sampler = Sampler(1, CountingSource(alive_for=3), clock)
    loop = SidecarLoop(sampler, clock, interval=1.0, flush_every=5.0)
    assert run_loop(loop, clock.wait, lambda: False) is StopReason.TARGET_GONE
    assert sampler.stats.samples == 3 and clock.t == pytest.approx(4.0)


def _vanished(run_store: SqlRunStore) -> tuple[int, Sampler, FakeClock]:
    pk = run_store.start_run(RunRecord(RunIdentity(TaskKey("d", "t"), "r"), start=T0))
    clock = FakeClock()
    sampler = Sampler(pk, CountingSource(alive_for=4), clock, store=run_store)
    while sampler.tick():
        clock.t += 1
    final_flush(sampler, clock.wait)
    return pk, sampler, clock


def test_records_unknown_with_a_note_when_the_task_process_was_killed(run_store: SqlRunStore) -> None:
    pk, sampler, clock = _vanished(run_store)
    outcome = record_if_vanished(
        run_store, sampler, clock, grace=3.0, wait=clock.wait, stop_requested=lambda: False,
        oom_killed=lambda: False,
    )  # fmt: skip
    assert outcome == Outcome.UNKNOWN.value
    record = run_store.get_run_by_pk(pk)
    assert record is not None
    assert record.outcome is Outcome.UNKNOWN and record.note == VANISHED_NOTE
    assert record.peak.memory_bytes == 40.0
    assert record.end == T0 + timedelta(seconds=4)  # when the sidecar saw it gone, not after the grace
    assert clock.t >= 4.0 + 3.0


def test_records_oom_killed_when_the_cgroup_saw_an_oom_kill(run_store: SqlRunStore) -> None:
    pk, sampler, clock = _vanished(run_store)
    record_if_vanished(
        run_store, sampler, clock, grace=0.0, wait=clock.wait, stop_requested=lambda: False,
        oom_killed=lambda: True,
    )  # fmt: skip
    record = run_store.get_run_by_pk(pk)
    assert record is not None and record.outcome is Outcome.OOM_KILLED


def test_leaves_the_end_to_the_listener_when_it_records_it_within_the_grace(run_store: SqlRunStore) -> None:
    pk, sampler, clock = _vanished(run_store)

    def listener_records_during_the_wait(seconds: float) -> None:
        clock.t += seconds
        run_store.finish_run(pk, outcome=Outcome.SUCCESS, end=clock.now())

    outcome = record_if_vanished(
        run_store, sampler, clock, grace=10.0, wait=listener_records_during_the_wait,
        stop_requested=lambda: False, oom_killed=lambda: True,
    )  # fmt: skip
    assert outcome is None
    record = run_store.get_run_by_pk(pk)
    assert record is not None and record.outcome is Outcome.SUCCESS
    assert clock.t < 4.0 + 10.0


@dataclass
class _Detail:
    oom_kills: int | None


class _CgroupLike:
    def __init__(self, detail: object) -> None:
        self.detail = detail

    def read_detail(self) -> object:
        if isinstance(self.detail, Exception):
            raise self.detail
        return self.detail


def test_oom_kill_is_read_from_the_cgroup_detail() -> None:
    assert source_oom_killed(_CgroupLike(_Detail(oom_kills=1)))
    assert not source_oom_killed(_CgroupLike(_Detail(oom_kills=0)))
    assert not source_oom_killed(_CgroupLike(_Detail(oom_kills=None)))  # v1 kernel without the count
    assert not source_oom_killed(_CgroupLike(None))  # the cgroup is gone
    assert not source_oom_killed(_CgroupLike(OSError("unreadable")))
    assert not source_oom_killed(object())  # a process tree: unknown, so not claimed


def test_reads_the_url_from_the_environment_so_ps_never_shows_the_password(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SAMPLER_TEST_URL", "postgresql://u:secret@db/x")
    args = parse_args(["--run-pk", "1", "--pid", "2", "--url-env", "SAMPLER_TEST_URL"])
    assert args.url == "postgresql://u:secret@db/x"
    monkeypatch.delenv("SAMPLER_TEST_URL")
    with pytest.raises(SystemExit):
        parse_args(["--run-pk", "1", "--pid", "2", "--url-env", "SAMPLER_TEST_URL"])
    with pytest.raises(SystemExit):  # exactly one of --url / --url-env
        parse_args(["--run-pk", "1", "--pid", "2"])


def test_log_lines_mask_the_database_password() -> None:
    assert (
        safe_url("postgresql+psycopg2://airflow:s3cr:et@host:5432/db")
        == "postgresql+psycopg2://airflow:***@host:5432/db"
    )
    assert safe_url("sqlite:////tmp/x.db") == "sqlite:////tmp/x.db"
