"""A simulated scheduler + kubelet: placement, container lifecycle, in-place resize, usage, OOM.

Driven by ``tick()`` on an injected clock, so tests move time instead of sleeping. Per tick it
binds pending pods to nodes with room (requests against node allocatable), starts containers
after ``start_delay_s``, runs in-place resizes the way kubelet 1.35 does (Infeasible above node
allocatable, Deferred while other pods hold the room, allocated then actuated after
``actuation_delay_s`` with ``PodResizeInProgress``, a memory limit below usage held with an
``Error``), integrates each container's workload curve (CPU capped at its limit with throttling
counters; memory above the limit = OOMKilled, exit 137) and writes pod status only when it changed.
It never touches a pod's spec.
"""

from __future__ import annotations

import hashlib
import math
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC
from typing import TYPE_CHECKING, Any

from airflow_predictive.emulator.kubernetes import priority, quantity, scheduling
from airflow_predictive.emulator.kubernetes.pod_status import pod_status
from airflow_predictive.emulator.kubernetes.resources import NODES, PODS
from airflow_predictive.emulator.kubernetes.workload import (
    WORKLOAD_ANNOTATION,
    Demand,
    Workload,
    WorkloadError,
    parse_annotation,
)

if TYPE_CHECKING:
    from airflow_predictive.core.ports import Clock
    from airflow_predictive.emulator.kubernetes.store import Obj, Store

CFS_PERIOD_S = 0.1
RESIZE_CONDITIONS = ("PodResizePending", "PodResizeInProgress")


@dataclass(frozen=True)
class KubeletConfig:
    """Timing of the simulated node agent.

    start_delay_s: from binding to containers running (image pull, sandbox).
    actuation_delay_s: from a resize being allocated to the new limits being in force (kind 1.35
        measured about 1.8 s from PATCH to status).
    metrics_window_s: the window PodMetrics averages CPU over (metrics-server: 10-60 s).
    metrics_resolution_s: how often PodMetrics are scraped (metrics-server ``--metric-resolution``,
        15 s recommended, 10 s minimum): a pod's metrics change only this often; 0 = every read
        answers live (the emulator's default).
    backoff_base_s / backoff_max_s: CrashLoopBackOff after a container died.
    events: record core/v1 Events (Scheduled, Started, resize ...); None = the kubelet's default
        (on for the process kubelet; off for the simulated one, whose 1,000-pod benchmark they
        would slow by about half).
    """

    start_delay_s: float = 0.0
    actuation_delay_s: float = 1.8
    metrics_window_s: float = 15.0
    metrics_resolution_s: float = 0.0
    backoff_base_s: float = 10.0
    backoff_max_s: float = 300.0
    events: bool | None = None


@dataclass
class ContainerRuntime:
    name: str
    image: str
    workload: Workload
    started_at: float
    started_ts: str
    restart_count: int = 0
    running: bool = True
    waiting_until: float | None = None
    terminated: dict[str, Any] | None = None
    last_terminated: dict[str, Any] | None = None
    cpu_seconds: float = 0.0
    cpu_rate: float = 0.0
    memory: float = 0.0
    rx_bytes: float = 0.0
    tx_bytes: float = 0.0
    fs_read_bytes: float = 0.0
    fs_write_bytes: float = 0.0
    periods: float = 0.0
    throttled_periods: float = 0.0
    oom_events: int = 0
    samples: deque[tuple[float, float]] = field(default_factory=deque)
    sidecar: bool = False  # a restartable init container (restartPolicy: Always)
    waiting: tuple[str, str] | None = None  # (reason, message): PodInitializing, ErrImagePull ...
    stopping: bool = False  # sidecars being stopped once the app containers are done

    @property
    def container_id(self) -> str:
        digest = hashlib.sha256(f"{self.name}/{self.started_ts}/{self.restart_count}".encode()).hexdigest()
        return f"containerd://{digest}"

    def window_rate(self, now: float, window: float) -> float:
        while len(self.samples) > 2 and self.samples[1][0] <= now - window:
            self.samples.popleft()
        if len(self.samples) >= 2 and self.samples[-1][0] > self.samples[0][0]:
            (t0, c0), (t1, c1) = self.samples[0], self.samples[-1]
            return (c1 - c0) / (t1 - t0)
        return self.cpu_rate


@dataclass
class PodRuntime:
    uid: str
    namespace: str
    name: str
    node: str
    bound_at: float
    created_ts: str
    started: bool = False
    start_ts: str = ""
    started_mono: float | None = None  # when the kubelet started the pod (activeDeadlineSeconds)
    deadline_exceeded: bool = False
    containers: dict[str, ContainerRuntime] = field(default_factory=dict)
    allocated: dict[str, dict[str, Any]] = field(default_factory=dict)  # container -> resources
    actual: dict[str, dict[str, Any]] = field(default_factory=dict)
    pending: tuple[str, str] | None = None  # (Deferred | Infeasible, message)
    pending_since: float | None = None
    pending_ts: str = ""
    in_progress_due: float | None = None
    in_progress_ts: str = ""
    in_progress_error: str | None = None
    observed_generation: int = 0
    finished: bool = False
    init_containers: dict[str, ContainerRuntime] = field(default_factory=dict)
    initialized: bool = True  # all regular init containers completed (sidecars started)
    init_failed: bool = False  # an init container failed under restartPolicy Never
    spec_cache: tuple[str, dict[str, dict[str, Any]]] | None = None  # (resourceVersion, resources)
    status_signature: tuple[Any, ...] | None = None  # what the last written status was built from

    def spec_resources(self, pod: Obj) -> dict[str, dict[str, Any]]:
        rv = pod["metadata"].get("resourceVersion", "")
        if self.spec_cache is None or self.spec_cache[0] != rv:
            self.spec_cache = (rv, _spec_resources(pod))
        return self.spec_cache[1]

    def signature(self, pod: Obj) -> tuple[Any, ...]:
        """Everything the pod status is built from: unchanged signature, unchanged status."""
        return (
            pod["metadata"].get("resourceVersion"),
            self.started,
            self.finished,
            self.pending,
            self.in_progress_error,
            self.observed_generation,
            self.allocated,
            self.actual,
            self.initialized,
            self.init_failed,
            self.deadline_exceeded,
            tuple(
                (
                    c.running,
                    c.waiting_until,
                    c.restart_count,
                    c.terminated,
                    c.last_terminated,
                    c.started_ts,
                    c.waiting,
                )
                for c in (*self.init_containers.values(), *self.containers.values())
            ),
        )


def _requests_of(resources: dict[str, dict[str, Any]]) -> dict[str, int]:
    """Summed pod requests: cpu in millicores, memory and others in units."""
    total: dict[str, int] = {}
    for res in resources.values():
        for name, value in (res.get("requests") or {}).items():
            amount = quantity.millis(value) if name == "cpu" else quantity.integer(value)
            total[name] = total.get(name, 0) + amount
    return total


def _spec_resources(pod: Obj) -> dict[str, dict[str, Any]]:
    return {
        c["name"]: {k: dict(v) for k, v in (c.get("resources") or {}).items() if k in ("requests", "limits")}
        for c in pod["spec"].get("containers", [])
    }


def _resources_message(actual: dict[str, dict[str, Any]]) -> str:
    import json

    return json.dumps(
        {"containers": [{"name": n, "resources": r} for n, r in sorted(actual.items())]},
        separators=(",", ":"),
        sort_keys=True,
    )


def _limit(resources: dict[str, Any], name: str) -> float:
    value = (resources.get("limits") or {}).get(name)
    return math.inf if value is None else float(quantity.parse(value))


class Kubelet:
    """Scheduler and kubelet for every node of the emulated cluster."""

    events_default = False

    @property
    def events_on(self) -> bool:
        return self.events_default if self.config.events is None else self.config.events

    def __init__(self, store: Store, clock: Clock, config: KubeletConfig | None = None) -> None:
        self.store = store
        self.clock = clock
        self.config = config or KubeletConfig()
        self.pods: dict[str, PodRuntime] = {}
        self._used: dict[str, dict[str, int]] = {}
        self._last = clock.monotonic()
        self._event_names: dict[str, str] = {}
        self._bound: list[Obj] | None = None
        self._lowest: int | None = None
        self.scraped: dict[str, tuple[float, dict[str, Any]]] = {}  # uid -> (at, PodMetrics)

    def ts(self) -> str:
        return self.clock.now().astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

    def event(
        self,
        pod: Obj,
        reason: str,
        message: str,
        *,
        type_: str = "Normal",
        component: str = "kubelet",
        container: str | None = None,
    ) -> None:
        """Record a core/v1 Event about ``pod`` (no-op when events are off)."""
        if not self.events_on:
            return
        from airflow_predictive.emulator.kubernetes import events

        field_path = None
        if container is not None:
            inits = {c.get("name") for c in pod["spec"].get("initContainers") or []}
            field_path = f"spec.{'initContainers' if container in inits else 'containers'}{{{container}}}"
        events.record(
            self.store,
            pod,
            reason,
            message,
            self.ts(),
            type_=type_,
            component=component,
            field_path=field_path,
            names=self._event_names,
        )

    def shutdown(self) -> None:
        """Stop whatever the kubelet runs (nothing for simulated containers)."""

    def _forget(self, rt: PodRuntime) -> None:
        """A pod vanished from the API (deleted with grace 0): drop what runs for it."""

    def log_file(self, rt: PodRuntime, container: str, previous: bool) -> str | None:
        """The log file of a container instance (None: nothing was captured, as when simulated)."""
        return None

    # ---- the loop -----------------------------------------------------------------------------
    def tick(self) -> None:
        now = self.clock.monotonic()
        dt = max(0.0, now - self._last)
        self._last = now
        nodes = {n["metadata"]["name"]: n for n in self.store.snapshot(NODES)}
        pods = self.store.snapshot(PODS)  # read-only views: writes go through store.replace
        live = {p["metadata"]["uid"] for p in pods}
        for uid in [u for u in self.pods if u not in live]:
            self.scraped.pop(uid, None)
            self._forget(self.pods.pop(uid))
        self._used = self._usage_by_node()
        self._schedule([p for p in pods if not p["spec"].get("nodeName")], nodes)
        resizing: list[tuple[Obj, PodRuntime]] = []
        for pod in pods:
            rt = self.pods.get(pod["metadata"]["uid"])
            if rt is None:
                continue
            if pod["metadata"].get("deletionTimestamp"):
                self._terminate(pod, rt)
                continue
            if not rt.started:
                if now - rt.bound_at >= self.config.start_delay_s:
                    self._start(pod, rt, now)
                    rt.started_mono = now
                else:
                    continue
            deadline = pod["spec"].get("activeDeadlineSeconds")
            if (
                deadline is not None
                and not rt.finished
                and rt.started_mono is not None
                and now - rt.started_mono >= float(deadline)
            ):
                self._deadline_exceeded(pod, rt)
            self._advance_usage(pod, rt, now, dt)
            if not rt.finished and rt.spec_resources(pod) != rt.allocated:
                resizing.append((pod, rt))
            elif rt.pending is not None:
                rt.pending = None  # the spec went back to what is allocated
        self._admit_resizes(resizing, nodes)
        for pod in pods:
            rt = self.pods.get(pod["metadata"]["uid"])
            if rt is not None and rt.started and not pod["metadata"].get("deletionTimestamp"):
                self._actuate(pod, rt, now)
                self._write_status(pod, rt)

    # ---- scheduling ---------------------------------------------------------------------------
    def _usage_by_node(self) -> dict[str, dict[str, int]]:
        """Requests allocated per node (kept up to date within a tick by bind and admit)."""
        used: dict[str, dict[str, int]] = {}
        for rt in self.pods.values():
            if not rt.finished:
                self._account(used, rt.node, _requests_of(rt.allocated), 1)
        return used

    @staticmethod
    def _account(used: dict[str, dict[str, int]], node: str, requests: dict[str, int], pods: int) -> None:
        total = used.setdefault(node, {"pods": 0})
        total["pods"] += pods
        for k, v in requests.items():
            total[k] = total.get(k, 0) + v

    def _allocated_on(self, node: str, exclude: str | None = None) -> dict[str, int]:
        total = dict(self._used.get(node, {"pods": 0}))
        rt = self.pods.get(exclude) if exclude else None
        if rt is not None and rt.node == node and not rt.finished:
            total["pods"] -= 1
            for k, v in _requests_of(rt.allocated).items():
                total[k] = total.get(k, 0) - v
        return total

    @staticmethod
    def _allocatable(node: Obj) -> dict[str, int]:
        out: dict[str, int] = {}
        for name, value in (node.get("status", {}).get("allocatable") or {}).items():
            out[name] = quantity.millis(value) if name == "cpu" else quantity.integer(value)
        return out

    def _schedule(self, pending: list[Obj], nodes: dict[str, Obj]) -> None:
        self._bound = None  # bound pods, read once per tick when a pod may preempt
        for pod in sorted(pending, key=lambda p: int(p["metadata"]["resourceVersion"])):
            if pod["metadata"].get("deletionTimestamp"):
                self.store.delete(PODS, pod["metadata"]["namespace"], pod["metadata"]["name"])
                continue
            want = _requests_of(_spec_resources(pod))
            want["pods"] = 1
            short: dict[str, int] = {}
            chosen = None
            for name, node in sorted(nodes.items()):
                unfit = scheduling.unfit_reason(pod, node)
                if unfit is not None:
                    short[unfit] = short.get(unfit, 0) + 1
                    continue
                alloc, used = self._allocatable(node), self._allocated_on(name)
                lacking = [r for r, v in want.items() if v > 0 and used.get(r, 0) + v > alloc.get(r, 0)]
                if not lacking:
                    chosen = name
                    break
                for r in lacking:
                    short[f"Insufficient {r}"] = short.get(f"Insufficient {r}", 0) + 1
            if chosen is None and self._preempt(pod, want, nodes):
                continue
            if chosen is None:
                reasons = ", ".join(f"{n} {r}" for r, n in sorted(short.items()))
                message = (
                    f"0/{len(nodes)} nodes are available: {reasons}."
                    if nodes
                    else "no nodes available to schedule pods"
                )
                self._set_unschedulable(pod, message)
                continue
            self._bind(pod, chosen)
            meta = pod["metadata"]
            self.event(
                pod,
                "Scheduled",
                f"Successfully assigned {meta['namespace']}/{meta['name']} to {chosen}",
                component="default-scheduler",
            )

    def _preempt(self, pod: Obj, want: dict[str, int], nodes: dict[str, Obj]) -> bool:
        """Evict lower-priority pods from one node so that ``pod`` fits there (the scheduler's
        preemption); True while the pod waits for its victims to go."""
        prio = priority.priority_of(pod)
        if (pod.get("spec") or {}).get("preemptionPolicy") == "Never":
            return False
        nominated = (pod.get("status") or {}).get("nominatedNodeName")
        if self._bound is None:
            self._bound = [p for p in self.store.snapshot(PODS) if p["spec"].get("nodeName")]
            self._lowest = min((priority.priority_of(p) for p in self._bound), default=None)
        bound = self._bound
        if nominated and any(
            p["spec"]["nodeName"] == nominated and p["metadata"].get("deletionTimestamp") for p in bound
        ):
            return True  # victims still terminating
        if self._lowest is None or self._lowest >= prio:
            return False  # nothing of lower priority to evict
        best: tuple[str, list[priority.Candidate]] | None = None
        for name, node in sorted(nodes.items()):
            if scheduling.unfit_reason(pod, node) is not None:
                continue
            on_node = []
            for p in bound:
                rt = self.pods.get(p["metadata"]["uid"])
                if p["spec"]["nodeName"] == name and rt is not None and not rt.finished:
                    meta = p["metadata"]
                    on_node.append(
                        priority.Candidate(
                            meta["namespace"],
                            meta["name"],
                            priority.priority_of(p),
                            _requests_of(rt.allocated),
                        )
                    )
            victims = priority.victims_for(
                want, self._allocatable(node), self._allocated_on(name), on_node, prio
            )
            if victims is not None and (best is None or len(victims) < len(best[1])):
                best = (name, victims)
        if best is None:
            return False
        node_name, victims = best
        meta = pod["metadata"]
        for victim in victims:
            self._evict(victim.namespace, victim.name, f"Preempted by pod {meta['uid']} on node {node_name}")

        def nominate(cur: Obj) -> Obj:
            cur.setdefault("status", {})["nominatedNodeName"] = node_name
            return cur

        self._write(pod, nominate, spec=False)
        return True

    def _evict(self, namespace: str, name: str, message: str, reason: str = "PreemptionByScheduler") -> None:
        """Delete a pod with its grace period and a ``DisruptionTarget`` condition (preemption,
        consolidation)."""
        from airflow_predictive.emulator.kubernetes.errors import ApiError

        try:
            victim = self.store.get(PODS, namespace, name)
        except ApiError:
            return
        self.event(
            victim,
            "Preempted" if reason == "PreemptionByScheduler" else "Evicted",
            message,
            component="default-scheduler",
        )
        grace = int(victim["spec"].get("terminationGracePeriodSeconds", 30))

        def mutate(cur: Obj) -> Obj:
            cur["metadata"].setdefault("deletionTimestamp", self.ts())
            cur["metadata"].setdefault("deletionGracePeriodSeconds", grace)
            status = cur.setdefault("status", {})
            status["conditions"] = [
                *(c for c in status.get("conditions", []) if c.get("type") != "DisruptionTarget"),
                {
                    "type": "DisruptionTarget",
                    "status": "True",
                    "lastProbeTime": None,
                    "lastTransitionTime": self.ts(),
                    "reason": reason,
                    "message": message,
                },
            ]
            return cur

        self._write(victim, mutate, spec=False)

    def _set_unschedulable(self, pod: Obj, message: str) -> None:
        old = next(
            (c for c in (pod.get("status") or {}).get("conditions", []) if c.get("type") == "PodScheduled"),
            None,
        )
        if old is None or old.get("message") != message:
            self.event(pod, "FailedScheduling", message, type_="Warning", component="default-scheduler")

        def mutate(cur: Obj) -> Obj:
            status = cur.setdefault("status", {})
            status["phase"] = "Pending"
            conds = [c for c in status.get("conditions", []) if c.get("type") != "PodScheduled"]
            old = next((c for c in status.get("conditions", []) if c.get("type") == "PodScheduled"), None)
            ts = old["lastTransitionTime"] if old and old.get("message") == message else self.ts()
            conds.append(
                {
                    "type": "PodScheduled",
                    "status": "False",
                    "lastProbeTime": None,
                    "lastTransitionTime": ts,
                    "reason": "Unschedulable",
                    "message": message,
                }
            )
            status["conditions"] = conds
            return cur

        self._write(pod, mutate, spec=False)

    def _bind(self, pod: Obj, node: str) -> None:
        meta = pod["metadata"]

        def mutate(cur: Obj) -> Obj:
            cur["spec"]["nodeName"] = node
            cur.setdefault("status", {})["phase"] = "Pending"
            cur["status"].pop("nominatedNodeName", None)
            cur["status"]["conditions"] = [
                {
                    "type": "PodScheduled",
                    "status": "True",
                    "lastProbeTime": None,
                    "lastTransitionTime": self.ts(),
                }
            ]
            return cur

        bound = self._write(pod, mutate, spec=False)
        if bound is None:
            return
        rt = PodRuntime(meta["uid"], meta["namespace"], meta["name"], node, self.clock.monotonic(), self.ts())
        rt.allocated = _spec_resources(bound)
        rt.actual = _spec_resources(bound)
        self.pods[meta["uid"]] = rt
        self._account(self._used, node, _requests_of(rt.allocated), 1)

    def _write(self, pod: Obj, mutate: Any, *, spec: bool) -> Obj | None:
        from airflow_predictive.emulator.kubernetes.errors import ApiError

        meta = pod["metadata"]
        try:
            return self.store.replace(
                PODS, meta["namespace"], meta["name"], mutate, spec_changes_generation=spec
            )
        except ApiError:
            return None  # deleted meanwhile

    # ---- container lifecycle ------------------------------------------------------------------
    def _start(self, pod: Obj, rt: PodRuntime, now: float) -> None:
        names = [c["name"] for c in pod["spec"]["containers"]]
        try:
            workloads = parse_annotation(
                (pod["metadata"].get("annotations") or {}).get(WORKLOAD_ANNOTATION), names
            )
        except WorkloadError:
            workloads = {n: Workload.idle() for n in names}
        ts = self.ts()
        rt.started, rt.start_ts = True, ts
        for c in pod["spec"].get("initContainers") or []:
            # Simulated init containers complete at once; native sidecars keep running (idle).
            sidecar = c.get("restartPolicy") == "Always"
            cr = ContainerRuntime(c["name"], c.get("image", ""), Workload.idle(), now, ts, sidecar=sidecar)
            if not sidecar:
                cr.running = False
                cr.terminated = {
                    "exitCode": 0,
                    "reason": "Completed",
                    "startedAt": ts,
                    "finishedAt": ts,
                    "containerID": cr.container_id,
                }
            rt.init_containers[c["name"]] = cr
        for c in pod["spec"]["containers"]:
            cr = ContainerRuntime(c["name"], c.get("image", ""), workloads[c["name"]], now, ts)
            cr.memory = cr.workload.at(0.0).memory
            cr.samples.append((now, 0.0))
            rt.containers[c["name"]] = cr
            self.event(pod, "Started", f"Started container {c['name']}", container=c["name"])

    def _restart_policy(self, pod: Obj) -> str:
        return str(pod["spec"].get("restartPolicy", "Always"))

    def _advance_usage(self, pod: Obj, rt: PodRuntime, now: float, dt: float) -> None:
        policy = self._restart_policy(pod)
        for cr in rt.containers.values():
            if cr.waiting_until is not None:
                if now < cr.waiting_until:
                    continue
                cr.waiting_until, cr.running, cr.started_at, cr.started_ts = None, True, now, self.ts()
                cr.memory = cr.workload.at(0.0).memory
                continue
            if not cr.running:
                continue
            t1 = now - cr.started_at
            t0 = max(0.0, t1 - dt)
            step = t1 - t0
            a, b = cr.workload.at(t0), cr.workload.at(t1)
            mid = Demand.between(a, b, 0.5)
            limits = rt.actual.get(cr.name, {})
            cpu_limit = _limit(limits, "cpu")
            used = min(mid.cpu, cpu_limit)
            cr.cpu_rate = used
            cr.cpu_seconds += used * step
            cr.periods += step / CFS_PERIOD_S if cpu_limit < math.inf else 0.0
            if mid.cpu > cpu_limit:
                cr.throttled_periods += step / CFS_PERIOD_S
            cr.rx_bytes += mid.rx_bps * step
            cr.tx_bytes += mid.tx_bps * step
            cr.fs_read_bytes += mid.fs_read_bps * step
            cr.fs_write_bytes += mid.fs_write_bps * step
            cr.memory = b.memory
            cr.samples.append((now, cr.cpu_seconds))
            if cr.workload.peak_memory(t0, t1) > _limit(limits, "memory"):
                cr.oom_events += 1
                self._exit(cr, rt, policy, 137, "OOMKilled", now)
            elif cr.workload.finished(t1):
                code = cr.workload.exit_code
                self._exit(cr, rt, policy, code, "Completed" if code == 0 else "Error", now)
        if all(not c.running and c.waiting_until is None for c in rt.containers.values()):
            rt.finished = True

    def _deadline_exceeded(self, pod: Obj, rt: PodRuntime) -> None:
        """activeDeadlineSeconds passed: every container is killed, the pod fails with reason
        DeadlineExceeded (never restarted, whatever its restartPolicy)."""
        for cr in [*rt.init_containers.values(), *rt.containers.values()]:
            cr.waiting_until = None
            if cr.running:
                cr.running, cr.cpu_rate = False, 0.0
                cr.terminated = {
                    "exitCode": 137,
                    "reason": "Error",
                    "startedAt": cr.started_ts,
                    "finishedAt": self.ts(),
                    "containerID": cr.container_id,
                }
        rt.finished = rt.deadline_exceeded = True
        self.event(
            pod,
            "DeadlineExceeded",
            "Pod was active on the node longer than the specified deadline",
            type_="Normal",
        )

    def _exit(
        self, cr: ContainerRuntime, rt: PodRuntime, policy: str, code: int, reason: str, now: float
    ) -> None:
        record = {
            "exitCode": code,
            "reason": reason,
            "startedAt": cr.started_ts,
            "finishedAt": self.ts(),
            "containerID": cr.container_id,
        }
        cr.running, cr.cpu_rate = False, 0.0
        if policy == "Always" or (policy == "OnFailure" and code != 0):
            cr.last_terminated = record
            cr.restart_count += 1
            backoff = min(self.config.backoff_max_s, self.config.backoff_base_s * 2 ** (cr.restart_count - 1))
            cr.waiting_until = now + backoff
        else:
            cr.terminated = record

    def _terminate(self, pod: Obj, rt: PodRuntime) -> None:
        meta = pod["metadata"]
        from airflow_predictive.emulator.kubernetes.errors import ApiError

        try:
            self.store.delete(PODS, meta["namespace"], meta["name"])
        except ApiError:
            pass
        self.pods.pop(rt.uid, None)
        self.scraped.pop(rt.uid, None)

    # ---- in-place resize ----------------------------------------------------------------------
    def _admit_resizes(self, resizing: list[tuple[Obj, PodRuntime]], nodes: dict[str, Obj]) -> None:
        def order(item: tuple[Obj, PodRuntime]) -> tuple[int, int, float]:
            pod, rt = item
            qos = {"Guaranteed": 0, "Burstable": 1}.get(pod.get("status", {}).get("qosClass", ""), 2)
            since = rt.pending_since if rt.pending_since is not None else self.clock.monotonic()
            return (-int(pod["spec"].get("priority") or 0), qos, since)

        for pod, rt in sorted(resizing, key=order):
            desired = rt.spec_resources(pod)
            node = nodes.get(rt.node)
            alloc = self._allocatable(node) if node else {}
            want = _requests_of(desired)
            message = None
            for name in ("memory", "cpu"):
                if want.get(name, 0) > alloc.get(name, 0):
                    message = f"Node didn't have enough capacity: {name}, requested: {want[name]}, capacity: {alloc.get(name, 0)}"
                    break
            if message is not None:
                self._pend(rt, "Infeasible", message)
                continue
            used = self._allocated_on(rt.node, exclude=rt.uid)
            short = next(
                (r for r in ("cpu", "memory") if used.get(r, 0) + want.get(r, 0) > alloc.get(r, 0)), None
            )
            if short is not None:
                self._pend(
                    rt,
                    "Deferred",
                    f"Node didn't have enough resource: {short}, requested: {want.get(short, 0)}, "
                    f"used: {used.get(short, 0)}, capacity: {alloc.get(short, 0)}",
                )
                continue
            self._account(self._used, rt.node, {k: -v for k, v in _requests_of(rt.allocated).items()}, 0)
            self._account(self._used, rt.node, want, 0)
            rt.allocated = desired
            rt.pending, rt.pending_since = None, None
            rt.in_progress_due = self.clock.monotonic() + self.config.actuation_delay_s
            rt.in_progress_ts, rt.in_progress_error = self.ts(), None

    def _pend(self, rt: PodRuntime, reason: str, message: str) -> None:
        if rt.pending is None or rt.pending[0] != reason:
            rt.pending_ts = self.ts()
            if self.events_on:
                pod = self._pod_of(rt)
                if pod is not None:
                    self.event(pod, f"Resize{reason}", message, type_="Warning")
        if rt.pending_since is None:
            rt.pending_since = self.clock.monotonic()
        rt.pending = (reason, message)

    def _actuate(self, pod: Obj, rt: PodRuntime, now: float) -> None:
        rt.observed_generation = int(pod["metadata"].get("generation", 1))
        if rt.allocated == rt.actual:
            rt.in_progress_due = None
            return
        if rt.in_progress_due is None:
            rt.in_progress_due, rt.in_progress_ts = now + self.config.actuation_delay_s, self.ts()
        if now < rt.in_progress_due:
            return
        for name, res in rt.allocated.items():
            cr = rt.containers.get(name)
            limit = _limit(res, "memory")
            if (
                cr is not None
                and cr.running
                and limit < _limit(rt.actual.get(name, {}), "memory")
                and limit < cr.memory
            ):
                rt.in_progress_error = f"memory limit ({int(limit)}) below current usage"
                return
        problem = self._apply_limits(pod, rt)
        if problem is not None:
            if rt.in_progress_error != problem:
                self.event(pod, "ResizeError", problem, type_="Warning")
            rt.in_progress_error = problem
            return
        restart = self._needs_restart(pod, rt)
        rt.actual = {k: {p: dict(v) for p, v in r.items()} for k, r in rt.allocated.items()}
        rt.in_progress_due, rt.in_progress_error = None, None
        if self.events_on:
            self.event(pod, "ResizeCompleted", f"Pod resize completed: {_resources_message(rt.actual)}")
        for name in restart:
            cr = rt.containers[name]
            cr.restart_count += 1
            cr.started_at, cr.started_ts = now, self.ts()

    def _apply_limits(self, pod: Obj, rt: PodRuntime) -> str | None:
        """Put ``rt.allocated`` in force; the reason when that failed (simulated: always works)."""
        return None

    def _needs_restart(self, pod: Obj, rt: PodRuntime) -> list[str]:
        out = []
        for c in pod["spec"]["containers"]:
            policies = {p.get("resourceName"): p.get("restartPolicy") for p in c.get("resizePolicy") or []}
            before, after = rt.actual.get(c["name"], {}), rt.allocated.get(c["name"], {})
            for resource in ("cpu", "memory"):
                changed = any(
                    (before.get(part) or {}).get(resource) != (after.get(part) or {}).get(resource)
                    for part in ("requests", "limits")
                )
                if changed and policies.get(resource) == "RestartContainer" and c["name"] in rt.containers:
                    out.append(c["name"])
                    break
        return out

    def _pod_of(self, rt: PodRuntime) -> Obj | None:
        from airflow_predictive.emulator.kubernetes.errors import ApiError

        try:
            return self.store.get(PODS, rt.namespace, rt.name)
        except ApiError:
            return None

    # ---- status -------------------------------------------------------------------------------
    def _write_status(self, pod: Obj, rt: PodRuntime) -> None:
        signature = rt.signature(pod)
        if signature == rt.status_signature:
            return
        rt.status_signature = signature
        status = pod_status(self, pod, rt)
        if status == pod.get("status"):
            return

        def mutate(cur: Obj) -> Obj | None:
            if cur["metadata"].get("uid") != rt.uid:
                return None
            fresh = pod_status(self, cur, rt)
            cur["status"] = fresh
            return cur

        self._write(pod, mutate, spec=False)
