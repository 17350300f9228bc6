"""The sidecar as the listener uses it: real processes, a real database file, signals and kills."""

from __future__ import annotations

import itertools
import logging
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import psutil
import pytest

from airflow_predictive.core.model.runs import Outcome, RunIdentity, RunRecord, TaskKey
from airflow_predictive.sampling.launcher import StopStatus, start_sidecar, stop_sidecar
from airflow_predictive.sampling.sidecar import VANISHED_NOTE
from tests.integration.sampling.workload_driver import Workload

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from airflow_predictive.core.model.series import ResourceSample
    from airflow_predictive.storage.run_store import SqlRunStore

MIB = 1024 * 1024
START_TIMEOUT = 30.0  # generous: the machine running the tests is shared


def _url(store: SqlRunStore) -> str:
    return store.engine.url.render_as_string(hide_password=False)


def _start(store: SqlRunStore, run_id: str) -> int:
    return store.start_run(RunRecord(RunIdentity(TaskKey("dag", "task"), run_id), start=datetime.now(UTC)))


def _wait_for_sample(store: SqlRunStore, pk: int, ok: Callable[[ResourceSample], bool]) -> None:
    """Poll the database until the sidecar has flushed a sample that satisfies ``ok``."""
    deadline = time.monotonic() + 60
    while not any(ok(s) for s in store.samples(pk)):
        assert time.monotonic() < deadline, "the sidecar wrote no such sample within 60 s"
        time.sleep(0.1)


def test_samples_a_task_from_start_to_stop_into_the_database(run_store: SqlRunStore, tmp_path: Path) -> None:
    pk = _start(run_store, "e2e")
    work = Workload()
    try:
        handle = start_sidecar(
            pk, work.proc.pid, _url(run_store), interval=0.2, flush=0.5, cgroup=None, gpu="auto",
            timeout=START_TIMEOUT, log_path=tmp_path / "sidecar.log",
        )  # fmt: skip
        assert handle is not None
        assert psutil.Process(handle.pid).ppid() == os.getpid()
        assert os.getsid(handle.pid) != os.getsid(0)  # its own session: spared by a process-group kill
        base = psutil.Process(work.proc.pid).memory_info().rss
        _wait_for_sample(run_store, pk, lambda s: s.usage.cpu_cores is not None)  # its loop runs
        for step in range(1, 4):
            work.do("alloc 64")
            _wait_for_sample(
                run_store, pk, lambda s, n=step: (s.usage.memory_bytes or 0) >= base + n * 60 * MIB
            )
        work.do("burn 1.5")  # several sample intervals of one busy core
        assert stop_sidecar(handle, timeout=30.0) is StopStatus.STOPPED
        assert handle.process.returncode == 0
    finally:
        work.proc.kill()
        work.proc.wait()
    samples = run_store.samples(pk)
    assert len(samples) >= 4
    assert all(b.t_s > a.t_s for a, b in itertools.pairwise(samples))
    peak = run_store.series(pk).peaks()
    assert peak.memory_bytes is not None
    assert peak.memory_bytes - base == pytest.approx(3 * 64 * MIB, rel=0.10)
    assert peak.cpu_cores is not None and peak.cpu_cores > 0.5
    # the memory it allocated is anonymous (from /proc without a cgroup: sampling/memstat.py)
    assert peak.memory_anon_bytes is not None and peak.memory_anon_bytes >= 3 * 60 * MIB
    assert all(s.usage.gpu_util is None for s in samples)  # no GPU here: absent, never zero
    record = run_store.get_run_by_pk(pk)
    assert record is not None and record.n_samples == len(samples)
    assert record.outcome is Outcome.RUNNING  # the listener records the end, not the sidecar


def test_records_unknown_when_the_task_process_is_killed(run_store: SqlRunStore, tmp_path: Path) -> None:
    pk = _start(run_store, "killed")
    work = Workload()
    handle = start_sidecar(
        pk, work.proc.pid, _url(run_store), interval=0.2, flush=0.5, cgroup=None, gpu="off",
        timeout=START_TIMEOUT, log_path=tmp_path / "sidecar.log", grace=0.5,
    )  # fmt: skip
    assert handle is not None
    work.do("alloc 32")
    _wait_for_sample(run_store, pk, lambda s: (s.usage.memory_bytes or 0) >= 32 * MIB)
    work.proc.send_signal(signal.SIGKILL)
    work.proc.wait()
    assert handle.process.wait(timeout=60) == 0  # it notices, waits the grace, records, exits
    record = run_store.get_run_by_pk(pk)
    assert record is not None
    assert record.outcome is Outcome.UNKNOWN
    assert record.note == VANISHED_NOTE
    assert record.end is not None and record.peak.memory_bytes is not None
    assert record.peak.memory_bytes >= 32 * MIB
    assert stop_sidecar(handle, timeout=1.0) is StopStatus.ALREADY_EXITED
    assert "recorded as unknown" in (tmp_path / "sidecar.log").read_text()


def test_start_failure_returns_none_with_one_clear_warning(
    run_store: SqlRunStore, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    with caplog.at_level(logging.WARNING):
        handle = start_sidecar(
            1, gone.pid, _url(run_store), interval=1.0, flush=5.0, cgroup=None, gpu="off",
            timeout=START_TIMEOUT, log_path=tmp_path / "gone.log",
        )  # fmt: skip
    assert handle is None
    warnings = [r.message for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "exited with code 3" in warnings[0] and "does not exist" in warnings[0]


def test_start_timeout_returns_none_and_leaves_no_process_behind(
    run_store: SqlRunStore, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    before = {p.pid for p in psutil.Process().children()}
    with caplog.at_level(logging.WARNING):
        handle = start_sidecar(
            1, os.getpid(), _url(run_store), interval=1.0, flush=5.0, cgroup=None, gpu="off",
            timeout=0.0, log_path=tmp_path / "slow.log",
        )  # fmt: skip
    assert handle is None
    assert any("did not report ready" in r.message for r in caplog.records)
    assert {p.pid for p in psutil.Process().children()} - before == set()


def test_stop_on_nothing_is_harmless() -> None:
    assert stop_sidecar(None, timeout=0.1) is StopStatus.ERROR


def test_sidecar_with_a_ready_file_and_an_unusable_database_url_exits_with_a_clear_error(
    tmp_path: Path,
) -> None:
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        ready = tmp_path / "ready"
        done = subprocess.run(
            [sys.executable, "-m", "airflow_predictive.sampling.sidecar", "--run-pk", "1",
             "--pid", str(sleeper.pid), "--url", "nosuchdialect://x", "--ready-file", str(ready), "--gpu", "off"],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    finally:
        sleeper.kill()
        sleeper.wait()
    assert ready.read_text().strip().isdigit()  # it was sampling before it tried the database
    assert done.returncode == 4
    assert "cannot use the database" in done.stderr


def test_the_database_password_is_not_on_the_sidecars_command_line(tmp_path: Path) -> None:
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    url = f"sqlite:///{tmp_path / 'never-created.db'}?secret=hunter2"
    try:
        handle = start_sidecar(1, sleeper.pid, url, interval=1.0, flush=5.0, cgroup=None, gpu="off",
                               timeout=START_TIMEOUT, log_path=tmp_path / "s.log")  # fmt: skip
        assert handle is not None
        assert "hunter2" not in " ".join(psutil.Process(handle.pid).cmdline())
        stop_sidecar(handle, timeout=30.0)
    finally:
        sleeper.kill()
        sleeper.wait()
