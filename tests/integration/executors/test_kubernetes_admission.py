"""Against the Kubernetes emulator (real HTTP, real kubernetes client): a namespace ResourceQuota
becomes the pool's capacity, a task whose plan would exceed it waits (instead of its pod being
refused with 403) and is admitted when the running one ends; the worker pod KubernetesExecutor's
PodGenerator builds from our pod_override carries the planned resources and the emulator accepts
it under the quota."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pytest
from kubernetes import client as k8s_client
from kubernetes import config as k8s_config
from kubernetes.client import models as k8s

from airflow_predictive.core.model.plan import AdmissionDecision
from airflow_predictive.core.model.quantity import parse_quantity
from airflow_predictive.core.model.query import ForecastQuery, ForecastSource, ServedForecast
from airflow_predictive.core.model.resources import GIB, Metric
from airflow_predictive.core.model.runs import RunIdentity, TaskKey
from airflow_predictive.core.model.series import DemandCurve, Forecast
from airflow_predictive.core.scheduling.ledger import InMemoryLedger
from airflow_predictive.executors.coordinator import Coordinator, CoordinatorSettings
from airflow_predictive.executors.kubernetes_pool import (
    namespace_capacity,
    namespace_pool,
    with_planned_resources,
)
from airflow_predictive.executors.opt_in import task_settings

if TYPE_CHECKING:
    from pathlib import Path


class ThreeGiB:
    def forecast_for(self, query: ForecastQuery) -> ServedForecast:
        curve = DemandCurve(Metric.MEMORY_BYTES, 10.0, {0.99: np.full(6, 3 * GIB)})
        return ServedForecast(
            Forecast({Metric.MEMORY_BYTES: curve}, {0.9: 60.0}, "test"), ForecastSource.TASK
        )


def _api(kubeconfig: Path) -> k8s_client.CoreV1Api:
    return k8s_client.CoreV1Api(k8s_config.new_client_from_config(str(kubeconfig)))


def test_a_task_beyond_the_namespace_quota_waits_and_its_pod_carries_the_plan(kubeconfig: Path) -> None:
    api = _api(kubeconfig)
    api.create_namespaced_resource_quota(
        "default",
        k8s.V1ResourceQuota(
            metadata=k8s.V1ObjectMeta(name="q"),
            spec=k8s.V1ResourceQuotaSpec(hard={"requests.memory": "5Gi", "limits.memory": "5Gi"}),
        ),
    )
    quotas = [
        api.api_client.sanitize_for_serialization(q)
        for q in api.list_namespaced_resource_quota("default").items
    ]
    pool = namespace_pool("default", namespace_capacity(quotas))
    assert pool.capacity.requests.memory_bytes == 5 * GIB
    c = Coordinator(
        ledger=InMemoryLedger(), forecasts=ThreeGiB(), pool=pool, holder="h", settings=CoordinatorSettings()
    )
    for name in ("a", "b"):
        run = RunIdentity(TaskKey("d", name), "r1")
        c.submit(name, run, task_settings({"predictive": True}), ForecastQuery(run.key), 1)
    [first] = c.admit()
    assert first.key == "a" and "b" in c.waiting  # 3 + 3 GiB > 5 GiB quota: b waits, no 403

    from airflow.providers.cncf.kubernetes.pod_generator import PodGenerator

    assert first.allocation is not None
    override = with_planned_resources({}, first.allocation)["pod_override"]
    base = k8s.V1Pod(
        metadata=k8s.V1ObjectMeta(name="worker-a", namespace="default"),
        spec=k8s.V1PodSpec(containers=[k8s.V1Container(name="base", image="apache/airflow:3.3.2")]),
    )
    pod = PodGenerator.reconcile_pods(base, override)
    created = api.create_namespaced_pod("default", pod)
    res = created.spec.containers[0].resources
    assert parse_quantity(res.requests["memory"]) == 3 * GIB == parse_quantity(res.limits["memory"])
    # the same pod for b would be refused by the quota: admission kept it from trying
    with pytest.raises(k8s_client.ApiException) as refused:
        api.create_namespaced_pod(
            "default",
            PodGenerator.reconcile_pods(
                k8s.V1Pod(metadata=k8s.V1ObjectMeta(name="worker-b"), spec=base.spec), override
            ),
        )
    assert refused.value.status == 403
    c.started(first)
    c.finished("a")
    api.delete_namespaced_pod("worker-a", "default")
    [second] = c.admit()
    assert second.key == "b" and second.decision is AdmissionDecision.ADMITTED
