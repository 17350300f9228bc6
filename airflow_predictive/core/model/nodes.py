"""Nodes (the seed's "VMs"): instance types, node pools, nodes and warm capacity made ahead of a plan.

On Kubernetes a VM is a node created by an autoscaler (a Karpenter NodePool, a cluster-autoscaler
node group) only once a pod is Pending, which costs the task the node's boot time (GKE documents
80-120 s). These values let the planner, the ledger and the node-pool backend talk about that
capacity, present or coming, without any Kubernetes type: pure values, stdlib only.

Time: ``ready_at``, ``ready_by``, ``expires_at`` are wall-clock epoch seconds (``time.time()``),
like the ledger's times.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING

from airflow_predictive.core.model.resources import ResourceVector

if TYPE_CHECKING:
    from collections.abc import Iterable

    from airflow_predictive.core.model.plan import AllocationPlan

DEFAULT_PROVISIONING_DELAY_S = 90.0  # GKE documents 80-120 s for a new node
DEFAULT_CONSOLIDATE_AFTER_S = 30.0  # Karpenter's consolidateAfter default is 0 s; 30 s is gentler
KARPENTER_NODEPOOL_LABEL = "karpenter.sh/nodepool"  # the label Karpenter puts on its nodes


class InvalidNodePool(ValueError):
    """A node pool or instance type that cannot describe capacity."""


@dataclass(frozen=True, slots=True)
class InstanceType:
    """A machine shape: what one node of it offers to pods, and what it costs per hour.

    allocatable: the node's allocatable resources (capacity minus system reservations), the
    budget pods' requests are fitted against. hourly_cost: in any currency, 0 when unknown.
    """

    name: str
    allocatable: ResourceVector
    hourly_cost: float = 0.0

    def __post_init__(self) -> None:
        if not self.name:
            raise InvalidNodePool("an instance type needs a name")
        if self.hourly_cost < 0:
            raise InvalidNodePool(f"instance type {self.name}: hourly_cost must be >= 0")

    def fits(self, demand: ResourceVector) -> bool:
        """True when one empty node of this type could hold ``demand``."""
        return demand.fits_within(self.allocatable)


@dataclass(frozen=True, slots=True)
class NodePool:
    """A set of nodes an autoscaler may create: Karpenter NodePool or cluster-autoscaler node group.

    instance_types: the shapes it may launch. limits: the most all its nodes may add up to
    (NodePool ``spec.limits``; absent metric = unlimited). provisioning_delay_s: how long a new
    node takes from the decision to Ready. consolidate_after_s: how long a node stays empty or
    underused before it is removed (None = never consolidated). labels: the labels its nodes carry.
    selector: the node labels that select its nodes (empty: Karpenter's ``karpenter.sh/nodepool:
    <name>``; a cluster-autoscaler node group: its provider's node-group label).
    """

    name: str
    instance_types: tuple[InstanceType, ...]
    limits: ResourceVector = field(default_factory=ResourceVector)
    provisioning_delay_s: float = DEFAULT_PROVISIONING_DELAY_S
    consolidate_after_s: float | None = DEFAULT_CONSOLIDATE_AFTER_S
    labels: tuple[tuple[str, str], ...] = ()
    selector: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        if not self.name:
            raise InvalidNodePool("a node pool needs a name")
        if not self.instance_types:
            raise InvalidNodePool(f"node pool {self.name}: at least one instance type")
        if self.provisioning_delay_s < 0:
            raise InvalidNodePool(f"node pool {self.name}: provisioning_delay_s must be >= 0")
        if self.consolidate_after_s is not None and self.consolidate_after_s < 0:
            raise InvalidNodePool(f"node pool {self.name}: consolidate_after_s must be >= 0 or None")

    def node_selector(self) -> dict[str, str]:
        """The nodeSelector that puts a pod on this pool's nodes (steering, placeholders)."""
        return dict(self.selector) if self.selector else {KARPENTER_NODEPOOL_LABEL: self.name}

    def instance_type(self, name: str) -> InstanceType | None:
        return next((t for t in self.instance_types if t.name == name), None)

    def cheapest_fitting(self, demand: ResourceVector) -> InstanceType | None:
        """The cheapest instance type one node of which holds ``demand`` (ties: smallest memory,
        then declaration order); None when none does."""
        fitting = [t for t in self.instance_types if t.fits(demand)]
        if not fitting:
            return None
        return min(fitting, key=lambda t: (t.hourly_cost, t.allocatable.memory_bytes or 0.0))

    def largest(self) -> InstanceType:
        """The instance type with the most memory (then CPU): the widest pod this pool can hold."""
        return max(
            self.instance_types,
            key=lambda t: (t.allocatable.memory_bytes or 0.0, t.allocatable.cpu_cores or 0.0),
        )

    def room_for(self, existing: ResourceVector, instance_type: InstanceType) -> bool:
        """True when adding one node of ``instance_type`` to nodes totalling ``existing`` stays
        within the pool's limits."""
        return existing.plus(instance_type.allocatable).fits_within(self.limits)


class NodeState(StrEnum):
    """Where a node is in its life."""

    PROVISIONING = "provisioning"  # decided, booting; ready at ``ready_at``
    READY = "ready"  # schedulable
    DRAINING = "draining"  # cordoned for consolidation; its pods are being evicted
    DELETED = "deleted"  # gone


@dataclass(frozen=True, slots=True)
class Node:
    """One node of a pool.

    ready_at: when it is (or was, or will be) Ready. created_at: when it was decided.
    """

    name: str
    pool: str
    instance_type: InstanceType
    ready_at: float
    state: NodeState = NodeState.PROVISIONING
    created_at: float = 0.0

    @property
    def allocatable(self) -> ResourceVector:
        return self.instance_type.allocatable

    def is_ready(self, now: float) -> bool:
        """Ready at ``now``: marked READY, or PROVISIONING with ``ready_at`` passed."""
        if self.state is NodeState.READY:
            return True
        return self.state is NodeState.PROVISIONING and self.ready_at <= now

    def is_live(self) -> bool:
        """Counts towards its pool's capacity (present or coming)."""
        return self.state in (NodeState.PROVISIONING, NodeState.READY)


@dataclass(frozen=True, slots=True)
class WarmCapacity:
    """Capacity made to exist ahead of a plan step: placeholder pods (or a CapacityBuffer) that hold
    ``size`` in ``pool`` from ``ready_by`` until the real pod lands or ``expires_at`` passes.

    for_plan: the plan (reservation id, or the run's key) it was provisioned for.
    """

    pool: str
    size: ResourceVector
    ready_by: float
    expires_at: float
    for_plan: str

    def __post_init__(self) -> None:
        if self.expires_at < self.ready_by:
            raise InvalidNodePool(f"warm capacity for {self.for_plan}: expires_at before ready_by")

    def lapsed(self, now: float) -> bool:
        return now >= self.expires_at


@dataclass(frozen=True, slots=True)
class PoolChoice:
    """Where a task with a given peak should run: the pool and the instance type that hold it."""

    pool: NodePool
    instance_type: InstanceType


def choose_pool(pools: Iterable[NodePool], peak: ResourceVector) -> PoolChoice | None:
    """The cheapest (pool, instance type) one node of which holds ``peak``; None when none does.

    Ties keep the pools' order, so a default pool listed first wins among equals.
    """
    best: PoolChoice | None = None
    for pool in pools:
        t = pool.cheapest_fitting(peak)
        if t is not None and (best is None or t.hourly_cost < best.instance_type.hourly_cost):
            best = PoolChoice(pool, t)
    return best


def capacity_at(nodes: Iterable[Node], at: float) -> ResourceVector:
    """Sum of allocatable over the live nodes Ready by ``at`` (present plus coming capacity)."""
    total = ResourceVector()
    for node in nodes:
        if node.is_live() and (node.state is NodeState.READY or node.ready_at <= at):
            total = total.plus(node.allocatable)
    return total


def launch_at(warm: WarmCapacity, pool: NodePool, margin_s: float = 0.0) -> float:
    """When placeholders for ``warm`` must exist so that a node the pool has to boot for them is
    Ready by ``warm.ready_by``: the pool's provisioning delay plus ``margin_s`` before it."""
    return warm.ready_by - pool.provisioning_delay_s - margin_s


def warm_for_plan(
    plan: AllocationPlan, *, pool: str, start_at: float, for_plan: str, hold_s: float = 300.0
) -> WarmCapacity:
    """Warm capacity sized from a plan: its predicted peak (the largest limit over the plan; a
    request stands in for a missing limit), so that the node it brings holds the task at its
    peak, in-place grows included; ready at the planned start, held ``hold_s`` past it for a task
    that starts late."""
    peak = plan.peak()
    size = peak.limits.combine(peak.requests, lambda lim, _r: lim)
    return WarmCapacity(pool, size, ready_by=start_at, expires_at=start_at + hold_s, for_plan=for_plan)


@dataclass(frozen=True, slots=True)
class Packing:
    """Where first-fit decreasing put each demand: ``placed[i]`` is the index of the node that
    holds demand ``i`` (None: no node has room for it); ``free`` is each node's room left."""

    placed: tuple[int | None, ...]
    free: tuple[ResourceVector, ...]

    @property
    def all_placed(self) -> bool:
        return all(p is not None for p in self.placed)

    def placed_total(self, demands: Iterable[ResourceVector]) -> ResourceVector:
        """The sum of the demands that were placed (the node room they can use together)."""
        total = ResourceVector(cpu_cores=0.0, memory_bytes=0.0)
        for demand, where in zip(demands, self.placed, strict=False):
            if where is not None:
                total = total.plus(demand)
        return total


def _size_key(v: ResourceVector) -> tuple[float, float]:
    return (v.memory_bytes or 0.0, v.cpu_cores or 0.0)


def first_fit_decreasing(demands: Iterable[ResourceVector], free: Iterable[ResourceVector]) -> Packing:
    """Pack ``demands`` (pods' peaks) onto nodes with room ``free`` (allocatable less what is bound
    there): largest demand first (memory, then CPU), each on the first node that still holds all of
    its metrics. A sum over nodes would let two 40Gi pods "fit" two half-used 64Gi nodes; one pod
    runs on one node, so a demand no single node holds is not placed."""
    wanted = list(demands)
    room = list(free)
    placed: list[int | None] = [None] * len(wanted)
    for i in sorted(range(len(wanted)), key=lambda i: _size_key(wanted[i]), reverse=True):
        for j, r in enumerate(room):
            if wanted[i].fits_within(r):
                placed[i] = j
                room[j] = r.minus(wanted[i])
                break
    return Packing(tuple(placed), tuple(room))
