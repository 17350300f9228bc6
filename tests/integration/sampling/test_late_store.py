"""A sidecar started before its store URL is known (the listener's connection lookup outlasted the
start hook): it samples from the start and writes everything once the STORE line comes."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from airflow_predictive.core.model.runs import Outcome, RunIdentity, RunRecord, TaskKey
from airflow_predictive.sampling.launcher import launch_recorder
from airflow_predictive.sampling.sidecar import ExitCode

if TYPE_CHECKING:
    import subprocess
    from pathlib import Path

    from airflow_predictive.storage.run_store import SqlRunStore


def _record(run_id: str) -> RunRecord:
    return RunRecord(RunIdentity(TaskKey("late", "t"), run_id), start=datetime.now(UTC))


def test_samples_taken_before_the_url_came_are_all_written(
    run_store: SqlRunStore, sleeper: subprocess.Popen[bytes]
) -> None:
    handle = launch_recorder(_record("late"), sleeper.pid, None, interval=0.25, flush=0.5, gpu="off")
    assert handle is not None
    time.sleep(2.0)  # the lookup is slow: the sidecar samples meanwhile
    assert handle.process.poll() is None
    assert handle.give_store(run_store.engine.url.render_as_string(hide_password=False))
    time.sleep(1.0)
    handle.end(Outcome.SUCCESS, datetime.now(UTC), 0, None)
    assert handle.process.wait(60) == ExitCode.OK, handle.log_path.read_text()[-2000:]
    run = next(r for r in run_store.runs(TaskKey("late", "t")) if r.identity.run_id == "late")
    assert run.outcome is Outcome.SUCCESS
    first = min(s.t_s for s in run_store.samples(run.run_pk))  # type: ignore[arg-type]
    assert first < 1.0 and run.n_samples >= 8  # ~3 s at 4 Hz, from before the URL came


def test_no_store_after_all_records_nothing_and_says_why(
    run_store: SqlRunStore, sleeper: subprocess.Popen[bytes]
) -> None:
    handle = launch_recorder(_record("none"), sleeper.pid, None, interval=0.25, flush=0.5, gpu="off")
    assert handle is not None
    time.sleep(0.5)
    assert handle.give_store(None, "connection predictive_store: not found")
    handle.end(Outcome.SUCCESS, datetime.now(UTC), 0, None)
    assert handle.process.wait(60) == ExitCode.STORAGE
    assert "connection predictive_store: not found" in handle.log_path.read_text()
    assert not [r for r in run_store.runs(TaskKey("late", "t")) if r.identity.run_id == "none"]


def test_a_task_that_ends_before_the_url_came_is_reported_not_hung(
    run_store: SqlRunStore, sleeper: subprocess.Popen[bytes]
) -> None:
    handle = launch_recorder(_record("gone"), sleeper.pid, None, interval=0.25, flush=0.5, gpu="off")
    assert handle is not None
    time.sleep(0.5)
    handle.end(Outcome.SUCCESS, datetime.now(UTC), 0, None)  # closes the pipe: no STORE can follow
    assert handle.process.wait(30) == ExitCode.STORAGE
    assert "ended before its store connection was fetched" in handle.log_path.read_text()


def test_a_sidecar_retrying_a_broken_database_sleeps_between_attempts(
    tmp_path: Path, sleeper: subprocess.Popen[bytes]
) -> None:
    import psutil

    broken = f"sqlite:///{tmp_path / 'no-tables.db'}"  # a file without the provider's tables
    handle = launch_recorder(_record("broken"), sleeper.pid, broken, interval=0.25, flush=0.5, gpu="off")
    assert handle is not None
    time.sleep(1.0)
    handle.end(Outcome.SUCCESS, datetime.now(UTC), 0, None)  # closes the pipe; the catch-up begins
    try:
        proc = psutil.Process(handle.pid)
        time.sleep(2.0)  # start-up and the first failed attempts
        before = sum(proc.cpu_times()[:2])
        time.sleep(4.0)
        used = sum(proc.cpu_times()[:2]) - before
        assert handle.process.poll() is None  # still retrying
        assert used < 1.0, f"{used:.2f} s of CPU in 4 s of retrying"  # a busy loop burns ~4 s
    finally:
        handle.process.kill()
        handle.process.wait(10)
