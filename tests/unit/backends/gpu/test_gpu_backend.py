"""GpuBackend over the fake backend: conformance, whole-device assignment, provision-time only."""

from __future__ import annotations

import itertools
import subprocess
import sys
from typing import TYPE_CHECKING

import pytest

from airflow_predictive.backends.cgroups.backend import CgroupBackend
from airflow_predictive.backends.cgroups.hierarchy import CgroupLayout
from airflow_predictive.backends.fake import FakeBackend, ManualClock, ramp_script
from airflow_predictive.backends.gpu.backend import PROVISION_ONLY_REASON, GpuBackend
from airflow_predictive.backends.gpu.discovery import Discovery, GpuDevice, discover
from airflow_predictive.core.model.backend import Allocation, ExitKind, ProvisionSpec, ResizeStatus
from airflow_predictive.core.model.resources import MIB, Metric, ResourceVector
from airflow_predictive.core.ports import ProvisionError
from tests.conformance.backend_suite import AdvanceTime, BackendConformance, MakeWorkload, ReadBack
from tests.conformance.read_back import fake_limits
from tests.unit.backends.gpu.fake_nvml import two_gpus

if TYPE_CHECKING:
    from pathlib import Path

_names = itertools.count()
NO_GPU = Discovery((), "none", "NVML library (nvidia-ml-py) is not installed")


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def fake(clock: ManualClock) -> FakeBackend:
    return FakeBackend(clock=clock)


@pytest.fixture
def backend(fake: FakeBackend) -> GpuBackend:
    nvml = two_gpus()
    return GpuBackend(fake, discover("nvml", nvml=nvml, environ={}), nvml=nvml)


@pytest.fixture
def make_workload(fake: FakeBackend) -> MakeWorkload:
    def make(memory_mb: float, cpu_busy: bool, seconds: float) -> ProvisionSpec:
        name = f"gpu-task-{next(_names)}"
        fake.add_script(name, ramp_script(memory_mb, 1.0 if cpu_busy else 0.01, seconds))
        return ProvisionSpec(name=name, gpus=1)

    return make


@pytest.fixture
def advance_time(clock: ManualClock) -> AdvanceTime:
    return clock.advance


@pytest.fixture
def read_back(fake: FakeBackend) -> ReadBack:
    return lambda handle: fake_limits(fake, handle)


class TestGpuOverFakeConformance(BackendConformance):
    pass


def _alloc() -> Allocation:
    return Allocation.exactly(ResourceVector(cpu_cores=1.0, memory_bytes=256 * MIB))


def _spec(fake: FakeBackend, gpus: int) -> ProvisionSpec:
    name = f"t-{next(_names)}"
    fake.add_script(name, ramp_script(32, 0.5, 60))
    return ProvisionSpec(name=name, gpus=gpus, env={"KEEP": "1"})


def test_assigns_whole_devices_by_uuid_and_frees_them(backend: GpuBackend, fake: FakeBackend) -> None:
    first = backend.provision(_spec(fake, 1), _alloc())
    second = backend.provision(_spec(fake, 1), _alloc())
    assert [d.uuid for d in backend.assigned(first)] == ["GPU-aaaa"]
    assert [d.uuid for d in backend.assigned(second)] == ["GPU-bbbb"]
    env = fake._tasks[first.ref].spec.env
    assert env["CUDA_VISIBLE_DEVICES"] == "GPU-aaaa"
    assert env["NVIDIA_VISIBLE_DEVICES"] == "GPU-aaaa"
    assert env["KEEP"] == "1"
    cap = backend.capacity()
    assert cap.allocatable.gpu_util == 2.0 and cap.allocated.gpu_util == 2.0
    assert cap.allocatable.gpu_memory_bytes == 32e9
    with pytest.raises(ProvisionError) as busy:
        backend.provision(_spec(fake, 1), _alloc())
    assert busy.value.status is ResizeStatus.PENDING
    backend.release(first)
    backend.release(first)
    third = backend.provision(_spec(fake, 1), _alloc())
    assert [d.uuid for d in backend.assigned(third)] == ["GPU-aaaa"]


def test_task_without_gpus_sees_none_on_a_gpu_host(backend: GpuBackend, fake: FakeBackend) -> None:
    handle = backend.provision(_spec(fake, 0), _alloc())
    env = fake._tasks[handle.ref].spec.env
    assert env["CUDA_VISIBLE_DEVICES"] == ""
    assert env["NVIDIA_VISIBLE_DEVICES"] == "void"
    usage = backend.usage(handle)
    assert usage is not None and usage.gpu_util is None  # no device: no GPU reading at all


def test_more_gpus_than_the_host_has_is_infeasible(backend: GpuBackend, fake: FakeBackend) -> None:
    with pytest.raises(ProvisionError) as exc:
        backend.provision(_spec(fake, 3), _alloc())
    assert exc.value.status is ResizeStatus.INFEASIBLE
    assert "host has 2" in str(exc.value)


def test_host_without_gpus_has_zero_capacity_and_says_why(fake: FakeBackend) -> None:
    backend = GpuBackend(fake, NO_GPU)
    assert backend.capacity().allocatable.gpu_util == 0.0
    verdict = backend.feasibility(1)
    assert verdict.status is ResizeStatus.INFEASIBLE
    assert "nvidia-ml-py" in verdict.reason
    with pytest.raises(ProvisionError) as exc:
        backend.provision(_spec(fake, 1), _alloc())
    assert exc.value.status is ResizeStatus.INFEASIBLE
    plain = backend.provision(_spec(fake, 0), _alloc())  # CPU-only tasks still run, env untouched
    assert "CUDA_VISIBLE_DEVICES" not in fake._tasks[plain.ref].spec.env
    assert "no GPU" in backend.capabilities().note


def test_gpu_count_cannot_change_in_place(backend: GpuBackend, fake: FakeBackend) -> None:
    handle = backend.provision(_spec(fake, 1), _alloc())
    assert backend.resize_gpus(handle, 2) == backend.resize_gpus(handle, 0)
    assert backend.resize_gpus(handle, 2).status is ResizeStatus.UNSUPPORTED
    more = Allocation(requests=_alloc().requests, limits=_alloc().limits.with_value(Metric.GPU_UTIL, 2.0))
    result = backend.resize(handle, more)
    assert result.status is ResizeStatus.UNSUPPORTED
    assert result.reason == PROVISION_ONLY_REASON
    caps = backend.capabilities()
    assert Metric.GPU_UTIL in caps.provision_only and Metric.GPU_UTIL not in caps.live
    cpu_up = Allocation.exactly(ResourceVector(cpu_cores=2.0, memory_bytes=256 * MIB))
    assert backend.resize(handle, cpu_up).applied  # CPU and memory still resize live


def test_usage_adds_readings_of_the_assigned_devices_only(backend: GpuBackend, fake: FakeBackend) -> None:
    first = backend.provision(_spec(fake, 1), _alloc())
    second = backend.provision(_spec(fake, 1), _alloc())
    u1, u2 = backend.usage(first), backend.usage(second)
    assert u1 is not None and u1.gpu_util == pytest.approx(0.5) and u1.gpu_memory_bytes == 1e9
    assert u2 is not None and u2.gpu_util is None  # device B cannot report utilisation
    assert u2.gpu_memory_bytes == 2e9


def test_unknown_handle_is_rejected_and_gone(backend: GpuBackend) -> None:
    from airflow_predictive.core.model.backend import Handle

    stranger = Handle(backend="gpu", name="x", ref="nowhere", allocation=_alloc())
    assert backend.resize(stranger, _alloc()).status is ResizeStatus.REJECTED
    assert backend.usage(stranger) is None
    assert backend.state(stranger).kind is ExitKind.GONE


def test_assigned_devices_reach_a_real_process(tmp_path: Path) -> None:
    out = tmp_path / "env.txt"
    inner = CgroupBackend(CgroupLayout(None, reason="not needed for this test"), stdout=subprocess.DEVNULL)
    backend = GpuBackend(inner, Discovery((GpuDevice(0, "GPU-zzzz", "Fake"),), "nvidia-smi"))
    code = f"import os; open({str(out)!r}, 'w').write(os.environ['CUDA_VISIBLE_DEVICES'])"
    handle = backend.provision(
        ProvisionSpec(name="env", command=(sys.executable, "-c", code), gpus=1), _alloc()
    )
    try:
        proc = inner._tasks[handle.ref].proc
        assert proc is not None and proc.wait(timeout=20) == 0
        assert out.read_text() == "GPU-zzzz"
    finally:
        backend.release(handle)
