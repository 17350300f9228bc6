"""with_pod_sampler makes a pod the in-pod sampler can work in: a native sidecar first among the
init containers, a shared PID namespace, the try's identity on its command line, the store URL from
a Secret, and the pod's QoS class unchanged."""

from __future__ import annotations

import pytest
from kubernetes.client import ApiClient
from kubernetes.client import models as k8s

from airflow_predictive.backends.kubernetes.pod_sampler import (
    SAMPLER_CONTAINER,
    sampler_command,
    with_pod_sampler,
)
from airflow_predictive.emulator.kubernetes.validation import compute_qos
from airflow_predictive.sampling.pod_sampler import parse_args


def _pod(requests: dict[str, str], limits: dict[str, str]) -> k8s.V1Pod:
    base = k8s.V1Container(
        name="base",
        image="me/task:1",
        resources=k8s.V1ResourceRequirements(requests=requests, limits=limits),
    )
    init = k8s.V1Container(name="setup", image="me/task:1")
    return k8s.V1Pod(
        metadata=k8s.V1ObjectMeta(name="p"), spec=k8s.V1PodSpec(containers=[base], init_containers=[init])
    )


def _qos(pod: k8s.V1Pod) -> str:
    return compute_qos(ApiClient().sanitize_for_serialization(pod))


def test_the_sampler_is_a_native_sidecar_first_in_a_shared_pid_namespace() -> None:
    pod = with_pod_sampler(
        _pod({"memory": "64Mi"}, {"memory": "128Mi"}),
        "d",
        "t",
        "r1",
        try_number=2,
        store_secret=("db", "url"),
    )
    sidecar = pod.spec.init_containers[0]
    assert pod.spec.share_process_namespace is True
    assert (sidecar.name, sidecar.restart_policy, sidecar.image) == (SAMPLER_CONTAINER, "Always", "me/task:1")
    assert [c.name for c in pod.spec.init_containers] == [SAMPLER_CONTAINER, "setup"]
    args = parse_args(sidecar.command[3:])  # python -m <module> <args>: the sampler reads them back
    assert (args.dag_id, args.task_id, args.run_id, args.try_number) == ("d", "t", "r1", 2)
    env = {e.name: e for e in sidecar.env}
    assert env["AIRFLOW_PREDICTIVE_STORE_URL"].value_from.secret_key_ref.name == "db"
    assert env["AIRFLOW_PREDICTIVE_POD_NAME"].value_from.field_ref.field_path == "metadata.name"
    again = with_pod_sampler(pod, "d", "t", "r1", store_url="sqlite://")
    assert [c.name for c in again.spec.init_containers].count(SAMPLER_CONTAINER) == 1


def test_a_guaranteed_pod_stays_guaranteed_and_a_burstable_one_gets_a_tiny_sampler() -> None:
    guaranteed = _pod({"cpu": "1", "memory": "1Gi"}, {"cpu": "1", "memory": "1Gi"})
    guaranteed.spec.init_containers = None
    assert _qos(guaranteed) == "Guaranteed"
    assert _qos(with_pod_sampler(guaranteed, "d", "t", "r", store_url="sqlite://")) == "Guaranteed"
    burstable = with_pod_sampler(_pod({"memory": "64Mi"}, {"memory": "128Mi"}), "d", "t", "r", store_url="x")
    res = burstable.spec.init_containers[0].resources
    assert res.requests == {"cpu": "10m", "memory": "64Mi"} and "cpu" not in res.limits


def test_exactly_one_store_address_and_an_image_are_needed() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        with_pod_sampler(_pod({}, {}), "d", "t", "r")
    empty = k8s.V1Pod(spec=k8s.V1PodSpec(containers=[]))
    with pytest.raises(ValueError, match="image"):
        with_pod_sampler(empty, "d", "t", "r", store_url="x")
    assert sampler_command("d", "t", "r", interval_s=0.5)[-4:] == ["--interval", "0.5", "--flush", "0.5"]
