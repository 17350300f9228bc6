"""The read-only observation endpoints: metrics.k8s.io (PodMetrics, NodeMetrics) and the kubelet
proxy paths (``stats/summary``, ``metrics/cadvisor``), answered from the simulated kubelet's state
under the emulator's lock. They never change anything.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from airflow_predictive.emulator.kubernetes.errors import ApiError, not_found
from airflow_predictive.emulator.kubernetes.messages import Response
from airflow_predictive.emulator.kubernetes.metrics import cadvisor_text, pod_metrics, stats_summary
from airflow_predictive.emulator.kubernetes.resources import NODES, PODS
from airflow_predictive.emulator.kubernetes.store import Selector

if TYPE_CHECKING:
    from airflow_predictive.emulator.kubernetes.api import Api
    from airflow_predictive.emulator.kubernetes.messages import Request
    from airflow_predictive.emulator.kubernetes.store import Resource


def metrics_response(
    api: Api, req: Request, resource: Resource, namespace: str | None, name: str | None
) -> Response:
    if req.method != "GET":
        raise ApiError(
            405, "MethodNotAllowed", "the server does not allow this method on the requested resource"
        )
    if resource.plural == "nodes":
        return _node_metrics(api, name)
    selector = Selector(req.query.get("labelSelector"), req.query.get("fieldSelector"))
    if name is not None:
        pods = [api.store.get(PODS, namespace or "", name)]
    else:
        pods = api.store.list(PODS, namespace, selector)[0]
    items = []
    with api.lock:
        for pod in pods:
            rt = api.kubelet.pods.get(pod["metadata"]["uid"])
            doc = pod_metrics(api.kubelet, pod, rt) if rt is not None else None
            if doc is not None:
                items.append(doc)
    if name is not None:
        if not items:
            raise not_found("PodMetrics", "metrics.k8s.io", name)
        return Response(200, items[0])
    return Response(
        200,
        {
            "kind": "PodMetricsList",
            "apiVersion": "metrics.k8s.io/v1beta1",
            "metadata": {},
            "items": items,
        },
    )


def _node_metrics(api: Api, name: str | None) -> Response:
    nodes = api.store.list(NODES, None)[0]
    items = []
    with api.lock:
        for node in nodes:
            node_name = node["metadata"]["name"]
            if name is not None and node_name != name:
                continue
            pods = [rt for rt in api.kubelet.pods.values() if rt.node == node_name and rt.started]
            cpu = sum(c.cpu_rate for rt in pods for c in rt.containers.values())
            mem = sum(c.memory for rt in pods for c in rt.containers.values() if c.running)
            items.append(
                {
                    "kind": "NodeMetrics",
                    "apiVersion": "metrics.k8s.io/v1beta1",
                    "metadata": {"name": node_name, "creationTimestamp": api.kubelet.ts()},
                    "timestamp": api.kubelet.ts(),
                    "window": f"{int(api.kubelet.config.metrics_window_s)}s",
                    "usage": {"cpu": f"{int(cpu * 1e9)}n", "memory": f"{int(mem // 1024)}Ki"},
                }
            )
    if name is not None:
        if not items:
            raise not_found("NodeMetrics", "metrics.k8s.io", name)
        return Response(200, items[0])
    return Response(
        200,
        {
            "kind": "NodeMetricsList",
            "apiVersion": "metrics.k8s.io/v1beta1",
            "metadata": {},
            "items": items,
        },
    )


def node_proxy(api: Api, req: Request, node: str, path: str) -> Response:
    api.store.get(NODES, "", node)
    if req.method != "GET":
        raise ApiError(
            405, "MethodNotAllowed", "the server does not allow this method on the requested resource"
        )
    if path == "stats/summary":
        pods = {p["metadata"]["uid"]: p for p in api.store.list(PODS, None)[0]}
        with api.lock:
            return Response(200, stats_summary(api.kubelet, node, pods))
    if path == "metrics/cadvisor":
        with api.lock:
            return Response(200, cadvisor_text(api.kubelet, node), "text/plain; version=0.0.4")
    raise ApiError(404, "NotFound", "the server could not find the requested resource")
