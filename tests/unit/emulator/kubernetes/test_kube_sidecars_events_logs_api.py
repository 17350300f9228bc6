"""Simulated kubelet: native sidecar statuses, init containers, events, and the log endpoint."""

from __future__ import annotations

from airflow_predictive.emulator.kubernetes.kubelet import KubeletConfig
from airflow_predictive.emulator.kubernetes.messages import Request
from airflow_predictive.emulator.kubernetes.resources import EVENTS
from tests.unit.emulator.kubernetes.conftest import BURSTABLE, Cluster, container, make_cluster

SIDECAR = {"name": "proxy", "image": "busybox", "restartPolicy": "Always"}
INIT = {"name": "setup", "image": "busybox"}


def test_a_native_sidecar_has_a_running_started_ready_status(cluster: Cluster) -> None:
    assert cluster.create_pod("p", initContainers=[INIT, SIDECAR]).status == 201
    cluster.advance(1)
    status = cluster.pod("p")["status"]
    init = {s["name"]: s for s in status["initContainerStatuses"]}
    assert init["proxy"]["state"].get("running") and init["proxy"]["started"] and init["proxy"]["ready"]
    assert init["setup"]["state"]["terminated"]["reason"] == "Completed" and not init["setup"]["ready"]
    assert status["phase"] == "Running"
    assert cluster.conditions("p")["Initialized"]["status"] == "True"


def test_pods_without_init_containers_have_no_init_statuses(cluster: Cluster) -> None:
    cluster.create_pod("p")
    cluster.advance(1)
    assert "initContainerStatuses" not in cluster.pod("p")["status"]


def test_simulated_kubelet_records_no_events_by_default_but_can(cluster: Cluster) -> None:
    cluster.create_pod("p")
    cluster.advance(1)
    assert cluster.em.store.list(EVENTS, "default")[0] == []
    loud = make_cluster()
    loud.em.kubelet.config = KubeletConfig(events=True, actuation_delay_s=0.5)
    loud.create_pod("p")
    loud.advance(1)
    events = loud.call("GET", "/api/v1/namespaces/default/events", fieldSelector="involvedObject.name=p").body
    reasons = [e["reason"] for e in events["items"]]
    assert reasons == ["Scheduled", "Started"]
    assert events["items"][0]["source"]["component"] == "default-scheduler"
    assert events["items"][1]["involvedObject"]["fieldPath"] == "spec.containers{c}"


def test_repeated_events_bump_count_instead_of_adding_objects() -> None:
    c = make_cluster(cpu="1")
    c.em.kubelet.config = KubeletConfig(events=True)
    big = container(requests={"cpu": "2", "memory": "1Gi"}, limits={"cpu": "2", "memory": "1Gi"})
    c.create_pod("p", big)
    c.advance(1)
    c.create_pod("q", big)  # a different pod: its own FailedScheduling event
    c.advance(1)
    items = c.em.store.list(EVENTS, "default")[0]
    failed = [e for e in items if e["reason"] == "FailedScheduling"]
    assert {e["involvedObject"]["name"] for e in failed} == {"p", "q"}
    assert all(e["count"] == 1 and e["type"] == "Warning" for e in failed)


def test_log_endpoint_answers_like_the_api_server(cluster: Cluster) -> None:
    cluster.create_pod("p", BURSTABLE, container("d"))
    cluster.advance(1)
    base = "/api/v1/namespaces/default/pods/p/log"
    r = cluster.call("GET", base)
    assert (
        r.status == 400
        and "a container name must be specified for pod p, choose one of: [c d]" in r.body["message"]
    )
    r = cluster.call("GET", base, container="zzz")
    assert r.status == 400 and r.body["message"] == "container zzz is not valid for pod p"
    r = cluster.call("GET", base, container="c")
    assert r.status == 200 and r.body == "" and r.content_type == "text/plain"  # simulated: no output
    r = cluster.call("GET", base, container="c", tailLines="-1")
    assert r.status == 400
    assert cluster.call("GET", "/api/v1/namespaces/default/pods/nope/log").status == 404
    assert cluster.call("DELETE", base, container="c").status == 405


def test_discovery_lists_pods_log_as_get_only(cluster: Cluster) -> None:
    doc = cluster.call("GET", "/api/v1").body
    log = next(r for r in doc["resources"] if r["name"] == "pods/log")
    assert log["verbs"] == ["get"] and log["kind"] == "Pod"


def _status_cell(cluster: Cluster, name: str) -> str:
    accept = "application/json;as=Table;v=v1;g=meta.k8s.io"
    request = Request(
        "GET", f"/api/v1/namespaces/default/pods/{name}", {}, None, "application/json", None, accept
    )
    table = cluster.em.api.handle(request).body
    return str(table["rows"][0]["cells"][2])


def test_kubectl_status_column_shows_the_container_reason_like_kubectl(cluster: Cluster) -> None:
    oom = {"points": [{"t": 0, "memory": "10Mi"}, {"t": 1, "memory": "1Gi"}]}
    cluster.create_pod("p", restartPolicy="Never", workload=oom)
    cluster.advance(3)
    assert _status_cell(cluster, "p") == "OOMKilled"
    done = {"points": [{"t": 0, "memory": "10Mi"}], "duration": 1}
    cluster.create_pod("q", restartPolicy="Never", workload=done)
    cluster.advance(3)
    assert _status_cell(cluster, "q") == "Completed"


def test_events_table_has_kubectl_columns() -> None:
    c = make_cluster()
    c.em.kubelet.config = KubeletConfig(events=True)
    c.create_pod("p")
    c.advance(1)
    accept = "application/json;as=Table;v=v1;g=meta.k8s.io"
    table = c.em.api.handle(
        Request("GET", "/api/v1/namespaces/default/events", {}, None, "application/json", None, accept)
    ).body
    names = [col["name"] for col in table["columnDefinitions"] if col["priority"] == 0]
    assert names == ["Last Seen", "Type", "Reason", "Object", "Message"]
    first = table["rows"][0]["cells"]
    assert first[1:4] == ["Normal", "Scheduled", "pod/p"]
