"""Node-level replay: reactive autoscaling waits for a node, warm capacity makes it ready ahead."""

from __future__ import annotations

from airflow_predictive.core.model.nodes import InstanceType, NodePool
from airflow_predictive.core.model.resources import GIB, ResourceVector
from airflow_predictive.simulation.nodes import NodeSimSettings, PodSpec, replay_nodes

SMALL = InstanceType("s4", ResourceVector(memory_bytes=16 * GIB, cpu_cores=4.0), hourly_cost=0.2)
LARGE = InstanceType("s8", ResourceVector(memory_bytes=32 * GIB, cpu_cores=8.0), hourly_cost=0.4)
POOL = NodePool("default", (SMALL, LARGE), provisioning_delay_s=90.0)


def pod(
    i: int, submit: float, *, mem: float = 8 * GIB, cpu: float = 2.0, dur: float = 300.0, **kw: float
) -> PodSpec:
    return PodSpec(index=i, submit_s=submit, duration_s=dur, memory=mem, cpu=cpu, **kw)  # type: ignore[arg-type]


def test_reactive_pod_waits_for_the_provisioning_delay_on_an_empty_cluster() -> None:
    out = replay_nodes([pod(0, 100.0)], POOL, NodeSimSettings(scale_down_after_s=60.0))
    assert out.pods[0].latency_s == 90.0
    assert out.pods[0].waited_for_node
    assert len(out.nodes) == 1 and out.nodes[0].instance_type == "s4"  # cheapest that holds it
    # created at 100, ready at 190, pod ends at 490, removed 60 s later
    assert out.nodes[0].deleted_s == 550.0
    assert abs(out.node_hours - 450.0 / 3600) < 1e-9


def test_second_pod_uses_the_room_on_a_node_already_on_its_way() -> None:
    out = replay_nodes([pod(0, 0.0, mem=6 * GIB), pod(1, 30.0, mem=6 * GIB)], POOL)
    assert len(out.nodes) == 1
    assert [p.start_s for p in out.pods] == [90.0, 90.0]


def test_pod_larger_than_every_instance_type_never_starts() -> None:
    out = replay_nodes([pod(0, 0.0, mem=64 * GIB)], POOL)
    assert out.pods[0].start_s is None and out.unschedulable == 1 and not out.nodes


def test_placeholder_made_ahead_lets_the_pod_start_at_once() -> None:
    p = pod(0, 1000.0, warm_at_s=880.0, warm_until_s=1100.0)
    reactive = replay_nodes([p], POOL, NodeSimSettings(warm=False))
    warm = replay_nodes([p], POOL, NodeSimSettings(warm=True))
    assert reactive.pods[0].latency_s == 90.0
    assert warm.pods[0].latency_s == 0.0
    assert warm.pods[0].had_placeholder and warm.placeholders_used == 1
    # the node was ordered 120 s earlier and the pod ends 90 s earlier: 30 s more node time
    assert abs((warm.node_hours - reactive.node_hours) * 3600 - 30.0) < 1e-6
    assert abs(warm.placeholder_only_node_hours * 3600 - 120.0) < 1e-6


def test_late_placeholder_shortens_the_wait_by_what_it_got_ahead() -> None:
    out = replay_nodes(
        [pod(0, 1000.0, warm_at_s=960.0, warm_until_s=1100.0)], POOL, NodeSimSettings(warm=True)
    )
    assert out.pods[0].latency_s == 50.0  # node ordered at 960, ready at 1050


def test_lapsed_placeholder_frees_its_node_and_the_pod_is_served_reactively() -> None:
    p = pod(0, 5000.0, warm_at_s=100.0, warm_until_s=400.0)
    out = replay_nodes([p], POOL, NodeSimSettings(warm=True, scale_down_after_s=60.0))
    assert out.placeholders_lapsed == 1 and out.placeholders_used == 0
    assert out.pods[0].latency_s == 90.0
    assert out.nodes[0].never_used and out.nodes[0].deleted_s == 460.0


def test_real_pod_preempts_another_plans_placeholder_which_gets_a_new_node() -> None:
    running = pod(0, 0.0, mem=8 * GIB, dur=10_000.0)
    waiting = pod(1, 3000.0, mem=8 * GIB, warm_at_s=2800.0, warm_until_s=3500.0)
    intruder = pod(2, 2950.0, mem=8 * GIB)  # no placeholder of its own
    out = replay_nodes([running, waiting, intruder], POOL, NodeSimSettings(warm=True))
    by = {p.index: p for p in out.pods}
    # the intruder took the placeholder's room on the Ready node at once
    assert by[2].latency_s == 0.0
    # the evicted placeholder went back to Pending and ordered a node at 2950 (ready 3040)
    assert by[1].latency_s == 40.0


def test_pod_waiting_for_a_booting_node_takes_a_ready_node_that_frees_up() -> None:
    first = pod(0, 0.0, mem=12 * GIB, dur=200.0)  # node A ready at 90, pod ends at 290
    second = pod(1, 250.0, mem=12 * GIB)  # A is full: orders node B (ready 340)
    out = replay_nodes([first, second], POOL, NodeSimSettings(scale_down_after_s=30.0))
    assert out.pods[1].start_s == 290.0  # A freed before B was ready


def test_no_placeholder_when_a_running_pod_is_predicted_to_free_room_in_time() -> None:
    running = pod(0, 0.0, mem=12 * GIB, dur=850.0, predicted_duration_s=800.0)  # runs 90..940
    nxt = pod(1, 1001.0, mem=12 * GIB, warm_at_s=830.0, warm_until_s=1200.0, predicted_start_s=950.0)
    shortfall = replay_nodes([running, nxt], POOL, NodeSimSettings(warm=True))
    assert shortfall.placeholders_made == 0 and shortfall.placeholders_skipped == 1
    assert shortfall.pods[1].placeholder_skipped and shortfall.pods[1].latency_s == 0.0
    assert len(shortfall.nodes) == 1  # it took the room its predecessor freed
    always = replay_nodes([running, nxt], POOL, NodeSimSettings(warm=True, shortfall_only=False))
    assert always.placeholders_made == 1 and len(always.nodes) == 2
    assert always.node_hours > shortfall.node_hours


def test_predicted_room_is_promised_once() -> None:
    running = pod(0, 0.0, mem=12 * GIB, dur=850.0, predicted_duration_s=800.0)  # runs 90..940
    a = pod(1, 1001.0, mem=12 * GIB, warm_at_s=830.0, warm_until_s=1200.0, predicted_start_s=950.0)
    b = pod(2, 1002.0, mem=12 * GIB, warm_at_s=831.0, warm_until_s=1200.0, predicted_start_s=950.0)
    out = replay_nodes([running, a, b], POOL, NodeSimSettings(warm=True))
    assert out.placeholders_skipped == 1 and out.placeholders_made == 1
    assert [p.latency_s for p in out.pods[1:]] == [0.0, 0.0]
