"""The in-memory fake backend: conformance suite plus the scripted behaviours later tests rely on."""

from __future__ import annotations

import itertools

import pytest

from airflow_predictive.backends.fake import FakeBackend, ManualClock, curve_script, ramp_script
from airflow_predictive.core.model.backend import (
    Allocation,
    ExitKind,
    ProvisionSpec,
    ResizeStatus,
)
from airflow_predictive.core.model.resources import MIB, Metric, ResourceVector
from airflow_predictive.core.ports import ProvisionError
from tests.conformance.backend_suite import AdvanceTime, BackendConformance, MakeWorkload, ReadBack
from tests.conformance.read_back import fake_limits

_names = itertools.count()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def backend(clock: ManualClock) -> FakeBackend:
    return FakeBackend(clock=clock)


@pytest.fixture
def make_workload(backend: FakeBackend) -> MakeWorkload:
    def make(memory_mb: float, cpu_busy: bool, seconds: float) -> ProvisionSpec:
        name = f"fake-task-{next(_names)}"
        backend.add_script(name, ramp_script(memory_mb, 1.0 if cpu_busy else 0.01, seconds))
        return ProvisionSpec(name=name)

    return make


@pytest.fixture
def advance_time(clock: ManualClock) -> AdvanceTime:
    return clock.advance


@pytest.fixture
def read_back(backend: FakeBackend) -> ReadBack:
    return lambda handle: fake_limits(backend, handle)


class TestFakeConformance(BackendConformance):
    pass


def _mem(mb: float, cpu: float = 1.0) -> Allocation:
    return Allocation.exactly(ResourceVector(cpu_cores=cpu, memory_bytes=mb * MIB))


def test_grows_memory_before_oom_keeps_task_alive(backend: FakeBackend, clock: ManualClock) -> None:
    backend.add_script("grow", ramp_script(200, 0.5, 10.0, ramp_s=4.0))
    handle = backend.provision(ProvisionSpec(name="grow"), _mem(128))
    clock.advance(1.0)  # demand ~56 MiB
    assert backend.resize(handle, _mem(256)).applied
    clock.advance(5.0)
    assert backend.state(handle).kind is ExitKind.RUNNING
    clock.advance(5.0)
    assert backend.state(handle).kind is ExitKind.SUCCEEDED


def test_oom_happens_at_the_first_step_past_the_limit(backend: FakeBackend, clock: ManualClock) -> None:
    backend.add_script("grow", ramp_script(200, 0.5, 10.0, ramp_s=4.0, base_mb=0.0))
    handle = backend.provision(ProvisionSpec(name="grow"), _mem(100))
    clock.advance(30.0)  # one big jump: the walk still finds the crossing at t ~ 2 s
    state = backend.state(handle)
    assert state.kind is ExitKind.OOM_KILLED
    assert state.oom_events == 1
    assert "t=2.0" in state.reason or "t=2.05" in state.reason
    # raising the limit after the kill does not resurrect the task
    assert backend.resize(handle, _mem(400)).status is ResizeStatus.REJECTED


def test_cpu_usage_is_throttled_to_the_limit(backend: FakeBackend, clock: ManualClock) -> None:
    backend.add_script("busy", ramp_script(16, 3.0, 10.0))
    handle = backend.provision(ProvisionSpec(name="busy"), _mem(64, cpu=0.5))
    clock.advance(1.0)
    usage = backend.usage(handle)
    assert usage is not None and usage.cpu_cores == pytest.approx(0.5)
    assert backend.resize(handle, _mem(64, cpu=2.0)).applied
    usage = backend.usage(handle)
    assert usage is not None and usage.cpu_cores == pytest.approx(2.0)


def test_curve_script_interpolates_and_absent_metrics_stay_none(
    backend: FakeBackend, clock: ManualClock
) -> None:
    script = curve_script([0.0, 10.0], {Metric.MEMORY_BYTES: [0.0, 100 * MIB]})
    backend.add_script("curve", script)
    handle = backend.provision(ProvisionSpec(name="curve"), _mem(512))
    clock.advance(2.5)
    usage = backend.usage(handle)
    assert usage is not None
    assert usage.memory_bytes == pytest.approx(25 * MIB)
    assert usage.cpu_cores is None
    assert usage.gpu_util is None


def test_curve_script_rejects_bad_points() -> None:
    with pytest.raises(ValueError, match="increasing"):
        curve_script([0.0, 0.0], {Metric.CPU_CORES: [1.0, 1.0]})
    with pytest.raises(ValueError, match="finite"):
        curve_script([0.0, 1.0], {Metric.CPU_CORES: [1.0, float("nan")]})


def test_failed_script_reports_exit_code(backend: FakeBackend, clock: ManualClock) -> None:
    backend.add_script("bad", curve_script([0.0, 1.0], {Metric.CPU_CORES: [1.0, 1.0]}, exit_code=3))
    handle = backend.provision(ProvisionSpec(name="bad"), _mem(64))
    clock.advance(2.0)
    state = backend.state(handle)
    assert state.kind is ExitKind.FAILED
    assert state.exit_code == 3


def test_provision_without_script_or_beyond_pool_raises(backend: FakeBackend) -> None:
    with pytest.raises(ProvisionError, match="no usage script"):
        backend.provision(ProvisionSpec(name="unknown"), _mem(64))
    backend.add_script("huge", ramp_script(16, 0.1, 1.0))
    with pytest.raises(ProvisionError, match="never fit") as exc:
        backend.provision(ProvisionSpec(name="huge"), _mem(64, cpu=100.0))
    assert exc.value.status is ResizeStatus.INFEASIBLE


def test_deferred_resize_is_applied_when_capacity_frees() -> None:
    clock = ManualClock()
    backend = FakeBackend(
        clock=clock,
        allocatable=ResourceVector(cpu_cores=4.0, memory_bytes=1024 * MIB),
        defer_over_commit=True,
    )
    backend.add_script("a", ramp_script(100, 0.1, 60.0))
    backend.add_script("b", ramp_script(100, 0.1, 5.0))
    a = backend.provision(ProvisionSpec(name="a"), _mem(512))
    b = backend.provision(ProvisionSpec(name="b"), _mem(512))
    result = backend.resize(a, _mem(768))
    assert result.status is ResizeStatus.PENDING
    assert result.allocation == _mem(512)
    clock.advance(6.0)
    assert backend.state(b).kind is ExitKind.SUCCEEDED
    assert backend.capacity().allocated.memory_bytes == pytest.approx(1024 * MIB)  # held until release
    backend.release(b)  # b's room is free: a's pending resize goes through
    assert backend.capacity().allocated.memory_bytes == pytest.approx(768 * MIB)
    assert [e.result.status for e in backend.resizes] == [ResizeStatus.PENDING]


def test_injected_error_is_returned_once(backend: FakeBackend) -> None:
    backend.add_script("t", ramp_script(16, 0.1, 60.0))
    handle = backend.provision(ProvisionSpec(name="t"), _mem(64))
    backend.fail_next_resize("api unavailable")
    first = backend.resize(handle, _mem(128))
    assert first.status is ResizeStatus.ERROR and first.reason == "api unavailable"
    assert backend.resize(handle, _mem(128)).applied


def test_observe_only_fake_never_enforces(clock: ManualClock) -> None:
    backend = FakeBackend(clock=clock, enforcing=False)
    backend.add_script("t", ramp_script(300, 0.1, 10.0))
    handle = backend.provision(ProvisionSpec(name="t"), _mem(64))
    clock.advance(5.0)
    assert backend.state(handle).kind is ExitKind.RUNNING
    usage = backend.usage(handle)
    assert usage is not None and usage.memory_bytes == pytest.approx(300 * MIB)
    result = backend.resize(handle, _mem(512))
    assert result.status is ResizeStatus.UNSUPPORTED
    assert "observe-only" in result.reason


def test_manual_clock_refuses_to_go_back() -> None:
    with pytest.raises(ValueError):
        ManualClock().advance(-1.0)


def test_throttled_work_conserving_task_runs_longer(clock: ManualClock) -> None:
    backend = FakeBackend(clock=clock, cpu_work_conserving=True)
    backend.add_script("w", ramp_script(16, 2.0, 10.0))  # wants 2 cores for 10 s of work
    handle = backend.provision(ProvisionSpec(name="w"), _mem(64, cpu=1.0))  # gets 1: half speed
    clock.advance(15.0)
    assert backend.state(handle).kind is ExitKind.RUNNING  # 7.5 s of work done
    assert backend.resize(handle, _mem(64, cpu=2.0)).applied
    clock.advance(2.4)
    assert backend.state(handle).kind is ExitKind.RUNNING
    clock.advance(0.2)
    assert backend.state(handle).kind is ExitKind.SUCCEEDED


def test_without_work_conservation_the_script_keeps_wall_pace(
    backend: FakeBackend, clock: ManualClock
) -> None:
    backend.add_script("w", ramp_script(16, 2.0, 10.0))
    handle = backend.provision(ProvisionSpec(name="w"), _mem(64, cpu=1.0))
    clock.advance(10.0)
    assert backend.state(handle).kind is ExitKind.SUCCEEDED
