"""The pod backend under the failures real clusters show: throttling, 5xx, conflicts, timeouts,
Deferred / Infeasible / stuck InProgress resizes, quotas; and PVC expansion."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from kubernetes import client, config

from airflow_predictive.backends.kubernetes.backend import KubernetesPodBackend
from airflow_predictive.backends.kubernetes.settings import KubernetesSettings
from airflow_predictive.backends.kubernetes.volumes import KubernetesVolumeBackend
from airflow_predictive.core.model.backend import Allocation, ExitKind, ResizeStatus
from airflow_predictive.core.model.resources import GIB, MIB, Metric, ResourceVector
from airflow_predictive.core.ports import ProvisionError
from airflow_predictive.emulator.kubernetes.emulator import Emulator, NodeSpec
from airflow_predictive.emulator.kubernetes.faults import FaultRule
from airflow_predictive.emulator.kubernetes.kubelet import KubeletConfig

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

    from airflow_predictive.core.model.backend import Handle, ProvisionSpec
    from tests.integration.kubernetes.conftest import StepClock


def alloc(cpu_req: float, cpu_lim: float, mem_req_mb: float, mem_lim_mb: float) -> Allocation:
    return Allocation(
        ResourceVector(cpu_cores=cpu_req, memory_bytes=mem_req_mb * MIB),
        ResourceVector(cpu_cores=cpu_lim, memory_bytes=mem_lim_mb * MIB),
    )


START = alloc(0.5, 1.0, 128, 256)
RESIZE_PATH = r"/pods/[^/]+/resize$"


def _pod(kubeconfig: Path, name: str) -> client.V1Pod:
    return client.CoreV1Api(config.new_client_from_config(str(kubeconfig))).read_namespaced_pod(
        name, "default"
    )


def test_throttling_and_server_errors_are_retried(
    backend: KubernetesPodBackend, emulator: Emulator, make_workload: Callable[..., ProvisionSpec]
) -> None:
    handle = backend.provision(make_workload(32, False, 600), START)
    emulator.faults.add(FaultRule(path=RESIZE_PATH, method="PATCH", status=429, times=2, retry_after_s=1))
    emulator.faults.add(FaultRule(path=RESIZE_PATH, method="PATCH", status=500, times=1))
    emulator.faults.add(FaultRule(path=RESIZE_PATH, method="PATCH", status=409, times=1))
    result = backend.resize(handle, alloc(0.5, 2.0, 128, 256))
    assert result.status is ResizeStatus.APPLIED, result.reason
    assert all(r.fired == r.times for r in emulator.faults.rules())


def test_persistent_server_errors_end_in_error_with_the_attempt_count(
    backend: KubernetesPodBackend, emulator: Emulator, make_workload: Callable[..., ProvisionSpec]
) -> None:
    handle = backend.provision(make_workload(32, False, 600), START)
    emulator.faults.add(FaultRule(path=RESIZE_PATH, method="PATCH", status=503, times=None))
    result = backend.resize(handle, alloc(0.5, 2.0, 128, 256))
    assert result.status is ResizeStatus.ERROR
    assert "after 5 attempt(s)" in result.reason and "503" in result.reason


def test_a_request_timeout_is_retried(
    kubeconfig: Path,
    emulator: Emulator,
    clock: StepClock,
    advance_time: Callable[[float], None],
    make_workload: Callable[..., ProvisionSpec],
) -> None:
    backend = KubernetesPodBackend.from_kubeconfig(
        str(kubeconfig), settings=KubernetesSettings(request_timeout_s=0.2), clock=clock, sleep=advance_time
    )
    handle = backend.provision(make_workload(32, False, 600), START)
    emulator.faults.add(FaultRule(path=r"/pods/[^/]+$", method="GET", delay_s=0.6, times=1))
    assert backend.state(handle).kind is ExitKind.RUNNING
    backend.close()


@pytest.fixture
def two_nodes(clock: StepClock) -> Iterator[Emulator]:
    em = Emulator(
        clock=clock,
        kubelet=KubeletConfig(actuation_delay_s=1.8),
        nodes=(
            NodeSpec(name="node-a", cpu="2", memory="4Gi"),
            NodeSpec(name="node-b", cpu="8", memory="32Gi"),
        ),
        auto_tick=False,
    ).start()
    yield em
    em.stop()


def _backend_on(em: Emulator, tmp_path: Path, clock: StepClock, **settings: float) -> KubernetesPodBackend:
    """A backend on ``em``; its pods start (one tick) as soon as they are provisioned."""

    def advance(seconds: float) -> None:
        remaining = seconds
        em.tick()
        while remaining > 1e-9:
            step = min(0.1, remaining)
            clock.t += step
            remaining -= step
            em.tick()

    path = em.write_kubeconfig(tmp_path / "kc")
    backend = KubernetesPodBackend.from_kubeconfig(
        str(path),
        settings=KubernetesSettings(**settings),  # type: ignore[arg-type]
        clock=clock,
        sleep=advance,
    )
    provision = backend.provision

    def provision_and_start(spec: ProvisionSpec, allocation: Allocation) -> Handle:
        handle = provision(spec, allocation)
        advance(0.1)
        return handle

    backend.provision = provision_and_start  # type: ignore[method-assign]
    return backend


def test_infeasible_on_its_node_is_reported_and_the_spec_reverted(
    two_nodes: Emulator, tmp_path: Path, clock: StepClock, make_workload: Callable[..., ProvisionSpec]
) -> None:
    backend = _backend_on(two_nodes, tmp_path, clock)
    handle = backend.provision(make_workload(32, False, 600), START)  # lands on node-a (2 cpu)
    result = backend.resize(handle, alloc(3.0, 4.0, 128, 256))  # fits node-b, never node-a
    assert result.status is ResizeStatus.INFEASIBLE
    assert "Node didn't have enough capacity: cpu, requested: 3000, capacity: 2000" in result.reason
    pod = _pod(tmp_path / "kc", handle.name)
    assert pod.spec.containers[0].resources.requests["cpu"] == "500m"  # reverted


def test_deferred_resize_is_pending_then_times_out_and_reverts(
    two_nodes: Emulator, tmp_path: Path, clock: StepClock, make_workload: Callable[..., ProvisionSpec]
) -> None:
    backend = _backend_on(two_nodes, tmp_path, clock, deferred_timeout_s=20.0, settle_timeout_s=3.0)
    handle = backend.provision(make_workload(32, False, 600), START)
    hog = backend.provision(make_workload(32, False, 600), alloc(1.2, 1.5, 64, 128))  # also node-a
    assert _pod(tmp_path / "kc", hog.name).spec.node_name == "node-a"
    target = alloc(1.0, 1.5, 128, 256)
    first = backend.resize(handle, target)
    assert first.status is ResizeStatus.PENDING
    assert (
        "PodResizePending Deferred: Node didn't have enough resource: cpu, requested: 1000, used: 1200"
        in first.reason
    )
    later = [backend.resize(handle, target) for _ in range(6)]
    assert later[-1].status is ResizeStatus.INFEASIBLE and "deferred for more than 20s" in later[-1].reason
    assert _pod(tmp_path / "kc", handle.name).spec.containers[0].resources.requests["cpu"] == "500m"


def test_deferred_resize_is_applied_once_room_frees_up(
    two_nodes: Emulator, tmp_path: Path, clock: StepClock, make_workload: Callable[..., ProvisionSpec]
) -> None:
    backend = _backend_on(two_nodes, tmp_path, clock, settle_timeout_s=3.0)
    handle = backend.provision(make_workload(32, False, 600), START)
    hog = backend.provision(make_workload(32, False, 600), alloc(1.2, 1.5, 64, 128))
    target = alloc(1.0, 1.5, 128, 256)
    assert backend.resize(handle, target).status is ResizeStatus.PENDING
    backend.release(hog)
    result = backend.resize(handle, target)
    assert result.status is ResizeStatus.APPLIED and result.allocation == target


def test_stuck_in_progress_is_an_error_after_its_timeout(
    clock: StepClock, tmp_path: Path, make_workload: Callable[..., ProvisionSpec]
) -> None:
    em = Emulator(clock=clock, kubelet=KubeletConfig(actuation_delay_s=1000.0), auto_tick=False).start()
    try:
        backend = _backend_on(em, tmp_path, clock, in_progress_timeout_s=4.0, settle_timeout_s=10.0)
        handle = backend.provision(make_workload(32, False, 6000), START)
        result = backend.resize(handle, alloc(0.5, 2.0, 128, 256))
        assert result.status is ResizeStatus.ERROR
        assert "PodResizeInProgress for more than 4s" in result.reason and "reverted" in result.reason
    finally:
        em.stop()


def test_quota_refuses_creation_and_growth(
    backend: KubernetesPodBackend, kubeconfig: Path, make_workload: Callable[..., ProvisionSpec]
) -> None:
    core = client.CoreV1Api(config.new_client_from_config(str(kubeconfig)))
    core.create_namespaced_resource_quota(
        "default",
        {"metadata": {"name": "compute"}, "spec": {"hard": {"requests.cpu": "1", "limits.memory": "1Gi"}}},
    )
    handle = backend.provision(make_workload(32, False, 600), START)
    grown = backend.resize(handle, alloc(1.5, 2.0, 128, 256))
    assert grown.status is ResizeStatus.REJECTED
    assert (
        "exceeded quota: compute, requested: requests.cpu=1, used: requests.cpu=500m, limited: requests.cpu=1"
        in grown.reason
    )
    with pytest.raises(ProvisionError, match="exceeded quota: compute"):
        backend.provision(make_workload(32, False, 600), alloc(0.6, 1.0, 128, 256))


def test_pvc_expands_only_where_the_class_allows_it(backend: KubernetesPodBackend, kubeconfig: Path) -> None:
    core = client.CoreV1Api(config.new_client_from_config(str(kubeconfig)))
    for name, cls in (("data", "standard"), ("fixed-data", "fixed")):
        core.create_namespaced_persistent_volume_claim(
            "default",
            {
                "metadata": {"name": name},
                "spec": {
                    "storageClassName": cls,
                    "accessModes": ["ReadWriteOnce"],
                    "resources": {"requests": {"storage": "1Gi"}},
                },
            },
        )
    volumes = KubernetesVolumeBackend(backend)
    assert volumes.size("data") == GIB
    grown = volumes.expand("data", 2 * GIB)
    assert grown.status is ResizeStatus.APPLIED, grown.reason
    assert volumes.size("data") == 2 * GIB
    assert volumes.expand("data", GIB).status is ResizeStatus.REJECTED
    fixed = volumes.expand("fixed-data", 2 * GIB)
    assert (
        fixed.status is ResizeStatus.UNSUPPORTED
        and "storageclass that provisions the pvc must support resize" in fixed.reason
    )


def test_a_dropped_watch_ends_the_stream_early(kubeconfig: Path, emulator: Emulator) -> None:
    core = client.CoreV1Api(config.new_client_from_config(str(kubeconfig)))
    for i in range(5):
        core.create_namespaced_pod(
            "default", {"metadata": {"name": f"w{i}"}, "spec": {"containers": [{"name": "c", "image": "x"}]}}
        )
    emulator.faults.add(FaultRule(path="/pods$", method="GET", drop_watch_after=2))
    resp = core.list_namespaced_pod("default", watch=True, timeout_seconds=2, _preload_content=False)
    lines = []
    try:
        for raw in resp.stream(1024):
            lines.append(raw)
    except Exception:  # urllib3 reports the cut chunked stream
        pass
    text = b"".join(lines).decode()
    assert text.count('"type":"ADDED"') == 2


def test_gpus_are_provision_time_only(
    backend: KubernetesPodBackend, kubeconfig: Path, make_workload: Callable[..., ProvisionSpec]
) -> None:
    from dataclasses import replace

    spec = replace(make_workload(32, False, 600), gpus=1)
    handle = backend.provision(spec, START)
    pod = _pod(kubeconfig, handle.name)
    assert pod.spec.containers[0].resources.limits["nvidia.com/gpu"] == "1"
    assert pod.spec.containers[0].resources.requests["nvidia.com/gpu"] == "1"
    with_gpu = Allocation(START.requests, START.limits.with_value(Metric.GPU_UTIL, 2.0))
    result = backend.resize(handle, with_gpu)
    assert result.status is ResizeStatus.UNSUPPORTED and "gpu_util" in result.reason
    grown = backend.resize(handle, alloc(0.5, 2.0, 128, 256))
    assert grown.status is ResizeStatus.APPLIED, grown.reason
    assert _pod(kubeconfig, handle.name).spec.containers[0].resources.limits["nvidia.com/gpu"] == "1"
