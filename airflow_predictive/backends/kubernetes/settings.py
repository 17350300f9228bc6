"""Settings of the Kubernetes backends: one frozen dataclass. ``runtime.kubernetes_settings()``
fills it from the ``[predictive]`` options (``namespace``, ``kubernetes_*``); the backends
themselves never read configuration."""

from __future__ import annotations

from dataclasses import dataclass, field

from airflow_predictive.core.model.backend import MemoryMargin
from airflow_predictive.core.model.resources import MIB, ResourceVector


@dataclass(frozen=True)
class KubernetesSettings:
    """How the backend talks to the cluster and how long it waits.

    namespace: where predictive pods live.
    image: container image when a ProvisionSpec names none.
    container_name: name of the task's container in the pod.
    restart_policy: pod restartPolicy; tasks run once ("Never"), retries are Airflow's.
    service_account: serviceAccountName of task pods (None: the namespace default).
    poll_interval_s: step between two status reads while a resize settles.
    settle_timeout_s: how long ``resize`` waits for a resize to be actuated before answering
        PENDING (the kubelet needs ~1.8 s on kind 1.35).
    deferred_timeout_s: how long a ``PodResizePending: Deferred`` resize may wait for room before
        the backend reverts the spec to what is in force and reports it (INFEASIBLE).
    in_progress_timeout_s: how long ``PodResizeInProgress`` may last (it can stick for good,
        kubernetes#125559) before the spec is reverted and ERROR is reported.
    request_timeout_s: per HTTP request.
    max_retries / backoff_base_s / backoff_max_s: retries of 429 / 5xx / 409 / connection errors
        (Retry-After honoured), exponential backoff capped.
    memory_margin: a memory limit is never lowered below observed usage plus this margin.
    default_requests: requests used when an allocation names none (a pod without requests would
        be BestEffort, which can never be resized).
    use_kubelet_summary: read network / filesystem from the kubelet summary (needs nodes/proxy).
    capacity_ttl_s: how long node allocatable is cached.
    pool: allocatable to report when nodes cannot be listed (RBAC without nodes access).
    release_grace_s: gracePeriodSeconds when a task's pod is deleted.
    unobserved_timeout_s: how long a resize may stay unobserved by the kubelet (observedGeneration
        below the patch's generation, or actual resources never matching the spec without any
        resize condition) before the spec is reverted and ERROR is reported.
    """

    namespace: str = "default"
    image: str = "python:3.11-slim"
    container_name: str = "task"
    restart_policy: str = "Never"
    service_account: str | None = None
    poll_interval_s: float = 0.25
    settle_timeout_s: float = 5.0
    deferred_timeout_s: float = 120.0
    in_progress_timeout_s: float = 60.0
    request_timeout_s: float = 10.0
    max_retries: int = 4
    backoff_base_s: float = 0.2
    backoff_max_s: float = 5.0
    memory_margin: MemoryMargin = field(default_factory=MemoryMargin)
    default_requests: ResourceVector = field(
        default_factory=lambda: ResourceVector(cpu_cores=0.1, memory_bytes=128 * MIB)
    )
    use_kubelet_summary: bool = False
    capacity_ttl_s: float = 30.0
    pool: ResourceVector | None = None
    release_grace_s: int = 0
    unobserved_timeout_s: float = 30.0
