"""Shaping of the Kubernetes executor's worker pods around the real controller and the in-process
ledger, over a scripted pod backend whose resizes are submitted and actuated on a later poll (as
the Kubernetes backend's): a grow is reserved before its patch is sent, held with "pool full" when
the pool has no room, given back when the kubelet never applies it; a pod is shaped only once it
is found, running and measured; a failure to build the controller gives the pod back to the
plan's timed steps; the executor follows what shaping applied."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import replace
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

from airflow_predictive.backends.fake import FakeBackend, ManualClock, ramp_script
from airflow_predictive.backends.kubernetes.backend import KubernetesPodBackend
from airflow_predictive.core.model.backend import (
    Allocation,
    ExitKind,
    Handle,
    ProvisionSpec,
    ResizeResult,
    ResizeStatus,
    TaskState,
)
from airflow_predictive.core.model.plan import (
    AllocationPlan,
    LedgerStatus,
    PlanSource,
    Pool,
    PoolCapacity,
    PoolKind,
    ReservationRequest,
)
from airflow_predictive.core.model.resources import MIB, Metric, ResourceVector
from airflow_predictive.core.model.runs import RunIdentity, TaskKey
from airflow_predictive.core.scheduling.ledger import InMemoryLedger
from airflow_predictive.core.shaping.controller import ShapingController
from airflow_predictive.core.shaping.events import Action, ShapingEvent, Verdict
from airflow_predictive.core.shaping.policy import ShapingSettings
from airflow_predictive.emulator.kubernetes.emulator import Emulator, NodeSpec
from airflow_predictive.emulator.kubernetes.kubelet import KubeletConfig
from airflow_predictive.emulator.kubernetes.workload import WORKLOAD_ANNOTATION
from airflow_predictive.executors.coordinator import Running
from airflow_predictive.executors.kubernetes_executor import PredictiveKubernetesExecutor
from airflow_predictive.executors.kubernetes_shaping import KubernetesShaping, PodPoolGate, PodShapedTask
from airflow_predictive.executors.local_shaping import POOL_FULL
from airflow_predictive.executors.opt_in import task_settings

if TYPE_CHECKING:
    from pathlib import Path

    import pytest

MEM = Metric.MEMORY_BYTES


class Sink:
    def __init__(self) -> None:
        self.events: list[ShapingEvent] = []

    def record(self, events: Any) -> None:
        self.events.extend(events)


def _alloc(mb: float) -> Allocation:
    return Allocation.exactly(ResourceVector(cpu_cores=1.0, memory_bytes=mb * MIB))


class Pods:
    """A worker pod on the scripted backend, as the Kubernetes backend shows it: found by its
    selector once created, ``Running`` once started, resizes PENDING until ``polls`` status reads
    later (then applied, or ``final`` when set: e.g. Infeasible)."""

    name = "kubernetes"

    def __init__(self, clock: ManualClock, script: Any, start_mb: float, *, polls: int = 1) -> None:
        self.fake = FakeBackend(clock)
        self.fake.add_script("pod", script)
        self.handle = self.fake.provision(ProvisionSpec("pod"), _alloc(start_mb))
        self.created = self.started = self.measured = True
        self.polls = polls
        self.final: ResizeResult | None = None
        self.pending: dict[str, tuple[Allocation, int]] = {}
        self.submitted: list[Allocation] = []
        self.finds = 0
        self.protected: list[str] = []  # refs given the do-not-disrupt annotations

    def find(self, selector: str) -> list[Handle]:
        self.finds += 1
        return [self.handle] if self.created else []

    def capabilities(self) -> Any:
        return self.fake.capabilities()

    def state(self, handle: Handle) -> TaskState:
        state = self.fake.state(handle)
        if state.kind is ExitKind.RUNNING:
            return TaskState(ExitKind.RUNNING, reason="Running" if self.started else "ContainerCreating")
        return state

    def usage(self, handle: Handle) -> ResourceVector | None:
        return self.fake.usage(handle) if self.measured else None

    def resize(self, handle: Handle, allocation: Allocation) -> ResizeResult:
        raise AssertionError("a pod's resize is submitted, never waited for")

    def submit_resize(self, handle: Handle, allocation: Allocation) -> ResizeResult:
        self.submitted.append(allocation)
        self.pending[handle.ref] = (allocation, self.polls)
        return ResizeResult(ResizeStatus.PENDING, "submitted", allocation=None)

    def poll_resize(self, handle: Handle) -> ResizeResult | None:
        entry = self.pending.get(handle.ref)
        if entry is None:
            return None
        target, left = entry
        if left > 1:
            self.pending[handle.ref] = (target, left - 1)
            return ResizeResult(ResizeStatus.PENDING, "in progress")
        del self.pending[handle.ref]
        return self.final if self.final is not None else self.fake.resize(handle, target)

    def protect(self, ref: str, *, on: bool = True) -> bool:
        self.protected.append(ref)
        return True

    def close(self) -> None:
        pass


class Rig:
    """One worker pod reserved at ``start_mb`` in a pool of ``pool_mb``, shaped through the gate."""

    def __init__(self, script: Any, start_mb: float, pool_mb: float, *, polls: int = 1) -> None:
        self.clock = ManualClock()
        self.wall = lambda: self.clock.now().timestamp()
        self.pods = Pods(self.clock, script, start_mb, polls=polls)
        self.ledger: Any = InMemoryLedger(clock=self.wall)
        self.ledger.set_pool(
            Pool(
                "k8s:default",
                PoolKind.KUBERNETES,
                PoolCapacity(limits=ResourceVector(memory_bytes=pool_mb * MIB)),
            )
        )
        plan = AllocationPlan.flat(_alloc(start_mb), 600.0, source=PlanSource.DECLARED, why="test")
        got = self.ledger.reserve(
            ReservationRequest("k8s:default", RunIdentity(TaskKey("d", "t"), "r"), "me", plan, self.wall())
        )
        assert got.status is LedgerStatus.RESERVED and got.reservation is not None
        self.reservation_id = got.reservation.id
        self.gate = PodPoolGate(self.pods, self.ledger, self.reservation_id, clock=self.wall)
        self.sink = Sink()
        self.ctrl = ShapingController(
            self.gate,
            self.pods.handle,
            ShapingSettings(metrics=(MEM,)),
            clock=self.clock,
            events=self.sink,
            ledger=self.ledger,
            reservation_id=self.reservation_id,
        )

    def run(self, seconds: float) -> None:
        for _ in range(int(seconds)):
            self.ctrl.tick()
            if self.ctrl.finished is not None:
                return
            self.clock.advance(1.0)

    def reserved_mb(self) -> list[float]:
        res = self.ledger.get(self.reservation_id)
        assert res is not None
        return [(p.allocation.limits.memory_bytes or 0.0) / MIB for p in res.timeline]

    def applied(self, action: Action) -> list[ShapingEvent]:
        return [e for e in self.sink.events if e.action is action and e.verdict is Verdict.APPLIED]


def test_a_pod_grown_by_submitted_resizes_has_every_grow_reserved_before_its_patch() -> None:
    rig = Rig(ramp_script(600, 0.5, 90, ramp_s=60, base_mb=50), 200, 4096)
    rig.run(100)
    grows = rig.applied(Action.GROW)
    assert rig.ctrl.finished is ExitKind.SUCCEEDED and len(grows) >= 3
    assert any(e.verdict is Verdict.PENDING for e in rig.sink.events)  # each went through the kubelet
    reserved = rig.reserved_mb()
    assert reserved[0] == 200
    for sent in rig.pods.submitted:  # every patch sent was in the ledger first
        assert max(reserved) * MIB >= (sent.limits.memory_bytes or 0)
    assert rig.gate.held == 0


def test_a_grow_the_namespace_pool_cannot_hold_is_never_sent() -> None:
    rig = Rig(ramp_script(600, 0.5, 90, ramp_s=60, base_mb=50), 200, 300)
    rig.run(100)
    held = [e for e in rig.sink.events if e.verdict is Verdict.REJECTED]
    assert held and all(POOL_FULL in e.reason for e in held), [e.reason for e in rig.sink.events]
    assert max(rig.reserved_mb()) <= 300
    assert all((a.limits.memory_bytes or 0) <= 300 * MIB for a in rig.pods.submitted)  # never patched


def test_a_grow_the_kubelet_never_applies_is_given_back_to_the_pool() -> None:
    rig = Rig(ramp_script(190, 0.5, 600, ramp_s=5, base_mb=50), 200, 4096, polls=2)
    rig.pods.final = ResizeResult(ResizeStatus.INFEASIBLE, "Node didn't have enough capacity")
    handle = rig.pods.handle
    assert rig.gate.submit_resize(handle, _alloc(300)).status is ResizeStatus.PENDING
    assert rig.reserved_mb()[-1] == 300  # reserved before the patch went out
    assert rig.gate.poll_resize(handle).status is ResizeStatus.PENDING  # type: ignore[union-attr]
    assert rig.reserved_mb()[-1] == 300
    rig.clock.advance(1.0)
    assert rig.gate.poll_resize(handle).status is ResizeStatus.INFEASIBLE  # type: ignore[union-attr]
    assert rig.reserved_mb()[-1] == 200  # given back: the pod still holds what it had
    assert rig.gate.submit_resize(handle, _alloc(250)).status is ResizeStatus.PENDING
    rig.pods.final = None
    rig.clock.advance(1.0)
    rig.gate.poll_resize(handle)
    assert rig.gate.poll_resize(handle).applied  # type: ignore[union-attr]
    assert rig.reserved_mb()[-1] == 250  # an applied grow keeps its reservation


def _shaped(clock: ManualClock, pods: Pods, warmup_s: float = 0.0) -> tuple[PodShapedTask, list[Handle]]:
    built: list[Handle] = []

    def build(handle: Handle) -> ShapingController:
        built.append(handle)
        return ShapingController(
            pods, handle, ShapingSettings(reclaim_after_s=3, shrink_cooldown_s=5), clock=clock
        )

    task = PodShapedTask(
        "d.t", lambda: pods.find("sel"), pods, build, warmup_s=warmup_s, clock=clock.monotonic
    )
    return task, built


def test_a_pod_is_shaped_only_once_it_is_found_running_and_measured() -> None:
    clock = ManualClock()
    pods = Pods(clock, ramp_script(40, 0.05, 300, ramp_s=0, base_mb=40), 512)
    task, built = _shaped(clock, pods)
    for created, started, measured in ((False, False, False), (True, False, False), (True, True, False)):
        pods.created, pods.started, pods.measured = created, started, measured
        for _ in range(3):  # no pod, ContainerCreating, no metrics yet: an unmeasured pod is not idle
            assert task.tick() is None
            clock.advance(1.0)
    assert built == [] and task.controller is None and not pods.submitted and not pods.protected
    pods.measured = True
    for _ in range(10):
        task.tick()
        clock.advance(1.0)
    assert built == [pods.handle] and task.controller is not None
    assert pods.protected == [pods.handle.ref] and task.protected  # once, when shaping took it
    assert pods.submitted  # the idle pod is reclaimed once measured
    assert pods.finds == 10  # looked up every round until it is shaped (9 waits + 1), never after


def test_a_starting_pod_is_only_grown_during_its_warm_up() -> None:
    clock = ManualClock()
    pods = Pods(clock, ramp_script(40, 0.05, 300, ramp_s=0, base_mb=40), 512)
    task, _built = _shaped(clock, pods, warmup_s=15)
    for _ in range(14):
        task.tick()
        clock.advance(1.0)
    assert task.warming_up and not pods.submitted
    for _ in range(10):
        task.tick()
        clock.advance(1.0)
    assert not task.warming_up and pods.submitted


def test_a_failed_lookup_or_build_never_raises_and_gives_the_pod_back(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = ManualClock()
    pods = Pods(clock, ramp_script(40, 0.05, 300, ramp_s=0, base_mb=40), 512)

    def broken_find() -> list[Handle]:
        raise ConnectionError("api down")

    def broken_build(handle: Handle) -> ShapingController:
        raise RuntimeError("no store")

    lookup = PodShapedTask("d.t", broken_find, pods, broken_build)
    with caplog.at_level(logging.INFO):
        for _ in range(3):
            assert lookup.tick() is None
    assert lookup.given_up is None  # the API may come back: it keeps looking
    assert sum("pod lookup failed" in r.message for r in caplog.records) == 1  # one line, not one a round
    task = PodShapedTask("d.t", lambda: pods.find("sel"), pods, broken_build)
    with caplog.at_level(logging.WARNING):
        assert task.tick() is None
        assert task.tick() is None
    assert task.given_up is not None and "no store" in task.given_up
    assert sum("is not shaped" in r.message for r in caplog.records) == 1


def _item(key: str = "k", reservation: str | None = None) -> Running:
    run = RunIdentity(TaskKey("d", "t"), "r", 1)
    return Running(key, run, None, reservation, 1000.0, 1600.0, handle="dag_id=d,task_id=t,try_number=1")


def test_start_hands_the_pod_to_shaping_and_stop_takes_it_back() -> None:
    clock = ManualClock()
    pods = Pods(clock, ramp_script(40, 0.05, 300, ramp_s=0, base_mb=40), 512)
    runtime = SimpleNamespace(ledger=lambda: None, shaper=lambda *a, **k: None)
    shaping = KubernetesShaping(runtime, pods, interval_s=60.0)
    try:
        item = _item()
        assert shaping.start(item, task_settings({"predictive": {"shaping": True}}))
        assert item.shaped  # the plan's timed steps stop: the controller follows the plan
        assert shaping.given_up("k") is None and shaping.allocation("k") is None
        assert shaping.stop("k") is not None and shaping.stop("k") is None
        not_a_selector = replace(item, key="j", handle=None, shaped=False)
        assert not shaping.start(not_a_selector, task_settings({"predictive": {"shaping": True}}))
        assert not not_a_selector.shaped
    finally:
        shaping.close()


def test_the_executor_follows_shaping_and_takes_back_a_pod_shaping_gave_up_on() -> None:
    kept, dropped = _item("kept"), _item("dropped")
    kept.shaped = dropped.shaped = True
    grown = _alloc(700)
    stopped: list[str] = []
    shaping = SimpleNamespace(
        given_up=lambda key: "controller not built: boom" if key == "dropped" else None,
        allocation=lambda key: grown,
        stop=stopped.append,
    )
    executor = object.__new__(PredictiveKubernetesExecutor)
    executor._shaping = shaping  # type: ignore[assignment]
    executor._coordinator = SimpleNamespace(running={"kept": kept, "dropped": dropped})  # type: ignore[assignment]
    executor._follow_shaping()
    assert kept.shaped and kept.allocation == grown  # the namespace pool counts what was applied
    assert not dropped.shaped and stopped == ["dropped"]  # its due steps are sent again


def test_a_pod_that_ends_stops_being_shaped_before_its_reservation_is_released(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from airflow.providers.cncf.kubernetes.executors.kubernetes_executor import KubernetesExecutor

    monkeypatch.setattr(KubernetesExecutor, "_change_state", lambda self, results, **kw: None)
    item = _item("k", reservation="res-1")
    item.shaped, item.allocation = True, _alloc(400)
    grown = _alloc(900)
    order: list[str] = []
    shaped = SimpleNamespace(allocation=grown)
    shaping = SimpleNamespace(stop=lambda key: order.append(f"stop {key}") or shaped)
    finished: list[Any] = []

    def finish(key: str, **kw: Any) -> None:
        order.append(f"release {key}")
        finished.append(kw)

    executor = object.__new__(PredictiveKubernetesExecutor)
    executor._shaping = shaping  # type: ignore[assignment]
    executor._coordinator = SimpleNamespace(running={"k": item}, finished=finish)  # type: ignore[assignment]
    executor._unplanned, executor._held = set(), {}
    results = SimpleNamespace(key="k", state="failed", failure_details={"container_reason": "OOMKilled"})
    executor._change_state(results)
    assert order == ["stop k", "release k"]
    assert finished[0]["oom_killed"] and finished[0]["peak"] == grown.limits  # killed at the grown limit


def test_a_round_reads_every_shaped_pod_in_two_list_calls(tmp_path: Path) -> None:
    """Batched (the executor's worker selector): the round's refresh lists the pods and their
    metrics once; no shaped pod costs a read of its own (pod, metrics) however many there are."""
    em = Emulator(
        kubelet=KubeletConfig(metrics_window_s=1.0), nodes=(NodeSpec(cpu="8", memory="8Gi"),)
    ).start()
    backend = KubernetesPodBackend.from_kubeconfig(str(em.write_kubeconfig(tmp_path / "kc")))
    try:
        body = json.dumps({"points": [{"t": 0, "memory": "64Mi", "cpu": 0.1}], "duration": 600})
        for i in range(3):
            labels = {"kubernetes_executor": "True", "task_id": f"t{i}"}
            spec = ProvisionSpec(
                f"w{i}", ("python", "-c", "pass"), labels=labels, annotations={WORKLOAD_ANNOTATION: body}
            )
            backend.provision(spec, _alloc(256))
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            pods, usage = backend.snapshot("kubernetes_executor=True")
            if len(usage) == 3 and all(p["status"].get("phase") == "Running" for p in pods.values()):
                break
            time.sleep(0.2)
        calls: list[str] = []
        execute = backend._execute

        def counted(op: Any) -> Any:
            calls.append(getattr(getattr(op, "verb", None), "name", type(op).__name__))
            return execute(op)

        backend._execute = counted  # type: ignore[method-assign]
        built: list[Handle] = []

        def shaper(pods: Any, handle: Handle, settings: Any, **_: Any) -> ShapingController:
            built.append(handle)
            return ShapingController(pods, handle, settings)

        runtime = SimpleNamespace(ledger=lambda: None, shaper=shaper)
        shaping = KubernetesShaping(runtime, backend, interval_s=3600.0, selector="kubernetes_executor=True")
        try:
            for i in range(3):
                item = replace(_item(f"k{i}"), handle=f"task_id=t{i}")
                assert shaping.start(item, task_settings({"predictive": {"shaping": True}}))
            deadline = time.monotonic() + 10
            while shaping.group.rounds < 1 and time.monotonic() < deadline:  # the thread's first round
                time.sleep(0.05)
            calls.clear()
            for _ in range(2):
                shaping.group.round()
            assert len(built) == 3, built  # every pod found and shaped from the snapshot
            reads = [
                c for c in calls if c in ("READ_POD", "READ_POD_METRICS", "LIST_PODS", "LIST_POD_METRICS")
            ]
            assert reads == ["LIST_PODS", "LIST_POD_METRICS"] * 2, calls
        finally:
            shaping.close()
    finally:
        backend.close()
        em.stop()
