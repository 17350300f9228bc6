"""The shaping controller on pods of the Kubernetes emulator (1.8 s actuation, real HTTP, official
client), time driven by the test: a ramping pod is grown in place and completes (OOM-killed when
not shaped), shaping resumes after a restart from the cluster's state, the node deferring a grow
is recorded, and API faults / a pod deleted under the controller never fail anything."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import pytest

from airflow_predictive.backends.kubernetes.backend import KubernetesPodBackend
from airflow_predictive.backends.kubernetes.settings import KubernetesSettings
from airflow_predictive.core.model.backend import Allocation, ExitKind, ProvisionSpec
from airflow_predictive.core.model.resources import MIB, Metric, ResourceVector
from airflow_predictive.core.shaping.controller import ShapingController
from airflow_predictive.core.shaping.events import Action, ShapingEvent, Verdict
from airflow_predictive.core.shaping.policy import ShapingSettings
from airflow_predictive.emulator.kubernetes.emulator import Emulator, NodeSpec
from airflow_predictive.emulator.kubernetes.faults import FaultRule
from airflow_predictive.emulator.kubernetes.kubelet import KubeletConfig
from airflow_predictive.emulator.kubernetes.workload import WORKLOAD_ANNOTATION

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence
    from pathlib import Path

MEM = Metric.MEMORY_BYTES


class StepClock:
    def __init__(self) -> None:
        self.t = 0.0

    def monotonic(self) -> float:
        return self.t

    def now(self) -> datetime:
        return datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=self.t)


class Sink:
    def __init__(self) -> None:
        self.events: list[ShapingEvent] = []

    def record(self, events: Sequence[ShapingEvent]) -> None:
        self.events.extend(events)


class Cluster:
    def __init__(self, tmp_path: Path, node: NodeSpec) -> None:
        self.clock = StepClock()
        self.em = Emulator(
            clock=self.clock,
            kubelet=KubeletConfig(actuation_delay_s=1.8, metrics_window_s=1.0),
            nodes=(node,),
            auto_tick=False,
        ).start()
        self.kubeconfig = self.em.write_kubeconfig(tmp_path / "kc")
        self.n = 0

    def advance(self, seconds: float) -> None:
        self.em.tick()
        remaining = seconds
        while remaining > 1e-9:
            step = min(0.1, remaining)
            self.clock.t += step
            remaining -= step
            self.em.tick()

    def backend(self, **settings: Any) -> KubernetesPodBackend:
        return KubernetesPodBackend.from_kubeconfig(
            str(self.kubeconfig),
            settings=KubernetesSettings(backoff_base_s=0.05, **settings),
            clock=self.clock,
            sleep=self.advance,
        )

    def spec(self, points: list[tuple[float, float]], duration: float) -> ProvisionSpec:
        self.n += 1
        body = {
            "points": [{"t": t, "cpu": 0.2, "memory": f"{int(mb)}Mi"} for t, mb in points],
            "duration": duration,
        }
        return ProvisionSpec(
            name=f"shaped-{self.n}",
            image="python:3.11-slim",
            command=("python", "-c", "pass"),
            labels={"dag_id": "d", "task_id": f"t{self.n}"},
            annotations={WORKLOAD_ANNOTATION: json.dumps(body)},
        )


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(tmp_path, NodeSpec(cpu="8", memory="8Gi"))
    yield c
    c.em.stop()


START = Allocation(
    ResourceVector(cpu_cores=0.5, memory_bytes=128 * MIB),
    ResourceVector(cpu_cores=1.0, memory_bytes=200 * MIB),
)
RAMP = [(0.0, 50.0), (60.0, 600.0)]  # ~9 MiB/s, then holds until the end at 90 s
SETTINGS = ShapingSettings(metrics=(MEM,), grow_margin=0.4, near_limit=0.2, grow_cooldown_s=1.0)


def _drive(ctrl: ShapingController, cluster: Cluster, seconds: float, interval: float = 1.0) -> None:
    t = 0.0
    while t < seconds and ctrl.finished is None:
        ctrl.tick()
        cluster.advance(interval)
        t += interval


def test_a_ramping_pod_is_grown_in_place_and_completes(cluster: Cluster) -> None:
    backend = cluster.backend()
    handle = backend.provision(cluster.spec(RAMP, 90), START)
    cluster.advance(0.1)
    sink = Sink()
    ctrl = ShapingController(backend, handle, SETTINGS, clock=cluster.clock, events=sink)
    _drive(ctrl, cluster, 120)
    assert ctrl.finished is ExitKind.SUCCEEDED, backend.state(handle)
    grows = [e for e in sink.events if e.action is Action.GROW and e.verdict is Verdict.APPLIED]
    assert len(grows) >= 3
    assert any(e.verdict is Verdict.PENDING for e in sink.events)  # submitted, then observed later
    assert ctrl.allocation.limits.memory_bytes is not None and ctrl.allocation.limits.memory_bytes > 600 * MIB


def test_the_same_pod_is_oom_killed_without_shaping(cluster: Cluster) -> None:
    backend = cluster.backend()
    handle = backend.provision(cluster.spec(RAMP, 90), START)
    cluster.advance(0.1)
    ctrl = ShapingController(backend, handle, ShapingSettings(metrics=()), clock=cluster.clock)
    _drive(ctrl, cluster, 120)
    assert ctrl.finished is ExitKind.OOM_KILLED


def test_shaping_resumes_from_the_cluster_after_a_restart(cluster: Cluster) -> None:
    first = cluster.backend()
    handle = first.provision(cluster.spec(RAMP, 90), START)
    cluster.advance(0.1)
    ctrl = ShapingController(first, handle, SETTINGS, clock=cluster.clock)
    _drive(ctrl, cluster, 25)
    grown = ctrl.allocation
    assert grown.limits.memory_bytes is not None and grown.limits.memory_bytes > START.limits.memory_bytes  # type: ignore[operator]
    first.close()  # the triggerer / worker dies; another process takes over from the cluster alone
    second = cluster.backend()
    [again] = second.find(f"predictive.airflow.apache.org/task={handle.name}")
    assert again.ref == handle.ref
    assert again.allocation.limits.memory_bytes == pytest.approx(grown.limits.memory_bytes, rel=0.01)
    ctrl2 = ShapingController(second, again, SETTINGS, clock=cluster.clock, started_s=ctrl.started_s)
    _drive(ctrl2, cluster, 100)
    assert ctrl2.finished is ExitKind.SUCCEEDED


def test_a_grow_the_node_defers_is_recorded_as_deferred_by_node(tmp_path: Path) -> None:
    small = Cluster(tmp_path, NodeSpec(cpu="8", memory="1Gi"))
    try:
        backend = small.backend()
        hog = backend.provision(
            small.spec([(0, 10), (1, 10)], 600),
            Allocation.exactly(ResourceVector(cpu_cores=0.1, memory_bytes=700 * MIB)),
        )
        handle = backend.provision(small.spec(RAMP, 90), START)
        small.advance(0.1)
        sink = Sink()
        ctrl = ShapingController(backend, handle, SETTINGS, clock=small.clock, events=sink)
        _drive(ctrl, small, 40)
        assert any(e.verdict is Verdict.DEFERRED_BY_NODE for e in sink.events), {
            e.verdict for e in sink.events
        }
        backend.release(hog)
        _drive(ctrl, small, 100)
        assert ctrl.finished is ExitKind.SUCCEEDED
    finally:
        small.em.stop()


def test_api_faults_and_missing_metrics_never_fail_the_task(cluster: Cluster) -> None:
    backend = cluster.backend(max_retries=1)
    roomy = Allocation(START.requests, START.limits.with_value(MEM, 400 * MIB))  # room for a few failed grows
    handle = backend.provision(cluster.spec(RAMP, 90), roomy)
    cluster.advance(0.1)
    for status in (500, 429, 409):
        cluster.em.faults.add(FaultRule(path=r"/pods/[^/]+/resize$", method="PATCH", status=status, times=2))
    cluster.em.faults.add(FaultRule(path=r"metrics.k8s.io", status=503, times=8))
    cluster.em.faults.add(FaultRule(path=r"/resize$", method="PATCH", status=422, times=1))
    sink = Sink()
    ctrl = ShapingController(backend, handle, SETTINGS, clock=cluster.clock, events=sink)
    _drive(ctrl, cluster, 120)
    assert ctrl.finished is ExitKind.SUCCEEDED
    verdicts = {e.verdict for e in sink.events}
    assert Verdict.APPLIED in verdicts
    assert verdicts & {Verdict.ERROR, Verdict.REJECTED}  # the faults were seen and recorded


def test_a_pod_deleted_under_the_controller_ends_shaping_quietly(cluster: Cluster) -> None:
    backend = cluster.backend()
    handle = backend.provision(cluster.spec(RAMP, 90), START)
    cluster.advance(0.1)
    ctrl = ShapingController(backend, handle, SETTINGS, clock=cluster.clock)
    _drive(ctrl, cluster, 10)
    other = cluster.backend()
    other.release(handle)  # someone else deletes the pod
    cluster.advance(1)
    report = ctrl.tick()
    assert not report.running and ctrl.finished in (ExitKind.GONE, ExitKind.FAILED)


def _pod_shaper_run(cluster: Cluster, **along: Any) -> tuple[dict[str, str], list[ShapingEvent]]:
    """One ramping pod shaped by ``PodShaper`` rounds (what the operator and trigger run)."""
    from airflow_predictive.triggers.pod_shaper import PodShaper, PodTarget

    backend = cluster.backend()
    handle = backend.provision(cluster.spec(RAMP, 90), START)
    cluster.advance(0.1)
    sink = Sink()
    target = PodTarget(f"predictive.airflow.apache.org/task={handle.name}")
    shaper = PodShaper(target, SETTINGS, backend=backend, clock=cluster.clock, events=sink, **along)
    report = shaper.round()
    for _ in range(130):
        if report.done:
            break
        cluster.advance(1.0)
        report = shaper.round()
    shaper.close()
    return report.finished, [e for e in sink.events if e.verdict is Verdict.APPLIED]


def test_pods_are_shaped_along_their_forecast_ahead_of_the_rise(cluster: Cluster) -> None:
    import numpy as np

    from airflow_predictive.core.model.series import DemandCurve, Forecast
    from airflow_predictive.core.shaping.expectation import ForecastExpectation

    t = np.arange(0.0, 95.0, 5.0)
    ramp = np.interp(t, [0.0, 60.0, 90.0], [50.0, 600.0, 600.0]) * MIB  # what the pod will do
    forecast = Forecast({MEM: DemandCurve(MEM, 5.0, {0.5: ramp, 0.9: ramp * 1.05})}, {0.5: 90.0}, "test")

    alone_end, alone = _pod_shaper_run(cluster)
    along_end, along = _pod_shaper_run(cluster, expectation=ForecastExpectation(forecast))
    assert set(alone_end.values()) == set(along_end.values()) == {"succeeded"}
    first_alone, first_along = alone[0], along[0]
    assert first_alone.usage is not None and first_alone.before is not None
    # on usage alone, the first grow waits for the usage to come near the limit ...
    assert first_alone.usage >= (1 - SETTINGS.near_limit) * first_alone.before * 0.99
    # ... along the forecast it comes while the usage is far below it, for the rise ahead
    assert first_along.usage is not None and first_along.before is not None
    assert first_along.usage < 0.5 * first_along.before
    assert first_along.after is not None and first_along.after > first_alone.after  # type: ignore[operator]
    assert len(along) < len(alone)  # fewer resizes for the same ramp
