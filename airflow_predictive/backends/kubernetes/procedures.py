"""What the Kubernetes backends do, written once as generators over ``Call`` / ``Sleep`` values.

Each public method returns a generator that yields the API calls (and waits) it needs and
returns the core value (Handle, ResizeResult, ResourceVector, TaskState, Capacity). The sync
backend drives them with the ``kubernetes`` client, the async one with ``kubernetes_asyncio``.

Resize contract: a strategic-merge patch on ``pods/{name}/resize``, then the pod's status decides:
APPLIED only when observedGeneration >= the patch's generation, no resize condition and actual
resources == spec; PENDING while Deferred / InProgress within ``settle_timeout_s``; INFEASIBLE for
``Infeasible`` or a Deferred resize older than ``deferred_timeout_s``; ERROR when InProgress lasts
longer than ``in_progress_timeout_s``; REJECTED for 422 / 403 and for a memory limit below
observed usage plus margin. Stuck or impossible resizes are reverted to what is in force, so the
spec never lies about the pod. These generators never raise for expected failures.
"""

from __future__ import annotations

import logging
from collections.abc import Generator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from airflow_predictive.backends.kubernetes.calls import Call, Reply, Sleep, Verb
from airflow_predictive.backends.kubernetes.translate import (
    MANAGED_BY,
    Progress,
    actual_resources,
    allocation_of,
    container_spec,
    observe_resize,
    pod_manifest,
    pod_requests,
    resize_body,
    resource_requirements,
    task_state,
    usage_of,
)
from airflow_predictive.core.model.backend import (
    Allocation,
    Bounds,
    Capabilities,
    Capacity,
    ExitKind,
    Handle,
    ResizeResult,
    ResizeStatus,
    TaskState,
    precheck_resize,
)
from airflow_predictive.core.model.quantity import InvalidQuantity, parse_quantity
from airflow_predictive.core.model.resources import MIB, Metric, ResourceVector
from airflow_predictive.core.ports import ProvisionError

if TYPE_CHECKING:
    from airflow_predictive.backends.kubernetes.payloads import Pod, ResourceRequirements
    from airflow_predictive.backends.kubernetes.settings import KubernetesSettings
    from airflow_predictive.core.model.backend import ProvisionSpec
    from airflow_predictive.core.ports import Clock

log = logging.getLogger(__name__)
T = TypeVar("T")
Proc = Generator[Call | Sleep, Reply | None, T]
BACKEND_NAME = "kubernetes"
LIVE = frozenset({Metric.CPU_CORES, Metric.MEMORY_BYTES})
PROVISION_ONLY = frozenset({Metric.GPU_UTIL})


@dataclass
class PendingResize:
    target: Allocation
    generation: int
    since: float
    in_progress_since: float | None = None


@dataclass
class _Counters:
    at: float
    rx: float
    tx: float
    fs: float


@dataclass
class BackendState:
    """What a backend remembers between calls (all of it can be rebuilt from the cluster)."""

    allocations: dict[str, Allocation] = field(default_factory=dict)
    pending: dict[str, PendingResize] = field(default_factory=dict)
    released: set[str] = field(default_factory=set)
    final: dict[str, TaskState] = field(default_factory=dict)
    counters: dict[str, _Counters] = field(default_factory=dict)
    nodes: tuple[float, ResourceVector, ResourceVector] | None = None  # (read at, total, largest)
    # per pod, kept across superseding targets: since when the node defers its resizes, and since
    # when a resize has gone unobserved by the kubelet (a moving target must not reset these)
    deferred_since: dict[str, float] = field(default_factory=dict)
    unobserved_since: dict[str, float] = field(default_factory=dict)

    def forget(self, ref: str) -> None:
        """Drop everything held about a pod except that it was released."""
        tables: tuple[dict[str, Any], ...] = (
            self.allocations,
            self.pending,
            self.final,
            self.counters,
            self.deferred_since,
            self.unobserved_since,
        )
        for table in tables:
            table.pop(ref, None)


def split_ref(ref: str) -> tuple[str, str]:
    namespace, _, name = ref.partition("/")
    return namespace, name


class Procedures:
    """The backend's behaviour; ``BackendState`` is its memory, ``clock`` its time."""

    def __init__(self, settings: KubernetesSettings, clock: Clock, state: BackendState | None = None) -> None:
        self.settings = settings
        self.clock = clock
        self.state = state or BackendState()

    # ---- provision / release ------------------------------------------------------------------
    def provision(self, spec: ProvisionSpec, allocation: Allocation) -> Proc[Handle]:
        manifest = pod_manifest(spec, allocation, self.settings)
        reply = yield Call(Verb.CREATE_POD, spec.name, manifest)
        assert reply is not None
        if reply.status == 409 and reply.attempts > 1:
            log.info("pod %s existed after a retried create: adopting it", spec.name)
        elif not reply.ok:
            raise ProvisionError(
                f"pod {self.settings.namespace}/{spec.name} was not created: {reply.message}"
            )
        ref = f"{self.settings.namespace}/{spec.name}"
        self.state.allocations[ref] = allocation
        self.state.released.discard(ref)
        self.state.final.pop(ref, None)
        return Handle(backend=BACKEND_NAME, name=spec.name, ref=ref, allocation=allocation)

    def release(self, handle: Handle) -> Proc[None]:
        _, name = split_ref(handle.ref)
        self.state.pending.pop(handle.ref, None)
        if handle.ref in self.state.released:
            return
        body = {
            "apiVersion": "v1",
            "kind": "DeleteOptions",
            "gracePeriodSeconds": self.settings.release_grace_s,
        }
        reply = yield Call(Verb.DELETE_POD, name, body)
        assert reply is not None
        if reply.ok or reply.status == 404:
            self.state.released.add(handle.ref)
            self.state.forget(handle.ref)
        else:
            log.warning("could not delete pod %s: %s", handle.ref, reply.message)

    # ---- reads ----------------------------------------------------------------------------------
    def _read_pod(self, name: str) -> Proc[Pod | None]:
        reply = yield Call(Verb.READ_POD, name)
        assert reply is not None
        if reply.ok:
            pod: Pod = reply.body
            return pod
        return None

    def state_of(self, handle: Handle) -> Proc[TaskState]:
        if handle.ref in self.state.final:
            return self.state.final[handle.ref]
        if handle.ref in self.state.released:
            return TaskState(ExitKind.GONE, reason="released")
        _, name = split_ref(handle.ref)
        reply = yield Call(Verb.READ_POD, name)
        assert reply is not None
        if reply.status == 404:
            return TaskState(ExitKind.GONE, reason="pod not found")
        if not reply.ok:
            return TaskState(ExitKind.RUNNING, reason=f"state unknown: {reply.message}")
        state = task_state(reply.body, self.settings.container_name)
        if state.kind not in (ExitKind.RUNNING, ExitKind.GONE):
            self.state.final[handle.ref] = state
        return state

    def usage(self, handle: Handle) -> Proc[ResourceVector | None]:
        if handle.ref in self.state.released or handle.ref in self.state.final:
            return None
        _, name = split_ref(handle.ref)
        reply = yield Call(Verb.READ_POD_METRICS, name)
        assert reply is not None
        if reply.ok:
            vector = usage_of(reply.body)
        else:
            pod = yield from self._read_pod(name)
            if pod is None or pod.get("metadata", {}).get("deletionTimestamp"):
                return None
            if pod.get("status", {}).get("phase") in ("Succeeded", "Failed"):
                return None
            vector = ResourceVector()  # running, but no metrics yet (or metrics-server missing)
        if self.settings.use_kubelet_summary:
            vector = yield from self._with_summary(handle, vector)
        return vector

    def _with_summary(self, handle: Handle, vector: ResourceVector) -> Proc[ResourceVector]:
        _, name = split_ref(handle.ref)
        pod = yield from self._read_pod(name)
        node = (pod or {}).get("spec", {}).get("nodeName")
        if not node:
            return vector
        reply = yield Call(Verb.NODE_SUMMARY, node, query=(("path", "stats/summary"),))
        assert reply is not None
        if not reply.ok or not isinstance(reply.body, dict):
            return vector
        uid = (pod or {}).get("metadata", {}).get("uid")
        stats = next((p for p in reply.body.get("pods", []) if p.get("podRef", {}).get("uid") == uid), None)
        if stats is None:
            return vector
        now = self.clock.monotonic()
        cur = _Counters(
            now,
            float(stats.get("network", {}).get("rxBytes", 0)),
            float(stats.get("network", {}).get("txBytes", 0)),
            float(stats.get("ephemeral-storage", {}).get("usedBytes", 0)),
        )
        prev = self.state.counters.get(handle.ref)
        self.state.counters[handle.ref] = cur
        if prev is None or cur.at <= prev.at:
            return vector
        dt = cur.at - prev.at
        return ResourceVector.lenient(
            {
                **vector.present(),
                Metric.NET_RX_BPS: max(0.0, cur.rx - prev.rx) / dt,
                Metric.NET_TX_BPS: max(0.0, cur.tx - prev.tx) / dt,
                Metric.DISK_WRITE_BPS: max(0.0, cur.fs - prev.fs) / dt,  # growth of written bytes
            }
        )

    # ---- capacity ------------------------------------------------------------------------------
    def _nodes(self) -> Proc[tuple[ResourceVector, ResourceVector]]:
        now = self.clock.monotonic()
        cached = self.state.nodes
        if cached is not None and now - cached[0] < self.settings.capacity_ttl_s:
            return cached[1], cached[2]
        reply = yield Call(Verb.LIST_NODES)
        assert reply is not None
        total = largest = self.settings.pool or ResourceVector()
        if reply.ok and isinstance(reply.body, dict):
            totals = {"cpu": 0.0, "memory": 0.0, "gpu": 0.0}
            best = {"cpu": 0.0, "memory": 0.0, "gpu": 0.0}
            for node in reply.body.get("items", []):
                alloc = node.get("status", {}).get("allocatable", {})
                for key, name in (("cpu", "cpu"), ("memory", "memory"), ("gpu", "nvidia.com/gpu")):
                    try:
                        v = parse_quantity(alloc.get(name, "0"))
                    except InvalidQuantity:
                        v = 0.0
                    totals[key] += v
                    best[key] = max(best[key], v)
            total = ResourceVector(
                cpu_cores=totals["cpu"], memory_bytes=totals["memory"], gpu_util=totals["gpu"] or None
            )
            largest = ResourceVector(
                cpu_cores=best["cpu"], memory_bytes=best["memory"], gpu_util=best["gpu"] or None
            )
        elif reply.status == 403:
            log.info("nodes cannot be listed (RBAC): capacity comes from the configured pool")
        self.state.nodes = (now, total, largest)
        return total, largest

    def capacity(self) -> Proc[Capacity]:
        total, _ = yield from self._nodes()
        reply = yield Call(Verb.LIST_PODS)
        assert reply is not None
        allocated = ResourceVector(cpu_cores=0.0, memory_bytes=0.0)
        if reply.ok and isinstance(reply.body, dict):
            for pod in reply.body.get("items", []):
                if pod.get("metadata", {}).get("deletionTimestamp"):
                    continue
                if pod.get("status", {}).get("phase") in ("Succeeded", "Failed"):
                    continue
                allocated = allocated.combine(pod_requests(pod), lambda a, b: a + b)
        return Capacity(allocatable=total, allocated=allocated)

    def capabilities(self, largest: ResourceVector | None = None) -> Capabilities:
        big = largest or ResourceVector()
        return Capabilities(
            live=LIVE,
            provision_only=PROVISION_ONLY,
            bounds={
                Metric.CPU_CORES: Bounds(0.001, big.cpu_cores or float("inf"), 0.001),
                Metric.MEMORY_BYTES: Bounds(4 * MIB, big.memory_bytes or float("inf"), 1024.0),
            },
            note="in-place pod resize (pods/resize); GPUs at provision only",
        )

    # ---- resize --------------------------------------------------------------------------------
    def resize(self, handle: Handle, target: Allocation) -> Proc[ResizeResult]:
        ref = handle.ref
        if ref in self.state.released:
            return ResizeResult(ResizeStatus.ERROR, "the task was released")
        _, name = split_ref(ref)
        reply = yield Call(Verb.READ_POD, name)
        assert reply is not None
        if reply.status == 404:
            return ResizeResult(ResizeStatus.ERROR, f"pod {ref} not found")
        if not reply.ok:
            return ResizeResult(ResizeStatus.ERROR, f"reading pod {ref} failed: {reply.message}")
        pod: Pod = reply.body
        pending = self.state.pending.get(ref)
        if pending is not None and pending.target == target:
            return (yield from self._follow(ref, name, pending))
        _, largest = yield from self._nodes()
        usage = (yield from self.usage(handle)) if self.needs_usage(handle, target, pod) else None
        prepared = self.prepare(handle, target, pod, usage, largest)
        if isinstance(prepared, ResizeResult):
            return prepared
        patch = yield Call(Verb.PATCH_RESIZE, name, resize_body(self.settings.container_name, prepared))
        assert patch is not None
        started = self.after_patch(ref, target, patch)
        if isinstance(started, ResizeResult):
            return started
        return (yield from self._follow(ref, name, started))

    def current(self, ref: str, pod: Pod) -> Allocation:
        """What is in force: remembered, else read back from the pod's status, else its spec."""
        known = self.state.allocations.get(ref)
        if known is not None:
            return known
        return in_force(pod, self.settings.container_name)

    def needs_usage(self, handle: Handle, target: Allocation, pod: Pod) -> bool:
        """True when the memory limit would go down (then usage must be known first)."""
        current = self.current(handle.ref, pod)
        new_mem, old_mem = target.limits.get(Metric.MEMORY_BYTES), current.limits.get(Metric.MEMORY_BYTES)
        return new_mem is not None and (old_mem is None or new_mem < old_mem)

    def prepare(
        self,
        handle: Handle,
        target: Allocation,
        pod: Pod,
        usage: ResourceVector | None,
        largest: ResourceVector,
    ) -> ResizeResult | ResourceRequirements:
        """The resize body for ``target``, or the result when it must not be sent at all."""
        ref = handle.ref
        container = container_spec(pod, self.settings.container_name)
        if container is None:
            return ResizeResult(
                ResizeStatus.ERROR, f"pod {ref} has no container {self.settings.container_name!r}"
            )
        if observe_resize(pod, 0, self.settings.container_name).progress is Progress.GONE:
            return ResizeResult(
                ResizeStatus.REJECTED, "the pod has finished or is being deleted: nothing to resize"
            )
        current = self.current(ref, pod)
        self.state.pending.pop(ref, None)  # a new target supersedes an unfinished one
        if self.needs_usage(handle, target, pod) and (usage is None or usage.memory_bytes is None):
            return ResizeResult(
                ResizeStatus.REJECTED,
                "memory usage is not known: a memory limit is never lowered blind",
                current,
            )
        checked = precheck_resize(
            current,
            target,
            self.capabilities(largest),
            Capacity(allocatable=largest, allocated=ResourceVector()),
            usage,
            self.settings.memory_margin,
        )
        if checked is not None:
            return ResizeResult(checked.status, checked.reason, current)
        limits = (container.get("resources") or {}).get("limits") or {}
        try:
            gpus = int(parse_quantity(limits.get("nvidia.com/gpu", "0")))
        except InvalidQuantity:
            gpus = 0
        return resource_requirements(
            target, self.settings.default_requests, gpus=gpus, current=container.get("resources")
        )

    def after_patch(self, ref: str, target: Allocation, patch: Reply) -> ResizeResult | PendingResize:
        current = self.state.allocations.get(ref)
        if patch.status in (403, 422):
            return ResizeResult(ResizeStatus.REJECTED, f"refused by the API server: {patch.message}", current)
        if patch.status == 404:
            return ResizeResult(ResizeStatus.ERROR, f"pod {ref} not found")
        if not patch.ok:
            return ResizeResult(
                ResizeStatus.ERROR,
                f"resize request failed after {patch.attempts} attempt(s): {patch.message}",
                current,
            )
        generation = int((patch.body or {}).get("metadata", {}).get("generation", 0))
        pending = PendingResize(target, generation, self.clock.monotonic())
        self.state.pending[ref] = pending
        return pending

    def judge(
        self, ref: str, pending: PendingResize, pod: Pod | None
    ) -> tuple[ResizeResult | None, ResourceRequirements | None]:
        """The final result of a resize seen in ``pod`` (None: keep waiting) and, when the spec
        must be put back, the resources in force to patch it to."""
        s = self.settings
        now = self.clock.monotonic()
        current = self.state.allocations.get(ref)
        if pod is None:
            self.state.pending.pop(ref, None)
            return ResizeResult(ResizeStatus.ERROR, f"pod {ref} disappeared while resizing"), None
        obs = observe_resize(pod, pending.generation, s.container_name)
        revert = actual_resources(pod, s.container_name)
        if obs.progress is not Progress.WAITING:
            self.state.unobserved_since.pop(ref, None)
        if obs.progress is not Progress.DEFERRED:
            self.state.deferred_since.pop(ref, None)
        if obs.progress is Progress.DONE:
            self.state.pending.pop(ref, None)
            # the allocation reported is the one in force, read back (CPU-limit and default-request
            # adjustments included), not the one asked for
            applied = in_force(pod, s.container_name, fallback=pending.target)
            self.state.allocations[ref] = applied
            reason = f"in force after {now - pending.since:.1f}s (generation {pending.generation})"
            return ResizeResult(ResizeStatus.APPLIED, reason, applied), None
        if obs.progress is Progress.GONE:
            self.state.pending.pop(ref, None)
            return ResizeResult(
                ResizeStatus.ERROR, f"{obs.message} before the resize was in force", current
            ), None
        if obs.progress is Progress.INFEASIBLE:
            self.state.pending.pop(ref, None)
            reason = f"PodResizePending Infeasible: {obs.message}; spec reverted"
            return ResizeResult(ResizeStatus.INFEASIBLE, reason, current), revert
        if obs.progress is Progress.DEFERRED:
            deferred = self.state.deferred_since.setdefault(ref, now)
            if now - deferred >= s.deferred_timeout_s:
                self.state.pending.pop(ref, None)
                self.state.deferred_since.pop(ref, None)
                reason = f"deferred for more than {s.deferred_timeout_s:g}s ({obs.message}); spec reverted"
                return ResizeResult(ResizeStatus.INFEASIBLE, reason, current), revert
        if obs.progress is Progress.WAITING:
            unseen = self.state.unobserved_since.setdefault(ref, pending.since)
            if now - unseen >= s.unobserved_timeout_s:
                self.state.pending.pop(ref, None)
                self.state.unobserved_since.pop(ref, None)
                reason = (
                    f"not observed by the kubelet within {s.unobserved_timeout_s:g}s "
                    f"(generation {pending.generation}); spec reverted"
                )
                return ResizeResult(ResizeStatus.ERROR, reason, current), revert
        if obs.progress in (Progress.IN_PROGRESS, Progress.IN_PROGRESS_ERROR):
            if pending.in_progress_since is None:
                pending.in_progress_since = now
            elif now - pending.in_progress_since >= s.in_progress_timeout_s:
                self.state.pending.pop(ref, None)
                detail = f": {obs.message}" if obs.message else ""
                reason = (
                    f"PodResizeInProgress for more than {s.in_progress_timeout_s:g}s{detail}; spec reverted"
                )
                return ResizeResult(ResizeStatus.ERROR, reason, current), revert
        return None, None

    def still_pending(self, ref: str, pending: PendingResize, pod: Pod | None) -> ResizeResult:
        """PENDING with what the pod says, when the caller stops waiting."""
        obs = observe_resize(pod, pending.generation, self.settings.container_name) if pod else None
        what = {
            Progress.DEFERRED: "PodResizePending Deferred",
            Progress.IN_PROGRESS: "PodResizeInProgress",
            Progress.IN_PROGRESS_ERROR: "PodResizeInProgress Error",
        }.get(obs.progress if obs else Progress.WAITING, "not yet observed by the kubelet")
        detail = f": {obs.message}" if obs and obs.message else ""
        return ResizeResult(ResizeStatus.PENDING, f"{what}{detail}", self.state.allocations.get(ref))

    def _follow(self, ref: str, name: str, pending: PendingResize) -> Proc[ResizeResult]:
        deadline = self.clock.monotonic() + self.settings.settle_timeout_s
        while True:
            pod = yield from self._read_pod(name)
            result, revert = self.judge(ref, pending, pod)
            if revert:
                yield from self._revert(ref, name, revert)
            if result is not None:
                return result
            if self.clock.monotonic() >= deadline:
                return self.still_pending(ref, pending, pod)
            yield Sleep(self.settings.poll_interval_s)

    def _revert(self, ref: str, name: str, actual: ResourceRequirements) -> Proc[None]:
        """Put the spec back to the resources in force, so it does not promise what never came."""
        reply = yield Call(Verb.PATCH_RESIZE, name, resize_body(self.settings.container_name, actual))
        assert reply is not None
        if not reply.ok:
            log.warning("could not revert the resize of %s: %s", ref, reply.message)

    # ---- control loop: submit now, observe on later ticks ------------------------------------------
    def submit(self, handle: Handle, target: Allocation, pod: Pod | None = None) -> Proc[ResizeResult]:
        """Send a resize without waiting for the kubelet: PENDING (with the allocation in force)
        once accepted, or the final result when it must not be sent or the server refused it.
        ``pod``: the pod as just listed (a shaping round's snapshot), saving one read."""
        ref = handle.ref
        if ref in self.state.released:
            return ResizeResult(ResizeStatus.ERROR, "the task was released")
        pending = self.state.pending.get(ref)
        if pending is not None and pending.target == target:
            result = yield from self.poll(handle, pod)
            return result or ResizeResult(ResizeStatus.ERROR, "the resize in flight vanished")
        _, name = split_ref(ref)
        if pod is None:
            pod = yield from self._read_pod(name)
        if pod is None:
            return ResizeResult(ResizeStatus.ERROR, f"pod {ref} not found or unreadable")
        _, largest = yield from self._nodes()
        usage = (yield from self.usage(handle)) if self.needs_usage(handle, target, pod) else None
        self.state.allocations.setdefault(ref, self.current(ref, pod))
        prepared = self.prepare(handle, target, pod, usage, largest)
        if isinstance(prepared, ResizeResult):
            return prepared
        patch = yield Call(Verb.PATCH_RESIZE, name, resize_body(self.settings.container_name, prepared))
        assert patch is not None
        started = self.after_patch(ref, target, patch)
        if isinstance(started, ResizeResult):
            return started
        self.state.unobserved_since.setdefault(ref, started.since)
        return ResizeResult(
            ResizeStatus.PENDING,
            f"submitted (generation {started.generation}); not yet observed by the kubelet",
            self.state.allocations.get(ref),
        )

    def poll(self, handle: Handle, pod: Pod | None = None) -> Proc[ResizeResult | None]:
        """One status read of the resize in flight: its final result, PENDING, or None (none).
        ``pod``: the pod as just listed (a shaping round's snapshot): no request at all."""
        pending = self.state.pending.get(handle.ref)
        if pending is None:
            return None
        _, name = split_ref(handle.ref)
        if pod is None:
            pod = yield from self._read_pod(name)
        result, revert = self.judge(handle.ref, pending, pod)
        if revert:
            yield from self._revert(handle.ref, name, revert)
        return result if result is not None else self.still_pending(handle.ref, pending, pod)

    def attach(self, name: str, pod: Pod | None = None) -> Proc[Handle | None]:
        """Rebuild this backend's view of a pod from the cluster (after a restart, or a pod made
        by someone else, e.g. KubernetesPodOperator): the allocation in force, and a resize in
        flight when the spec is ahead of what the kubelet actuated. None when there is no pod."""
        if pod is None:
            pod = yield from self._read_pod(name)
        if pod is None:
            return None
        ref = f"{self.settings.namespace}/{name}"
        self.state.released.discard(ref)
        allocation = in_force(pod, self.settings.container_name)
        self.state.allocations[ref] = allocation
        container = container_spec(pod, self.settings.container_name)
        generation = int(pod.get("metadata", {}).get("generation", 0) or 0)
        progress = observe_resize(pod, generation, self.settings.container_name).progress
        if container is not None and progress not in (Progress.DONE, Progress.GONE):
            target = allocation_of(container.get("resources"))
            self.state.pending[ref] = PendingResize(target, generation, self.clock.monotonic())
        return Handle(backend=BACKEND_NAME, name=name, ref=ref, allocation=allocation)

    def find(self, selector: str) -> Proc[list[Handle]]:
        """Handles of the pods matching a label selector (one list call), rebuilt as ``attach``."""
        reply = yield Call(Verb.LIST_PODS, query=(("labelSelector", selector),))
        assert reply is not None
        if not reply.ok or not isinstance(reply.body, dict):
            return []
        handles = []
        for pod in reply.body.get("items", []):
            name = pod.get("metadata", {}).get("name", "")
            handle = yield from self.attach(name, pod)
            if handle is not None:
                handles.append(handle)
        return handles

    def snapshot(self, selector: str) -> Proc[tuple[dict[str, Pod], dict[str, ResourceVector]]]:
        """Pods matching ``selector`` and their usage, in two list calls (one shaping interval of
        many pods costs two requests, not two per pod)."""
        query = (("labelSelector", selector),) if selector else ()
        reply = yield Call(Verb.LIST_PODS, query=query)
        assert reply is not None
        pods: dict[str, Pod] = {}
        if reply.ok and isinstance(reply.body, dict):
            for pod in reply.body.get("items", []):
                pods[f"{self.settings.namespace}/{pod.get('metadata', {}).get('name', '')}"] = pod
        usage: dict[str, ResourceVector] = {}
        if pods:
            metrics = yield Call(Verb.LIST_POD_METRICS, query=query)
            assert metrics is not None
            if metrics.ok and isinstance(metrics.body, dict):
                for item in metrics.body.get("items", []):
                    usage[f"{self.settings.namespace}/{item.get('metadata', {}).get('name', '')}"] = usage_of(
                        item
                    )
        return pods, usage

    # ---- batch (shaping interval) --------------------------------------------------------------
    def usage_all(self) -> Proc[dict[str, ResourceVector]]:
        """Usage of every managed pod in the namespace in one metrics list call."""
        reply = yield Call(
            Verb.LIST_POD_METRICS, query=(("labelSelector", f"{MANAGED_BY[0]}={MANAGED_BY[1]}"),)
        )
        assert reply is not None
        out: dict[str, ResourceVector] = {}
        if reply.ok and isinstance(reply.body, dict):
            for item in reply.body.get("items", []):
                name = item.get("metadata", {}).get("name", "")
                out[f"{self.settings.namespace}/{name}"] = usage_of(item)
        return out


def in_force(pod: Pod, container: str, fallback: Allocation | None = None) -> Allocation:
    """The allocation the kubelet actuated (status), else ``fallback``, else the spec."""
    actual = actual_resources(pod, container)
    if actual:
        return allocation_of(actual)
    if fallback is not None:
        return fallback
    return allocation_of((container_spec(pod, container) or {}).get("resources"))


def drive(proc: Proc[T], execute: Any) -> T:
    """Run ``proc`` synchronously; ``execute(op)`` performs one Call or Sleep."""
    try:
        op = next(proc)
        while True:
            op = proc.send(execute(op))
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]
