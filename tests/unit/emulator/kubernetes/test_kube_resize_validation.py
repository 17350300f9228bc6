"""Upstream's resize validation cases (TestValidatePodResize, the pod_resize e2e error table),
replayed against the emulator's /resize endpoint with their exact messages and field paths."""

from __future__ import annotations

import pytest

from airflow_predictive.emulator.kubernetes.patch import MERGE
from tests.unit.emulator.kubernetes.conftest import BURSTABLE, Cluster, container

GUARANTEED = container(requests={"cpu": "500m", "memory": "256Mi"}, limits={"cpu": "500m", "memory": "256Mi"})


def _message(r) -> str:
    assert r.status == 422, r.body
    assert r.body["reason"] == "Invalid" and r.body["kind"] == "Status" and r.body["code"] == 422
    return r.body["message"]


def test_best_effort_pod_cannot_gain_memory_request(cluster: Cluster) -> None:
    cluster.create_pod("p", container())
    r = cluster.resize("p", [{"name": "c", "resources": {"requests": {"memory": "40Mi"}}}])
    assert (
        _message(r)
        == 'Pod "p" is invalid: spec: Invalid value: "BestEffort": Pod QOS Class may not change as a result of resizing'
    )
    assert r.body["details"]["causes"] == [
        {
            "reason": "FieldValueInvalid",
            "message": 'Invalid value: "BestEffort": Pod QOS Class may not change as a result of resizing',
            "field": "spec",
        }
    ]


def test_guaranteed_pod_cannot_change_only_its_cpu_limit(cluster: Cluster) -> None:
    cluster.create_pod("p", GUARANTEED)
    r = cluster.resize("p", [{"name": "c", "resources": {"limits": {"cpu": "1"}}}])
    assert 'spec: Invalid value: "Guaranteed": Pod QOS Class may not change' in _message(r)


def test_burstable_pod_cannot_become_guaranteed(cluster: Cluster) -> None:
    cluster.create_pod("p")
    r = cluster.resize("p", [{"name": "c", "resources": {"requests": {"cpu": "500m", "memory": "256Mi"}}}])
    assert (
        'spec: Invalid value: "Burstable": Pod QOS Class may not change as a result of resizing'
        in _message(r)
    )


def test_guaranteed_pod_resizes_requests_and_limits_together(cluster: Cluster) -> None:
    cluster.create_pod("p", GUARANTEED)
    r = cluster.resize("p", [{"name": "c", "resources": {"requests": {"cpu": "1"}, "limits": {"cpu": "1"}}}])
    assert r.status == 200, r.body


@pytest.mark.parametrize(
    ("start", "patch", "message"),
    [
        (
            BURSTABLE,
            {"limits": {"memory": None}},
            "spec.containers[0].resources.limits: Forbidden: resource limits cannot be removed",
        ),
        (
            BURSTABLE,
            {"limits": {"cpu": None}},
            "spec.containers[0].resources.limits: Forbidden: resource limits cannot be removed",
        ),
        (
            container(requests={"cpu": "200m", "memory": "250Mi"}, limits={"memory": "500Mi"}),
            {"requests": {"cpu": None}},
            "spec.containers[0].resources.requests: Forbidden: resource requests cannot be removed",
        ),
        (
            container(requests={"cpu": "200m", "memory": "250Mi"}, limits={"cpu": "400m"}),
            {"requests": {"memory": None}},
            "spec.containers[0].resources.requests: Forbidden: resource requests cannot be removed",
        ),
    ],
)
def test_requests_and_limits_cannot_be_removed(cluster: Cluster, start, patch, message) -> None:
    cluster.create_pod("p", start)
    assert message in _message(cluster.resize("p", [{"name": "c", "resources": patch}]))


def test_request_above_limit_is_invalid(cluster: Cluster) -> None:
    cluster.create_pod(
        "p", container(requests={"cpu": "100m", "memory": "64Mi"}, limits={"cpu": "300m", "memory": "128Mi"})
    )
    r = cluster.resize("p", [{"name": "c", "resources": {"requests": {"cpu": "500m"}}}])
    assert (
        'spec.containers[0].resources.requests: Invalid value: "500m": must be less than or equal to cpu limit of 300m'
        in _message(r)
    )


def test_only_cpu_and_memory_are_mutable(cluster: Cluster) -> None:
    cluster.create_pod("p")
    r = cluster.resize("p", [{"name": "c", "resources": {"limits": {"ephemeral-storage": "1Gi"}}}])
    assert _message(r) == 'Pod "p" is invalid: spec: Forbidden: only cpu and memory resources are mutable'


def test_non_sidecar_init_container_is_immutable_but_sidecar_resizes(cluster: Cluster) -> None:
    init = container("init", requests={"cpu": "10m", "memory": "1Mi"}, limits={"cpu": "20m", "memory": "2Mi"})
    side = container(
        "side",
        requests={"cpu": "10m", "memory": "8Mi"},
        limits={"cpu": "20m", "memory": "16Mi"},
        restartPolicy="Always",
    )
    cluster.call(
        "POST",
        "/api/v1/namespaces/default/pods",
        {"metadata": {"name": "p"}, "spec": {"initContainers": [init, side], "containers": [BURSTABLE]}},
    )
    body = {"spec": {"initContainers": [{"name": "init", "resources": {"limits": {"cpu": "30m"}}}]}}
    r = cluster.call(
        "PATCH", "/api/v1/namespaces/default/pods/p/resize", body, "application/strategic-merge-patch+json"
    )
    assert (
        "spec.initContainers[0].resources: Forbidden: resources for non-sidecar init containers are immutable"
        in _message(r)
    )
    body = {"spec": {"initContainers": [{"name": "side", "resources": {"limits": {"cpu": "40m"}}}]}}
    r = cluster.call(
        "PATCH", "/api/v1/namespaces/default/pods/p/resize", body, "application/strategic-merge-patch+json"
    )
    assert r.status == 200
    assert r.body["spec"]["initContainers"][1]["resources"]["limits"]["cpu"] == "40m"


def test_containers_may_not_be_reordered(cluster: Cluster) -> None:
    c1 = container("c1", requests={"cpu": "100m"})
    c2 = container("c2", requests={"cpu": "100m"})
    cluster.create_pod("p", c1, c2)
    body = {"spec": {"$setElementOrder/containers": [{"name": "c2"}, {"name": "c1"}], "containers": []}}
    r = cluster.call(
        "PATCH", "/api/v1/namespaces/default/pods/p/resize", body, "application/strategic-merge-patch+json"
    )
    assert (
        "spec.containers[0].name: Forbidden: containers may not be renamed or reordered on resize, "
        "spec.containers[1].name: Forbidden: containers may not be renamed or reordered on resize"
    ) in _message(r)


def test_containers_may_not_be_added(cluster: Cluster) -> None:
    cluster.create_pod("p")
    r = cluster.resize("p", [{"name": "extra", "image": "x", "resources": {"requests": {"cpu": "1m"}}}])
    assert "spec.containers: Forbidden: containers may not be added or removed on resize" in _message(r)


def test_static_pods_cannot_be_resized(cluster: Cluster) -> None:
    body = {
        "metadata": {"name": "p", "annotations": {"kubernetes.io/config.mirror": "x"}},
        "spec": {"containers": [BURSTABLE]},
    }
    assert cluster.call("POST", "/api/v1/namespaces/default/pods", body).status == 201
    r = cluster.resize("p", [{"name": "c", "resources": {"limits": {"cpu": "1"}}}])
    assert _message(r) == 'Pod "p" is invalid: Forbidden: static pods cannot be resized'


def test_json_merge_patch_on_resize_takes_only_the_resources(cluster: Cluster) -> None:
    cluster.create_pod("p")
    resources = {"requests": {"cpu": "250m", "memory": "128Mi"}, "limits": {"cpu": "1", "memory": "256Mi"}}
    r = cluster.resize("p", [{"name": "c", "resources": resources}], ctype=MERGE)
    assert r.status == 200, r.body
    c = r.body["spec"]["containers"][0]
    assert c["image"] == "busybox" and c["resources"]["limits"]["cpu"] == "1"


def test_json_merge_patch_on_resize_replaces_the_whole_resources_block(cluster: Cluster) -> None:
    cluster.create_pod("p")  # RFC 7386 replaces the list: requests left out are removed, as upstream
    r = cluster.resize("p", [{"name": "c", "resources": {"limits": {"cpu": "1"}}}], ctype=MERGE)
    assert "resource requests cannot be removed" in _message(r)
    assert "image: Required value" not in _message(r)


def test_memory_limit_may_decrease_in_1_35(cluster: Cluster) -> None:
    cluster.create_pod("p")
    r = cluster.resize("p", [{"name": "c", "resources": {"limits": {"memory": "200Mi"}}}])
    assert r.status == 200
    assert r.body["spec"]["containers"][0]["resources"]["limits"]["memory"] == "200Mi"


def test_resize_keeps_only_resources_and_bumps_generation_once(cluster: Cluster) -> None:
    cluster.create_pod("p")
    before = cluster.pod("p")
    r = cluster.resize("p", [{"name": "c", "image": "other", "resources": {"limits": {"cpu": "1"}}}])
    assert r.status == 200
    assert r.body["spec"]["containers"][0]["image"] == "busybox"
    assert r.body["metadata"]["generation"] == before["metadata"]["generation"] + 1
    assert int(r.body["metadata"]["resourceVersion"]) > int(before["metadata"]["resourceVersion"])


def test_plain_pod_update_cannot_change_resources(cluster: Cluster) -> None:
    cluster.create_pod("p")
    body = {"spec": {"containers": [{"name": "c", "resources": {"limits": {"cpu": "1"}}}]}}
    r = cluster.call(
        "PATCH", "/api/v1/namespaces/default/pods/p", body, "application/strategic-merge-patch+json"
    )
    assert "spec: Forbidden: pod updates may not change fields other than" in _message(r)
    labels = {"metadata": {"labels": {"x": "y"}}}
    assert (
        cluster.call(
            "PATCH", "/api/v1/namespaces/default/pods/p", labels, "application/merge-patch+json"
        ).status
        == 200
    )


def test_never_restart_pods_need_not_required_resize_policy(cluster: Cluster) -> None:
    c = container(
        requests={"cpu": "100m"},
        resizePolicy=[{"resourceName": "memory", "restartPolicy": "RestartContainer"}],
    )
    r = cluster.create_pod("p", c, restartPolicy="Never")
    assert (
        "spec.containers[0].resizePolicy: Invalid value: \"RestartContainer\": must be 'NotRequired' when `restartPolicy` is 'Never'"
        in _message(r)
    )


def test_request_above_limit_is_refused_at_creation(cluster: Cluster) -> None:
    r = cluster.create_pod("p", container(requests={"cpu": "2"}, limits={"cpu": "1"}))
    assert (
        'spec.containers[0].resources.requests: Invalid value: "2": must be less than or equal to cpu limit of 1'
        in _message(r)
    )


def test_limits_default_the_requests_like_the_server(cluster: Cluster) -> None:
    cluster.create_pod("p", container(limits={"cpu": "1", "memory": "1Gi"}))
    pod = cluster.pod("p")
    assert pod["spec"]["containers"][0]["resources"]["requests"] == {"cpu": "1", "memory": "1Gi"}
    assert pod["status"]["qosClass"] == "Guaranteed"
