"""Node pools wired into the PredictiveKubernetesExecutor: steering, warm capacity, coming capacity.

Why: the node-pool backend (``backends/nodes``) knows the cluster's Karpenter NodePools and can
make a node exist ahead of a task (placeholder pods), but only the executor knows which tasks
are planned and when they are predicted to start. This adapter joins them:

- steering: the task pod's ``pod_override`` gets ``nodeSelector: {karpenter.sh/nodepool: P}``
  for the cheapest pool one node of which holds the plan's peak, and the ``for-plan`` label its
  placeholder carries (so ``settle`` sees the real pod land);
- warm capacity: for held-back tasks that wait for *node* capacity (their start choice is
  ``wait_for_coming`` or above present + coming), a placeholder sized at the plan's peak, made one
  provisioning delay (plus margin) before the predicted start (``provision_due``), deleted once the
  real pod is bound or the plan lapsed (``settle``);
- coming capacity: nodes booting in the pools are published to the ledger (``set_coming``), and
  the pools' Ready nodes (placeholders left out: they are preempted for real pods) are the node
  bound of the namespace pool, so admission queues a task for a node's ready time.

Never blocks the scheduler loop: every cluster call runs in one daemon thread (a round every
``interval_s``, or when woken); the loop only reads the round's cached results and hands over
the next warm-capacity snapshot. Never hurts the task: cluster API down or forbidden -> no pools
are known, so no steering and no placeholders (one log line per distinct cause), the task runs
as it would have.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from airflow_predictive.backends.nodes import placeholders
from airflow_predictive.core.model.backend import Capacity
from airflow_predictive.core.model.nodes import NodeState, WarmCapacity, choose_pool, first_fit_decreasing
from airflow_predictive.core.scheduling.coming import ComingCapacity

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping

    from airflow_predictive.backends.nodes.backend import NodePoolBackend
    from airflow_predictive.core.model.nodes import NodePool, PoolChoice
    from airflow_predictive.core.model.plan import AllocationPlan
    from airflow_predictive.core.model.resources import ResourceVector
    from airflow_predictive.core.model.runs import RunIdentity
    from airflow_predictive.core.ports import ReservationLedger
    from airflow_predictive.executors.coordinator import Waiting

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class NodeWiringSettings:
    """interval_s: seconds between two rounds. hold_s: how long past its predicted start a
    placeholder is held for a task that starts late."""

    interval_s: float = 5.0
    hold_s: float = 300.0


@dataclass(frozen=True, slots=True)
class RoundResult:
    """What one round saw and did (for logs and tests)."""

    pools: int
    coming: int
    made: int
    settled: int
    error: str = ""


def plan_key(run: RunIdentity) -> str:
    """The id warm capacity is made for: one task try (its placeholder and its real pod share it)."""
    k = run.key
    return f"{k.dag_id}.{k.task_id}.{getattr(k, 'map_index', -1)}.{run.run_id}.{run.try_number}"


def plan_peak(plan: AllocationPlan) -> ResourceVector:
    """The largest limit over the plan (a request where there is no limit): what a node must hold."""
    peak = plan.peak()
    return peak.limits.combine(peak.requests, lambda lim, _r: lim)


def wants_a_node(item: Waiting) -> bool:
    """A held-back task whose start choice waits for node capacity (a node booting, or one to make:
    above present + coming); one that fits now or waits for reservations to end needs no node."""
    from airflow_predictive.core.scheduling.start_choice import StartDecision

    choice = item.start
    return choice is not None and choice.decision in (StartDecision.WAIT_FOR_COMING, StartDecision.NEVER_FITS)


def warms_for_waiting(wiring: NodeWiring, waiting: Iterable[Waiting], now: float) -> list[WarmCapacity]:
    """Warm capacity for the held-back tasks that want a node, ready at their predicted start
    (now when none is known: the node is to be made as soon as possible)."""
    out = []
    for item in waiting:
        if not wants_a_node(item):
            continue
        warm = wiring.warm_for(item.outcome.plan, plan_key(item.run), item.earliest_start or now)
        if warm is not None:
            out.append(warm)
    return out


class NodeWiring:
    """See the module docstring. ``round()`` does one round in the caller's thread (tests);
    ``start()`` runs rounds in a daemon thread."""

    def __init__(
        self,
        backend: NodePoolBackend,
        ledger: ReservationLedger,
        pool: str,
        settings: NodeWiringSettings | None = None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.backend = backend
        backend.log_errors = False  # one line per outage, from here, saying what it means
        self.ledger = ledger
        self.pool = pool
        self.settings = settings or NodeWiringSettings()
        self.clock = clock
        self._lock = threading.Lock()
        self._pools: tuple[NodePool, ...] = ()
        self._capacity: Capacity | None = None
        self._rooms: tuple[ResourceVector, ...] = ()
        self._others: tuple[ResourceVector, ...] = ()  # allocatable of Ready nodes no pool owns
        self._warms: tuple[WarmCapacity, ...] = ()
        self._sized: dict[
            str, tuple[AllocationPlan, tuple[NodePool, ...], ResourceVector, PoolChoice | None]
        ] = {}
        self._down = ""
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._first = threading.Event()
        self._thread: threading.Thread | None = None

    # -- the loop's side: cached reads, never a cluster call ---------------------------------------

    def pools(self) -> tuple[NodePool, ...]:
        with self._lock:
            return self._pools

    def node_capacity(self, peaks: Iterable[ResourceVector] | None = None) -> Capacity | None:
        """The pools' Ready nodes (allocatable, and what non-placeholder pods hold there) as last
        read; None when no pool is known (no node bound: the namespace quota alone applies).

        peaks: the requests the waiting tasks' pods will need. Given, the node bound is a bin
        packing (first-fit decreasing over each Ready node's room), not a sum: the allocatable
        answered is what is bound plus the peaks that a node holds, so two 40Gi pods do not
        "fit" two half-used 64Gi nodes."""
        with self._lock:
            capacity, rooms = self._capacity, self._rooms
        if capacity is None or peaks is None:
            return capacity
        wanted = [p for p in peaks if not p.is_empty()]
        if not wanted:  # nothing to place: the sum (the running tasks' reservations fit it, as before)
            return capacity
        packing = first_fit_decreasing(wanted, rooms)
        return Capacity(
            allocatable=capacity.allocated.plus(packing.placed_total(wanted)), allocated=capacity.allocated
        )

    def fits_a_node(self, peak: ResourceVector) -> bool:
        """True when one Ready node (placeholders left out) has room for ``peak`` now."""
        with self._lock:
            rooms = self._rooms
        return any(peak.fits_within(r) for r in rooms)

    def choice(self, peak: ResourceVector) -> PoolChoice | None:
        """The pool to steer ``peak`` to: None when a node no pool owns holds it (the default
        placement fits: no reason to pay for a pool's node) or no pool holds it."""
        with self._lock:
            others = self._others
        if peak.is_empty() or any(peak.fits_within(a) for a in others):
            return None
        return choose_pool(self.pools(), peak)

    def steer(
        self, executor_config: Mapping[str, Any] | None, peak: ResourceVector | None, for_plan: str
    ) -> dict[str, Any]:
        """A copy of ``executor_config`` whose pod_override selects the pool that holds ``peak``
        and carries the ``for-plan`` label; unchanged when no pool is known or none holds it."""
        config = dict(executor_config or {})
        choice = self.choice(peak) if peak is not None else None
        if choice is None:
            return config
        import copy

        from kubernetes.client import models as k8s

        pod = copy.deepcopy(config.get("pod_override")) or k8s.V1Pod()
        if pod.metadata is None:
            pod.metadata = k8s.V1ObjectMeta()
        pod.metadata.labels = {
            **(pod.metadata.labels or {}),
            placeholders.PLAN_LABEL: placeholders.plan_label(for_plan),
        }
        if pod.spec is None:
            pod.spec = k8s.V1PodSpec(containers=[])
        pod.spec.node_selector = {**(pod.spec.node_selector or {}), **choice.pool.node_selector()}
        config["pod_override"] = pod
        log.info(
            "predictive: %s steered to node pool %s (%s holds its peak %s)",
            for_plan,
            choice.pool.name,
            choice.instance_type.name,
            peak,
        )
        return config

    def warm_for(self, plan: AllocationPlan, for_plan: str, start_at: float) -> WarmCapacity | None:
        """The warm capacity a held-back task needs to start at ``start_at`` (None: no pool holds it).
        The plan's peak and pool are remembered per plan while the pools stay the same (bounded
        heartbeat cost with many tasks waiting)."""
        pools = self.pools()
        hit = self._sized.get(for_plan)
        if hit is None or hit[0] is not plan or hit[1] is not pools:
            if len(self._sized) > 4096:
                self._sized.clear()
            peak = plan_peak(plan)
            hit = (plan, pools, peak, choose_pool(pools, peak) if not peak.is_empty() else None)
            self._sized[for_plan] = hit
        _, _, peak, choice = hit
        if choice is None:
            return None
        return WarmCapacity(
            choice.pool.name,
            peak,
            ready_by=start_at,
            expires_at=start_at + self.settings.hold_s,
            for_plan=for_plan,
        )

    def want(self, warms: Iterable[WarmCapacity]) -> None:
        """The warm capacity wanted now (replaces the last snapshot; the next round acts on it)."""
        new = tuple(warms)
        with self._lock:
            changed, self._warms = new != self._warms, new
        if changed:
            self._wake.set()  # a new task to warm for: the thread's next round comes now

    def wake(self) -> None:
        self._wake.set()

    # -- the thread's side: cluster calls ------------------------------------------------------------

    def round(self) -> RoundResult:
        """Read pools and nodes, create due placeholders, delete landed / lapsed ones, publish
        booting nodes as coming capacity and the Ready nodes as the node bound."""
        try:
            self.backend.last_error = ""
            pools = self.backend.pools()
            if not pools:
                self._set(pools=(), capacity=None)
                self._publish([])
                cause = self.backend.last_error or "the cluster has no NodePool with a known catalog"
                return self._result(RoundResult(0, 0, 0, 0, cause))
            states = self.backend.pool_states(pools)
            with self._lock:
                warms = self._warms
            made = self.backend.provision_due(warms, pools=pools)
            settled = self.backend.settle()
            coming = [
                ComingCapacity.of_node(self.pool, n)
                for s in states
                for n in s.nodes
                if n.state is NodeState.PROVISIONING
            ]
            others = self.backend.other_nodes()
            capacity, rooms = self.backend.capacity_and_rooms(states, count_placeholders=False, others=others)
            if self.backend.last_error:  # pools read, nodes or pods not: steer, but bound nothing
                self._set(pools=tuple(pools), capacity=None)
                self._publish([])
                return self._result(RoundResult(len(pools), 0, len(made), settled, self.backend.last_error))
            self._set(pools=tuple(pools), capacity=capacity, rooms=rooms, others=tuple(others.values()))
            self._publish(coming)
            return self._result(RoundResult(len(pools), len(coming), len(made), settled))
        except Exception as exc:  # never let the thread die; no pools known = no steering
            self._set(pools=(), capacity=None)
            return self._result(RoundResult(0, 0, 0, 0, f"{type(exc).__name__}: {exc}"))

    def _set(
        self,
        *,
        pools: tuple[NodePool, ...],
        capacity: Capacity | None,
        rooms: tuple[ResourceVector, ...] = (),
        others: tuple[ResourceVector, ...] = (),
    ) -> None:
        with self._lock:
            if pools != self._pools:  # same pools keep their identity (the sizes cached per plan)
                self._pools = pools
            self._capacity = capacity
            self._rooms = rooms
            self._others = others

    def _publish(self, coming: list[ComingCapacity]) -> None:
        try:
            self.ledger.set_coming(self.pool, coming)
        except Exception as exc:
            log.warning("predictive: coming capacity of %s not published (%s)", self.pool, exc)

    def _result(self, result: RoundResult) -> RoundResult:
        if result.error != self._down:
            if result.error and result.pools:
                log.warning(
                    "predictive: node pools' nodes unreadable (%s): pods are steered, but no node "
                    "bound, no coming capacity, no grow wait",
                    result.error,
                )
            elif result.error:
                log.warning(
                    "predictive: node pools unavailable (%s): no steering, no warm capacity; "
                    "tasks keep their default placement",
                    result.error,
                )
            else:
                log.info("predictive: node pools available again (%d pools)", result.pools)
            self._down = result.error
        return result

    def start(self, first_round_wait_s: float = 2.0) -> NodeWiring:
        """Run rounds in a daemon thread; waits up to ``first_round_wait_s`` for the first one so
        that the first admissions see the pools (a cluster that does not answer delays nobody more)."""
        self._thread = threading.Thread(target=self._loop, name="predictive-node-pools", daemon=True)
        self._thread.start()
        self._first.wait(first_round_wait_s)
        return self

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.round()
            self._first.set()
            self._wake.wait(self.settings.interval_s)
            self._wake.clear()

    def stop(self, timeout_s: float = 2.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
