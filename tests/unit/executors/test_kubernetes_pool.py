from __future__ import annotations

from kubernetes.client import models as k8s

from airflow_predictive.core.model.backend import Allocation, Capacity
from airflow_predictive.core.model.resources import GIB, ResourceVector
from airflow_predictive.executors.kubernetes_pool import namespace_capacity, with_env, with_planned_resources


def test_capacity_is_the_tightest_quota_less_what_other_pods_use() -> None:
    quotas = [
        {
            "spec": {"hard": {"requests.memory": "8Gi", "limits.memory": "16Gi", "requests.cpu": "4"}},
            "status": {"used": {"requests.memory": "3Gi", "limits.memory": "3Gi", "requests.cpu": "1"}},
        },
        {"spec": {"hard": {"memory": "6Gi"}}, "status": {"used": {"memory": "3Gi"}}},
    ]
    ours = ResourceVector(memory_bytes=1 * GIB)  # ours are in the ledger already: not subtracted twice
    cap = namespace_capacity(quotas, ours_used=ours, ours_limits=ours)
    assert cap.requests.memory_bytes == 4 * GIB  # min(8 - 2, 6 - 2)
    assert cap.limits.memory_bytes == 14 * GIB and cap.requests.cpu_cores == 3.0


def test_nodes_bound_the_requests_side_and_nothing_known_is_unknown() -> None:
    nodes = Capacity(
        allocatable=ResourceVector(memory_bytes=32 * GIB, cpu_cores=8.0),
        allocated=ResourceVector(memory_bytes=30 * GIB, cpu_cores=1.0),
    )
    cap = namespace_capacity([], nodes=nodes)
    assert cap.requests.memory_bytes == 2 * GIB and cap.requests.cpu_cores == 7.0
    assert namespace_capacity([]).is_unknown()


def test_the_plan_goes_on_the_base_container_of_a_copy_of_the_pod_override() -> None:
    own = k8s.V1Pod(spec=k8s.V1PodSpec(containers=[k8s.V1Container(name="base", image="mine:1")]))
    config = {"pod_override": own, "predictive": True}
    plan = Allocation(
        requests=ResourceVector(memory_bytes=GIB, cpu_cores=0.5), limits=ResourceVector(memory_bytes=GIB)
    )
    out = with_planned_resources(config, plan)
    base = out["pod_override"].spec.containers[0]
    assert base.image == "mine:1" and base.resources.requests == {"cpu": "500m", "memory": str(int(GIB))}
    assert base.resources.limits == {"memory": str(int(GIB))}
    assert own.spec.containers[0].resources is None and out["predictive"] is True
    fresh = with_planned_resources(None, plan)["pod_override"]
    assert fresh.spec.containers[0].name == "base"


def test_the_store_env_goes_on_the_base_container_and_keeps_what_the_task_set() -> None:
    from airflow.providers.cncf.kubernetes.pod_generator import PodGenerator

    own = k8s.V1Container(
        name="base", env=[k8s.V1EnvVar(name="MINE", value="1"), k8s.V1EnvVar(name="S", value="a")]
    )
    config = {"pod_override": k8s.V1Pod(spec=k8s.V1PodSpec(containers=[own]))}
    out = with_env(config, {"S": "b", "STORE": "sqlite:////x/predictive.db"})
    assert [(e.name, e.value) for e in own.env] == [("MINE", "1"), ("S", "a")]  # the task's own: untouched
    template = k8s.V1Pod(
        spec=k8s.V1PodSpec(
            containers=[k8s.V1Container(name="base", env=[k8s.V1EnvVar(name="AIRFLOW_HOME", value="/h")])]
        )
    )
    pod = PodGenerator.reconcile_pods(template, out["pod_override"])
    env = {e.name: e.value for e in pod.spec.containers[0].env}
    assert env == {"AIRFLOW_HOME": "/h", "MINE": "1", "S": "a", "STORE": "sqlite:////x/predictive.db"}
