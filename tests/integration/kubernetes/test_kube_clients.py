"""The official clients (sync and asyncio) and kubectl against the emulator over real HTTP."""

from __future__ import annotations

import asyncio
import json
import subprocess
from typing import TYPE_CHECKING, Any

import pytest
from kubernetes import client, config, watch

from airflow_predictive.backends.kubernetes.async_backend import AsyncKubernetesPodBackend
from airflow_predictive.backends.kubernetes.settings import KubernetesSettings
from airflow_predictive.core.model.backend import Allocation, ResizeStatus
from airflow_predictive.core.model.resources import MIB, ResourceVector
from tests._real_parts import require_executable

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from airflow_predictive.core.model.backend import ProvisionSpec
    from airflow_predictive.emulator.kubernetes.emulator import Emulator
    from tests.integration.kubernetes.conftest import StepClock

POD = {
    "metadata": {"name": "web", "labels": {"app": "web"}},
    "spec": {
        "containers": [
            {
                "name": "c",
                "image": "busybox",
                "resources": {
                    "requests": {"cpu": "250m", "memory": "128Mi"},
                    "limits": {"cpu": "500m", "memory": "256Mi"},
                },
            }
        ]
    },
}
STRATEGIC = "application/strategic-merge-patch+json"


@pytest.fixture
def core(kubeconfig: Path) -> client.CoreV1Api:
    return client.CoreV1Api(config.new_client_from_config(str(kubeconfig)))


def test_discovery_and_version_look_like_1_35(kubeconfig: Path) -> None:
    api = config.new_client_from_config(str(kubeconfig))
    assert client.VersionApi(api).get_code().minor == "35"
    assert client.CoreApi(api).get_api_versions().versions == ["v1"]
    groups = {g.name for g in client.ApisApi(api).get_api_versions().groups}
    assert {"metrics.k8s.io", "storage.k8s.io"} <= groups
    names = {r.name for r in client.CoreV1Api(api).get_api_resources().resources}
    assert {"pods", "pods/resize", "pods/status", "nodes", "persistentvolumeclaims"} <= names


def test_official_client_resizes_in_place(
    core: client.CoreV1Api, advance_time: Callable[[float], None]
) -> None:
    created = core.create_namespaced_pod("default", POD)
    assert (
        created.metadata.uid and created.metadata.generation == 1 and created.status.qos_class == "Burstable"
    )
    advance_time(0.5)
    body = {
        "spec": {
            "containers": [{"name": "c", "resources": {"requests": {"cpu": "400m"}, "limits": {"cpu": "1"}}}]
        }
    }
    patched = core.patch_namespaced_pod_resize("web", "default", body)
    assert patched.metadata.generation == 2
    assert int(patched.metadata.resource_version) > int(created.metadata.resource_version)
    advance_time(2.0)
    pod = core.read_namespaced_pod("web", "default")
    assert pod.status.observed_generation == 2
    assert pod.status.container_statuses[0].resources.limits == {"cpu": "1", "memory": "256Mi"}
    assert pod.status.container_statuses[0].restart_count == 0


def test_official_client_sees_422_for_a_qos_changing_resize(
    core: client.CoreV1Api, advance_time: Callable[[float], None]
) -> None:
    core.create_namespaced_pod("default", POD)
    body = {
        "spec": {"containers": [{"name": "c", "resources": {"requests": {"cpu": "500m", "memory": "256Mi"}}}]}
    }
    with pytest.raises(client.ApiException) as err:
        core.patch_namespaced_pod_resize("web", "default", body)
    assert err.value.status == 422
    status = json.loads(err.value.body)
    assert status["reason"] == "Invalid"
    assert status["message"].endswith(
        'spec: Invalid value: "Burstable": Pod QOS Class may not change as a result of resizing'
    )


def test_stale_resource_version_conflicts(core: client.CoreV1Api) -> None:
    created = core.create_namespaced_pod("default", POD)
    core.patch_namespaced_pod("web", "default", {"metadata": {"labels": {"x": "1"}}})
    created.metadata.labels["y"] = "2"
    with pytest.raises(client.ApiException) as err:
        core.replace_namespaced_pod("web", "default", created)
    assert err.value.status == 409 and json.loads(err.value.body)["reason"] == "Conflict"


def test_watch_streams_the_resize_and_the_status(
    core: client.CoreV1Api, advance_time: Callable[[float], None]
) -> None:
    core.create_namespaced_pod("default", POD)
    advance_time(0.5)
    start = core.list_namespaced_pod("default").metadata.resource_version
    body = {"spec": {"containers": [{"name": "c", "resources": {"limits": {"cpu": "1"}}}]}}
    core.patch_namespaced_pod_resize("web", "default", body)
    advance_time(2.0)
    events = list(
        watch.Watch().stream(
            core.list_namespaced_pod,
            "default",
            resource_version=start,
            field_selector="metadata.name=web",
            timeout_seconds=1,
        )
    )
    assert [e["type"] for e in events] and all(e["type"] == "MODIFIED" for e in events)
    assert events[0]["object"].metadata.generation == 2
    assert events[-1]["object"].status.container_statuses[0].resources.limits["cpu"] == "1"


def test_watch_from_a_version_older_than_history_says_gone(
    core: client.CoreV1Api, emulator: Emulator
) -> None:
    for i in range(3):
        core.create_namespaced_pod("default", {**POD, "metadata": {"name": f"p{i}"}})
    emulator.store._events = type(emulator.store._events)(list(emulator.store._events)[-1:], maxlen=1)
    resp = core.list_namespaced_pod(
        "default", watch=True, resource_version="1", timeout_seconds=1, _preload_content=False
    )
    line = json.loads(resp.data.decode().splitlines()[0])
    assert line["type"] == "ERROR" and line["object"]["code"] == 410


def test_metrics_api_reports_pod_usage(
    kubeconfig: Path, core: client.CoreV1Api, advance_time: Callable[[float], None]
) -> None:
    core.create_namespaced_pod("default", POD)
    advance_time(3)
    custom = client.CustomObjectsApi(config.new_client_from_config(str(kubeconfig)))
    m = custom.get_namespaced_custom_object("metrics.k8s.io", "v1beta1", "default", "pods", "web")
    assert m["kind"] == "PodMetrics" and m["window"] == "10s"
    assert m["containers"][0]["usage"]["cpu"].endswith("n") and m["containers"][0]["usage"][
        "memory"
    ].endswith("Ki")


def test_async_backend_drives_many_pods_in_one_interval(
    kubeconfig: Path,
    clock: StepClock,
    advance_time: Callable[[float], None],
    make_workload: Callable[[float, bool, float], ProvisionSpec],
) -> None:
    async def sleep(seconds: float) -> None:
        advance_time(seconds)

    async def scenario() -> None:
        backend = await AsyncKubernetesPodBackend.from_kubeconfig(
            str(kubeconfig), settings=KubernetesSettings(), clock=clock, sleep=sleep, follow="poll"
        )
        try:
            start = Allocation(
                ResourceVector(cpu_cores=0.2, memory_bytes=128 * MIB),
                ResourceVector(cpu_cores=0.5, memory_bytes=256 * MIB),
            )
            handles = await asyncio.gather(
                *(backend.provision(make_workload(48, False, 600), start) for _ in range(20))
            )
            await sleep(3)
            usage = await backend.usage_all()
            assert set(usage) == {h.ref for h in handles}
            assert all(u.memory_bytes is not None and u.memory_bytes > 40 * MIB for u in usage.values())
            bigger = Allocation(
                ResourceVector(cpu_cores=0.3, memory_bytes=160 * MIB),
                ResourceVector(cpu_cores=1.0, memory_bytes=320 * MIB),
            )
            too_small = Allocation(
                ResourceVector(cpu_cores=0.2, memory_bytes=16 * MIB),
                ResourceVector(cpu_cores=0.5, memory_bytes=32 * MIB),
            )
            targets = {h: bigger for h in handles[:-1]} | {handles[-1]: too_small}
            results = await backend.resize_many(targets)
            assert all(results[h.ref].status is ResizeStatus.APPLIED for h in handles[:-1]), results
            assert results[handles[-1].ref].status is ResizeStatus.REJECTED
            assert "below current usage" in results[handles[-1].ref].reason
            assert (await backend.state(handles[0])).kind.value == "running"
            await asyncio.gather(*(backend.release(h) for h in handles))
            assert await backend.usage(handles[0]) is None
        finally:
            await backend.aclose()

    asyncio.run(scenario())


def test_kubectl_shows_resized_status_and_refuses_qos_change(
    kubeconfig: Path, core: client.CoreV1Api, advance_time: Callable[[float], None]
) -> None:
    require_executable("kubectl", "Debian: kubernetes-client")

    def kubectl(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["kubectl", "--kubeconfig", str(kubeconfig), *args], capture_output=True, text=True, timeout=60
        )

    # kubectl >= 1.24 patches subresources itself; older ones (Debian's kubernetes-client is 1.20)
    # only read, and the resize goes through the official client, as the backend does
    kubectl_resizes = "--subresource" in kubectl("patch", "--help").stdout
    core.create_namespaced_pod("default", POD)
    advance_time(0.5)
    patch = '{"spec":{"containers":[{"name":"c","resources":{"requests":{"cpu":"300m"},"limits":{"cpu":"750m"}}}]}}'
    if kubectl_resizes:
        done = kubectl("patch", "pod", "web", "--subresource", "resize", "-p", patch)
        assert done.returncode == 0, done.stderr
    else:
        core.patch_namespaced_pod_resize("web", "default", json.loads(patch))
    advance_time(2.0)
    got = kubectl("get", "pod", "web", "-o", "json")
    assert got.returncode == 0, got.stderr
    pod = json.loads(got.stdout)
    assert pod["status"]["containerStatuses"][0]["resources"] == {
        "requests": {"cpu": "300m", "memory": "128Mi"},
        "limits": {"cpu": "750m", "memory": "256Mi"},
    }
    table = kubectl("get", "pods", "-o", "wide")
    assert table.returncode == 0, table.stderr
    header, row = table.stdout.splitlines()[:2]
    assert header.split() == ["NAME", "READY", "STATUS", "RESTARTS", "AGE", "IP", "NODE"]
    assert row.split()[:4] == ["web", "1/1", "Running", "0"] and row.split()[-1] == "emulator-node-1"
    qos = '{"spec":{"containers":[{"name":"c","resources":{"requests":{"cpu":"750m","memory":"256Mi"}}}]}}'
    message = 'spec: Invalid value: "Burstable": Pod QOS Class may not change'
    if kubectl_resizes:
        refused = kubectl("patch", "pod", "web", "--subresource", "resize", "-p", qos)
        assert refused.returncode == 1
        assert f'The Pod "web" is invalid: {message}' in refused.stderr
    else:
        with pytest.raises(client.ApiException) as err:
            core.patch_namespaced_pod_resize("web", "default", json.loads(qos))
        assert err.value.status == 422
        assert json.loads(err.value.body)["message"].startswith(f'Pod "web" is invalid: {message}')


def test_async_backend_follows_resizes_through_one_watch(tmp_path: Path) -> None:
    """Real time (a watch waits on the socket): small delays, an auto-ticking emulator."""
    from airflow_predictive.emulator.kubernetes.emulator import Emulator as Em
    from airflow_predictive.emulator.kubernetes.kubelet import KubeletConfig

    em = Em(kubelet=KubeletConfig(actuation_delay_s=0.05), tick_interval_s=0.01, watch_poll_s=0.02).start()
    path = em.write_kubeconfig(tmp_path / "kc")

    async def scenario() -> None:
        backend = await AsyncKubernetesPodBackend.from_kubeconfig(
            str(path), settings=KubernetesSettings(settle_timeout_s=20.0, poll_interval_s=60.0)
        )
        try:
            start = Allocation(
                ResourceVector(cpu_cores=0.1, memory_bytes=64 * MIB),
                ResourceVector(cpu_cores=0.2, memory_bytes=128 * MIB),
            )
            specs = [ProvisionSpecForTest(f"w-{i}") for i in range(10)]
            handles = await asyncio.gather(*(backend.provision(spec, start) for spec in specs))
            while len(await backend.usage_all()) < len(handles):
                await asyncio.sleep(0.02)
            bigger = Allocation(
                ResourceVector(cpu_cores=0.1, memory_bytes=64 * MIB),
                ResourceVector(cpu_cores=0.4, memory_bytes=192 * MIB),
            )
            lists = 0
            list_once = backend._list_managed_rv

            async def counted() -> Any:
                nonlocal lists
                lists += 1
                return await list_once()

            backend._list_managed_rv = counted  # type: ignore[method-assign]
            results = await backend.resize_many(dict.fromkeys(handles, bigger))
            assert all(r.status is ResizeStatus.APPLIED for r in results.values()), results
            assert lists == 1  # the initial list; every decision came from the watch, no poll
            assert len(results) == 10
        finally:
            await backend.aclose()

    try:
        asyncio.run(scenario())
    finally:
        em.stop()


def ProvisionSpecForTest(name: str) -> ProvisionSpec:
    from airflow_predictive.core.model.backend import ProvisionSpec as Spec

    return Spec(name=name)
