"""Pure translations of the Kubernetes backend: quantities that keep pods Burstable, how far a
resize got, task state, usage."""

from __future__ import annotations

from typing import Any

from airflow_predictive.backends.kubernetes.calls import Call, Reply, Verb, backoff_s, should_retry
from airflow_predictive.backends.kubernetes.settings import KubernetesSettings
from airflow_predictive.backends.kubernetes.translate import (
    Progress,
    label_value,
    observe_resize,
    pod_manifest,
    resource_requirements,
    same_resources,
    task_state,
    usage_of,
)
from airflow_predictive.core.model.backend import Allocation, ExitKind, ProvisionSpec
from airflow_predictive.core.model.resources import MIB, ResourceVector

DEFAULTS = ResourceVector(cpu_cores=0.1, memory_bytes=128 * MIB)


def test_equal_requests_and_limits_drop_the_cpu_limit_to_stay_burstable() -> None:
    res = resource_requirements(
        Allocation.exactly(ResourceVector(cpu_cores=1.0, memory_bytes=256 * MIB)), DEFAULTS
    )
    assert res == {"requests": {"cpu": "1000m", "memory": "256Mi"}, "limits": {"memory": "256Mi"}}


def test_an_existing_cpu_limit_is_kept_one_millicore_above_the_request() -> None:
    current = {"requests": {"cpu": "500m"}, "limits": {"cpu": "1", "memory": "256Mi"}}
    res = resource_requirements(
        Allocation.exactly(ResourceVector(cpu_cores=0.5, memory_bytes=256 * MIB)), DEFAULTS, current=current
    )
    assert res["limits"] == {"cpu": "501m", "memory": "256Mi"}
    assert res["requests"] == {"cpu": "500m", "memory": "256Mi"}


def test_burstable_allocations_pass_unchanged_and_missing_requests_take_defaults() -> None:
    a = Allocation(ResourceVector(cpu_cores=0.25), ResourceVector(cpu_cores=0.5, memory_bytes=300 * MIB))
    res = resource_requirements(a, DEFAULTS, gpus=1)
    assert res["requests"] == {"cpu": "250m", "memory": "300Mi", "nvidia.com/gpu": "1"}
    assert res["limits"] == {"cpu": "500m", "memory": "300Mi", "nvidia.com/gpu": "1"}
    empty = resource_requirements(Allocation(), DEFAULTS)
    assert empty == {"requests": {"cpu": "100m", "memory": "128Mi"}}  # never BestEffort


def test_quantities_compare_by_value() -> None:
    assert same_resources(
        {"limits": {"memory": "1Gi", "cpu": "1"}}, {"limits": {"memory": "1024Mi", "cpu": "1000m"}}
    )
    assert not same_resources({"limits": {"memory": "1Gi"}}, {"limits": {"memory": "1Gi", "cpu": "1"}})


def _pod(
    gen: int = 2,
    observed: int | None = 2,
    conditions: list[dict[str, Any]] | None = None,
    actual_cpu: str = "1",
    phase: str = "Running",
) -> dict[str, Any]:
    status: dict[str, Any] = {
        "phase": phase,
        "conditions": conditions or [],
        "containerStatuses": [{"name": "task", "resources": {"limits": {"cpu": actual_cpu}}}],
    }
    if observed is not None:
        status["observedGeneration"] = observed
    return {
        "metadata": {"generation": gen},
        "spec": {"containers": [{"name": "task", "resources": {"limits": {"cpu": "1"}}}]},
        "status": status,
    }


def test_resize_is_done_only_when_observed_unconditioned_and_actual() -> None:
    assert observe_resize(_pod(), 2, "task").progress is Progress.DONE
    assert observe_resize(_pod(observed=1), 2, "task").progress is Progress.WAITING
    assert observe_resize(_pod(actual_cpu="500m"), 2, "task").progress is Progress.WAITING
    assert observe_resize(_pod(observed=None), 2, "task").progress is Progress.DONE  # pre-1.33 cluster


def test_resize_conditions_are_read_with_their_messages() -> None:
    deferred = {
        "type": "PodResizePending",
        "status": "True",
        "reason": "Deferred",
        "message": "m1",
        "observedGeneration": 2,
    }
    infeasible = {**deferred, "reason": "Infeasible", "message": "m2"}
    stale = {**deferred, "observedGeneration": 1}
    progress = {"type": "PodResizeInProgress", "status": "True", "observedGeneration": 2}
    error = {**progress, "reason": "Error", "message": "memory limit (1) below current usage"}
    assert observe_resize(_pod(conditions=[deferred]), 2, "task") == observe_resize(
        _pod(conditions=[deferred]), 2, "task"
    )
    assert observe_resize(_pod(conditions=[deferred]), 2, "task").progress is Progress.DEFERRED
    assert observe_resize(_pod(conditions=[infeasible]), 2, "task").message == "m2"
    assert observe_resize(_pod(conditions=[stale], observed=1), 2, "task").progress is Progress.WAITING
    assert observe_resize(_pod(conditions=[progress]), 2, "task").progress is Progress.IN_PROGRESS
    assert observe_resize(_pod(conditions=[error]), 2, "task").progress is Progress.IN_PROGRESS_ERROR
    assert observe_resize(_pod(phase="Failed"), 2, "task").progress is Progress.GONE


def test_oom_kills_are_read_from_the_container_state() -> None:
    pod = {
        "status": {
            "phase": "Failed",
            "containerStatuses": [
                {"name": "task", "state": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}}}
            ],
        }
    }
    state = task_state(pod, "task")
    assert state.kind is ExitKind.OOM_KILLED and state.exit_code == 137 and state.oom_events == 1
    restarted = {
        "status": {
            "phase": "Running",
            "containerStatuses": [
                {
                    "name": "task",
                    "state": {"running": {}},
                    "lastState": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}},
                }
            ],
        }
    }
    assert (
        task_state(restarted, "task").kind is ExitKind.RUNNING
        and task_state(restarted, "task").oom_events == 1
    )
    failed = {
        "status": {
            "phase": "Failed",
            "containerStatuses": [
                {"name": "task", "state": {"terminated": {"exitCode": 3, "reason": "Error"}}}
            ],
        }
    }
    assert task_state(failed, "task").kind is ExitKind.FAILED and task_state(failed, "task").exit_code == 3
    assert task_state(None, "task").kind is ExitKind.GONE


def test_usage_sums_containers_and_drops_unreadable_values() -> None:
    m = {
        "containers": [
            {"name": "a", "usage": {"cpu": "250000000n", "memory": "1024Ki"}},
            {"name": "b", "usage": {"cpu": "250m", "memory": "bogus"}},
        ]
    }
    u = usage_of(m)  # type: ignore[arg-type]
    assert u.cpu_cores == 0.5 and u.memory_bytes == 1024 * 1024
    assert usage_of({"containers": []}).is_empty()


def test_manifest_carries_identity_resize_policy_and_annotations() -> None:
    spec = ProvisionSpec(
        name="t-1",
        command=("python", "x.py"),
        labels={"run_id": "manual__2026-01-01T00:00:00+00:00"},
        annotations={"a": "b"},
        env={"X": "1"},
    )
    pod = pod_manifest(spec, Allocation(), KubernetesSettings(namespace="jobs"))
    assert pod["metadata"]["namespace"] == "jobs" and pod["metadata"]["annotations"] == {"a": "b"}
    assert pod["metadata"]["labels"]["run_id"] == "manual__2026-01-01T00_00_00_00_00"
    assert pod["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "airflow-predictive"
    c = pod["spec"]["containers"][0]
    assert c["resizePolicy"] == [
        {"resourceName": "cpu", "restartPolicy": "NotRequired"},
        {"resourceName": "memory", "restartPolicy": "NotRequired"},
    ]
    assert pod["spec"]["restartPolicy"] == "Never" and c["env"] == [{"name": "X", "value": "1"}]
    assert label_value("a" * 70 + "-") == "a" * 63


def test_retry_policy_retries_throttling_and_conflicts_but_not_existing_objects() -> None:
    call = Call(Verb.PATCH_RESIZE, "p")
    assert should_retry(call, Reply(429), 0, 4) and should_retry(call, Reply(0), 3, 4)
    assert not should_retry(call, Reply(429), 4, 4)
    assert should_retry(call, Reply(409, {"reason": "Conflict"}), 0, 4)
    assert not should_retry(call, Reply(409, {"reason": "AlreadyExists"}), 0, 4)
    assert not should_retry(call, Reply(422), 0, 4)
    assert backoff_s(0, Reply(429, retry_after_s=3), 0.2, 5) == 3
    assert backoff_s(3, Reply(500), 0.2, 5) == 1.6 and backoff_s(9, Reply(500), 0.2, 5) == 5
