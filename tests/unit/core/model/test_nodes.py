from __future__ import annotations

import pytest

from airflow_predictive.core.model.nodes import (
    InstanceType,
    InvalidNodePool,
    Node,
    NodePool,
    NodeState,
    WarmCapacity,
    capacity_at,
    choose_pool,
    first_fit_decreasing,
)
from airflow_predictive.core.model.resources import GIB, ResourceVector

SMALL = InstanceType("small", ResourceVector(cpu_cores=2, memory_bytes=4 * GIB), hourly_cost=0.1)
LARGE = InstanceType("large", ResourceVector(cpu_cores=8, memory_bytes=32 * GIB), hourly_cost=0.4)
HUGE = InstanceType("huge", ResourceVector(cpu_cores=32, memory_bytes=128 * GIB), hourly_cost=1.6)


def test_cheapest_fitting_instance_type_holds_the_demand() -> None:
    pool = NodePool("general", (LARGE, SMALL))
    assert pool.cheapest_fitting(ResourceVector(memory_bytes=3 * GIB)) is SMALL
    assert pool.cheapest_fitting(ResourceVector(memory_bytes=6 * GIB)) is LARGE
    assert pool.cheapest_fitting(ResourceVector(memory_bytes=64 * GIB)) is None
    assert pool.largest() is LARGE


def test_choose_pool_picks_the_cheapest_pool_whose_node_holds_the_peak() -> None:
    default = NodePool("default", (SMALL,))
    big = NodePool("highmem", (HUGE, LARGE))
    assert choose_pool([default, big], ResourceVector(memory_bytes=2 * GIB)).pool is default  # type: ignore[union-attr]
    choice = choose_pool([default, big], ResourceVector(memory_bytes=20 * GIB))
    assert choice is not None and choice.pool is big and choice.instance_type is LARGE
    assert choose_pool([default, big], ResourceVector(memory_bytes=512 * GIB)) is None


def test_pool_limits_bound_the_nodes_it_may_add() -> None:
    pool = NodePool("capped", (LARGE,), limits=ResourceVector(cpu_cores=16))
    assert pool.room_for(ResourceVector(cpu_cores=8), LARGE)
    assert not pool.room_for(ResourceVector(cpu_cores=16), LARGE)


def test_invalid_pools_are_refused() -> None:
    with pytest.raises(InvalidNodePool):
        NodePool("empty", ())
    with pytest.raises(InvalidNodePool):
        NodePool("p", (SMALL,), provisioning_delay_s=-1)
    with pytest.raises(InvalidNodePool):
        InstanceType("x", ResourceVector(), hourly_cost=-1)
    with pytest.raises(InvalidNodePool):
        WarmCapacity("p", ResourceVector(), ready_by=10, expires_at=5, for_plan="r1")


def test_capacity_at_counts_coming_nodes_once_they_are_ready() -> None:
    nodes = [
        Node("n1", "p", SMALL, ready_at=0, state=NodeState.READY),
        Node("n2", "p", LARGE, ready_at=100),
        Node("n3", "p", HUGE, ready_at=0, state=NodeState.DELETED),
    ]
    assert capacity_at(nodes, 50).cpu_cores == 2
    assert capacity_at(nodes, 100).cpu_cores == 10
    assert nodes[1].is_ready(100) and not nodes[1].is_ready(99)


def test_warm_capacity_lapses_at_its_expiry() -> None:
    warm = WarmCapacity("p", ResourceVector(memory_bytes=GIB), ready_by=10, expires_at=20, for_plan="r1")
    assert not warm.lapsed(19.9) and warm.lapsed(20)


def test_warm_capacity_from_a_plan_holds_its_predicted_peak_from_the_planned_start() -> None:
    from airflow_predictive.core.model.backend import Allocation
    from airflow_predictive.core.model.nodes import warm_for_plan
    from airflow_predictive.core.model.plan import AllocationPlan, PlanStep

    plan = AllocationPlan(
        initial=Allocation(
            ResourceVector(cpu_cores=1, memory_bytes=2 * GIB), ResourceVector(memory_bytes=4 * GIB)
        ),
        steps=(PlanStep(60, Allocation(limits=ResourceVector(cpu_cores=2, memory_bytes=12 * GIB)), "grow"),),
        duration_s=600,
    )
    warm = warm_for_plan(plan, pool="highmem", start_at=1000.0, for_plan="r1", hold_s=120)
    assert warm.size.memory_bytes == 12 * GIB  # the grow step's limit: the node must hold the peak
    assert warm.size.cpu_cores == 2
    assert (warm.pool, warm.ready_by, warm.expires_at, warm.for_plan) == ("highmem", 1000.0, 1120.0, "r1")


def test_placeholders_launch_one_provisioning_delay_and_a_margin_ahead() -> None:
    from airflow_predictive.core.model.nodes import launch_at

    pool = NodePool("p", (SMALL,), provisioning_delay_s=90)
    warm = WarmCapacity("p", ResourceVector(), ready_by=1000.0, expires_at=1300.0, for_plan="r1")
    assert launch_at(warm, pool, margin_s=10) == 900.0


def _gi(memory: float, cpu: float = 1.0) -> ResourceVector:
    return ResourceVector(cpu_cores=cpu, memory_bytes=memory * GIB)


def test_two_pods_do_not_fit_two_half_used_nodes_that_a_sum_would_accept() -> None:
    rooms = [_gi(32, 4), _gi(32, 4)]  # two 64Gi nodes, half used: 64Gi free in sum
    packing = first_fit_decreasing([_gi(40), _gi(40)], rooms)
    assert packing.placed == (None, None) and not packing.all_placed
    assert packing.placed_total([_gi(40), _gi(40)]).memory_bytes == 0


def test_first_fit_decreasing_places_the_largest_first_and_keeps_the_rest_room() -> None:
    demands = [_gi(10), _gi(40), _gi(30)]
    packing = first_fit_decreasing(demands, [_gi(48, 8), _gi(32, 8)])
    # 40 -> node 0 (8 left), 30 -> node 1 (2 left), 10 fits neither
    assert packing.placed == (None, 0, 1)
    assert packing.free[0].memory_bytes == 8 * GIB and packing.free[1].memory_bytes == 2 * GIB
    assert packing.placed_total(demands).memory_bytes == 70 * GIB


def test_every_metric_must_fit_the_same_node() -> None:
    # memory fits node 0, cpu only node 1: one pod needs both on one node
    packing = first_fit_decreasing([_gi(20, 6)], [_gi(30, 2), _gi(10, 8)])
    assert packing.placed == (None,)
    assert first_fit_decreasing([_gi(20, 6)], [_gi(30, 2), _gi(24, 8)]).placed == (1,)
