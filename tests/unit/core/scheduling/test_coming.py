"""Coming capacity: fit checks over time see capacity(t) = present + coming ready by t."""

from __future__ import annotations

from airflow_predictive.core.model.backend import Allocation
from airflow_predictive.core.model.nodes import InstanceType, Node
from airflow_predictive.core.model.plan import (
    AllocationPlan,
    LedgerStatus,
    PlanSource,
    Pool,
    PoolCapacity,
    PoolKind,
    ReservationRequest,
)
from airflow_predictive.core.model.resources import GIB, ResourceVector
from airflow_predictive.core.model.runs import RunIdentity, TaskKey
from airflow_predictive.core.scheduling.coming import (
    OVERDUE_MAX_S,
    OVERDUE_STEP_S,
    ComingCapacity,
    capacity_at,
    capacity_steps,
)
from airflow_predictive.core.scheduling.ledger import InMemoryLedger, profile_of
from airflow_predictive.core.scheduling.profile import relative_pieces

NOW = 1_000_000.0
POOL = Pool("k8s", PoolKind.KUBERNETES, PoolCapacity(requests=ResourceVector(memory_bytes=8 * GIB)))
NODE = ComingCapacity(
    "k8s", PoolCapacity(requests=ResourceVector(memory_bytes=16 * GIB)), NOW + 90, "node n1"
)


def flat(gib: float, seconds: float = 600.0) -> AllocationPlan:
    alloc = Allocation.exactly(ResourceVector(memory_bytes=gib * GIB))
    return AllocationPlan.flat(alloc, seconds, source=PlanSource.DECLARED, why="test")


def run(n: int = 1) -> RunIdentity:
    return RunIdentity(TaskKey("d", f"t{n}"), "r", 1)


def test_capacity_over_time_adds_coming_amounts_once_ready() -> None:
    assert capacity_at(POOL, [NODE], NOW + 10, NOW).requests.memory_bytes == 8 * GIB
    assert capacity_at(POOL, [NODE], NOW + 90, NOW).requests.memory_bytes == 24 * GIB
    steps = capacity_steps(POOL, [NODE], NOW)
    assert [(s.at, s.capacity.requests.memory_bytes) for s in steps] == [(NOW, 8 * GIB), (NOW + 90, 24 * GIB)]
    assert steps[1].sources == ("node n1",)


def test_overdue_coming_capacity_is_never_counted_as_present() -> None:
    late = ComingCapacity("k8s", NODE.amount, NOW - 5, "node n0 (late)")
    assert capacity_at(POOL, [late], NOW, NOW).requests.memory_bytes == 8 * GIB
    profile = profile_of(POOL, [], coming=[late], now=NOW)
    pieces = relative_pieces(flat(12).segments())
    assert not profile.fit(pieces, NOW).fits
    # still coming "in a moment": a task waiting for it does not flip to never-fits
    assert profile.earliest_start(pieces, NOW) == NOW + OVERDUE_STEP_S


def test_coming_capacity_overdue_for_too_long_is_left_out() -> None:
    gone = ComingCapacity("k8s", NODE.amount, NOW - OVERDUE_MAX_S - 1, "node n0 (failed)")
    assert capacity_at(POOL, [gone], NOW + 1000, NOW).requests.memory_bytes == 8 * GIB


def test_coming_amount_does_not_constrain_an_unconstrained_metric() -> None:
    cpu_node = ComingCapacity(
        "k8s", PoolCapacity(requests=ResourceVector(memory_bytes=GIB, cpu_cores=4.0)), NOW + 90
    )
    cap = capacity_at(POOL, [cpu_node], NOW + 100, NOW)
    assert cap.requests.cpu_cores is None  # the pool never constrained CPU


def test_plan_that_needs_the_coming_node_starts_when_it_is_ready() -> None:
    profile = profile_of(POOL, [], coming=[NODE], now=NOW)
    pieces = relative_pieces(flat(12).segments())
    fit = profile.fit(pieces, NOW)
    assert not fit.fits and fit.bottleneck is not None
    assert fit.bottleneck.available == 8 * GIB  # what is present now, not present + coming
    assert profile.earliest_start(pieces, NOW) == NOW + 90


def test_plan_whose_later_step_needs_the_coming_node_fits_now() -> None:
    from airflow_predictive.core.model.plan import PlanStep

    grows = AllocationPlan(
        initial=Allocation.exactly(ResourceVector(memory_bytes=4 * GIB)),
        steps=(PlanStep(300.0, Allocation.exactly(ResourceVector(memory_bytes=20 * GIB)), "grows"),),
        duration_s=600.0,
    )
    with_node = profile_of(POOL, [], coming=[NODE], now=NOW)
    without = profile_of(POOL, [], now=NOW)
    assert with_node.fit(relative_pieces(grows.segments()), NOW).fits
    assert not without.fit(relative_pieces(grows.segments()), NOW).fits


def test_ledger_reserve_counts_coming_capacity_only_from_its_ready_time() -> None:
    clock = [NOW]
    ledger = InMemoryLedger(clock=lambda: clock[0])
    ledger.set_pool(POOL)
    ledger.set_coming("k8s", [NODE])
    now_req = ReservationRequest("k8s", run(1), "h", flat(12), start=NOW)
    assert ledger.reserve(now_req).status is LedgerStatus.REFUSED
    later = ReservationRequest("k8s", run(2), "h", flat(12), start=NOW + 90)
    assert ledger.reserve(later).status is LedgerStatus.RESERVED
    # the pool now holds 12 of 24 GiB from +90 s: another 12 GiB fits then, a third does not
    assert ledger.reserve(ReservationRequest("k8s", run(3), "h", flat(12), start=NOW + 90)).ok
    assert ledger.reserve(ReservationRequest("k8s", run(4), "h", flat(1), start=NOW + 100)).status is (
        LedgerStatus.REFUSED
    )
    assert ledger.coming("k8s") == (NODE,)


def test_node_becomes_coming_capacity_on_the_requests_side() -> None:
    itype = InstanceType("n2-standard-8", ResourceVector(memory_bytes=28 * GIB, cpu_cores=7.9))
    node = Node("n-1", "default", itype, ready_at=NOW + 90)
    c = ComingCapacity.of_node("k8s", node)
    assert c.ready_at == NOW + 90 and c.amount.requests.memory_bytes == 28 * GIB
    assert c.amount.limits.is_empty() and "n2-standard-8" in c.source
