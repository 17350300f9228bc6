"""Builds the PredictiveExecutor's coordinator from the runtime (ledger, forecasts, local pool).

The local pool is this machine: ``[predictive] pool_memory`` / ``pool_cpus`` when set, else what
the cgroup backend can ever hand out (the host's memory, or the cgroup limit above the provider's
task groups when lower; the host's cores). Capacity that cannot be read is unknown: tasks are
planned and recorded but never held back (logged once).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from airflow_predictive.core.model.plan import Pool, PoolCapacity, PoolKind
from airflow_predictive.core.model.resources import ResourceVector
from airflow_predictive.core.scheduling.admission import AdmissionSettings
from airflow_predictive.core.scheduling.planner import PlanSettings
from airflow_predictive.executors.coordinator import Coordinator, CoordinatorSettings

if TYPE_CHECKING:
    from airflow_predictive.executors.kubernetes_shaping import KubernetesShaping
    from airflow_predictive.executors.local_shaping import LocalShaping

log = logging.getLogger(__name__)

LOCAL_POOL = "local"


def local_pool(backend: Any, memory: float | None, cpus: float | None, name: str = LOCAL_POOL) -> Pool:
    notes = []
    if memory is None or cpus is None:
        try:
            total = backend.capacity().allocatable
        except Exception as exc:
            log.warning("predictive: cannot read this machine's capacity (%s)", exc)
            total = ResourceVector()
        if memory is None:
            memory = total.memory_bytes
            notes.append("memory: machine / cgroup limit")
        if cpus is None:
            cpus = total.cpu_cores
            notes.append("cpus: machine")
    else:
        notes.append("[predictive] pool_memory / pool_cpus")
    limits = ResourceVector(memory_bytes=memory, cpu_cores=cpus)
    return Pool(name, PoolKind.LOCAL, PoolCapacity(limits=limits), "; ".join(notes))


def local_coordinator(holder: str) -> tuple[Coordinator, Any, bool]:
    """(coordinator, cgroup backend, default_enabled) for a PredictiveLocalExecutor."""
    from airflow_predictive.runtime import get_runtime

    runtime = get_runtime()
    settings = runtime.scheduler_settings()
    backend = runtime.local_backend()
    try:
        forecasts = runtime.forecasts()
    except Exception as exc:
        log.warning(
            "predictive: no forecast service (%s); tasks are planned from their declared resources", exc
        )
        forecasts = None
    coordinator = Coordinator(
        ledger=runtime.ledger(),
        forecasts=forecasts,
        pool=local_pool(backend, settings.pool_memory_bytes, settings.pool_cpus),
        holder=holder,
        settings=CoordinatorSettings(
            plan=PlanSettings(min_step_s=settings.plan_min_step_s),
            admission=AdmissionSettings(max_wait_s=settings.max_wait_s, fail_fast=settings.fail_fast),
            lease_s=settings.lease_s,
            trust_after_runs=settings.trust_after_runs,
        ),
        capabilities=backend.capabilities(),
        decisions=runtime.decision_log(),
    )
    return coordinator, backend, settings.default_enabled


def local_shaping(backend: Any) -> LocalShaping:
    """The PredictiveLocalExecutor's shaping thread (``[predictive] local_shaping_interval``)."""
    from airflow_predictive.executors.local_shaping import LocalShaping
    from airflow_predictive.runtime import get_runtime

    runtime = get_runtime()
    return LocalShaping(runtime, backend, runtime.scheduler_settings().shaping_interval_s)


def kubernetes_shaping(api_client: Any, pod_settings: Any, selector: str | None = None) -> KubernetesShaping:
    """The PredictiveKubernetesExecutor's shaping thread (``[predictive]
    kubernetes_shaping_interval``) on a pod backend of its own (``kubernetes_shaping.shaping_backend``);
    ``selector``: the executor's worker pods, read in one batch per round."""
    from airflow_predictive.executors.kubernetes_shaping import KubernetesShaping, shaping_backend
    from airflow_predictive.runtime import get_runtime

    runtime = get_runtime()
    interval_s = runtime.scheduler_settings().kubernetes_shaping_interval_s
    return KubernetesShaping(
        runtime, shaping_backend(api_client, pod_settings), interval_s, selector=selector
    )
