"""``KubernetesPodBackend``: the ``ResourceBackend`` for task pods, on the official sync client.

Thin I/O shell around ``procedures``: it executes their calls with ``kubernetes.client`` (raw
JSON, ``_preload_content=False``, so no client model object is built or leaks), retries 429 / 5xx
/ 409 / connection errors with backoff, and waits through the injected ``sleep`` (tests pass one
that moves a manual clock). It never raises for expected failures; ``provision`` raises
``ProvisionError`` when no pod was created.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from airflow_predictive.backends.kubernetes.calls import (
    Call,
    Reply,
    Sleep,
    Verb,
    backoff_s,
    parse_retry_after,
    reply_body,
    should_retry,
)
from airflow_predictive.backends.kubernetes.procedures import BACKEND_NAME, Procedures, drive
from airflow_predictive.backends.kubernetes.settings import KubernetesSettings
from airflow_predictive.core.ports import SystemClock

if TYPE_CHECKING:
    from collections.abc import Callable

    from airflow_predictive.core.model.backend import (
        Allocation,
        Capabilities,
        Capacity,
        Handle,
        ProvisionSpec,
        ResizeResult,
        TaskState,
    )
    from airflow_predictive.core.model.resources import ResourceVector
    from airflow_predictive.core.ports import Clock

log = logging.getLogger(__name__)
STRATEGIC = "application/strategic-merge-patch+json"


def connection_hook(conn_id: str) -> Any:
    """The cncf-kubernetes provider's hook on ``conn_id`` with a Configuration of its own: loading
    the kubeconfig would otherwise set the process-wide default, which every kubernetes model made
    afterwards copies (an executor's ``pod_override`` then no longer pickles: no pod is created)."""
    from airflow.providers.cncf.kubernetes.hooks.kubernetes import KubernetesHook
    from kubernetes import client

    return KubernetesHook(conn_id=conn_id, client_configuration=client.Configuration())


class KubernetesPodBackend:
    """Task pods with in-place resize, through a ``kubernetes.client.ApiClient``."""

    name = BACKEND_NAME

    def __init__(
        self,
        api_client: Any,
        settings: KubernetesSettings | None = None,
        *,
        clock: Clock | None = None,
        sleep: Callable[[float], None] | None = None,
    ) -> None:
        from kubernetes import client

        self.settings = settings or KubernetesSettings()
        self._api_client = api_client
        self._core = client.CoreV1Api(api_client)
        self._custom = client.CustomObjectsApi(api_client)
        self._sleep = sleep or time.sleep
        self._procs = Procedures(self.settings, clock or SystemClock())

    # ---- construction --------------------------------------------------------------------------
    @classmethod
    def from_kubeconfig(cls, path: str, *, context: str | None = None, **kwargs: Any) -> KubernetesPodBackend:
        from kubernetes import config

        return cls(config.new_client_from_config(config_file=path, context=context), **kwargs)

    @classmethod
    def in_cluster(cls, **kwargs: Any) -> KubernetesPodBackend:
        from kubernetes import client, config

        configuration = client.Configuration()
        config.load_incluster_config(client_configuration=configuration)
        return cls(client.ApiClient(configuration), **kwargs)

    @classmethod
    def from_connection(
        cls, conn_id: str, settings: KubernetesSettings | None = None, **kwargs: Any
    ) -> KubernetesPodBackend:
        """Through the cncf-kubernetes provider's connection (kubeconfig, in-cluster, dict).

        The connection's namespace, when it names one, wins over ``settings.namespace``
        (``runtime.kubernetes_backend()`` passes ``[predictive] kubernetes_conn_id`` and settings).
        """
        hook = connection_hook(conn_id)
        settings = settings or KubernetesSettings()
        settings = replace(settings, namespace=hook.get_namespace() or settings.namespace)
        return cls(hook.get_conn(), settings, **kwargs)

    # ---- ResourceBackend -----------------------------------------------------------------------
    def capabilities(self) -> Capabilities:
        _, largest = self._run(self._procs._nodes())
        return self._procs.capabilities(largest)

    def capacity(self) -> Capacity:
        return self._run(self._procs.capacity())

    def provision(self, spec: ProvisionSpec, allocation: Allocation) -> Handle:
        return self._run(self._procs.provision(spec, allocation))

    def resize(self, handle: Handle, allocation: Allocation) -> ResizeResult:
        return self._run(self._procs.resize(handle, allocation))

    def usage(self, handle: Handle) -> ResourceVector | None:
        return self._run(self._procs.usage(handle))

    def state(self, handle: Handle) -> TaskState:
        return self._run(self._procs.state_of(handle))

    def release(self, handle: Handle) -> None:
        self._run(self._procs.release(handle))

    def close(self) -> None:
        self._api_client.close()

    def protect(self, ref: str, *, on: bool = True) -> bool:
        """Add (``on``) or remove the do-not-disrupt / safe-to-evict annotations of pod ``ref``
        ("<namespace>/<name>"), so a node autoscaler does not consolidate away a pod being resized
        (backends/nodes/disruption.py); one merge patch, bounded by ``request_timeout_s``; False
        (logged) when it failed."""
        from airflow_predictive.backends.nodes.disruption import set_protected

        namespace, _, name = ref.rpartition("/")
        return set_protected(
            self._core,
            namespace or self.settings.namespace,
            name,
            on=on,
            timeout_s=self.settings.request_timeout_s,
        )

    # ---- control loop (a tick never blocks on one pod) ------------------------------------------
    def submit_resize(self, handle: Handle, allocation: Allocation, pod: Any = None) -> ResizeResult:
        """Send the resize and return at once: PENDING while the kubelet actuates it. ``pod``: the
        pod as just listed, to save the read."""
        return self._run(self._procs.submit(handle, allocation, pod))

    def poll_resize(self, handle: Handle, pod: Any = None) -> ResizeResult | None:
        """One status read of the resize in flight (None when there is none); from ``pod`` (as
        just listed) without any request."""
        return self._run(self._procs.poll(handle, pod))

    def attach(self, name: str) -> Handle | None:
        """A handle for an existing pod, state rebuilt from the cluster (after a restart)."""
        return self._run(self._procs.attach(name))

    def snapshot(self, selector: str) -> tuple[dict[str, Any], dict[str, ResourceVector]]:
        """Pods matching ``selector`` (by ref) and their usage, from two list calls."""
        return self._run(self._procs.snapshot(selector))

    def attach_pod(self, pod: Any) -> Handle | None:
        """``attach`` from a pod body already read (no extra request)."""
        return self._run(self._procs.attach(str(pod.get("metadata", {}).get("name", "")), pod))

    def find(self, selector: str) -> list[Handle]:
        """Handles of the pods matching a label selector, state rebuilt from the cluster."""
        return self._run(self._procs.find(selector))

    # ---- I/O -------------------------------------------------------------------------------------
    def _run(self, proc: Any) -> Any:
        return drive(proc, self._execute)

    def _execute(self, op: Call | Sleep) -> Reply | None:
        if isinstance(op, Sleep):
            self._sleep(op.seconds)
            return None
        s = self.settings
        attempt = 0
        while True:
            reply = replace(self._once(op), attempts=attempt + 1)
            if not should_retry(op, reply, attempt, s.max_retries):
                return reply
            delay = backoff_s(attempt, reply, s.backoff_base_s, s.backoff_max_s)
            log.debug("%s %s: %s; retry in %.2fs", op.verb, op.name, reply.message, delay)
            self._sleep(delay)
            attempt += 1

    def _once(self, op: Call) -> Reply:
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        try:
            resp = self._request(op)
        except ApiException as exc:
            headers = dict(exc.headers or {})
            return Reply(exc.status or 0, reply_body(exc.body), parse_retry_after(headers.get("Retry-After")))
        except (HTTPError, OSError) as exc:
            return Reply(0, {"message": f"{type(exc).__name__}: {exc}"})
        data = resp.data
        return Reply(resp.status, reply_body(data), parse_retry_after(resp.headers.get("Retry-After")))

    def _request(self, op: Call) -> Any:
        ns = self.settings.namespace
        kw: dict[str, Any] = {"_preload_content": False, "_request_timeout": self.settings.request_timeout_s}
        query = dict(op.query)
        if "labelSelector" in query:
            kw["label_selector"] = query["labelSelector"]
        core, custom = self._core, self._custom
        match op.verb:
            case Verb.READ_POD:
                return core.read_namespaced_pod(op.name, ns, **kw)
            case Verb.LIST_PODS:
                return core.list_namespaced_pod(ns, **kw)
            case Verb.WATCH_PODS:
                raise ValueError("the sync backend follows resizes by reading the pod")
            case Verb.CREATE_POD:
                return core.create_namespaced_pod(ns, op.body, **kw)
            case Verb.DELETE_POD:
                return core.delete_namespaced_pod(op.name, ns, body=op.body, **kw)
            case Verb.PATCH_RESIZE:
                return core.patch_namespaced_pod_resize(
                    op.name, ns, op.body, **{**kw, "_content_type": STRATEGIC}
                )
            case Verb.READ_POD_METRICS:
                return custom.get_namespaced_custom_object(
                    "metrics.k8s.io", "v1beta1", ns, "pods", op.name, **kw
                )
            case Verb.LIST_POD_METRICS:
                return custom.list_namespaced_custom_object("metrics.k8s.io", "v1beta1", ns, "pods", **kw)
            case Verb.LIST_NODES:
                return core.list_node(**kw)
            case Verb.NODE_SUMMARY:
                return core.connect_get_node_proxy_with_path(
                    op.name, query.get("path", "stats/summary"), **kw
                )
            case Verb.READ_PVC:
                return core.read_namespaced_persistent_volume_claim(op.name, ns, **kw)
            case Verb.PATCH_PVC:
                return core.patch_namespaced_persistent_volume_claim(
                    op.name, ns, op.body, **{**kw, "_content_type": STRATEGIC}
                )
        raise ValueError(f"unsupported call {op.verb}")
