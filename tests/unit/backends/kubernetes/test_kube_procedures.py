"""The shared backend procedures driven by scripted API replies (no HTTP): which calls they make
and what they conclude."""

from __future__ import annotations

from typing import Any

from airflow_predictive.backends.kubernetes.calls import Call, Reply, Sleep, Verb
from airflow_predictive.backends.kubernetes.procedures import Procedures, drive
from airflow_predictive.backends.kubernetes.settings import KubernetesSettings
from airflow_predictive.core.model.backend import Allocation, Handle, ResizeStatus
from airflow_predictive.core.model.resources import MIB, ResourceVector


class Clock:
    t = 0.0

    def monotonic(self) -> float:
        return self.t

    def now(self) -> Any:
        raise AssertionError("not used")


POD = {
    "metadata": {"name": "p", "generation": 1},
    "spec": {
        "containers": [
            {
                "name": "task",
                "resources": {
                    "requests": {"cpu": "500m", "memory": "128Mi"},
                    "limits": {"cpu": "1", "memory": "256Mi"},
                },
            }
        ]
    },
    "status": {
        "phase": "Running",
        "observedGeneration": 1,
        "containerStatuses": [
            {
                "name": "task",
                "resources": {
                    "requests": {"cpu": "500m", "memory": "128Mi"},
                    "limits": {"cpu": "1", "memory": "256Mi"},
                },
            }
        ],
    },
}
NODES = {"items": [{"status": {"allocatable": {"cpu": "8", "memory": "32Gi"}}}]}
START = Allocation(
    ResourceVector(cpu_cores=0.5, memory_bytes=128 * MIB),
    ResourceVector(cpu_cores=1.0, memory_bytes=256 * MIB),
)
HANDLE = Handle("kubernetes", "p", "default/p", START)


def run(proc: Any, replies: dict[Verb, list[Reply]]) -> tuple[Any, list[Call]]:
    calls: list[Call] = []
    clock = proc_clock

    def execute(op: Call | Sleep) -> Reply | None:
        if isinstance(op, Sleep):
            clock.t += op.seconds
            return None
        calls.append(op)
        queue = replies[op.verb]
        return queue.pop(0) if len(queue) > 1 else queue[0]

    return drive(proc, execute), calls


proc_clock = Clock()


def procedures() -> Procedures:
    return Procedures(KubernetesSettings(), proc_clock)


def test_memory_is_never_lowered_when_usage_is_unknown() -> None:
    p = procedures()
    smaller = Allocation(
        ResourceVector(cpu_cores=0.5, memory_bytes=100 * MIB),
        ResourceVector(cpu_cores=1.0, memory_bytes=200 * MIB),
    )
    result, calls = run(
        p.resize(HANDLE, smaller),
        {
            Verb.READ_POD: [Reply(200, POD)],
            Verb.LIST_NODES: [Reply(200, NODES)],
            Verb.READ_POD_METRICS: [Reply(404)],
        },
    )
    assert result.status is ResizeStatus.REJECTED and "never lowered blind" in result.reason
    assert Verb.PATCH_RESIZE not in {c.verb for c in calls}


def test_validation_errors_of_the_server_are_rejections_with_its_message() -> None:
    p = procedures()
    bigger = Allocation(START.requests, ResourceVector(cpu_cores=2.0, memory_bytes=256 * MIB))
    status = {
        "kind": "Status",
        "code": 422,
        "message": 'Pod "p" is invalid: spec: Invalid value: "Burstable": x',
    }
    result, calls = run(
        p.resize(HANDLE, bigger),
        {
            Verb.READ_POD: [Reply(200, POD)],
            Verb.LIST_NODES: [Reply(200, NODES)],
            Verb.PATCH_RESIZE: [Reply(422, status)],
        },
    )
    assert result.status is ResizeStatus.REJECTED
    assert (
        result.reason == 'refused by the API server: Pod "p" is invalid: spec: Invalid value: "Burstable": x'
    )
    patch = next(c for c in calls if c.verb is Verb.PATCH_RESIZE)
    assert patch.body == {
        "spec": {
            "containers": [
                {
                    "name": "task",
                    "resources": {
                        "requests": {"cpu": "500m", "memory": "128Mi"},
                        "limits": {"cpu": "2000m", "memory": "256Mi"},
                    },
                }
            ]
        }
    }


def test_a_resize_waiting_for_the_kubelet_answers_pending_at_the_settle_timeout() -> None:
    p = procedures()
    bigger = Allocation(START.requests, ResourceVector(cpu_cores=2.0, memory_bytes=256 * MIB))
    patched = {**POD, "metadata": {"name": "p", "generation": 2}}
    result, calls = run(
        p.resize(HANDLE, bigger),
        {
            Verb.READ_POD: [Reply(200, POD)],
            Verb.LIST_NODES: [Reply(200, NODES)],
            Verb.PATCH_RESIZE: [Reply(200, patched)],
        },
    )
    assert result.status is ResizeStatus.PENDING and "not yet observed by the kubelet" in result.reason
    reads = sum(c.verb is Verb.READ_POD for c in calls)
    assert reads == 1 + 21  # the first read, then every 0.25 s for 5 s
