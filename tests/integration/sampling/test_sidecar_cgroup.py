"""The sidecar with ``--cgroup``: cgroup accounting first, the tree for the rest, and OOM kills recorded.

Needs a writable cgroup hierarchy (marker ``cgroups``): skips locally, fails in CI without one.
"""

from __future__ import annotations

import os
import sys
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import pytest

from airflow_predictive.backends.cgroups.backend import CgroupBackend
from airflow_predictive.core.model.backend import Allocation, ExitKind, ProvisionSpec
from airflow_predictive.core.model.resources import MIB, ResourceVector
from airflow_predictive.core.model.runs import Outcome, RunIdentity, RunRecord, TaskKey
from airflow_predictive.sampling.launcher import start_sidecar, stop_sidecar
from airflow_predictive.sampling.sources import CombinedSource, build_source
from tests._real_parts import require_cgroups

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from airflow_predictive.core.model.backend import Handle
    from airflow_predictive.storage.run_store import SqlRunStore

pytestmark = pytest.mark.cgroups

# grows in 8 MiB steps; holds at `gate_mb` until the gate file exists, then grows to `total_mb`
GROW = r"""
import os, sys, time
total_mb, gate_mb, gate = float(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
held, mb = [], 0
while mb < total_mb:
    block = bytearray(8 * 1048576)
    for i in range(0, len(block), 4096): block[i] = 1
    held.append(block); mb += 8
    while mb >= gate_mb and not os.path.exists(gate): time.sleep(0.02)
time.sleep(30)
"""


@pytest.fixture
def backend() -> Iterator[CgroupBackend]:
    layout = require_cgroups("cpu", "memory")
    yield CgroupBackend(layout)


@pytest.fixture
def handles(backend: CgroupBackend) -> Iterator[list[Handle]]:
    started: list[Handle] = []
    yield started
    for h in started:
        backend.release(h)


def _provision(
    backend: CgroupBackend, handles: list[Handle], gate: Path, total_mb: int, limit_mb: int
) -> Handle:
    spec = ProvisionSpec(
        name=f"sampler-{os.getpid()}-{len(handles)}",
        command=(sys.executable, "-c", GROW, str(total_mb), "48", str(gate)),
    )
    handle = backend.provision(
        spec, Allocation.exactly(ResourceVector(cpu_cores=1.0, memory_bytes=limit_mb * MIB))
    )
    handles.append(handle)
    return handle


def _until(check, timeout_s: float = 60.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "condition not met within the timeout"
        time.sleep(0.05)


def test_cgroup_source_reads_the_groups_memory_and_fills_network_from_the_tree(
    backend: CgroupBackend, handles: list[Handle], tmp_path: Path
) -> None:
    handle = _provision(backend, handles, tmp_path / "gate", total_mb=48, limit_mb=256)
    assert handle.pid is not None
    source = build_source(handle.pid, cgroup=handle.ref, gpu_mode="off")
    assert isinstance(source, CombinedSource)

    def holding() -> bool:
        reading = source.read()
        return reading is not None and (reading.memory_bytes or 0) >= 40 * MIB

    _until(holding)
    reading = source.read()
    assert reading is not None
    assert reading.cpu_cores is not None  # the cgroup's rate (its first reading was at construction)
    assert reading.net_rx_bps is not None  # from the tree's sockets: measurable here, and 0
    assert not source.oom_killed()
    source.close()


def test_sidecar_records_oom_killed_when_the_cgroup_killed_the_task(
    backend: CgroupBackend, handles: list[Handle], tmp_path: Path, run_store: SqlRunStore
) -> None:
    gate = tmp_path / "gate"
    handle = _provision(backend, handles, gate, total_mb=200, limit_mb=80)
    assert handle.pid is not None
    pk = run_store.start_run(RunRecord(RunIdentity(TaskKey("dag", "oom"), "r"), start=datetime.now(UTC)))
    url = run_store.engine.url.render_as_string(hide_password=False)
    sidecar = start_sidecar(
        pk, handle.pid, url, interval=0.2, flush=0.5, cgroup=handle.ref, gpu="off", timeout=30.0,
        log_path=tmp_path / "sidecar.log", grace=0.5,
    )  # fmt: skip
    assert sidecar is not None
    _until(lambda: any((s.usage.memory_bytes or 0) >= 40 * MIB for s in run_store.samples(pk)))
    gate.touch()  # grow past the 80 MiB limit: the kernel kills it
    _until(lambda: backend.state(handle).kind is not ExitKind.RUNNING)  # the backend reaps it
    assert sidecar.process.wait(timeout=60) == 0
    record = run_store.get_run_by_pk(pk)
    assert record is not None
    assert record.outcome is Outcome.OOM_KILLED, (tmp_path / "sidecar.log").read_text()
    assert record.peak.memory_bytes is not None and record.peak.memory_bytes >= 40 * MIB
    stop_sidecar(sidecar, timeout=1.0)
