"""The simulated kubelet on a manual clock: placement, resize conditions, usage, OOM kills."""

from __future__ import annotations

from tests.unit.emulator.kubernetes.conftest import Cluster, container, make_cluster


def _cs(cluster: Cluster, name: str) -> dict:
    return cluster.pod(name)["status"]["containerStatuses"][0]


def test_pod_is_placed_and_reports_actual_resources(cluster: Cluster) -> None:
    cluster.create_pod("p")
    cluster.advance(0.1)
    pod = cluster.pod("p")
    assert pod["spec"]["nodeName"] == "emulator-node-1"
    assert pod["status"]["phase"] == "Running"
    assert pod["status"]["observedGeneration"] == 1
    cs = pod["status"]["containerStatuses"][0]
    assert cs["resources"] == {
        "requests": {"cpu": "250m", "memory": "128Mi"},
        "limits": {"cpu": "500m", "memory": "256Mi"},
    }
    assert cs["allocatedResources"] == {"cpu": "250m", "memory": "128Mi"}


def test_pod_larger_than_any_node_stays_pending_unschedulable() -> None:
    cluster = make_cluster(cpu="1")
    cluster.create_pod("p", container(requests={"cpu": "2"}))
    cluster.advance(1)
    pod = cluster.pod("p")
    assert pod["status"]["phase"] == "Pending" and "nodeName" not in pod["spec"]
    cond = {c["type"]: c for c in pod["status"]["conditions"]}["PodScheduled"]
    assert (
        cond["reason"] == "Unschedulable"
        and cond["message"] == "0/1 nodes are available: 1 Insufficient cpu."
    )


def test_resize_is_in_progress_until_the_actuation_delay_passes(cluster: Cluster) -> None:
    cluster.create_pod("p")
    cluster.advance(0.1)
    r = cluster.resize(
        "p", [{"name": "c", "resources": {"requests": {"cpu": "400m"}, "limits": {"cpu": "800m"}}}]
    )
    assert r.body["metadata"]["generation"] == 2
    cluster.advance(1.0)
    conds = cluster.conditions("p")
    assert (
        conds["PodResizeInProgress"]["status"] == "True"
        and conds["PodResizeInProgress"]["observedGeneration"] == 2
    )
    cs = _cs(cluster, "p")
    assert cs["allocatedResources"]["cpu"] == "400m" and cs["resources"]["limits"]["cpu"] == "500m"
    cluster.advance(1.5)
    pod = cluster.pod("p")
    assert "PodResizeInProgress" not in {c["type"] for c in pod["status"]["conditions"]}
    assert pod["status"]["observedGeneration"] == 2
    assert pod["status"]["containerStatuses"][0]["resources"]["limits"]["cpu"] == "800m"


def test_resize_above_node_allocatable_is_infeasible_for_good() -> None:
    cluster = make_cluster(cpu="4")
    cluster.create_pod("p")
    cluster.advance(0.1)
    cluster.resize("p", [{"name": "c", "resources": {"requests": {"cpu": "5"}, "limits": {"cpu": "6"}}}])
    cluster.advance(10)
    cond = cluster.conditions("p")["PodResizePending"]
    assert cond["reason"] == "Infeasible"
    assert cond["message"] == "Node didn't have enough capacity: cpu, requested: 5000, capacity: 4000"
    assert _cs(cluster, "p")["resources"]["requests"]["cpu"] == "250m"


def test_resize_is_deferred_while_others_hold_the_room_then_admitted() -> None:
    cluster = make_cluster(cpu="2")
    cluster.create_pod(
        "a", container(requests={"cpu": "1", "memory": "64Mi"}, limits={"cpu": "2", "memory": "128Mi"})
    )
    cluster.create_pod(
        "b", container(requests={"cpu": "500m", "memory": "64Mi"}, limits={"cpu": "1", "memory": "128Mi"})
    )
    cluster.advance(0.1)
    cluster.resize("a", [{"name": "c", "resources": {"requests": {"cpu": "1800m"}}}])
    cluster.advance(5)
    cond = cluster.conditions("a")["PodResizePending"]
    assert cond["reason"] == "Deferred"
    assert (
        cond["message"] == "Node didn't have enough resource: cpu, requested: 1800, used: 500, capacity: 2000"
    )
    assert cluster.call("DELETE", "/api/v1/namespaces/default/pods/b", gracePeriodSeconds="0").status == 200
    cluster.advance(3)
    assert "PodResizePending" not in cluster.conditions("a")
    assert _cs(cluster, "a")["resources"]["requests"]["cpu"] == "1800m"


def test_memory_limit_below_usage_is_held_with_an_error() -> None:
    cluster = make_cluster()
    curve = {"points": [{"t": 0, "cpu": 0.1, "memory": "200Mi"}]}
    cluster.create_pod("p", workload=curve)
    cluster.advance(1)
    cluster.resize(
        "p", [{"name": "c", "resources": {"requests": {"memory": "100Mi"}, "limits": {"memory": "150Mi"}}}]
    )
    cluster.advance(5)
    cond = cluster.conditions("p")["PodResizeInProgress"]
    assert (
        cond["reason"] == "Error"
        and cond["message"] == f"memory limit ({150 * 1024 * 1024}) below current usage"
    )
    assert _cs(cluster, "p")["resources"]["limits"]["memory"] == "256Mi"
    assert _cs(cluster, "p")["restartCount"] == 0


def test_cpu_is_capped_at_the_limit_and_throttling_is_counted(cluster: Cluster) -> None:
    cluster.create_pod("p", workload={"points": [{"t": 0, "cpu": 2.0, "memory": "64Mi"}]})
    cluster.advance(20)
    m = cluster.call("GET", "/apis/metrics.k8s.io/v1beta1/namespaces/default/pods/p").body
    cpu_n = int(m["containers"][0]["usage"]["cpu"].rstrip("n"))
    assert abs(cpu_n - 500_000_000) < 1_000_000  # the 500m limit, not the 2-core demand
    assert m["containers"][0]["usage"]["memory"] == f"{64 * 1024}Ki"
    text = cluster.call("GET", "/api/v1/nodes/emulator-node-1/proxy/metrics/cadvisor").body
    throttled = next(
        line for line in text.splitlines() if line.startswith("container_cpu_cfs_throttled_periods_total")
    )
    assert int(throttled.rsplit(" ", 1)[1]) >= 190


def test_memory_above_the_limit_is_oom_killed_and_restarted(cluster: Cluster) -> None:
    curve = {"points": [{"t": 0, "memory": "64Mi"}, {"t": 10, "memory": "512Mi"}]}
    cluster.create_pod("p", workload=curve)
    cluster.advance(8)
    cs = _cs(cluster, "p")
    assert cs["restartCount"] == 1
    assert (
        cs["lastState"]["terminated"]["reason"] == "OOMKilled"
        and cs["lastState"]["terminated"]["exitCode"] == 137
    )
    assert cs["state"]["waiting"]["reason"] == "CrashLoopBackOff"


def test_never_restart_pod_fails_with_oom_killed(cluster: Cluster) -> None:
    curve = {"points": [{"t": 0, "memory": "64Mi"}, {"t": 4, "memory": "1Gi"}]}
    cluster.create_pod("p", workload=curve, restartPolicy="Never")
    cluster.advance(5)
    pod = cluster.pod("p")
    assert pod["status"]["phase"] == "Failed"
    term = pod["status"]["containerStatuses"][0]["state"]["terminated"]
    assert term["reason"] == "OOMKilled" and term["exitCode"] == 137


def test_growing_memory_in_time_prevents_the_oom(cluster: Cluster) -> None:
    curve = {"points": [{"t": 0, "memory": "64Mi"}, {"t": 10, "memory": "400Mi"}], "duration": 12}
    cluster.create_pod("p", workload=curve, restartPolicy="Never")
    cluster.advance(1)
    cluster.resize("p", [{"name": "c", "resources": {"limits": {"memory": "1Gi"}}}])
    cluster.advance(13)
    pod = cluster.pod("p")
    assert pod["status"]["phase"] == "Succeeded"
    assert pod["status"]["containerStatuses"][0]["state"]["terminated"]["reason"] == "Completed"


def test_summary_reports_network_and_filesystem_counters(cluster: Cluster) -> None:
    cluster.create_pod(
        "p", workload={"points": [{"t": 0, "rx_bps": 1000, "tx_bps": 500, "fs_write_bps": 100}]}
    )
    cluster.advance(10)
    summary = cluster.call("GET", "/api/v1/nodes/emulator-node-1/proxy/stats/summary").body
    pod = next(p for p in summary["pods"] if p["podRef"]["name"] == "p")
    assert abs(pod["network"]["rxBytes"] - 10_000) <= 1000
    assert abs(pod["network"]["txBytes"] - 5_000) <= 500
    assert abs(pod["ephemeral-storage"]["usedBytes"] - 1_000) <= 100


def test_metrics_of_a_pod_that_is_not_running_are_not_found() -> None:
    cluster = make_cluster(cpu="1")
    cluster.create_pod("p", container(requests={"cpu": "2"}))
    cluster.advance(1)
    r = cluster.call("GET", "/apis/metrics.k8s.io/v1beta1/namespaces/default/pods/p")
    assert r.status == 404 and r.body["reason"] == "NotFound"


def test_graceful_delete_marks_then_removes_the_pod(cluster: Cluster) -> None:
    cluster.create_pod("p")
    cluster.advance(0.1)
    r = cluster.call("DELETE", "/api/v1/namespaces/default/pods/p")
    assert r.status == 200 and r.body["metadata"]["deletionTimestamp"]
    cluster.advance(0.5)
    assert cluster.call("GET", "/api/v1/namespaces/default/pods/p").status == 404
