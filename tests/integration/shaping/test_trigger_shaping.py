"""The shaping trigger against the Kubernetes emulator in real time (1.8 s actuation): it shapes
a ramping pod to completion, and a trigger rebuilt from its serialised kwargs (a triggerer
restart) takes over mid-run from the cluster's state."""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, Any

import pytest

from airflow_predictive.backends.kubernetes.backend import KubernetesPodBackend
from airflow_predictive.core.model.backend import Allocation, ProvisionSpec
from airflow_predictive.core.model.resources import MIB, Metric, ResourceVector
from airflow_predictive.core.shaping.codec import settings_to_dict
from airflow_predictive.core.shaping.policy import ShapingSettings
from airflow_predictive.emulator.kubernetes.emulator import Emulator, NodeSpec
from airflow_predictive.emulator.kubernetes.kubelet import KubeletConfig
from airflow_predictive.emulator.kubernetes.workload import WORKLOAD_ANNOTATION
from airflow_predictive.triggers.shaping import ResourceShapingTrigger

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

START = Allocation(
    ResourceVector(cpu_cores=0.2, memory_bytes=100 * MIB),
    ResourceVector(cpu_cores=1.0, memory_bytes=120 * MIB),
)
SETTINGS = ShapingSettings(
    metrics=(Metric.MEMORY_BYTES,), grow_margin=0.6, near_limit=0.3, grow_cooldown_s=0.5
)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Emulator, Path]]:
    em = Emulator(
        kubelet=KubeletConfig(actuation_delay_s=1.8, metrics_window_s=1.0),
        nodes=(NodeSpec(cpu="8", memory="8Gi"),),
    ).start()
    kubeconfig = em.write_kubeconfig(tmp_path_factory.mktemp("kube") / "kc")
    yield em, kubeconfig
    em.stop()


def _pod(kubeconfig: Path, name: str) -> KubernetesPodBackend:
    backend = KubernetesPodBackend.from_kubeconfig(str(kubeconfig))
    body = {
        "points": [{"t": 0, "cpu": 0.1, "memory": "50Mi"}, {"t": 20, "cpu": 0.1, "memory": "260Mi"}],
        "duration": 24,
    }
    spec = ProvisionSpec(
        name=name,
        image="python:3.11-slim",
        command=("python", "-c", "pass"),
        annotations={WORKLOAD_ANNOTATION: json.dumps(body)},
    )
    backend.provision(spec, START)
    return backend


def _trigger(kubeconfig: Path, name: str, started_at: float | None = None) -> ResourceShapingTrigger:
    return ResourceShapingTrigger(
        selector=f"predictive.airflow.apache.org/task={name}",
        kubeconfig=str(kubeconfig),
        interval_s=0.5,
        settings=settings_to_dict(SETTINGS),
        started_at=started_at,
        wait_for_pods_s=20,
        store_events=False,
    )


async def _first_event(trigger: ResourceShapingTrigger) -> dict[str, Any]:
    async for event in trigger.run():
        return dict(event.payload)
    raise AssertionError("the trigger ended without an event")


def test_the_trigger_shapes_a_ramping_pod_to_completion(cluster: tuple[Emulator, Path]) -> None:
    _, kubeconfig = cluster
    _pod(kubeconfig, "trig-a").close()
    event = asyncio.run(asyncio.wait_for(_first_event(_trigger(kubeconfig, "trig-a")), 90))
    assert event["status"] == "done", event
    assert event["finished"] == {"default/trig-a": "succeeded"}
    assert event["applied"] >= 2


def test_a_rebuilt_trigger_takes_over_mid_run(cluster: tuple[Emulator, Path]) -> None:
    _, kubeconfig = cluster
    backend = _pod(kubeconfig, "trig-b")
    first = _trigger(kubeconfig, "trig-b")

    async def die_after(seconds: float) -> None:
        task = asyncio.ensure_future(_first_event(first))
        await asyncio.sleep(seconds)
        task.cancel()  # the triggerer process dies
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(die_after(8.0))
    [handle] = backend.find("predictive.airflow.apache.org/task=trig-b")
    grown = handle.allocation.limits.memory_bytes
    assert grown is not None and grown > 120 * MIB  # the first trigger had grown it already
    path, kwargs = first.serialize()
    assert path == "airflow_predictive.triggers.shaping.ResourceShapingTrigger"
    second = ResourceShapingTrigger(**kwargs)  # what another triggerer does with the stored row
    event = asyncio.run(asyncio.wait_for(_first_event(second), 90))
    assert event["status"] == "done", event
    assert event["finished"] == {"default/trig-b": "succeeded"}
    assert event["applied"] >= 1  # the second trigger kept growing it
    backend.close()
