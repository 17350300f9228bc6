"""The emulated node autoscaler: Karpenter-like provisioning and consolidation of NodePools.

Each tick (after the scheduler):

1. **Ready**: a node launched ``provisioning_delay_s`` ago becomes Ready (its not-ready taint goes).
2. **Provision**: Pending pods the scheduler marked ``Unschedulable`` (placeholders included), not
   waiting on a preemption, are packed first onto nodes still booting, else a node is launched
   in a pool whose labels the pod selects, of the cheapest instance type that holds its requests,
   within the pool's ``limits``. A launched node exists at once with ``Ready=False`` and the
   ``node.kubernetes.io/not-ready`` taint (so it is visible as coming capacity) and annotation
   ``emulator.predictive.airflow.apache.org/ready-at``.
3. **Consolidate**: a pool node that is empty, or whose pods would all fit on other Ready nodes,
   for ``consolidate_after_s`` is cordoned, its pods evicted, then deleted; never a node running
   a pod annotated ``karpenter.sh/do-not-disrupt: "true"`` or
   ``cluster-autoscaler.kubernetes.io/safe-to-evict: "false"``.

Nodes given to ``Emulator(nodes=...)`` belong to no pool and are never consolidated.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, timedelta
from typing import TYPE_CHECKING, Any

from airflow_predictive.backends.nodes import karpenter
from airflow_predictive.core.model.nodes import InvalidNodePool, NodePool
from airflow_predictive.core.model.resources import ResourceVector
from airflow_predictive.emulator.kubernetes import quantity, scheduling
from airflow_predictive.emulator.kubernetes.errors import ApiError
from airflow_predictive.emulator.kubernetes.resources import NODEPOOLS, NODES, PODS

if TYPE_CHECKING:
    from airflow_predictive.core.model.nodes import InstanceType
    from airflow_predictive.core.ports import Clock
    from airflow_predictive.emulator.kubernetes.kubelet import Kubelet
    from airflow_predictive.emulator.kubernetes.store import Store

log = logging.getLogger(__name__)
Obj = dict[str, Any]
READY_AT_ANNOTATION = karpenter.READY_AT_ANNOTATION
NOT_READY_TAINT = {"key": "node.kubernetes.io/not-ready", "effect": "NoSchedule"}
DONE = ("Succeeded", "Failed")


def pod_requests(pod: Obj) -> dict[str, int]:
    """A pod's requests in the kubelet's units (cpu millicores, bytes, counts) plus one pod slot."""
    from airflow_predictive.emulator.kubernetes.kubelet import _requests_of, _spec_resources

    want = _requests_of(_spec_resources(pod))
    want["pods"] = 1
    return want


def allocatable_of(node: Obj) -> dict[str, int]:
    out: dict[str, int] = {}
    for name, value in ((node.get("status") or {}).get("allocatable") or {}).items():
        out[name] = quantity.millis(value) if name == "cpu" else quantity.integer(value)
    return out


def protected(pod: Obj) -> bool:
    """The pod forbids voluntary disruption of its node (do-not-disrupt / safe-to-evict)."""
    ann = (pod.get("metadata") or {}).get("annotations") or {}
    return ann.get(karpenter.DO_NOT_DISRUPT) == "true" or ann.get(karpenter.SAFE_TO_EVICT) == "false"


def _fits(want: dict[str, int], free: dict[str, int]) -> bool:
    return all(v <= 0 or v <= free.get(r, 0) for r, v in want.items())


def _take(free: dict[str, int], want: dict[str, int]) -> None:
    for r, v in want.items():
        free[r] = free.get(r, 0) - v


@dataclass
class _Launch:
    ready_at: float
    pool: str


class NodeAutoscaler:
    """Provisions and consolidates the nodes of the NodePools in the store."""

    def __init__(self, store: Store, clock: Clock, kubelet: Kubelet) -> None:
        self.store = store
        self.clock = clock
        self.kubelet = kubelet
        self._launches: dict[str, _Launch] = {}
        self._idle_since: dict[str, float] = {}
        self._draining: set[str] = set()
        self._serial = 0

    def pools(self) -> dict[str, NodePool]:
        out: dict[str, NodePool] = {}
        for obj in self.store.snapshot(NODEPOOLS):
            try:
                pool = karpenter.from_object(obj)
            except InvalidNodePool as exc:
                log.warning("NodePool ignored: %s", exc)
                continue
            if pool.instance_types:
                out[pool.name] = pool
        return out

    def tick(self) -> None:
        objs = self.store.snapshot(NODEPOOLS)
        if not objs and not self._launches:
            return
        now = self.clock.monotonic()
        pools = self.pools()
        self._ready(now)
        nodes = {n["metadata"]["name"]: n for n in self.store.snapshot(NODES)}
        pods = self.store.snapshot(PODS)
        self._provision(now, pools, nodes, pods)
        self._consolidate(now, pools, nodes, pods)
        self._write_pool_status(pools, nodes)

    # ---- readiness --------------------------------------------------------------------------------
    def _ready(self, now: float) -> None:
        for name, launch in list(self._launches.items()):
            if now < launch.ready_at:
                continue
            del self._launches[name]

            def mutate(cur: Obj) -> Obj:
                cur["spec"]["taints"] = [
                    t for t in cur["spec"].get("taints", []) if t.get("key") != NOT_READY_TAINT["key"]
                ]
                if not cur["spec"]["taints"]:
                    del cur["spec"]["taints"]
                for cond in cur["status"]["conditions"]:
                    if cond["type"] == "Ready":
                        cond.update(
                            status="True", reason="KubeletReady", message="kubelet is posting ready status"
                        )
                return cur

            try:
                self.store.replace(NODES, "", name, mutate, spec_changes_generation=False)
            except ApiError:
                pass

    # ---- provisioning -----------------------------------------------------------------------------
    def _provision(
        self, now: float, pools: dict[str, NodePool], nodes: dict[str, Obj], pods: list[Obj]
    ) -> None:
        # room on every schedulable node, booting or Ready (one that just became Ready holds pods
        # the scheduler has not placed yet): no second node for a pod that will land there
        bound: dict[str, list[Obj]] = {}
        for pod in pods:
            node_name = pod["spec"].get("nodeName")
            if node_name and (pod.get("status") or {}).get("phase") not in DONE:
                bound.setdefault(node_name, []).append(pod)
        booting: dict[str, dict[str, int]] = {
            name: self._free(node, bound.get(name, []))
            for name, node in nodes.items()
            if not (node.get("spec") or {}).get("unschedulable")
        }
        for pod in sorted(pods, key=lambda p: int(p["metadata"]["resourceVersion"])):
            if not self._waiting(pod):
                continue
            want = pod_requests(pod)
            home = next(
                (
                    n
                    for n, free in booting.items()
                    if _fits(want, free)
                    and scheduling.labels_match(pod, nodes[n]["metadata"].get("labels", {}))
                ),
                None,
            )
            if home is not None:
                _take(booting[home], want)
                continue
            launched = self._launch_for(pod, want, pools, nodes, now)
            if launched is not None:
                nodes[launched["metadata"]["name"]] = launched
                booting[launched["metadata"]["name"]] = allocatable_of(launched)
                _take(booting[launched["metadata"]["name"]], want)

    @staticmethod
    def _waiting(pod: Obj) -> bool:
        if pod["spec"].get("nodeName") or pod["metadata"].get("deletionTimestamp"):
            return False
        status = pod.get("status") or {}
        if status.get("nominatedNodeName"):
            return False
        return any(
            c.get("type") == "PodScheduled" and c.get("reason") == "Unschedulable"
            for c in status.get("conditions") or []
        )

    def _launch_for(
        self, pod: Obj, want: dict[str, int], pools: dict[str, NodePool], nodes: dict[str, Obj], now: float
    ) -> Obj | None:
        best: tuple[float, NodePool, InstanceType] | None = None
        for pool in sorted(pools.values(), key=lambda p: p.name):
            in_pool = ResourceVector(cpu_cores=0.0, memory_bytes=0.0)
            for node in nodes.values():
                if (node["metadata"].get("labels") or {}).get(karpenter.NODEPOOL_LABEL) == pool.name:
                    in_pool = in_pool.plus(karpenter.vector_of(node["status"]["allocatable"]))
            for itype in pool.instance_types:
                if not scheduling.labels_match(pod, karpenter.node_labels(pool, itype)):
                    continue
                if not _fits(want, _node_resources(itype)) or not pool.room_for(in_pool, itype):
                    continue
                if best is None or itype.hourly_cost < best[0]:
                    best = (itype.hourly_cost, pool, itype)
        if best is None:
            return None
        _, pool, itype = best
        self._serial += 1
        name = f"{pool.name}-{itype.name}-{self._serial}".replace(".", "-").lower()
        ready_at = now + pool.provisioning_delay_s
        wall = self.clock.now().astimezone(UTC) + timedelta(seconds=pool.provisioning_delay_s)
        obj = node_object(
            name, itype, karpenter.node_labels(pool, itype), ready=pool.provisioning_delay_s <= 0
        )
        obj["metadata"]["annotations"] = {READY_AT_ANNOTATION: wall.strftime("%Y-%m-%dT%H:%M:%S.%fZ")}
        created = self.store.create(NODES, "", obj)
        if pool.provisioning_delay_s > 0:
            self._launches[name] = _Launch(ready_at, pool.name)
        meta = pod["metadata"]
        self.kubelet.event(
            pod,
            "Nominated",
            f"Pod should schedule on: nodeclaim/{name}",
            component="karpenter",
        )
        log.info(
            "node %s (%s/%s) launched for pod %s/%s",
            name,
            pool.name,
            itype.name,
            meta["namespace"],
            meta["name"],
        )
        return created

    # ---- consolidation ----------------------------------------------------------------------------
    def _consolidate(
        self, now: float, pools: dict[str, NodePool], nodes: dict[str, Obj], pods: list[Obj]
    ) -> None:
        on_node: dict[str, list[Obj]] = {}
        for pod in pods:
            node = pod["spec"].get("nodeName")
            if node and (pod.get("status") or {}).get("phase") not in DONE:
                on_node.setdefault(node, []).append(pod)
        free = {name: self._free(node, on_node.get(name, [])) for name, node in nodes.items()}
        moved_one = False
        for name, node in sorted(nodes.items()):
            pool = pools.get((node["metadata"].get("labels") or {}).get(karpenter.NODEPOOL_LABEL, ""))
            residents = on_node.get(name, [])
            if name in self._draining:
                self._drain(name, residents)
                continue
            if pool is None or pool.consolidate_after_s is None or name in self._launches:
                self._idle_since.pop(name, None)
                continue
            if any(protected(p) for p in residents) or not self._removable(name, residents, nodes, free):
                self._idle_since.pop(name, None)
                continue
            since = self._idle_since.setdefault(name, now)
            if now - since < pool.consolidate_after_s or (residents and moved_one):
                continue
            moved_one = moved_one or bool(residents)
            log.info("consolidating node %s (%s)", name, "empty" if not residents else "underused")
            self._draining.add(name)
            self._idle_since.pop(name, None)
            self._drain(name, residents)

    def _free(self, node: Obj, residents: list[Obj]) -> dict[str, int]:
        free = allocatable_of(node)
        for pod in residents:
            _take(free, pod_requests(pod))
        return free

    @staticmethod
    def _removable(
        name: str, residents: list[Obj], nodes: dict[str, Obj], free: dict[str, dict[str, int]]
    ) -> bool:
        """Empty, or every resident would fit on another Ready, schedulable node."""
        room = {
            n: dict(f) for n, f in free.items() if n != name and scheduling.unfit_reason({}, nodes[n]) is None
        }
        for pod in residents:
            want = pod_requests(pod)
            target = next(
                (
                    n
                    for n, f in room.items()
                    if _fits(want, f) and scheduling.unfit_reason(pod, nodes[n]) is None
                ),
                None,
            )
            if target is None:
                return False
            _take(room[target], want)
        return True

    def _drain(self, name: str, residents: list[Obj]) -> None:
        def cordon(cur: Obj) -> Obj:
            cur["spec"]["unschedulable"] = True
            return cur

        try:
            node = self.store.get(NODES, "", name)
            if not node["spec"].get("unschedulable"):
                self.store.replace(NODES, "", name, cordon, spec_changes_generation=False)
        except ApiError:
            self._draining.discard(name)
            return
        live = [p for p in residents if not p["metadata"].get("deletionTimestamp")]
        for pod in live:
            meta = pod["metadata"]
            self.kubelet._evict(
                meta["namespace"],
                meta["name"],
                f"Evicted by karpenter: consolidating node {name}",
                reason="TerminationByKarpenter",
            )
        if not residents:
            try:
                self.store.delete(NODES, "", name)
            except ApiError:
                pass
            self._draining.discard(name)

    def _write_pool_status(self, pools: dict[str, NodePool], nodes: dict[str, Obj]) -> None:
        for pool in pools.values():
            mine = [
                n
                for n in nodes.values()
                if (n["metadata"].get("labels") or {}).get(karpenter.NODEPOOL_LABEL) == pool.name
            ]
            total = ResourceVector(cpu_cores=0.0, memory_bytes=0.0)
            for n in mine:
                total = total.plus(karpenter.vector_of(n["status"]["allocatable"]))
            status = {"resources": {**karpenter.quantities_of(total), "nodes": str(len(mine))}}
            if total.cpu_cores == 0:
                status["resources"]["cpu"] = "0"
            if total.memory_bytes == 0:
                status["resources"]["memory"] = "0"
            try:
                current = self.store.get(NODEPOOLS, "", pool.name)
            except ApiError:
                continue
            if current.get("status") == status:
                continue

            def mutate(cur: Obj, status: Obj = status) -> Obj:
                cur["status"] = status
                return cur

            self.store.replace(NODEPOOLS, "", pool.name, mutate, spec_changes_generation=False)


def _node_resources(itype: InstanceType) -> dict[str, int]:
    out = {"pods": 110}
    a = itype.allocatable
    if a.cpu_cores is not None:
        out["cpu"] = round(a.cpu_cores * 1000)
    if a.memory_bytes is not None:
        out["memory"] = int(a.memory_bytes)
    return out


def node_object(name: str, itype: InstanceType, labels: dict[str, str], *, ready: bool) -> Obj:
    """A Node as a kubelet registers it; not Ready (tainted) until it has booted."""
    res = _node_resources(itype)
    resources = {
        "cpu": f"{res.get('cpu', 0)}m",
        "memory": str(res.get("memory", 0)),
        "pods": str(res["pods"]),
        "ephemeral-storage": "100Gi",
    }
    spec: Obj = {} if ready else {"taints": [dict(NOT_READY_TAINT)]}
    return {
        "metadata": {
            "name": name,
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "karpenter.sh/registered": "true",
                **labels,
            },
        },
        "spec": spec,
        "status": {
            "capacity": dict(resources),
            "allocatable": dict(resources),
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True" if ready else "False",
                    "reason": "KubeletReady" if ready else "KubeletNotReady",
                    "message": "kubelet is posting ready status" if ready else "node is booting",
                }
            ],
            "nodeInfo": {
                "architecture": "amd64",
                "kubeletVersion": "v1.35.0",
                "operatingSystem": "linux",
                "osImage": "Predictive emulator",
                "containerRuntimeVersion": "containerd://2.1.0",
                "machineID": name,
                "systemUUID": name,
                "bootID": name,
                "kernelVersion": "6.8.0",
                "kubeProxyVersion": "",
            },
            "addresses": [
                {"type": "InternalIP", "address": "10.0.0.2"},
                {"type": "Hostname", "address": name},
            ],
        },
    }
