from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from airflow_predictive.core.model.backend import Capacity
from airflow_predictive.core.model.plan import AdmissionDecision
from airflow_predictive.core.model.query import ForecastQuery
from airflow_predictive.core.model.resources import GIB, ResourceVector
from airflow_predictive.executors.coordinator import Coordinator
from airflow_predictive.executors.kubernetes_nodes import NodeWiring
from airflow_predictive.executors.kubernetes_nodes_ahead import (
    MAX_UPCOMING,
    AheadWarms,
    DagReader,
    TaskRow,
    upcoming,
)
from airflow_predictive.executors.opt_in import task_settings
from tests._databases import migrated_engine

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from sqlalchemy.engine import Engine


NOW = 1_000.0


def _row(task: str, state: str | None, try_number: int = 0, run: str = "r1") -> TaskRow:
    return TaskRow("d", run, task, -1, state, try_number)


def test_a_task_whose_upstream_runs_here_is_upcoming_at_the_upstreams_predicted_end() -> None:
    rows = [_row("prep", "queued", 1), _row("big", None)]
    ups = upcoming(rows, {("d", "big"): ("prep",)}, {("d", "r1", "prep"): NOW + 40}, NOW)
    assert len(ups) == 1
    assert ups[0].run.key.task_id == "big" and ups[0].start_at == NOW + 40
    assert ups[0].run.try_number == 1  # Airflow increments it when it schedules the row


def test_an_overdue_upstream_makes_the_task_upcoming_now() -> None:
    ups = upcoming(
        [_row("prep", "running", 1), _row("big", "scheduled", 1)],
        {("d", "big"): ("prep",)},
        {("d", "r1", "prep"): NOW - 5},
        NOW,
    )
    assert [(u.start_at, u.run.try_number) for u in ups] == [(NOW, 1)]


def test_a_task_with_an_upstream_not_yet_running_or_failed_is_not_upcoming() -> None:
    upstream = {("d", "join"): ("a", "b")}
    ends = {("d", "r1", "a"): NOW + 10}
    assert upcoming([_row("a", "running", 1), _row("b", None), _row("join", None)], upstream, ends, NOW) == []
    assert (
        upcoming([_row("a", "running", 1), _row("b", "failed", 1), _row("join", None)], upstream, ends, NOW)
        == []
    )
    done = upcoming(
        [_row("a", "running", 1), _row("b", "success", 1), _row("join", None)], upstream, ends, NOW
    )
    assert [u.run.key.task_id for u in done] == ["join"]


def test_queued_tasks_roots_and_other_runs_are_not_upcoming() -> None:
    rows = [
        _row("prep", "running", 1),
        _row("big", "queued", 1),
        _row("root", None),
        _row("big", None, run="r2"),
    ]
    ups = upcoming(rows, {("d", "big"): ("prep",), ("d", "root"): ()}, {("d", "r1", "prep"): NOW + 5}, NOW)
    assert ups == []


def test_the_soonest_are_kept_and_their_number_is_bounded() -> None:
    rows = [_row("prep", "running", 1)] + [_row(f"t{i}", None) for i in range(MAX_UPCOMING + 8)]
    upstream = {("d", f"t{i}"): ("prep",) for i in range(MAX_UPCOMING + 8)}
    assert len(upcoming(rows, upstream, {("d", "r1", "prep"): NOW + 5}, NOW)) == MAX_UPCOMING


def _wiring_with(rooms: tuple[ResourceVector, ...], others: tuple[ResourceVector, ...] = ()) -> NodeWiring:
    class _Backend:
        log_errors = True

    wiring = NodeWiring(_Backend(), ledger=None, pool="k8s:default")  # type: ignore[arg-type]
    used = ResourceVector(cpu_cores=8.0, memory_bytes=64 * GIB)
    wiring._set(
        pools=(),
        capacity=Capacity(allocatable=ResourceVector(cpu_cores=16.0, memory_bytes=128 * GIB), allocated=used),
        rooms=rooms,
        others=others,
    )
    return wiring


def test_the_node_bound_is_the_bin_packing_of_the_waiting_peaks_not_a_sum() -> None:
    half = ResourceVector(cpu_cores=4.0, memory_bytes=32 * GIB)
    wiring = _wiring_with((half, half))  # two 64Gi nodes, half used
    forty = ResourceVector(cpu_cores=1.0, memory_bytes=40 * GIB)
    packed = wiring.node_capacity([forty, forty])
    assert packed is not None
    assert packed.allocatable.memory_bytes == packed.allocated.memory_bytes  # no room for either
    twenty = ResourceVector(cpu_cores=1.0, memory_bytes=20 * GIB)
    room = wiring.node_capacity([twenty, twenty, forty])
    assert room is not None and room.allocatable.minus(room.allocated).memory_bytes == 40 * GIB
    summed = wiring.node_capacity()  # without peaks: the sum, as before
    assert summed is not None and summed.allocatable.memory_bytes == 128 * GIB
    idle = wiring.node_capacity([])  # nothing waits: the sum too (running reservations keep fitting)
    assert idle is not None and idle.allocatable.memory_bytes == 128 * GIB
    assert not wiring.fits_a_node(forty) and wiring.fits_a_node(twenty)


def test_a_peak_a_node_outside_the_pools_holds_is_not_steered() -> None:
    from airflow_predictive.core.model.nodes import InstanceType, NodePool

    highmem = NodePool("highmem", (InstanceType("hm", ResourceVector(cpu_cores=8.0, memory_bytes=64 * GIB)),))
    wiring = _wiring_with((), others=(ResourceVector(cpu_cores=4.0, memory_bytes=8 * GIB),))
    wiring._set(
        pools=(highmem,), capacity=None, others=(ResourceVector(cpu_cores=4.0, memory_bytes=8 * GIB),)
    )
    assert wiring.choice(ResourceVector(cpu_cores=0.25, memory_bytes=GIB // 4)) is None
    big = wiring.choice(ResourceVector(cpu_cores=1.0, memory_bytes=24 * GIB))
    assert big is not None and big.pool.name == "highmem"


class _Rows(DagReader):
    """The Airflow side given as data (the rule's inputs), so the adapter runs without a scheduler."""

    def __init__(self, rows: list[TaskRow], upstream: dict, configs: dict) -> None:  # type: ignore[type-arg]
        super().__init__()
        self.rows, self.upstream, self.configs = rows, upstream, configs

    def read(self, runs):  # type: ignore[no-untyped-def]
        wanted = set(runs)
        return [r for r in self.rows if (r.dag_id, r.run_id) in wanted], self.upstream, self.configs


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    with migrated_engine("sqlite", tmp_path) as e:
        yield e


def _coordinator(engine: Engine) -> Coordinator:
    from airflow_predictive.core.model.plan import Pool, PoolCapacity, PoolKind
    from airflow_predictive.executors.coordinator import CoordinatorSettings
    from airflow_predictive.storage.ledger_store import SqlLedger

    pool = Pool(
        "k8s:default", PoolKind.KUBERNETES, PoolCapacity(requests=ResourceVector(memory_bytes=100 * GIB))
    )
    return Coordinator(
        ledger=SqlLedger(engine), forecasts=None, pool=pool, holder="h", settings=CoordinatorSettings()
    )


def test_a_coming_task_no_ready_node_holds_gets_warm_capacity_ready_at_its_upstreams_planned_end(
    engine: Engine,
) -> None:
    from airflow_predictive.core.model.nodes import InstanceType, NodePool
    from airflow_predictive.core.model.runs import RunIdentity, TaskKey
    from airflow_predictive.executors.coordinator import Launch, Running

    highmem = NodePool("highmem", (InstanceType("hm", ResourceVector(cpu_cores=8.0, memory_bytes=64 * GIB)),))
    wiring = _wiring_with((ResourceVector(cpu_cores=4.0, memory_bytes=8 * GIB),))
    wiring._set(pools=(highmem,), capacity=None, rooms=(ResourceVector(cpu_cores=4.0, memory_bytes=8 * GIB),))
    coordinator = _coordinator(engine)
    prep = RunIdentity(TaskKey("d", "prep"), "r1", 1)
    plan = coordinator.plan_for(
        prep, task_settings({"predictive": {"memory": "1Gi", "duration": 120}}), ForecastQuery(prep.key)
    ).plan
    started = coordinator.started(Launch("k-prep", prep, None, plan, None, AdmissionDecision.ADMITTED, ""))
    assert isinstance(started, Running)
    configs = {
        ("d", "big"): {"predictive": {"memory": "24Gi", "cpu": "1"}},
        ("d", "small"): {"predictive": {"memory": "1Gi"}},
        ("d", "plain"): {},
    }
    rows = [_row("prep", "running", 1), _row("big", None), _row("small", None), _row("plain", None)]
    upstream = {("d", t): ("prep",) for t in ("big", "small", "plain")}
    ahead = AheadWarms(wiring, _Rows(rows, upstream, configs), every_s=0.0)
    warms = ahead.warms(coordinator, [], default_enabled=False, now=started.started)
    # big: 24Gi fits no Ready node -> warm in highmem, ready when prep's plan ends; small fits the
    # Ready node (no node to make); plain is not opted in
    assert [(w.for_plan, w.pool) for w in warms] == [("d.big.-1.r1.1", "highmem")]
    assert warms[0].ready_by == started.started + plan.duration_s
    assert warms[0].size.memory_bytes == 24 * GIB
    # once big is queued (no longer upcoming) nothing is wanted for it any more
    rows[1] = _row("big", "queued", 1)
    assert ahead.warms(coordinator, [], default_enabled=False, now=started.started + 1) == []


def test_no_known_pool_reads_nothing_and_wants_nothing(engine: Engine) -> None:
    class _Fails(DagReader):
        def read(self, runs):  # type: ignore[no-untyped-def]
            raise AssertionError("the metadata is read with no pool known")

    ahead = AheadWarms(_wiring_with(()), _Fails(), every_s=0.0)
    assert ahead.warms(_coordinator(engine), [], default_enabled=True, now=NOW) == []


def test_upcoming_tasks_are_read_at_most_once_per_interval_of_the_coordinators_clock(engine: Engine) -> None:
    from airflow_predictive.core.model.nodes import InstanceType, NodePool

    class _Counting(DagReader):
        calls = 0

        def read(self, runs):  # type: ignore[no-untyped-def]
            self.calls += 1
            return [], {}, {}

    highmem = NodePool("highmem", (InstanceType("hm", ResourceVector(cpu_cores=8.0, memory_bytes=64 * GIB)),))
    wiring = _wiring_with((ResourceVector(cpu_cores=4.0, memory_bytes=8 * GIB),))
    wiring._set(pools=(highmem,), capacity=None, rooms=(ResourceVector(cpu_cores=4.0, memory_bytes=8 * GIB),))
    reader = _Counting()
    ahead = AheadWarms(wiring, reader, every_s=5.0)
    coordinator = _coordinator(engine)
    for now in (NOW, NOW + 1.0, NOW + 4.9, NOW + 5.0, NOW + 6.0):
        ahead.warms(coordinator, [], default_enabled=False, now=now)
    assert reader.calls == 2  # at NOW and at NOW + 5 s, whatever the wall clock did meanwhile
