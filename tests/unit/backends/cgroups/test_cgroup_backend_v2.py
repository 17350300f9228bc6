"""The cgroup backend's v2 code paths, driven against a fake v2 tree in tmp_path.

Real v2 on the development machines has no controllers, so the v2 file logic is checked here: a
real child process joins the (fake) group through the shell wrapper, limits land in cpu.max /
memory.max, usage and OOM kills are read from the files the test writes.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from typing import TYPE_CHECKING

import pytest

from airflow_predictive.backends.cgroups.backend import CgroupBackend
from airflow_predictive.backends.cgroups.hierarchy import CgroupLayout, CgroupVersion
from airflow_predictive.backends.fake import ManualClock
from airflow_predictive.core.model.backend import Allocation, ExitKind, ProvisionSpec, ResizeStatus
from airflow_predictive.core.model.resources import MIB, Metric, ResourceVector
from airflow_predictive.core.ports import ProvisionError

if TYPE_CHECKING:
    from pathlib import Path

    from airflow_predictive.core.model.backend import Handle


def _alloc(cpu: float, mb: float) -> Allocation:
    return Allocation.exactly(ResourceVector(cpu_cores=cpu, memory_bytes=mb * MIB))


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def backend(tmp_path: Path, clock: ManualClock) -> CgroupBackend:
    parent = str(tmp_path / "airflow-predictive")
    layout = CgroupLayout(CgroupVersion.V2, {"cpu": parent, "memory": parent, "io": parent})
    return CgroupBackend(layout, clock=clock, sleep=lambda _s: None, stdout=subprocess.DEVNULL)


def _folder(handle: Handle) -> str:
    assert handle.ref.startswith("v2:")
    return handle.ref[3:]


def _write(handle: Handle, name: str, text: str) -> None:
    with open(os.path.join(_folder(handle), name), "w") as f:
        f.write(text)


def _read(handle: Handle, name: str) -> str:
    with open(os.path.join(_folder(handle), name)) as f:
        return f.read()


def _joined(handle: Handle) -> bool:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if os.path.exists(os.path.join(_folder(handle), "cgroup.procs")) and _read(
            handle, "cgroup.procs"
        ).strip() == str(handle.pid):
            return True
        time.sleep(0.01)
    return False


def _start(backend: CgroupBackend) -> Handle:
    spec = ProvisionSpec(name="v2 task/1", command=(sys.executable, "-c", "import time; time.sleep(30)"))
    return backend.provision(spec, _alloc(0.5, 64))


def _stop(backend: CgroupBackend, handle: Handle) -> None:
    if backend.state(handle).kind is ExitKind.RUNNING:
        _joined(handle)  # so that the shell does not write its pid after we clear the file
    _write(handle, "cgroup.procs", "")  # a fake tree keeps dead pids; the kernel would not
    if handle.pid is not None:
        try:
            os.kill(handle.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    backend.release(handle)


def test_provision_writes_limits_then_the_process_joins_before_running(backend: CgroupBackend) -> None:
    handle = _start(backend)
    try:
        assert _read(handle, "cpu.max") == "50000 100000"
        assert _read(handle, "memory.max") == str(64 * 1024 * 1024)
        assert _joined(handle)
        assert os.path.basename(_folder(handle)).startswith("v2-task-1-")  # a safe, unique name
        assert backend.state(handle).kind is ExitKind.RUNNING
    finally:
        _stop(backend, handle)


def test_resize_writes_cpu_max_and_memory_max_and_refuses_below_usage(backend: CgroupBackend) -> None:
    handle = _start(backend)
    try:
        _write(handle, "memory.current", str(40 * 1024 * 1024))
        rejected = backend.resize(handle, _alloc(0.5, 48))  # 40 MiB used + 16 MiB margin > 48
        assert rejected.status is ResizeStatus.REJECTED
        assert "below current usage" in rejected.reason
        assert _read(handle, "memory.max") == str(64 * 1024 * 1024)
        applied = backend.resize(handle, _alloc(0.2, 128))
        assert applied.status is ResizeStatus.APPLIED, applied.reason
        assert _read(handle, "cpu.max") == "20000 100000"
        assert _read(handle, "memory.max") == str(128 * 1024 * 1024)
        infeasible = backend.resize(handle, _alloc(64.0, 128))
        assert infeasible.status is ResizeStatus.INFEASIBLE
        disk = Allocation(
            requests=_alloc(0.2, 128).requests,
            limits=_alloc(0.2, 128).limits.with_value(Metric.DISK_READ_BPS, 1e6),
        )
        assert backend.resize(handle, disk).status is ResizeStatus.UNSUPPORTED
    finally:
        _stop(backend, handle)


def test_a_limit_the_kernel_silently_changed_is_an_error(
    backend: CgroupBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow_predictive.backends.cgroups import group as group_mod

    handle = _start(backend)
    real = group_mod._write

    def rounding_kernel(path: str, value: str) -> None:
        real(path, "max" if path.endswith("memory.max") else value)

    monkeypatch.setattr(group_mod, "_write", rounding_kernel)
    try:
        result = backend.resize(handle, _alloc(0.5, 96))
        assert result.status is ResizeStatus.ERROR
        assert "reads back" in result.reason
    finally:
        monkeypatch.undo()
        _stop(backend, handle)


def test_usage_is_read_from_the_group_files(backend: CgroupBackend, clock: ManualClock) -> None:
    handle = _start(backend)
    assert _joined(handle)
    try:
        _write(handle, "cpu.stat", "usage_usec 0\n")
        _write(handle, "memory.current", str(10 * 1024 * 1024))
        backend.usage(handle)
        clock.advance(1.0)
        _write(handle, "cpu.stat", "usage_usec 300000\n")
        usage = backend.usage(handle)
        assert usage is not None
        assert usage.cpu_cores == pytest.approx(0.3)
        assert usage.memory_bytes == pytest.approx(10 * MIB)
        assert usage.disk_read_bps is None  # no io.stat in this tree: absent, not 0
    finally:
        _stop(backend, handle)


def test_kill_with_an_oom_event_is_reported_oom_killed(backend: CgroupBackend) -> None:
    handle = _start(backend)
    assert _joined(handle)
    _write(handle, "memory.events", "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n")
    assert handle.pid is not None
    os.kill(handle.pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while backend.state(handle).kind is ExitKind.RUNNING and time.monotonic() < deadline:
        time.sleep(0.01)
    state = backend.state(handle)
    assert state.kind is ExitKind.OOM_KILLED
    assert state.exit_code == 137
    assert state.oom_events == 1
    assert backend.usage(handle) is None
    _stop(backend, handle)


def test_kill_without_an_oom_event_is_a_failure(backend: CgroupBackend) -> None:
    handle = _start(backend)
    assert handle.pid is not None
    os.kill(handle.pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    while backend.state(handle).kind is ExitKind.RUNNING and time.monotonic() < deadline:
        time.sleep(0.01)
    state = backend.state(handle)
    assert state.kind is ExitKind.FAILED
    assert state.reason == "killed by SIGTERM"
    _stop(backend, handle)


def test_provision_failures_raise_and_leave_nothing(backend: CgroupBackend, tmp_path: Path) -> None:
    with pytest.raises(ProvisionError, match="no command"):
        backend.provision(ProvisionSpec(name="empty"), _alloc(1, 64))
    with pytest.raises(ProvisionError, match="GpuBackend"):
        backend.provision(ProvisionSpec(name="g", command=("true",), gpus=1), _alloc(1, 64))
    with pytest.raises(ProvisionError, match="cannot start") as exc:
        backend.provision(ProvisionSpec(name="x", command=("/nonexistent/binary",)), _alloc(1, 64))
    assert exc.value.status is ResizeStatus.REJECTED
    assert backend.capacity().allocated.is_empty()


def test_unwritable_parent_is_a_provision_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    layout = CgroupLayout(CgroupVersion.V2, {"cpu": str(blocker), "memory": str(blocker)})
    backend = CgroupBackend(layout, sleep=lambda _s: None)
    with pytest.raises(ProvisionError, match="cannot prepare cgroup"):
        backend.provision(ProvisionSpec(name="t", command=("true",)), _alloc(1, 64))


def test_sigkill_at_the_limit_counts_as_oom_where_the_kernel_has_no_counter(backend: CgroupBackend) -> None:
    handle = _start(backend)
    assert _joined(handle)
    _write(handle, "memory.events", "low 0\nhigh 0\nmax 7\noom 1\n")  # no oom_kill line (old kernel)
    _write(handle, "memory.peak", str(64 * 1024 * 1024))  # peak reached the 64 MiB limit
    assert handle.pid is not None
    os.kill(handle.pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while backend.state(handle).kind is ExitKind.RUNNING and time.monotonic() < deadline:
        time.sleep(0.01)
    state = backend.state(handle)
    assert state.kind is ExitKind.OOM_KILLED
    assert "inferred" in state.reason
    _stop(backend, handle)


def test_sigkill_below_the_limit_is_not_called_oom(backend: CgroupBackend) -> None:
    handle = _start(backend)
    assert _joined(handle)
    _write(handle, "memory.events", "low 0\nhigh 0\nmax 0\noom 0\n")
    _write(handle, "memory.peak", str(10 * 1024 * 1024))
    assert handle.pid is not None
    os.kill(handle.pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while backend.state(handle).kind is ExitKind.RUNNING and time.monotonic() < deadline:
        time.sleep(0.01)
    state = backend.state(handle)
    assert state.kind is ExitKind.FAILED
    assert state.reason == "killed by SIGKILL"
    _stop(backend, handle)
