"""The recording sidecar against a real PostgreSQL that misbehaves, and its own footprint.

The listener hands the whole recording to the sidecar (tests/unit/listeners); here the sidecar
meets a table locked by another session and a server that refuses connections and comes back:
each attempt fails within the recorder's timeouts, samples stay buffered, and once the database
answers again the run is written whole. And the sidecar never counts itself: sampling a process
that does nothing, the recorded memory is that process's RSS, not plus the sidecar's.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import pytest

from airflow_predictive.core.model.runs import Outcome, RunIdentity, RunRecord, TaskKey
from airflow_predictive.sampling.launcher import launch_recorder
from airflow_predictive.storage.engine import engine_for
from airflow_predictive.storage.run_store import SqlRunStore
from tests._databases import migrated_engine
from tests.faulty_db import Proxy, table_lock

if TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = pytest.mark.postgres


@pytest.fixture(scope="module")
def pg_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with migrated_engine("postgresql", tmp_path_factory.mktemp("rec"), prefix="t_rec") as engine:
        yield engine.url.render_as_string(hide_password=False)


def _record(run_id: str) -> RunRecord:
    return RunRecord(RunIdentity(TaskKey("faults", "t"), run_id), start=datetime.now(UTC))


def _launch(record: RunRecord, pid: int, url: str):  # type: ignore[no-untyped-def]
    handle = launch_recorder(
        record, pid, url, interval=0.25, flush=0.5, gpu="off", timeout=0.5, catch_up=120.0
    )
    assert handle is not None
    return handle


def _run(store: SqlRunStore, run_id: str):  # type: ignore[no-untyped-def]
    return next(r for r in store.runs(TaskKey("faults", "t")) if r.identity.run_id == run_id)


def test_a_locked_table_delays_the_writes_and_the_sidecar_catches_up(
    pg_url: str, sleeper: subprocess.Popen[bytes]
) -> None:
    store = SqlRunStore(engine_for(pg_url))
    with table_lock(pg_url, "predictive_task_run"):
        handle = _launch(_record("locked"), sleeper.pid, pg_url)
        time.sleep(3.0)
        handle.end(Outcome.SUCCESS, datetime.now(UTC), 0, None)
        time.sleep(1.5)
        assert handle.process.poll() is None  # still retrying: nothing was written under the lock
    assert handle.process.wait(60) == 0
    run = _run(store, "locked")
    log_text = handle.log_path.read_text()
    # none lost: everything the sampler took (its own count, in its last log line) was written
    # once the lock went; ~3 s at 4 Hz less the sidecar's start-up on a loaded machine
    taken = re.search(r"stopped \([^)]*\): (\d+) samples, (\d+) written, (\d+) dropped", log_text)
    assert taken is not None, log_text[-2000:]
    samples, written, dropped = (int(g) for g in taken.groups())
    assert dropped == 0 and written == samples, taken.group(0)
    assert run.outcome is Outcome.SUCCESS and run.n_samples >= 6
    assert "cannot create the run row" in log_text


def test_a_database_that_refuses_and_returns_gets_the_whole_run(
    pg_url: str, sleeper: subprocess.Popen[bytes]
) -> None:
    parts = urlsplit(pg_url)
    proxy = Proxy(parts.hostname or "127.0.0.1", parts.port or 5432)
    via_proxy = pg_url.replace(f"{parts.hostname}:{parts.port}", f"127.0.0.1:{proxy.port}")
    try:
        handle = _launch(_record("refused"), sleeper.pid, via_proxy)  # nothing listens yet
        time.sleep(2.0)
        handle.end(Outcome.FAILED, datetime.now(UTC), 1, "boom")
        time.sleep(1.0)
        assert handle.process.poll() is None
        proxy.up()  # the database returns
        assert handle.process.wait(60) == 0
    finally:
        proxy.down()
    run = _run(SqlRunStore(engine_for(pg_url)), "refused")
    assert run.outcome is Outcome.FAILED and run.note == "boom" and run.n_samples >= 5


TASK = """
import json, os, sys, time
from datetime import UTC, datetime
import psutil
from airflow_predictive.core.model.runs import Outcome, RunIdentity, RunRecord, TaskKey
from airflow_predictive.sampling.launcher import launch_recorder
block = bytearray(64 * 2**20)
for i in range(0, len(block), 4096):
    block[i] = 1
record = RunRecord(RunIdentity(TaskKey("faults", "t"), "own"), start=datetime.now(UTC))
handle = launch_recorder(record, os.getpid(), sys.argv[1], interval=0.25, flush=0.5, gpu="off")
time.sleep(4.0)
sidecar = psutil.Process(handle.pid)
out = {"sidecar_rss": sidecar.memory_info().rss, "sidecar_ppid": sidecar.ppid()}
with open("/proc/self/status") as fh:
    out["hwm"] = next(int(line.split()[1]) * 1024 for line in fh if line.startswith("VmHWM:"))
handle.end(Outcome.SUCCESS, datetime.now(UTC), 0, None)
print(json.dumps(out))
"""


def test_the_sidecar_never_counts_itself_in_the_task_that_started_it(pg_url: str) -> None:
    import json

    out = subprocess.run(
        [sys.executable, "-c", TASK, pg_url], capture_output=True, text=True, timeout=120, check=False
    )
    assert out.returncode == 0, out.stderr[-3000:]
    facts = json.loads(out.stdout.strip().splitlines()[-1])
    store = SqlRunStore(engine_for(pg_url))
    deadline = time.monotonic() + 60
    while _run(store, "own").outcome is Outcome.RUNNING and time.monotonic() < deadline:
        time.sleep(0.2)
    run = _run(store, "own")
    peak, hwm, sidecar = run.peak.memory_bytes, facts["hwm"], facts["sidecar_rss"]
    print(f"task VmHWM {hwm / 2**20:.1f} MiB, recorded peak {peak / 2**20:.1f} MiB, "
          f"sidecar RSS (not counted) {sidecar / 2**20:.1f} MiB")  # fmt: skip
    assert facts["sidecar_ppid"] > 1  # it is the task's child: the tree walk had to exclude it
    assert abs(peak - hwm) <= 0.08 * hwm
    assert peak < hwm + 0.5 * sidecar
