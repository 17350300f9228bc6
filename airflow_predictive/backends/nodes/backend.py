"""``NodePoolBackend``: node pools as a resource backend, through the Kubernetes API only.

- capacity: the nodes of every Karpenter NodePool (``karpenter.sh/v1``), present (Ready) and
  coming (launched, not Ready yet), against the pools' ``limits`` and instance types;
- provision: warm capacity ahead of a plan step as a placeholder pod (``placeholders``), released
  when the real pod lands (``settle``) or the plan lapses; the CapacityBuffer API is detected
  through discovery (``mechanism``) but this version always uses placeholders (see docs/nodes.md);
- steering: the pool (and instance type) whose node holds a task's predicted peak.

It never raises for expected failures: API errors are logged once and answered with an empty
result (no pools: nothing to warm, the task runs as it would have); ``provision`` raises
``ProvisionError`` when no placeholder was created. Uses the official sync client with raw JSON
(``_preload_content=False``), as the Kubernetes backend does.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from airflow_predictive.backends.nodes import autoscaler, karpenter, placeholders
from airflow_predictive.core.model.backend import (
    Allocation,
    Capabilities,
    Capacity,
    ExitKind,
    Handle,
    ResizeResult,
    ResizeStatus,
    TaskState,
)
from airflow_predictive.core.model.nodes import (
    InstanceType,
    InvalidNodePool,
    Node,
    NodePool,
    NodeState,
    PoolChoice,
    WarmCapacity,
    choose_pool,
    launch_at,
)
from airflow_predictive.core.model.resources import ResourceVector
from airflow_predictive.core.ports import ProvisionError

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from airflow_predictive.core.model.backend import ProvisionSpec

log = logging.getLogger(__name__)
BACKEND_NAME = "nodes"
CAPACITY_BUFFER_GROUP = "autoscaling.x-k8s.io"
POOL_LABEL_KEY = "predictive.airflow.apache.org/pool"  # ProvisionSpec.labels: which pool to warm


class Mechanism(StrEnum):
    """How warm capacity is made on this cluster."""

    PLACEHOLDERS = "placeholders"
    CAPACITY_BUFFER = "capacity_buffer"  # the cluster serves autoscaling.x-k8s.io CapacityBuffers


@dataclass(frozen=True)
class NodePoolSettings:
    """namespace: where placeholders live. margin_s: how much earlier than the pool's
    provisioning delay placeholders are created. placeholders: their PriorityClass and image."""

    namespace: str = "default"
    margin_s: float = 10.0
    request_timeout_s: float = 10.0
    placeholders: placeholders.PlaceholderSettings = field(default_factory=placeholders.PlaceholderSettings)


@dataclass(frozen=True, slots=True)
class PoolState:
    """One pool and its nodes now: Ready ones (present) and booting ones (coming)."""

    pool: NodePool
    nodes: tuple[Node, ...]

    @property
    def present(self) -> ResourceVector:
        return _sum(n.allocatable for n in self.nodes if n.state is NodeState.READY)

    @property
    def coming(self) -> ResourceVector:
        return _sum(n.allocatable for n in self.nodes if n.state is NodeState.PROVISIONING)


def _sum(vectors: Iterable[ResourceVector]) -> ResourceVector:
    total = ResourceVector(cpu_cores=0.0, memory_bytes=0.0)
    for v in vectors:
        total = total.plus(v)
    return total


class NodePoolBackend:
    """Pools, warm capacity and steering over a ``kubernetes.client.ApiClient``."""

    name = BACKEND_NAME

    def __init__(
        self,
        api_client: Any,
        settings: NodePoolSettings | None = None,
        *,
        now: Callable[[], float] | None = None,
    ) -> None:
        from kubernetes import client

        self.settings = settings or NodePoolSettings()
        self._api_client = api_client
        self._core = client.CoreV1Api(api_client)
        self._custom = client.CustomObjectsApi(api_client)
        self._scheduling = client.SchedulingV1Api(api_client)
        self._now = now or time.time
        self._class_ready = False
        self._warned: set[str] = set()
        self._selectors: dict[str, dict[str, str]] = {}  # pool -> nodeSelector, as last read
        self._ca_down = ""  # why the cluster autoscaler's node groups were last unreadable
        self.last_error = ""  # the last failure (its caller may say what it means instead of us)
        self.log_errors = True  # False: failures are only kept in ``last_error`` (the caller logs)

    @classmethod
    def from_kubeconfig(cls, path: str, *, context: str | None = None, **kwargs: Any) -> NodePoolBackend:
        from kubernetes import config

        return cls(config.new_client_from_config(config_file=path, context=context), **kwargs)

    def close(self) -> None:
        self._api_client.close()

    # ---- I/O -------------------------------------------------------------------------------------
    def _kw(self) -> dict[str, Any]:
        return {"_preload_content": False, "_request_timeout": self.settings.request_timeout_s}

    @staticmethod
    def _json(resp: Any) -> dict[str, Any]:
        data = resp.data
        return dict(json.loads(data)) if data else {}

    def _warn(self, what: str, exc: BaseException) -> None:
        message = f"{what}: {type(exc).__name__}: {getattr(exc, 'reason', None) or exc}"
        self.last_error = message
        if self.log_errors and message not in self._warned:
            self._warned.add(message)
            log.warning("node pools: %s", message)

    # ---- pools -----------------------------------------------------------------------------------
    def mechanism(self) -> Mechanism:
        """CAPACITY_BUFFER when discovery lists a ``capacitybuffers`` resource, else PLACEHOLDERS."""
        from kubernetes import client

        try:
            groups = self._json(client.ApisApi(self._api_client).get_api_versions(**self._kw()))
            for group in groups.get("groups") or []:
                if group.get("name") != CAPACITY_BUFFER_GROUP:
                    continue
                version = (group.get("preferredVersion") or {}).get("version", "")
                doc = self._json(
                    self._api_client.call_api(
                        f"/apis/{CAPACITY_BUFFER_GROUP}/{version}",
                        "GET",
                        header_params={"Accept": "application/json"},
                        auth_settings=["BearerToken"],
                        _return_http_data_only=True,
                        **self._kw(),
                    )
                )
                if any(r.get("name") == "capacitybuffers" for r in doc.get("resources") or []):
                    return Mechanism.CAPACITY_BUFFER
        except Exception as exc:  # discovery failing must not stop warm capacity
            self._warn("API discovery failed", exc)
        return Mechanism.PLACEHOLDERS

    def pools(self) -> list[NodePool]:
        """The cluster's NodePools with a known instance-type catalog ([] when none or on error)."""
        try:
            body = self._json(
                self._custom.list_cluster_custom_object(
                    karpenter.GROUP, karpenter.VERSION, karpenter.PLURAL, **self._kw()
                )
            )
        except Exception as exc:
            self._warn("cannot list NodePools", exc)
            return []
        out = []
        for obj in body.get("items") or []:
            try:
                pool = karpenter.from_object(obj)
            except InvalidNodePool as exc:
                self._warn("NodePool ignored", exc)
                continue
            if pool.instance_types:
                out.append(pool)
        names = {p.name for p in out}
        out += [p for p in self.autoscaler_pools() if p.name not in names]
        self._selectors = {p.name: p.node_selector() for p in out}
        return out

    def autoscaler_pools(self) -> list[NodePool]:
        """The cluster autoscaler's node groups (``kube-system/cluster-autoscaler-status``), sized
        from one of their nodes (``autoscaler.pools_of``). No ConfigMap (no cluster autoscaler, or
        not allowed to read it): none, silently; unparseable: none, one warning per cause."""
        from kubernetes.client.exceptions import ApiException

        try:
            cm = self._json(
                self._core.read_namespaced_config_map(
                    autoscaler.STATUS_CONFIGMAP, autoscaler.STATUS_NAMESPACE, **self._kw()
                )
            )
            groups = autoscaler.parse_status(str((cm.get("data") or {}).get(autoscaler.STATUS_KEY, "")))
            if not groups:
                return []
            nodes = self._json(self._core.list_node(**self._kw())).get("items") or []
            pools = autoscaler.pools_of(groups, nodes)
            self._ca_down = ""
            return pools
        except ApiException as exc:
            if exc.status not in (403, 404):
                self._ca_note(f"{exc.status} {exc.reason}")
            return []
        except Exception as exc:
            self._ca_note(f"{type(exc).__name__}: {exc}")
            return []

    def _ca_note(self, cause: str) -> None:
        if cause != self._ca_down:
            log.warning("node pools: cluster-autoscaler node groups unreadable (%s): none used", cause)
            self._ca_down = cause

    def pool_states(self, pools: list[NodePool] | None = None) -> list[PoolState]:
        """Each pool with its nodes (Ready = present, not Ready = coming); ``pools``: as read by
        the caller already (else listed)."""
        pools = self.pools() if pools is None else pools
        if not pools:
            return []
        try:
            items = self._json(self._core.list_node(label_selector=karpenter.NODEPOOL_LABEL, **self._kw()))
        except Exception as exc:
            self._warn("cannot list nodes", exc)
            items = {}
        by_pool: dict[str, list[Node]] = {p.name: [] for p in pools}
        types = {p.name: {t.name: t for t in p.instance_types} for p in pools}
        now = self._now()
        for obj in items.get("items") or []:
            node = _node_of(obj, types, now)
            if node is not None:
                by_pool[node.pool].append(node)
        return [PoolState(p, tuple(by_pool[p.name])) for p in pools]

    def steer(self, peak: ResourceVector, pools: list[NodePool] | None = None) -> PoolChoice | None:
        """The cheapest pool / instance type one node of which holds ``peak`` (None: none does,
        or the cluster has no pools: the task keeps its default placement)."""
        return choose_pool(self.pools() if pools is None else pools, peak)

    # ---- ResourceBackend -------------------------------------------------------------------------
    def capabilities(self) -> Capabilities:
        return Capabilities(
            live=frozenset(),
            provision_only=frozenset(),
            bounds={},
            note="node pools: warm capacity through placeholder pods; nothing is resized live",
        )

    def capacity(self, states: list[PoolState] | None = None, *, count_placeholders: bool = True) -> Capacity:
        """Allocatable of the Ready nodes (the pools' and those no pool owns) and the requests of
        the pods bound to them.

        states: as read by the caller already (else read). count_placeholders=False leaves the
        placeholders' requests out (they are preempted for any real pod: room for admission)."""
        return self.capacity_and_rooms(states, count_placeholders=count_placeholders)[0]

    def capacity_and_rooms(
        self,
        states: list[PoolState] | None = None,
        *,
        count_placeholders: bool = True,
        others: dict[str, ResourceVector] | None = None,
    ) -> tuple[Capacity, tuple[ResourceVector, ...]]:
        """``capacity()`` and, per Ready node, its room (allocatable less the requests bound there):
        what a bin packing of pods' peaks over the nodes needs (one pod runs on one node). The
        nodes are the pools' Ready ones and ``others`` (Ready nodes no pool owns; None: read)."""
        states = self.pool_states() if states is None else states
        ready = {n.name: n.allocatable for s in states for n in s.nodes if n.state is NodeState.READY}
        if states:
            ready.update(self.other_nodes() if others is None else others)
        allocatable = _sum(ready.values())
        allocated = ResourceVector(cpu_cores=0.0, memory_bytes=0.0)
        by_node: dict[str, ResourceVector] = {}
        try:
            pods = self._json(self._core.list_pod_for_all_namespaces(**self._kw()))
        except Exception as exc:
            self._warn("cannot list pods", exc)
            pods = {}
        for pod in pods.get("items") or []:
            phase = (pod.get("status") or {}).get("phase")
            if not count_placeholders and placeholders.is_placeholder(pod):
                continue
            node = (pod.get("spec") or {}).get("nodeName")
            if node in ready and phase not in ("Succeeded", "Failed"):
                requests = _pod_requests(pod)
                allocated = allocated.plus(requests)
                by_node[node] = by_node.get(node, ResourceVector()).plus(requests)
        rooms = tuple(a.minus(by_node.get(name, ResourceVector())) for name, a in sorted(ready.items()))
        return Capacity(allocatable=allocatable, allocated=allocated), rooms

    def other_nodes(self) -> dict[str, ResourceVector]:
        """Ready, schedulable nodes that no NodePool owns (a fixed node group, nodes given to the
        cluster): their allocatable. Pods that fit there need no new node."""
        try:
            items = self._json(self._core.list_node(**self._kw()))
        except Exception as exc:
            self._warn("cannot list nodes", exc)
            return {}
        out: dict[str, ResourceVector] = {}
        for obj in items.get("items") or []:
            meta, spec, status = obj.get("metadata") or {}, obj.get("spec") or {}, obj.get("status") or {}
            if karpenter.NODEPOOL_LABEL in (meta.get("labels") or {}) or spec.get("unschedulable"):
                continue
            if any(t.get("effect") in ("NoSchedule", "NoExecute") for t in spec.get("taints") or []):
                continue
            if not any(
                c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or []
            ):
                continue
            alloc = status.get("allocatable") or {}
            try:
                out[meta["name"]] = karpenter.vector_of(
                    {k: alloc[k] for k in ("cpu", "memory") if k in alloc}
                )
            except (KeyError, ValueError):
                continue
        return out

    def provision(self, spec: ProvisionSpec, allocation: Allocation) -> Handle:
        """A placeholder holding ``allocation.requests`` for the plan ``spec.name`` in the pool
        ``spec.labels["predictive.airflow.apache.org/pool"]`` (else the steered one), until
        ``spec.annotations["predictive.airflow.apache.org/expires-at"]`` (epoch s; else 1 h)."""
        size = allocation.requests if not allocation.requests.is_empty() else allocation.limits
        pool = spec.labels.get(POOL_LABEL_KEY)
        if not pool:
            choice = self.steer(size)
            if choice is None:
                raise ProvisionError(
                    f"no node pool has an instance type that holds {size}", status=ResizeStatus.INFEASIBLE
                )
            pool = choice.pool.name
        now = self._now()
        expires = float(spec.annotations.get(placeholders.EXPIRES_ANNOTATION, now + 3600.0))
        return self.warm(
            WarmCapacity(pool, size, ready_by=min(now, expires), expires_at=expires, for_plan=spec.name)
        )

    def warm(self, warm: WarmCapacity) -> Handle:
        """Create the placeholder for ``warm`` (idempotent: an existing one is kept)."""
        body = placeholders.placeholder_pod(warm, self.settings.placeholders, self._selectors.get(warm.pool))
        name = body["metadata"]["name"]
        handle = Handle(self.name, warm.for_plan, name, Allocation.exactly(warm.size))
        self._ensure_priority_class()
        from kubernetes.client.exceptions import ApiException

        try:
            _done(self._core.create_namespaced_pod(self.settings.namespace, body, **self._kw()))
        except ApiException as exc:
            if exc.status == 409:
                return handle  # already warm
            raise ProvisionError(f"placeholder {name}: {exc.status} {exc.reason}") from exc
        except Exception as exc:
            raise ProvisionError(f"placeholder {name}: {type(exc).__name__}: {exc}") from exc
        log.info(
            "warm capacity for %s: placeholder %s in pool %s (%s) until %.0f",
            warm.for_plan,
            name,
            warm.pool,
            warm.size,
            warm.expires_at,
        )
        return handle

    def provision_due(
        self, warms: Iterable[WarmCapacity], *, pools: list[NodePool] | None = None
    ) -> list[Handle]:
        """Create the placeholders whose launch time (ready_by - provisioning delay - margin) has
        come and whose plan has not lapsed; the others wait for a later call."""
        by_name = {p.name: p for p in (self.pools() if pools is None else pools)}
        now = self._now()
        made = []
        for warm in warms:
            pool = by_name.get(warm.pool)
            if pool is None or warm.lapsed(now) or launch_at(warm, pool, self.settings.margin_s) > now:
                continue
            try:
                made.append(self.warm(warm))
            except ProvisionError as exc:
                self._warn(f"warm capacity for {warm.for_plan} not made", exc)
        return made

    def resize(self, handle: Handle, allocation: Allocation) -> ResizeResult:
        return ResizeResult(ResizeStatus.UNSUPPORTED, "placeholders are replaced, never resized")

    def usage(self, handle: Handle) -> ResourceVector | None:
        return ResourceVector() if self._placeholder(handle.ref) is not None else None

    def state(self, handle: Handle) -> TaskState:
        pod = self._placeholder(handle.ref)
        if pod is None:
            return TaskState(ExitKind.GONE, reason="placeholder gone (preempted, landed or released)")
        node = (pod.get("spec") or {}).get("nodeName")
        return TaskState(
            ExitKind.RUNNING, reason=f"holding room on {node}" if node else "pending: node coming"
        )

    def release(self, handle: Handle) -> None:
        self._delete(handle.ref)

    # ---- lifecycle of placeholders ---------------------------------------------------------------
    def placeholders(self) -> list[dict[str, Any]]:
        try:
            body = self._json(
                self._core.list_namespaced_pod(
                    self.settings.namespace, label_selector=placeholders.SELECTOR, **self._kw()
                )
            )
        except Exception as exc:
            self._warn("cannot list placeholders", exc)
            return []
        return list(body.get("items") or [])

    def landed(self, for_plan: str) -> int:
        """The real pod of ``for_plan`` is placed: delete its placeholders; returns how many."""
        label = placeholders.plan_label(for_plan)
        gone = 0
        for pod in self.placeholders():
            if (pod["metadata"].get("labels") or {}).get(placeholders.PLAN_LABEL) == label:
                gone += self._delete(pod["metadata"]["name"])
        return gone

    def settle(self) -> int:
        """Delete placeholders whose plan lapsed (``expires-at`` passed) or whose real pod (same
        ``for-plan`` label, not a placeholder) is bound to a node; returns how many."""
        now = self._now()
        try:
            body = self._json(
                self._core.list_namespaced_pod(
                    self.settings.namespace, label_selector=placeholders.PLAN_LABEL, **self._kw()
                )
            )
        except Exception as exc:
            self._warn("cannot list pods", exc)
            return 0
        landed = set()
        held = []
        for pod in body.get("items") or []:
            labels = pod["metadata"].get("labels") or {}
            if labels.get(placeholders.ROLE_LABEL) == placeholders.PLACEHOLDER:
                held.append(pod)
            elif (pod.get("spec") or {}).get("nodeName"):
                landed.add(labels.get(placeholders.PLAN_LABEL))
        gone = 0
        for pod in held:
            meta = pod["metadata"]
            expires = placeholders.parse_iso(
                (meta.get("annotations") or {}).get(placeholders.EXPIRES_ANNOTATION, "")
            )
            lapsed = expires is not None and expires <= now
            if lapsed or (meta.get("labels") or {}).get(placeholders.PLAN_LABEL) in landed:
                gone += self._delete(meta["name"])
        return gone

    def _placeholder(self, name: str) -> dict[str, Any] | None:
        from kubernetes.client.exceptions import ApiException

        try:
            return self._json(self._core.read_namespaced_pod(name, self.settings.namespace, **self._kw()))
        except ApiException as exc:
            if exc.status != 404:
                self._warn(f"cannot read placeholder {name}", exc)
            return None
        except Exception as exc:
            self._warn(f"cannot read placeholder {name}", exc)
            return None

    def _delete(self, name: str) -> int:
        from kubernetes.client.exceptions import ApiException

        try:
            _done(
                self._core.delete_namespaced_pod(
                    name, self.settings.namespace, grace_period_seconds=0, **self._kw()
                )
            )
            return 1
        except ApiException as exc:
            if exc.status != 404:
                self._warn(f"cannot delete placeholder {name}", exc)
        except Exception as exc:
            self._warn(f"cannot delete placeholder {name}", exc)
        return 0

    def _ensure_priority_class(self) -> None:
        if self._class_ready:
            return
        from kubernetes.client.exceptions import ApiException

        body = placeholders.priority_class(self.settings.placeholders)
        try:
            _done(self._scheduling.create_priority_class(body, **self._kw()))
        except ApiException as exc:
            if exc.status != 409:
                raise ProvisionError(
                    f"PriorityClass {body['metadata']['name']}: {exc.status} {exc.reason}"
                ) from exc
        self._class_ready = True


def _done(resp: Any) -> None:
    """Read and release a raw response (``_preload_content=False``): its connection goes back to
    the pool instead of being dropped with the body unread."""
    try:
        resp.read()
        resp.release_conn()
    except Exception:  # the call succeeded; only the connection's reuse is lost
        pass


def _node_of(obj: dict[str, Any], types: dict[str, dict[str, InstanceType]], now: float) -> Node | None:
    labels = (obj.get("metadata") or {}).get("labels") or {}
    pool = labels.get(karpenter.NODEPOOL_LABEL)
    itype = types.get(pool or "", {}).get(labels.get(karpenter.INSTANCE_TYPE_LABEL, ""))
    if pool is None or itype is None:
        return None
    ready = any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in (obj.get("status") or {}).get("conditions") or []
    )
    annotations = obj["metadata"].get("annotations") or {}
    ready_at = placeholders.parse_iso(annotations.get(karpenter.READY_AT_ANNOTATION, "")) or now
    if (obj.get("spec") or {}).get("unschedulable"):
        state = NodeState.DRAINING
    else:
        state = NodeState.READY if ready else NodeState.PROVISIONING
    return Node(obj["metadata"]["name"], pool, itype, ready_at=ready_at, state=state)


def _pod_requests(pod: dict[str, Any]) -> ResourceVector:
    total = ResourceVector(cpu_cores=0.0, memory_bytes=0.0)
    for c in (pod.get("spec") or {}).get("containers") or []:
        requests = (c.get("resources") or {}).get("requests") or {}
        try:
            total = total.plus(karpenter.vector_of(requests))
        except ValueError:
            continue
    return total
