"""The pod backend fit for a control loop, driven by scripted API replies: submit and poll are
separate, the allocation reported is the one in force, an unobserved resize and a Deferred resize
with a moving target both time out, state is rebuilt from the cluster and freed on release."""

from __future__ import annotations

import copy
from typing import Any

from airflow_predictive.backends.kubernetes.calls import Call, Reply, Sleep, Verb
from airflow_predictive.backends.kubernetes.procedures import Procedures, drive
from airflow_predictive.backends.kubernetes.settings import KubernetesSettings
from airflow_predictive.backends.kubernetes.translate import is_guaranteed, resource_requirements
from airflow_predictive.core.model.backend import Allocation, Capacity, Handle, ResizeStatus
from airflow_predictive.core.model.resources import MIB, ResourceVector


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def monotonic(self) -> float:
        return self.t

    def now(self) -> Any:
        raise AssertionError("not used")


def _res(cpu_req: str, mem_req: str, cpu_lim: str | None, mem_lim: str) -> dict[str, Any]:
    limits = {"memory": mem_lim} if cpu_lim is None else {"cpu": cpu_lim, "memory": mem_lim}
    return {"requests": {"cpu": cpu_req, "memory": mem_req}, "limits": limits}


def _pod(
    spec: dict[str, Any], actual: dict[str, Any], *, generation: int = 1, observed: int = 1, conditions=()
) -> dict[str, Any]:
    return {
        "metadata": {"name": "p", "generation": generation, "uid": "u1"},
        "spec": {"containers": [{"name": "task", "resources": spec}]},
        "status": {
            "phase": "Running",
            "observedGeneration": observed,
            "conditions": list(conditions),
            "containerStatuses": [{"name": "task", "resources": actual, "state": {"running": {}}}],
        },
    }


START = Allocation(
    ResourceVector(cpu_cores=0.5, memory_bytes=128 * MIB),
    ResourceVector(cpu_cores=1.0, memory_bytes=256 * MIB),
)
BIGGER = Allocation(
    ResourceVector(cpu_cores=0.5, memory_bytes=256 * MIB),
    ResourceVector(cpu_cores=1.0, memory_bytes=512 * MIB),
)
NODES = Reply(200, {"items": [{"status": {"allocatable": {"cpu": "8", "memory": "32Gi"}}}]})
HANDLE = Handle("kubernetes", "p", "default/p", START)
START_RES = _res("500m", "128Mi", "1", "256Mi")
BIG_RES = _res("500m", "256Mi", "1", "512Mi")


class Cluster:
    """Answers calls from a mutable pod; records every call."""

    def __init__(self, clock: Clock, pod: dict[str, Any]) -> None:
        self.clock, self.pod, self.calls = clock, pod, []  # type: ignore[var-annotated]
        self.patch_generation = pod["metadata"]["generation"]

    def execute(self, op: Call | Sleep) -> Reply | None:
        self.calls.append(op)
        if isinstance(op, Sleep):
            self.clock.t += op.seconds
            return None
        if op.verb is Verb.READ_POD:
            return Reply(200, copy.deepcopy(self.pod)) if self.pod else Reply(404, {"message": "not found"})
        if op.verb is Verb.LIST_NODES:
            return NODES
        if op.verb is Verb.LIST_PODS:
            return Reply(200, {"items": [copy.deepcopy(self.pod)]})
        if op.verb is Verb.PATCH_RESIZE:
            self.patch_generation += 1
            self.pod["metadata"]["generation"] = self.patch_generation
            self.pod["spec"]["containers"][0]["resources"] = op.body["spec"]["containers"][0]["resources"]
            return Reply(200, copy.deepcopy(self.pod))
        if op.verb is Verb.DELETE_POD:
            return Reply(200, {})
        if op.verb is Verb.READ_POD_METRICS:
            return Reply(200, {"containers": [{"name": "task", "usage": {"cpu": "100m", "memory": "64Mi"}}]})
        raise AssertionError(op)

    def actuate(
        self, actual: dict[str, Any] | None = None, conditions: tuple[dict[str, Any], ...] = ()
    ) -> None:
        status = self.pod["status"]
        status["observedGeneration"] = self.pod["metadata"]["generation"]
        status["conditions"] = list(conditions)
        if actual is not None:
            status["containerStatuses"][0]["resources"] = actual


def _setup(**settings: Any) -> tuple[Procedures, Cluster, Clock]:
    clock = Clock()
    procs = Procedures(KubernetesSettings(**settings), clock)
    cluster = Cluster(clock, _pod(START_RES, START_RES))
    return procs, cluster, clock


def test_submit_returns_pending_at_once_and_poll_reports_the_allocation_in_force() -> None:
    procs, cluster, _ = _setup()
    submitted = drive(procs.submit(HANDLE, BIGGER), cluster.execute)
    assert submitted.status is ResizeStatus.PENDING and "not yet observed" in submitted.reason
    assert [getattr(c, "verb", None) for c in cluster.calls].count(Verb.READ_POD) == 1  # no waiting loop
    assert not any(isinstance(c, Sleep) for c in cluster.calls)
    assert drive(procs.poll(HANDLE), cluster.execute).status is ResizeStatus.PENDING
    # the kubelet actuates, but (like a real cluster) reports what it actually set: no CPU limit
    actual = _res("500m", "256Mi", None, "512Mi")
    cluster.actuate(actual)
    cluster.pod["spec"]["containers"][0]["resources"] = actual
    done = drive(procs.poll(HANDLE), cluster.execute)
    assert done.status is ResizeStatus.APPLIED
    assert done.allocation is not None
    assert done.allocation.limits.cpu_cores is None  # read back, not the CPU limit that was asked
    assert done.allocation.limits.memory_bytes == 512 * MIB
    assert drive(procs.poll(HANDLE), cluster.execute) is None  # nothing in flight any more


def test_a_resize_the_kubelet_never_observes_times_out_and_is_reverted() -> None:
    procs, cluster, clock = _setup(unobserved_timeout_s=10.0)
    drive(procs.submit(HANDLE, BIGGER), cluster.execute)
    clock.t = 9.0
    assert drive(procs.poll(HANDLE), cluster.execute).status is ResizeStatus.PENDING
    clock.t = 10.5
    result = drive(procs.poll(HANDLE), cluster.execute)
    assert result.status is ResizeStatus.ERROR and "not observed by the kubelet within 10s" in result.reason
    assert getattr(cluster.calls[-1], "verb", None) is Verb.PATCH_RESIZE  # spec reverted to what is in force
    assert cluster.pod["spec"]["containers"][0]["resources"] == START_RES
    assert result.allocation == START


DEFERRED = {
    "type": "PodResizePending",
    "status": "True",
    "reason": "Deferred",
    "message": "Node didn't have enough resource: memory",
}


def test_a_deferred_resize_times_out_even_when_the_target_keeps_moving() -> None:
    procs, cluster, clock = _setup(deferred_timeout_s=20.0)
    target_mb = 512
    result = None
    for step in range(12):  # a new, larger target every 3 s, the node defers each
        clock.t = step * 3.0
        target = Allocation(
            ResourceVector(cpu_cores=0.5, memory_bytes=256 * MIB),
            ResourceVector(cpu_cores=1.0, memory_bytes=(target_mb + 16 * step) * MIB),
        )
        drive(procs.submit(HANDLE, target), cluster.execute)
        cluster.actuate(None, (DEFERRED,))
        result = drive(procs.poll(HANDLE), cluster.execute)
        if result.status is not ResizeStatus.PENDING:
            break
    assert result is not None and result.status is ResizeStatus.INFEASIBLE, result
    assert "deferred for more than 20s" in result.reason
    assert 20.0 <= clock.t <= 24.0


def test_state_is_rebuilt_from_the_cluster_after_a_restart() -> None:
    procs, cluster, _ = _setup()
    drive(procs.submit(HANDLE, BIGGER), cluster.execute)  # then this process dies
    fresh = Procedures(KubernetesSettings(), cluster.clock)
    handle = drive(fresh.attach("p"), cluster.execute)
    assert handle is not None and handle.ref == "default/p"
    assert handle.allocation == START  # in force: the kubelet has not actuated yet
    assert "default/p" in fresh.state.pending  # the resize in flight is followed again
    cluster.actuate(BIG_RES)
    done = drive(fresh.poll(handle), cluster.execute)
    assert done is not None and done.status is ResizeStatus.APPLIED and done.allocation == BIGGER
    found = drive(fresh.find("app=x"), cluster.execute)
    assert [h.ref for h in found] == ["default/p"] and found[0].allocation == BIGGER


def test_release_frees_what_the_backend_held_about_the_pod() -> None:
    procs, cluster, _ = _setup()
    drive(procs.submit(HANDLE, BIGGER), cluster.execute)
    drive(procs.release(HANDLE), cluster.execute)
    st = procs.state
    assert "default/p" in st.released
    assert all(
        "default/p" not in t
        for t in (st.allocations, st.pending, st.final, st.unobserved_since, st.deferred_since)
    )


def test_capacity_free_never_invents_gpus() -> None:
    no_gpus = Capacity(
        ResourceVector(cpu_cores=8, memory_bytes=1e9), ResourceVector(cpu_cores=2, gpu_util=1.0)
    )
    assert no_gpus.free.gpu_util is None
    assert no_gpus.free.cpu_cores == 6
    gpus = Capacity(ResourceVector(cpu_cores=8, gpu_util=2.0), ResourceVector(cpu_cores=2))
    assert gpus.free.gpu_util == 2.0


def test_a_guaranteed_pod_stays_guaranteed_through_a_resize() -> None:
    current = _res("1", "1Gi", "1", "1Gi")
    assert is_guaranteed(current)
    target = Allocation.exactly(ResourceVector(cpu_cores=2.0, memory_bytes=2048 * MIB))
    body = resource_requirements(target, ResourceVector(), current=current)
    assert is_guaranteed(body)  # requests and limits move together
    burstable = resource_requirements(target, ResourceVector(), current=START_RES)
    assert not is_guaranteed(burstable)  # a Burstable pod is never made Guaranteed (422)
