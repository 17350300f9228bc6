"""Adds the in-pod sampler to a pod: one builder for the pod operator and an executor's pod_override.

Why it exists: the sampler (``sampling/pod_sampler.py``) only sees the pod's other containers when
the pod shares one PID namespace, and it must run beside them for the pod's whole life without
holding the pod open: a native sidecar (an init container with ``restartPolicy: Always``, started
before the app containers and stopped after them) in a pod with ``shareProcessNamespace: true``.
``with_pod_sampler`` sets both on a ``V1Pod`` (what KubernetesPodOperator builds and what
``executor_config={"pod_override": ...}`` carries).

Its own resources are tiny (``SAMPLER_REQUESTS``) and never shaped; a Guaranteed pod stays
Guaranteed (the sampler's requests equal its limits then: the QoS class counts every container).
The store URL is a Secret reference in production (``store_secret``); a literal ``store_url`` is
for the emulator and tests (it is visible in the pod's spec).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kubernetes.client import models as k8s

SAMPLER_CONTAINER = "predictive-sampler"
URL_ENV = "AIRFLOW_PREDICTIVE_STORE_URL"  # the store URL (a Secret in production)
POD_NAME_ENV = "AIRFLOW_PREDICTIVE_POD_NAME"  # downward API: metadata.name
POD_NAMESPACE_ENV = "AIRFLOW_PREDICTIVE_POD_NAMESPACE"  # downward API: metadata.namespace
SAMPLER_REQUESTS = {"cpu": "10m", "memory": "64Mi"}
SAMPLER_LIMITS = {"memory": "160Mi"}  # Python, psutil and SQLAlchemy: ~60-90 MiB resident
SAMPLER_GUARANTEED = {"cpu": "50m", "memory": "160Mi"}  # requests = limits in a Guaranteed pod
MODULE = "airflow_predictive.sampling.pod_sampler"


def sampler_command(
    dag_id: str,
    task_id: str,
    run_id: str,
    *,
    try_number: int = 1,
    map_index: int = -1,
    interval_s: float = 1.0,
) -> list[str]:
    return [
        "python", "-m", MODULE,
        "--dag-id", dag_id, "--task-id", task_id, "--run-id", run_id,
        "--try-number", str(try_number), "--map-index", str(map_index),
        "--interval", f"{interval_s:g}", "--flush", f"{interval_s:g}",
    ]  # fmt: skip


def _guaranteed(containers: list[Any]) -> bool:
    """Every container has cpu and memory limits equal to its requests (QoS Guaranteed)."""
    if not containers:
        return False
    for c in containers:
        res = c.resources
        limits = dict((res.limits if res is not None else None) or {})
        requests = dict((res.requests if res is not None else None) or limits)
        for name in ("cpu", "memory"):
            if name not in limits or str(requests.get(name)) != str(limits[name]):
                return False
    return True


def sampler_container(
    dag_id: str,
    task_id: str,
    run_id: str,
    *,
    image: str,
    try_number: int = 1,
    map_index: int = -1,
    store_url: str | None = None,
    store_secret: tuple[str, str] | None = None,
    interval_s: float = 1.0,
    guaranteed: bool = False,
) -> k8s.V1Container:
    """The sampler's native sidecar container (see the module docstring)."""
    from kubernetes.client import models as k8s

    if (store_url is None) == (store_secret is None):
        raise ValueError("give exactly one of store_url and store_secret")
    if store_secret is not None:
        url = k8s.V1EnvVar(
            name=URL_ENV,
            value_from=k8s.V1EnvVarSource(
                secret_key_ref=k8s.V1SecretKeySelector(name=store_secret[0], key=store_secret[1])
            ),
        )
    else:
        url = k8s.V1EnvVar(name=URL_ENV, value=store_url)

    def field(name: str, path: str) -> k8s.V1EnvVar:
        return k8s.V1EnvVar(
            name=name, value_from=k8s.V1EnvVarSource(field_ref=k8s.V1ObjectFieldSelector(field_path=path))
        )

    requests, limits = (
        (SAMPLER_GUARANTEED, SAMPLER_GUARANTEED) if guaranteed else (SAMPLER_REQUESTS, SAMPLER_LIMITS)
    )
    return k8s.V1Container(
        name=SAMPLER_CONTAINER,
        image=image,
        command=sampler_command(
            dag_id, task_id, run_id, try_number=try_number, map_index=map_index, interval_s=interval_s
        ),
        env=[field(POD_NAME_ENV, "metadata.name"), field(POD_NAMESPACE_ENV, "metadata.namespace"), url],
        resources=k8s.V1ResourceRequirements(requests=dict(requests), limits=dict(limits)),
        restart_policy="Always",  # a native sidecar: runs beside the app containers, stops after them
    )


def with_pod_sampler(
    pod: k8s.V1Pod,
    dag_id: str,
    task_id: str,
    run_id: str,
    *,
    image: str | None = None,
    try_number: int = 1,
    map_index: int = -1,
    store_url: str | None = None,
    store_secret: tuple[str, str] | None = None,
    interval_s: float = 1.0,
) -> k8s.V1Pod:
    """``pod`` with the in-pod sampler as its first init container and a shared PID namespace
    (changed in place and returned). ``image``: one with this provider installed (default: the
    pod's first container's image). Adding it twice replaces the first."""
    containers = list(pod.spec.containers or [])
    image = image or (containers[0].image if containers else None)
    if not image:
        raise ValueError("the sampler needs an image with airflow_predictive installed")
    sidecar = sampler_container(
        dag_id,
        task_id,
        run_id,
        image=image,
        try_number=try_number,
        map_index=map_index,
        store_url=store_url,
        store_secret=store_secret,
        interval_s=interval_s,
        guaranteed=_guaranteed(containers + list(pod.spec.init_containers or [])),
    )
    others = [c for c in (pod.spec.init_containers or []) if c.name != SAMPLER_CONTAINER]
    pod.spec.init_containers = [sidecar, *others]  # first: it starts before everything it samples
    pod.spec.share_process_namespace = True
    return pod
