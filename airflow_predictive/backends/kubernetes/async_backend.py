"""``AsyncKubernetesPodBackend``: the same backend on ``kubernetes_asyncio``, for the triggerer.

It runs the shared ``procedures`` with awaitable I/O and adds the batch operations one shaping
interval needs: ``usage_all`` (one metrics list for every managed pod) and ``resize_many``
(concurrent resize patches, then one pod list per poll to follow them all, instead of one GET
per pod per poll). It never blocks the event loop and never raises for expected failures.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
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
from airflow_predictive.backends.kubernetes.procedures import (
    BACKEND_NAME,
    PendingResize,
    Procedures,
    split_ref,
)
from airflow_predictive.backends.kubernetes.settings import KubernetesSettings
from airflow_predictive.backends.kubernetes.translate import MANAGED_BY, resize_body
from airflow_predictive.core.model.backend import ResizeResult, ResizeStatus
from airflow_predictive.core.ports import SystemClock

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Mapping

    from airflow_predictive.backends.kubernetes.payloads import Pod
    from airflow_predictive.core.model.backend import (
        Allocation,
        Capabilities,
        Capacity,
        Handle,
        ProvisionSpec,
        TaskState,
    )
    from airflow_predictive.core.model.resources import ResourceVector
    from airflow_predictive.core.ports import Clock

log = logging.getLogger(__name__)
STRATEGIC = "application/strategic-merge-patch+json"


class AsyncKubernetesPodBackend:
    """Task pods with in-place resize, through a ``kubernetes_asyncio.client.ApiClient``."""

    name = BACKEND_NAME

    def __init__(
        self,
        api_client: Any,
        settings: KubernetesSettings | None = None,
        *,
        clock: Clock | None = None,
        sleep: Callable[[float], Awaitable[None]] | None = None,
        concurrency: int = 64,
        follow: str = "watch",
        trust_env: bool = False,
    ) -> None:
        from kubernetes_asyncio import client

        self.settings = settings or KubernetesSettings()
        self._api_client = api_client
        self._core = client.CoreV1Api(api_client)
        self._custom = client.CustomObjectsApi(api_client)
        self._sleep = sleep or asyncio.sleep
        self._procs = Procedures(self.settings, clock or SystemClock())
        self._limit = asyncio.Semaphore(concurrency)
        if follow not in ("watch", "poll"):
            raise ValueError(f"follow must be 'watch' or 'poll', not {follow!r}")
        self.follow = follow  # "poll" when time is simulated (a watch waits on the socket, not the clock)
        if not trust_env:
            # kubernetes_asyncio's aiohttp session reads ~/.netrc and the proxy environment in a
            # thread on *every* request; a kubeconfig's proxy-url still applies without it.
            session = getattr(getattr(api_client, "rest_client", None), "pool_manager", None)
            if session is not None and hasattr(session, "_trust_env"):
                session._trust_env = False

    @classmethod
    async def from_kubeconfig(
        cls, path: str, *, context: str | None = None, **kwargs: Any
    ) -> AsyncKubernetesPodBackend:
        from kubernetes_asyncio import config

        return cls(await config.new_client_from_config(config_file=path, context=context), **kwargs)

    @classmethod
    async def from_connection(
        cls, conn_id: str, settings: KubernetesSettings | None = None, **kwargs: Any
    ) -> AsyncKubernetesPodBackend:
        """Through the cncf-kubernetes provider's ``AsyncKubernetesHook`` (kubeconfig, in-cluster).

        The connection's namespace, when it names one, wins over ``settings.namespace``.
        """
        from airflow.providers.cncf.kubernetes.hooks.kubernetes import AsyncKubernetesHook
        from kubernetes_asyncio import client

        hook = AsyncKubernetesHook(conn_id=conn_id, client_configuration=client.Configuration())
        await hook._load_config()  # fills hook.client_configuration; get_conn() would close it on exit
        namespace = hook.get_namespace()  # a coroutine on the async hook (its fields are read async)
        if inspect.isawaitable(namespace):
            namespace = await namespace
        settings = settings or KubernetesSettings()
        settings = replace(settings, namespace=namespace or settings.namespace)
        return cls(client.ApiClient(configuration=hook.client_configuration), settings, **kwargs)

    # ---- ResourceBackend, awaitable --------------------------------------------------------------
    async def capabilities(self) -> Capabilities:
        _, largest = await self._run(self._procs._nodes())
        return self._procs.capabilities(largest)

    async def capacity(self) -> Capacity:
        result: Capacity = await self._run(self._procs.capacity())
        return result

    async def provision(self, spec: ProvisionSpec, allocation: Allocation) -> Handle:
        result: Handle = await self._run(self._procs.provision(spec, allocation))
        return result

    async def resize(self, handle: Handle, allocation: Allocation) -> ResizeResult:
        result: ResizeResult = await self._run(self._procs.resize(handle, allocation))
        return result

    async def usage(self, handle: Handle) -> ResourceVector | None:
        result: ResourceVector | None = await self._run(self._procs.usage(handle))
        return result

    async def state(self, handle: Handle) -> TaskState:
        result: TaskState = await self._run(self._procs.state_of(handle))
        return result

    async def release(self, handle: Handle) -> None:
        await self._run(self._procs.release(handle))

    async def aclose(self) -> None:
        await self._api_client.close()

    # ---- control loop (a tick never blocks on one pod) ------------------------------------------
    async def submit_resize(self, handle: Handle, allocation: Allocation) -> ResizeResult:
        result: ResizeResult = await self._run(self._procs.submit(handle, allocation))
        return result

    async def poll_resize(self, handle: Handle) -> ResizeResult | None:
        result: ResizeResult | None = await self._run(self._procs.poll(handle))
        return result

    async def attach(self, name: str) -> Handle | None:
        result: Handle | None = await self._run(self._procs.attach(name))
        return result

    async def find(self, selector: str) -> list[Handle]:
        result: list[Handle] = await self._run(self._procs.find(selector))
        return result

    # ---- one shaping interval ---------------------------------------------------------------------
    async def usage_all(self) -> dict[str, ResourceVector]:
        """Usage of every managed pod of the namespace, by handle ref, from one list call."""
        result: dict[str, ResourceVector] = await self._run(self._procs.usage_all())
        return result

    async def resize_many(self, targets: Mapping[Handle, Allocation]) -> dict[str, ResizeResult]:
        """Resize many pods at once and follow them all through one pod watch (or one pod list
        per poll when ``follow="poll"``, or when the watch breaks).

        Same outcomes as ``resize`` per handle; at most ``settle_timeout_s`` of waiting in total.
        """
        procs, s = self._procs, self.settings
        results: dict[str, ResizeResult] = {}
        pods, list_rv = await self._list_managed_rv()
        _, largest = await self._run(procs._nodes())
        usage: dict[str, ResourceVector] = {}
        if any(h.ref in pods and procs.needs_usage(h, a, pods[h.ref]) for h, a in targets.items()):
            usage = await self.usage_all()
        bodies: dict[str, Any] = {}
        for handle, target in targets.items():
            pod = pods.get(handle.ref)
            if handle.ref in procs.state.released or pod is None:
                results[handle.ref] = ResizeResult(ResizeStatus.ERROR, f"pod {handle.ref} not found")
                continue
            prepared = procs.prepare(handle, target, pod, usage.get(handle.ref), largest)
            if isinstance(prepared, ResizeResult):
                results[handle.ref] = prepared
            else:
                bodies[handle.ref] = resize_body(s.container_name, prepared)

        by_ref = {h.ref: (h, a) for h, a in targets.items()}
        replies = await asyncio.gather(
            *(self._execute(Call(Verb.PATCH_RESIZE, split_ref(ref)[1], body)) for ref, body in bodies.items())
        )
        outstanding: dict[str, PendingResize] = {}
        for ref, reply in zip(bodies, replies, strict=True):
            assert reply is not None
            started = procs.after_patch(ref, by_ref[ref][1], reply)
            if isinstance(started, ResizeResult):
                results[ref] = started
            else:
                outstanding[ref] = started
        deadline = procs.clock.monotonic() + s.settle_timeout_s
        if self.follow == "watch" and outstanding and list_rv:
            watched = await self._follow_by_watch(outstanding, results, list_rv, deadline)
            if procs.clock.monotonic() >= deadline:
                for ref, pending in outstanding.items():
                    results[ref] = procs.still_pending(ref, pending, watched.get(ref))
                outstanding.clear()
        while outstanding:
            await self._sleep(s.poll_interval_s)
            pods = await self._list_managed()
            reverts = []
            for ref, pending in list(outstanding.items()):
                result, revert = procs.judge(ref, pending, pods.get(ref))
                if revert:
                    reverts.append(
                        self._execute(
                            Call(Verb.PATCH_RESIZE, split_ref(ref)[1], resize_body(s.container_name, revert))
                        )
                    )
                if result is not None:
                    results[ref] = result
                    del outstanding[ref]
            if reverts:
                await asyncio.gather(*reverts)
            if procs.clock.monotonic() >= deadline:
                for ref, pending in outstanding.items():
                    results[ref] = procs.still_pending(ref, pending, pods.get(ref))
                break
        return results

    async def _follow_by_watch(
        self,
        outstanding: dict[str, PendingResize],
        results: dict[str, ResizeResult],
        rv: str,
        deadline: float,
    ) -> dict[str, Pod]:
        """Judge resizes from watch events until all are decided, the deadline passes or the
        stream breaks (the caller then polls). Returns the last pod seen per ref."""
        procs = self._procs
        latest: dict[str, Pod] = {}
        selector = f"{MANAGED_BY[0]}={MANAGED_BY[1]}"
        timeout = max(1, int(deadline - procs.clock.monotonic()) + 1)
        query = (("labelSelector", selector), ("resourceVersion", rv), ("timeoutSeconds", str(timeout)))
        try:
            resp = await self._request(Call(Verb.WATCH_PODS, query=query))
        except Exception as exc:  # the poll loop takes over; one line says why
            log.info("pod watch unavailable (%s): following resizes by polling", exc)
            return latest
        reverts: list[Any] = []
        try:
            if resp.status != 200:
                return latest
            try:
                async with asyncio.timeout(max(0.0, deadline - procs.clock.monotonic())):  # one timer
                    while outstanding:
                        line = await resp.content.readline()
                        if not line or not self._judge_event(line, outstanding, results, latest, reverts):
                            break
            except TimeoutError:
                pass
        finally:
            resp.release()
            if reverts:
                await asyncio.gather(*reverts)
        return latest

    def _judge_event(
        self,
        line: bytes,
        outstanding: dict[str, PendingResize],
        results: dict[str, ResizeResult],
        latest: dict[str, Pod],
        reverts: list[Any],
    ) -> bool:
        """Decide what one watch event says; False when the stream must be given up (ERROR)."""
        s = self.settings
        event = json.loads(line)
        if event.get("type") not in ("ADDED", "MODIFIED", "DELETED"):
            return False  # ERROR (e.g. 410 Gone): the caller polls instead
        obj: Pod = event.get("object") or {}  # type: ignore[assignment]
        ref = f"{s.namespace}/{obj.get('metadata', {}).get('name', '')}"
        pending = outstanding.get(ref)
        if pending is None:
            return True
        pod: Pod | None = None if event["type"] == "DELETED" else obj
        if pod is not None:
            latest[ref] = pod
        result, revert = self._procs.judge(ref, pending, pod)
        if revert:
            body = resize_body(s.container_name, revert)
            reverts.append(self._execute(Call(Verb.PATCH_RESIZE, split_ref(ref)[1], body)))
        if result is not None:
            results[ref] = result
            del outstanding[ref]
        return True

    async def _list_managed(self) -> dict[str, Pod]:
        pods, _ = await self._list_managed_rv()
        return pods

    async def _list_managed_rv(self) -> tuple[dict[str, Pod], str]:
        reply = await self._execute(
            Call(Verb.LIST_PODS, query=(("labelSelector", f"{MANAGED_BY[0]}={MANAGED_BY[1]}"),))
        )
        assert reply is not None
        if not reply.ok or not isinstance(reply.body, dict):
            return {}, ""
        pods = {f"{self.settings.namespace}/{p['metadata']['name']}": p for p in reply.body.get("items", [])}
        return pods, str(reply.body.get("metadata", {}).get("resourceVersion", ""))

    # ---- I/O -------------------------------------------------------------------------------------
    async def _run(self, proc: Any) -> Any:
        try:
            op = next(proc)
            while True:
                op = proc.send(await self._execute(op))
        except StopIteration as stop:
            return stop.value

    async def _execute(self, op: Call | Sleep) -> Reply | None:
        if isinstance(op, Sleep):
            await self._sleep(op.seconds)
            return None
        s = self.settings
        attempt = 0
        while True:
            async with self._limit:
                reply = replace(await self._once(op), attempts=attempt + 1)
            if not should_retry(op, reply, attempt, s.max_retries):
                return reply
            await self._sleep(backoff_s(attempt, reply, s.backoff_base_s, s.backoff_max_s))
            attempt += 1

    async def _once(self, op: Call) -> Reply:
        import aiohttp
        from kubernetes_asyncio.client.exceptions import ApiException

        try:
            resp = await self._request(op)
            try:
                data = await resp.read()
                return Reply(
                    resp.status, reply_body(data), parse_retry_after(resp.headers.get("Retry-After"))
                )
            finally:
                resp.release()
        except ApiException as exc:
            headers = dict(exc.headers or {})
            return Reply(exc.status or 0, reply_body(exc.body), parse_retry_after(headers.get("Retry-After")))
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            return Reply(0, {"message": f"{type(exc).__name__}: {exc}"})

    async def _request(self, op: Call) -> Any:
        ns = self.settings.namespace
        kw: dict[str, Any] = {"_preload_content": False, "_request_timeout": self.settings.request_timeout_s}
        query = dict(op.query)
        if "labelSelector" in query:
            kw["label_selector"] = query["labelSelector"]
        core, custom = self._core, self._custom
        match op.verb:
            case Verb.READ_POD:
                return await core.read_namespaced_pod(op.name, ns, **kw)
            case Verb.LIST_PODS:
                return await core.list_namespaced_pod(ns, **kw)
            case Verb.WATCH_PODS:
                kw["_request_timeout"] = float(query["timeoutSeconds"]) + self.settings.request_timeout_s
                return await core.list_namespaced_pod(
                    ns,
                    watch=True,
                    resource_version=query["resourceVersion"],
                    timeout_seconds=int(query["timeoutSeconds"]),
                    **kw,
                )
            case Verb.CREATE_POD:
                return await core.create_namespaced_pod(ns, op.body, **kw)
            case Verb.DELETE_POD:
                return await core.delete_namespaced_pod(op.name, ns, body=op.body, **kw)
            case Verb.PATCH_RESIZE:
                return await core.patch_namespaced_pod_resize(
                    op.name, ns, op.body, **{**kw, "_content_type": STRATEGIC}
                )
            case Verb.READ_POD_METRICS:
                return await custom.get_namespaced_custom_object(
                    "metrics.k8s.io", "v1beta1", ns, "pods", op.name, **kw
                )
            case Verb.LIST_POD_METRICS:
                return await custom.list_namespaced_custom_object(
                    "metrics.k8s.io", "v1beta1", ns, "pods", **kw
                )
            case Verb.LIST_NODES:
                return await core.list_node(**kw)
            case Verb.NODE_SUMMARY:
                return await core.connect_get_node_proxy_with_path(
                    op.name, query.get("path", "stats/summary"), **kw
                )
            case Verb.READ_PVC:
                return await core.read_namespaced_persistent_volume_claim(op.name, ns, **kw)
            case Verb.PATCH_PVC:
                return await core.patch_namespaced_persistent_volume_claim(
                    op.name, ns, op.body, **{**kw, "_content_type": STRATEGIC}
                )
        raise ValueError(f"unsupported call {op.verb}")
