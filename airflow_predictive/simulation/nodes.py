"""Node-level trace replay: pods on nodes that an autoscaler creates only after a delay.

Why: the cluster simulator (cluster.py) replays runs on a fixed pool, so it cannot say what the
wait for a *new node* costs a task. Here every replayed run is a pod with fixed requests that
arrives at its recorded submit time; nodes of a node pool's instance types appear
``provisioning_delay_s`` after the autoscaler decides on them (GKE documents 80-120 s, the cluster
autoscaler's FAQ 3-4 minutes on GCE), and leave after staying empty ``scale_down_after_s``.

Two ways to get nodes, measured on the same pods:

- reactive (the cluster autoscaler / Karpenter): a node is requested only when a pod is Pending
  and fits neither a Ready node nor the free room of a node already on its way;
- warm capacity (ours): a pod may carry a placeholder made at ``warm_at_s`` (the plan's predicted
  start less the lead time) and lapsing at ``warm_until_s``. A placeholder is a pending pod of the
  same requests at the lowest priority: it triggers a node like any pod, and real pods preempt it
  on Ready nodes (the preempted placeholder goes back to Pending). When its own pod arrives the
  placeholder is deleted first, so the pod takes exactly the room that was made for it. With
  ``shortfall_only`` (the default) a placeholder is made only for the shortfall: not when, at the
  pod's predicted start, a node is predicted to have room for it (running pods whose own
  predicted end comes before then free theirs; placeholders, waiting pods and that room already
  promised to an earlier decision stay held), exactly as the ledger counts predicted releases.

Placement is the same in both: a pod goes to the Ready node with the least free memory that holds
it (bin packing, GKE's optimize-utilization profile), else to a node on its way, else a new node of
the cheapest instance type that holds it. A pod waiting for a booting node is re-placed on a Ready
node as soon as one has room (a nomination is not a binding). Pods run their recorded duration
(no OOM or throttling at this level: pods request their plan's peak). Pure Python, no I/O.
"""

from __future__ import annotations

import heapq
import itertools
from dataclasses import dataclass, field
from enum import IntEnum
from typing import TYPE_CHECKING

from airflow_predictive.core.model.resources import ResourceVector

if TYPE_CHECKING:
    from collections.abc import Sequence

    from airflow_predictive.core.model.nodes import InstanceType, NodePool

_EPS = 1e-9


@dataclass(frozen=True, slots=True)
class PodSpec:
    """One replayed run as a pod: what it requests, when it is submitted, how long it runs.

    warm_at_s / warm_until_s: when its placeholder is made and when it lapses (None: no
    placeholder; only used with warm capacity). predicted_start_s: the start the placeholder is
    for; predicted_duration_s: the pod's own predicted duration (its predicted end, once running,
    is its start plus this). Both None when unknown.
    """

    index: int
    submit_s: float
    duration_s: float
    memory: float  # bytes requested
    cpu: float  # cores requested
    warm_at_s: float | None = None
    warm_until_s: float | None = None
    predicted_start_s: float | None = None
    predicted_duration_s: float | None = None


@dataclass(frozen=True, slots=True)
class NodeSimSettings:
    """The autoscaler's knobs (the node pool carries the provisioning delay and instance types).

    scale_down_after_s: how long a node stays empty (no pod, no placeholder) before it is
    removed (the cluster autoscaler's scale-down-unneeded-time, default 10 min).
    warm: whether placeholders are made at all. shortfall_only: make one only when no node is
    predicted to have room for the pod at its predicted start (see the module docstring).
    """

    scale_down_after_s: float = 600.0
    warm: bool = False
    shortfall_only: bool = True


@dataclass(frozen=True, slots=True)
class PodResult:
    """What happened to one pod. waited_for_node: it could not start on the nodes Ready when it
    was submitted and waited for one on its way (or for room). start_s None: never started."""

    index: int
    submit_s: float
    start_s: float | None
    waited_for_node: bool
    had_placeholder: bool
    placeholder_skipped: bool = False  # room was predicted at its start: no placeholder made

    @property
    def latency_s(self) -> float | None:
        return None if self.start_s is None else self.start_s - self.submit_s


@dataclass(frozen=True, slots=True)
class NodeRecord:
    name: str
    instance_type: str
    created_s: float
    ready_s: float
    deleted_s: float
    hourly_cost: float
    placeholder_only_s: float  # time Ready or booting with placeholders and no real pod
    never_used: bool  # no real pod ever ran on it


@dataclass(frozen=True)
class NodeReplay:
    """Pods and nodes of one replay, and the placeholder accounting."""

    pods: tuple[PodResult, ...]
    nodes: tuple[NodeRecord, ...]
    placeholders_made: int
    placeholders_used: int  # deleted because their pod arrived
    placeholders_lapsed: int
    placeholders_skipped: int  # not made: a node was predicted to have room (shortfall_only)
    placeholder_share_s: float  # sum over placeholders of (memory / node memory) x time held
    unschedulable: int  # pods larger than every instance type

    @property
    def node_hours(self) -> float:
        return sum(n.deleted_s - n.created_s for n in self.nodes) / 3600.0

    @property
    def cost(self) -> float:
        return sum((n.deleted_s - n.created_s) / 3600.0 * n.hourly_cost for n in self.nodes)

    @property
    def placeholder_only_node_hours(self) -> float:
        return sum(n.placeholder_only_s for n in self.nodes) / 3600.0

    @property
    def placeholder_node_hours(self) -> float:
        """Node-hours held by placeholders (their memory share of their node, over time)."""
        return self.placeholder_share_s / 3600.0


class _Ev(IntEnum):  # order of events at the same instant
    END = 0
    READY = 1
    LAPSE = 2
    SUBMIT = 3
    WARM = 4
    IDLE = 5


@dataclass(eq=False)
class _Node:
    idx: int
    name: str
    itype: InstanceType
    created_s: float
    ready_s: float
    mem: float
    cpu: float
    ready: bool = False
    used_mem: float = 0.0
    used_cpu: float = 0.0
    real: set[int] = field(default_factory=set)  # running or nominated real pods
    holders: set[int] = field(default_factory=set)  # placeholders (by pod index)
    empty_since: float | None = None
    deleted_s: float | None = None
    ph_only_s: float = 0.0
    last_s: float = 0.0
    ever_used: bool = False

    def free_mem(self) -> float:
        return self.mem - self.used_mem

    def free_cpu(self) -> float:
        return self.cpu - self.used_cpu

    def holds(self, mem: float, cpu: float) -> bool:
        return self.free_mem() + _EPS >= mem and self.free_cpu() + _EPS >= cpu

    def touch(self, now: float) -> None:
        if not self.real and self.holders:
            self.ph_only_s += now - self.last_s
        self.last_s = now


class _Sim:
    def __init__(self, pods: Sequence[PodSpec], pool: NodePool, settings: NodeSimSettings) -> None:
        self.pods = {p.index: p for p in pods}
        self.pool = pool
        self.settings = settings
        self.delay = pool.provisioning_delay_s
        self.nodes: list[_Node] = []
        self.events: list[tuple[float, int, int, int]] = []
        self.seq = itertools.count()
        self.pending: list[int] = []  # real pods not started (placed nowhere or nominated)
        self.where: dict[int, _Node] = {}  # real pod -> node (running or nominated)
        self.start: dict[int, float] = {}
        self.waited: set[int] = set()
        self.ph_pending: list[int] = []
        self.ph_where: dict[int, tuple[_Node, float]] = {}  # placeholder -> (node, since)
        self.ph_alive: set[int] = set()
        self.ph_made = self.ph_used = self.ph_lapsed = 0
        self.ph_share_s = 0.0
        self.had_ph: set[int] = set()
        self.skipped: set[int] = set()
        self.claims: dict[int, tuple[_Node, float, float]] = {}  # pod -> predicted room promised to it
        self.unschedulable: set[int] = set()
        self.live_total = ResourceVector()

    def push(self, t: float, kind: _Ev, ref: int) -> None:
        heapq.heappush(self.events, (t, int(kind), next(self.seq), ref))

    # -- node bookkeeping ------------------------------------------------------------------------

    def _occupy(self, node: _Node, mem: float, cpu: float, now: float) -> None:
        node.touch(now)
        node.used_mem += mem
        node.used_cpu += cpu
        node.empty_since = None

    def _vacate(self, node: _Node, mem: float, cpu: float, now: float) -> None:
        node.touch(now)
        node.used_mem = max(0.0, node.used_mem - mem)
        node.used_cpu = max(0.0, node.used_cpu - cpu)
        if not node.real and not node.holders and node.ready:
            node.empty_since = now
            self.push(now + self.settings.scale_down_after_s, _Ev.IDLE, node.idx)

    def _new_node(self, mem: float, cpu: float, now: float) -> _Node | None:
        itype = self.pool.cheapest_fitting(ResourceVector(memory_bytes=mem, cpu_cores=cpu))
        if itype is None:
            return None
        if not self.pool.room_for(self.live_total, itype):
            return None
        node = _Node(
            idx=len(self.nodes),
            name=f"{self.pool.name}-{len(self.nodes)}",
            itype=itype,
            created_s=now,
            ready_s=now + self.delay,
            mem=itype.allocatable.memory_bytes or 0.0,
            cpu=itype.allocatable.cpu_cores or 0.0,
            last_s=now,
        )
        self.nodes.append(node)
        self.live_total = self.live_total.plus(itype.allocatable)
        self.push(node.ready_s, _Ev.READY, len(self.nodes) - 1)
        return node

    def _live(self) -> list[_Node]:
        return [n for n in self.nodes if n.deleted_s is None]

    def _best(self, nodes: list[_Node], mem: float, cpu: float) -> _Node | None:
        fitting = [n for n in nodes if n.holds(mem, cpu)]
        return min(fitting, key=lambda n: (n.free_mem(), n.name)) if fitting else None

    # -- placeholders ----------------------------------------------------------------------------

    def _drop_placeholder(self, i: int, now: float, *, back_to_pending: bool) -> None:
        spot = self.ph_where.pop(i, None)
        if spot is not None:
            node, since = spot
            p = self.pods[i]
            node.touch(now)
            node.holders.discard(i)
            self.ph_share_s += (now - since) * (p.memory / node.mem if node.mem else 0.0)
            self._vacate(node, p.memory, p.cpu, now)
        if i in self.ph_pending:
            self.ph_pending.remove(i)
        if back_to_pending:
            self.ph_pending.append(i)
        else:
            self.ph_alive.discard(i)

    def _place_placeholder(self, i: int, node: _Node, now: float) -> None:
        p = self.pods[i]
        node.touch(now)
        node.holders.add(i)
        self._occupy(node, p.memory, p.cpu, now)
        self.ph_where[i] = (node, now)

    # -- the scheduling pass ---------------------------------------------------------------------

    def _start_on(self, i: int, node: _Node, now: float) -> None:
        p = self.pods[i]
        self.pending.remove(i)
        self.start[i] = now
        node.ever_used = True
        self.push(now + p.duration_s, _Ev.END, i)

    def _preempt_for(self, i: int, ready: list[_Node], now: float) -> _Node | None:
        """A Ready node where evicting placeholders makes room for real pod ``i`` (fewest evicted)."""
        p = self.pods[i]
        best: tuple[int, _Node, list[int]] | None = None
        for node in ready:
            if not node.holders:
                continue
            mem, cpu, evict = node.free_mem(), node.free_cpu(), []
            for h in sorted(node.holders, key=lambda h: -self.pods[h].memory):
                if mem + _EPS >= p.memory and cpu + _EPS >= p.cpu:
                    break
                mem += self.pods[h].memory
                cpu += self.pods[h].cpu
                evict.append(h)
            if mem + _EPS >= p.memory and cpu + _EPS >= p.cpu and (best is None or len(evict) < best[0]):
                best = (len(evict), node, evict)
        if best is None:
            return None
        for h in best[2]:
            self._drop_placeholder(h, now, back_to_pending=True)
        return best[1]

    def schedule(self, now: float) -> None:
        live = self._live()
        for i in list(self.pending):
            p = self.pods[i]
            ready = [n for n in live if n.ready]
            nominated = self.where.get(i)
            if nominated is not None:
                # a nomination is not a binding: the pod is placed afresh (a Ready node with room wins)
                self._unbind(i, nominated, now)
            node = self._best(ready, p.memory, p.cpu) or self._preempt_for(i, ready, now)
            if node is not None:
                self._bind(i, node, now)
                self._start_on(i, node, now)
                continue
            self.waited.add(i)
            target = nominated if nominated is not None and nominated.holds(p.memory, p.cpu) else None
            target = target or self._best([n for n in live if not n.ready], p.memory, p.cpu)
            if target is None:
                target = self._new_node(p.memory, p.cpu, now)
                if target is None:
                    if (
                        self.pool.cheapest_fitting(ResourceVector(memory_bytes=p.memory, cpu_cores=p.cpu))
                        is None
                    ):
                        self.unschedulable.add(i)
                    continue
                live.append(target)
            self._bind(i, target, now)
        for i in list(self.ph_pending):
            p = self.pods[i]
            node = self._best(live, p.memory, p.cpu)
            if node is None:
                node = self._new_node(p.memory, p.cpu, now)
                if node is None:
                    continue
                live.append(node)
            self.ph_pending.remove(i)
            self._place_placeholder(i, node, now)

    def _bind(self, i: int, node: _Node, now: float) -> None:
        p = self.pods[i]
        node.touch(now)
        node.real.add(i)
        self._occupy(node, p.memory, p.cpu, now)
        self.where[i] = node

    def _unbind(self, i: int, node: _Node, now: float) -> None:
        p = self.pods[i]
        node.touch(now)
        node.real.discard(i)
        del self.where[i]
        self._vacate(node, p.memory, p.cpu, now)

    # -- events ----------------------------------------------------------------------------------

    def run(self) -> NodeReplay:
        for p in self.pods.values():
            self.push(p.submit_s, _Ev.SUBMIT, p.index)
            if self.settings.warm and p.warm_at_s is not None and p.warm_until_s is not None:
                at = min(p.warm_at_s, p.submit_s)
                if p.warm_until_s > at:
                    self.push(at, _Ev.WARM, p.index)
                    self.push(p.warm_until_s, _Ev.LAPSE, p.index)
        now = 0.0
        while self.events:
            now = self.events[0][0]
            while self.events and self.events[0][0] <= now + _EPS:
                _, kind, _, ref = heapq.heappop(self.events)
                self.handle(_Ev(kind), ref, now)
            self.schedule(now)
        return self.result(now)

    def handle(self, kind: _Ev, ref: int, now: float) -> None:
        if kind is _Ev.SUBMIT:
            self.claims.pop(ref, None)
            if ref in self.ph_alive:  # its placeholder made room: the pod takes it
                self.had_ph.add(ref)
                self.ph_used += 1
                self._drop_placeholder(ref, now, back_to_pending=False)
            self.pending.append(ref)
        elif kind is _Ev.END:
            node = self.where.pop(ref)
            node.touch(now)
            node.real.discard(ref)
            p = self.pods[ref]
            self._vacate(node, p.memory, p.cpu, now)
        elif kind is _Ev.READY:
            node = self.nodes[ref]
            if node.deleted_s is None:
                node.touch(now)
                node.ready = True
                if not node.real and not node.holders:
                    node.empty_since = now
                    self.push(now + self.settings.scale_down_after_s, _Ev.IDLE, ref)
        elif kind is _Ev.WARM:
            if ref not in self.start and ref not in self.pending and ref not in self.ph_alive:
                if self.settings.shortfall_only and self._room_predicted(ref, now):
                    self.skipped.add(ref)
                    return
                self.ph_alive.add(ref)
                self.ph_made += 1
                self.ph_pending.append(ref)
        elif kind is _Ev.LAPSE:
            if ref in self.ph_alive:
                self.ph_lapsed += 1
                self._drop_placeholder(ref, now, back_to_pending=False)
        elif kind is _Ev.IDLE:
            node = self.nodes[ref]
            if (
                node.deleted_s is None
                and node.ready
                and node.empty_since is not None
                and now - node.empty_since + _EPS >= self.settings.scale_down_after_s
            ):
                node.touch(now)
                node.deleted_s = now
                self.live_total = self.live_total.minus(node.itype.allocatable)

    def _room_predicted(self, i: int, now: float) -> bool:
        """A node (Ready, or on its way and Ready in time) is predicted to have room for pod ``i``
        at its predicted start; the room found is promised to it until it is submitted."""
        p = self.pods[i]
        t = p.predicted_start_s
        if t is None:
            return False
        for node in self._live():
            if node.ready_s > t + _EPS:
                continue
            mem, cpu = node.free_mem(), node.free_cpu()
            for j in node.real:
                q = self.pods[j]
                began = self.start.get(j)
                if (
                    began is not None
                    and q.predicted_duration_s is not None
                    and began + q.predicted_duration_s <= t
                ):
                    mem += q.memory
                    cpu += q.cpu
            for claimed, cmem, ccpu in self.claims.values():
                if claimed is node:
                    mem -= cmem
                    cpu -= ccpu
            if mem + _EPS >= p.memory and cpu + _EPS >= p.cpu:
                self.claims[i] = (node, p.memory, p.cpu)
                return True
        return False

    def result(self, end: float) -> NodeReplay:
        nodes = []
        for n in self.nodes:
            deleted = n.deleted_s if n.deleted_s is not None else max(end, n.ready_s)
            n.touch(deleted)
            nodes.append(
                NodeRecord(
                    name=n.name,
                    instance_type=n.itype.name,
                    created_s=n.created_s,
                    ready_s=n.ready_s,
                    deleted_s=deleted,
                    hourly_cost=n.itype.hourly_cost,
                    placeholder_only_s=n.ph_only_s,
                    never_used=not n.ever_used,
                )
            )
        pods = tuple(
            PodResult(
                index=i,
                submit_s=p.submit_s,
                start_s=self.start.get(i),
                waited_for_node=i in self.waited,
                had_placeholder=i in self.had_ph,
                placeholder_skipped=i in self.skipped,
            )
            for i, p in sorted(self.pods.items())
        )
        return NodeReplay(
            pods=pods,
            nodes=tuple(nodes),
            placeholders_made=self.ph_made,
            placeholders_used=self.ph_used,
            placeholders_lapsed=self.ph_lapsed,
            placeholders_skipped=len(self.skipped),
            placeholder_share_s=self.ph_share_s,
            unschedulable=len(self.unschedulable),
        )


def replay_nodes(
    pods: Sequence[PodSpec], pool: NodePool, settings: NodeSimSettings | None = None
) -> NodeReplay:
    """Replay ``pods`` on ``pool``'s autoscaled nodes (see the module docstring)."""
    return _Sim(pods, pool, settings or NodeSimSettings()).run()
