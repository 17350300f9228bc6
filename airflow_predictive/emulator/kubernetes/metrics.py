"""Usage read-outs of the simulated kubelet in the shapes real clusters publish them.

``pod_metrics`` is metrics-server's ``metrics.k8s.io/v1beta1`` PodMetrics (CPU as a rate over the
window in nanocores, memory as working set in Ki); ``stats_summary`` is the kubelet's
``/stats/summary`` (cumulative CPU, network and filesystem counters per pod). Both only read the
kubelet's state; a pod that is not running has no metrics (404 like metrics-server).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow_predictive.emulator.kubernetes.kubelet import ContainerRuntime, Kubelet, PodRuntime
    from airflow_predictive.emulator.kubernetes.store import Obj


def _window(kubelet: Kubelet) -> str:
    return f"{int(kubelet.config.metrics_window_s)}s"


def pod_metrics(kubelet: Kubelet, pod: Obj, rt: PodRuntime) -> dict[str, Any] | None:
    """The pod's PodMetrics; with ``metrics_resolution_s`` the last scrape until the next is due."""
    if not rt.started or rt.finished:
        kubelet.scraped.pop(rt.uid, None)
        return None
    now = kubelet.clock.monotonic()
    resolution = kubelet.config.metrics_resolution_s
    if resolution > 0:
        last = kubelet.scraped.get(rt.uid)
        if last is not None and now - last[0] < resolution:
            return last[1]
        doc = _scrape(kubelet, pod, rt, now)
        kubelet.scraped[rt.uid] = (now, doc)
        return doc
    return _scrape(kubelet, pod, rt, now)


def _scrape(kubelet: Kubelet, pod: Obj, rt: PodRuntime, now: float) -> dict[str, Any]:
    meta = pod["metadata"]
    containers = []
    for name, cr in rt.containers.items():
        rate = cr.window_rate(now, kubelet.config.metrics_window_s) if cr.running else 0.0
        containers.append(
            {
                "name": name,
                "usage": {
                    "cpu": f"{max(0, math.floor(rate * 1e9))}n",
                    "memory": f"{math.ceil(cr.memory / 1024) if cr.running else 0}Ki",
                },
            }
        )
    return {
        "kind": "PodMetrics",
        "apiVersion": "metrics.k8s.io/v1beta1",
        "metadata": {
            "name": meta["name"],
            "namespace": meta["namespace"],
            "creationTimestamp": kubelet.ts(),
            "labels": dict(meta.get("labels") or {}),
        },
        "timestamp": kubelet.ts(),
        "window": _window(kubelet),
        "containers": containers,
    }


def _container_stats(kubelet: Kubelet, cr: ContainerRuntime) -> dict[str, Any]:
    ts = kubelet.ts()
    working = int(cr.memory) if cr.running else 0
    return {
        "name": cr.name,
        "startTime": cr.started_ts,
        "cpu": {
            "time": ts,
            "usageNanoCores": int(cr.cpu_rate * 1e9),
            "usageCoreNanoSeconds": int(cr.cpu_seconds * 1e9),
        },
        "memory": {"time": ts, "workingSetBytes": working, "usageBytes": working, "rssBytes": working},
        "rootfs": {"time": ts, "usedBytes": int(cr.fs_write_bytes)},
        "logs": {"time": ts, "usedBytes": 0},
    }


def stats_summary(kubelet: Kubelet, node: str, pods: dict[str, Obj]) -> dict[str, Any]:
    """The kubelet summary of one node; ``pods`` maps uid to the API object."""
    ts = kubelet.ts()
    out_pods = []
    node_cpu = node_mem = 0.0
    for uid, rt in list(kubelet.pods.items()):
        if rt.node != node or not rt.started or uid not in pods:
            continue
        containers = [_container_stats(kubelet, cr) for cr in rt.containers.values()]
        cpu_rate = sum(cr.cpu_rate for cr in rt.containers.values())
        cpu_total = sum(cr.cpu_seconds for cr in rt.containers.values())
        mem = sum(cr.memory for cr in rt.containers.values() if cr.running)
        node_cpu += cpu_rate
        node_mem += mem
        out_pods.append(
            {
                "podRef": {"name": rt.name, "namespace": rt.namespace, "uid": uid},
                "startTime": rt.start_ts,
                "containers": containers,
                "cpu": {
                    "time": ts,
                    "usageNanoCores": int(cpu_rate * 1e9),
                    "usageCoreNanoSeconds": int(cpu_total * 1e9),
                },
                "memory": {"time": ts, "workingSetBytes": int(mem), "usageBytes": int(mem)},
                "network": {
                    "time": ts,
                    "name": "eth0",
                    "rxBytes": int(sum(c.rx_bytes for c in rt.containers.values())),
                    "txBytes": int(sum(c.tx_bytes for c in rt.containers.values())),
                    "interfaces": [
                        {
                            "name": "eth0",
                            "rxBytes": int(sum(c.rx_bytes for c in rt.containers.values())),
                            "txBytes": int(sum(c.tx_bytes for c in rt.containers.values())),
                        }
                    ],
                },
                "ephemeral-storage": {
                    "time": ts,
                    "usedBytes": int(sum(c.fs_write_bytes for c in rt.containers.values())),
                },
                "process_stats": {"process_count": len(containers)},
            }
        )
    return {
        "node": {
            "nodeName": node,
            "startTime": ts,
            "cpu": {"time": ts, "usageNanoCores": int(node_cpu * 1e9)},
            "memory": {"time": ts, "workingSetBytes": int(node_mem)},
        },
        "pods": out_pods,
    }


def cadvisor_text(kubelet: Kubelet, node: str) -> str:
    """A few cAdvisor series in Prometheus text format (throttling, fs and OOM counters)."""
    lines = [
        "# TYPE container_cpu_usage_seconds_total counter",
        "# TYPE container_cpu_cfs_periods_total counter",
        "# TYPE container_cpu_cfs_throttled_periods_total counter",
        "# TYPE container_memory_working_set_bytes gauge",
        "# TYPE container_fs_reads_bytes_total counter",
        "# TYPE container_fs_writes_bytes_total counter",
        "# TYPE container_network_receive_bytes_total counter",
        "# TYPE container_network_transmit_bytes_total counter",
        "# TYPE container_oom_events_total counter",
    ]
    for rt in list(kubelet.pods.values()):
        if rt.node != node or not rt.started:
            continue
        for cr in rt.containers.values():
            labels = f'container="{cr.name}",namespace="{rt.namespace}",pod="{rt.name}"'
            lines += [
                f"container_cpu_usage_seconds_total{{{labels}}} {cr.cpu_seconds:.6f}",
                f"container_cpu_cfs_periods_total{{{labels}}} {int(cr.periods)}",
                f"container_cpu_cfs_throttled_periods_total{{{labels}}} {int(cr.throttled_periods)}",
                f"container_memory_working_set_bytes{{{labels}}} {int(cr.memory if cr.running else 0)}",
                f"container_fs_reads_bytes_total{{{labels}}} {int(cr.fs_read_bytes)}",
                f"container_fs_writes_bytes_total{{{labels}}} {int(cr.fs_write_bytes)}",
                f"container_network_receive_bytes_total{{{labels}}} {int(cr.rx_bytes)}",
                f"container_network_transmit_bytes_total{{{labels}}} {int(cr.tx_bytes)}",
                f"container_oom_events_total{{{labels}}} {cr.oom_events}",
            ]
    return "\n".join(lines) + "\n"
