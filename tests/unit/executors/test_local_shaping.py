"""Local shaping around the real controller, the in-process ledger and the scripted backend: every
applied grow is reserved first and held with "pool full" when the pool has no room, reclaims give
memory back to the pool, a task is shaped only once its process joined its group, and grown only
(never reclaimed below its start) during its warm-up."""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from airflow_predictive.backends.fake import FakeBackend, ManualClock, curve_script, ramp_script
from airflow_predictive.core.model.backend import Allocation, ExitKind, ProvisionSpec
from airflow_predictive.core.model.plan import (
    AllocationPlan,
    LedgerStatus,
    PlanSource,
    PlanStep,
    Pool,
    PoolCapacity,
    PoolKind,
    ReservationRequest,
)
from airflow_predictive.core.model.resources import MIB, Metric, ResourceVector
from airflow_predictive.core.model.runs import RunIdentity, TaskKey
from airflow_predictive.core.scheduling.ledger import InMemoryLedger
from airflow_predictive.core.shaping.controller import ShapingController
from airflow_predictive.core.shaping.events import Action, ShapingEvent, Verdict
from airflow_predictive.core.shaping.policy import ShapingSettings
from airflow_predictive.executors.coordinator import Running
from airflow_predictive.executors.local_shaping import (
    POOL_FULL,
    LocalShapedTask,
    LocalShaping,
    PoolGate,
    shaping_run_key,
    shaping_settings_for,
)
from airflow_predictive.executors.opt_in import DEFAULT_WARMUP_S, task_settings
from airflow_predictive.storage.ledger_store import SqlLedger

if TYPE_CHECKING:
    from pathlib import Path

    import pytest

MEM, CPU = Metric.MEMORY_BYTES, Metric.CPU_CORES


class Sink:
    def __init__(self) -> None:
        self.events: list[ShapingEvent] = []

    def record(self, events: Any) -> None:
        self.events.extend(events)


def _alloc(mb: float, cpu: float = 1.0) -> Allocation:
    return Allocation.exactly(ResourceVector(cpu_cores=cpu, memory_bytes=mb * MIB))


class Rig:
    """One task of ``script`` reserved at ``start_mb`` in a pool of ``pool_mb``, shaped through a gate."""

    def __init__(
        self, script: Any, start_mb: float, pool_mb: float, settings: ShapingSettings, engine: Any = None
    ) -> None:
        self.clock = ManualClock()
        self.wall = lambda: self.clock.now().timestamp()
        self.backend = FakeBackend(self.clock)
        self.backend.add_script("task", script)
        self.ledger: Any = InMemoryLedger(clock=self.wall) if engine is None else SqlLedger(engine, self.wall)
        self.ledger.set_pool(
            Pool("local", PoolKind.LOCAL, PoolCapacity(limits=ResourceVector(memory_bytes=pool_mb * MIB)))
        )
        plan = AllocationPlan.flat(_alloc(start_mb), 600.0, source=PlanSource.DECLARED, why="test")
        got = self.ledger.reserve(
            ReservationRequest("local", RunIdentity(TaskKey("d", "t"), "r"), "me", plan, self.wall())
        )
        assert got.status is LedgerStatus.RESERVED and got.reservation is not None
        self.reservation_id = got.reservation.id
        self.handle = self.backend.provision(ProvisionSpec("task"), _alloc(start_mb))
        self.gate = PoolGate(self.backend, self.ledger, self.reservation_id, clock=self.wall)
        self.sink = Sink()
        self.ctrl = ShapingController(
            self.gate,
            self.handle,
            settings,
            clock=self.clock,
            events=self.sink,
            ledger=self.ledger,
            reservation_id=self.reservation_id,
        )

    def run(self, seconds: float) -> None:
        for _ in range(int(seconds)):
            self.ctrl.tick()
            if self.ctrl.finished is not None:
                return
            self.clock.advance(1.0)

    def reserved_mb(self) -> list[float]:
        res = self.ledger.get(self.reservation_id)
        assert res is not None
        return [(p.allocation.limits.memory_bytes or 0.0) / MIB for p in res.timeline]

    def applied(self, action: Action) -> list[ShapingEvent]:
        return [e for e in self.sink.events if e.action is action and e.verdict is Verdict.APPLIED]


def test_every_applied_grow_is_reserved_in_the_ledger_when_the_pool_has_room() -> None:
    rig = Rig(ramp_script(600, 0.5, 90, ramp_s=60, base_mb=50), 200, 4096, ShapingSettings(metrics=(MEM,)))
    rig.run(100)
    grows = rig.applied(Action.GROW)
    assert rig.ctrl.finished is ExitKind.SUCCEEDED and len(grows) >= 3
    reserved = rig.reserved_mb()
    assert reserved[0] == 200
    assert max(reserved) * MIB >= max(e.after or 0.0 for e in grows)  # the largest grow is held
    assert rig.gate.held == 0


def test_a_grow_the_pool_cannot_hold_is_held_with_pool_full_and_nothing_over_commits() -> None:
    rig = Rig(ramp_script(600, 0.5, 90, ramp_s=60, base_mb=50), 200, 300, ShapingSettings(metrics=(MEM,)))
    rig.run(100)
    held = [e for e in rig.sink.events if e.verdict is Verdict.REJECTED]
    assert held and all(POOL_FULL in e.reason for e in held), [e.reason for e in rig.sink.events]
    assert rig.gate.held >= 1
    assert max(rig.reserved_mb()) <= 300  # the ledger never holds more than the pool
    assert (rig.ctrl.allocation.limits.memory_bytes or 0) <= 300 * MIB  # nor does the task's limit
    assert rig.applied(Action.GROW)  # the grows that fitted were applied


def test_pool_full_holds_on_the_database_ledger_too(db_engine: Any) -> None:
    """The same gate over the SQL ledger (SQLite, and PostgreSQL when available)."""
    grow = Rig(
        ramp_script(600, 0.5, 90, ramp_s=60, base_mb=50), 200, 300, ShapingSettings(metrics=(MEM,)), db_engine
    )
    grow.run(100)
    assert any(POOL_FULL in e.reason for e in grow.sink.events if e.verdict is Verdict.REJECTED)
    assert 200 < max(grow.reserved_mb()) <= 300


def test_a_reclaim_gives_the_memory_back_to_the_pool_never_below_usage() -> None:
    script = curve_script([0, 5, 120], {MEM: [300 * MIB, 60 * MIB, 60 * MIB], CPU: [1.0, 0.1, 0.1]})
    settings = ShapingSettings(metrics=(MEM,), reclaim_after_s=5, shrink_cooldown_s=10)
    rig = Rig(script, 1024, 4096, settings)
    rig.run(100)
    reclaims = rig.applied(Action.RECLAIM)
    assert reclaims
    assert all(e.usage is not None and (e.after or 0) > e.usage for e in reclaims)
    reserved = rig.reserved_mb()
    assert reserved[0] == 1024 and reserved[-1] < 512  # released as it was reclaimed


def _low_use_task(clock: ManualClock, procs: Path, warmup_s: float) -> tuple[LocalShapedTask, Sink]:
    backend = FakeBackend(clock)
    backend.add_script("idle", ramp_script(40, 0.05, 300, ramp_s=0, base_mb=40))
    handle = backend.provision(ProvisionSpec("idle"), _alloc(512, 2.0))
    sink = Sink()
    settings = ShapingSettings(reclaim_after_s=3, shrink_cooldown_s=5)

    def build() -> ShapingController:
        return ShapingController(backend, handle, settings, clock=clock, events=sink)

    return LocalShapedTask("idle", (str(procs),), build, warmup_s=warmup_s, clock=clock.monotonic), sink


def test_shaping_starts_only_once_the_task_process_is_in_its_group(tmp_path: Path) -> None:
    clock = ManualClock()
    procs = tmp_path / "cgroup.procs"
    procs.write_text("")
    task, sink = _low_use_task(clock, procs, warmup_s=0)
    for _ in range(10):  # an empty group reads as idle: it must not be reclaimed
        assert task.tick() is None
        clock.advance(1.0)
    assert task.controller is None and sink.events == []
    procs.write_text("4242\n")
    for _ in range(10):
        task.tick()
        clock.advance(1.0)
    assert task.controller is not None
    assert [e for e in sink.events if e.action is Action.RECLAIM and e.verdict is Verdict.APPLIED]


def test_a_starting_task_is_never_reclaimed_below_its_start_during_its_warm_up(tmp_path: Path) -> None:
    clock = ManualClock()
    procs = tmp_path / "cgroup.procs"
    procs.write_text("4242\n")
    task, sink = _low_use_task(clock, procs, warmup_s=20)
    for _ in range(19):
        task.tick()
        clock.advance(1.0)
    assert task.warming_up
    assert not [e for e in sink.events if e.verdict is Verdict.APPLIED]
    for _ in range(10):
        task.tick()
        clock.advance(1.0)
    assert not task.warming_up
    reclaimed = {e.metric for e in sink.events if e.action is Action.RECLAIM and e.verdict is Verdict.APPLIED}
    assert reclaimed == {MEM, CPU}


def test_the_task_settings_carry_shaping_options_bounds_and_warm_up() -> None:
    cfg = {
        "predictive": {
            "memory": "1Gi",
            "min": {"memory": "256Mi"},
            "shaping": {"reclaim_after_s": 4, "warmup_s": 7},
        }
    }
    task = task_settings(cfg)
    assert task.shaping and task.shaping_warmup_s == 7
    settings = shaping_settings_for(task)
    assert settings.reclaim_after_s == 4
    assert settings.minimum.memory_bytes == 256 * MIB
    assert settings.minimum.cpu_cores == ShapingSettings().minimum.cpu_cores  # the default kept
    plain = task_settings({"predictive": {"shaping": True}})
    assert plain.shaping and plain.shaping_settings is None and plain.shaping_warmup_s == DEFAULT_WARMUP_S
    typo = task_settings({"predictive": {"shaping": {"reclaim_afterr_s": 4}}})
    assert typo.shaping and typo.shaping_settings is None  # a typo never stops the task: defaults
    assert not task_settings({"predictive": {"memory": "1Gi"}}).shaping


def test_shaping_events_of_a_local_task_are_keyed_by_its_try() -> None:
    run = RunIdentity(TaskKey("dag", "task", 3), "manual__1", 2)
    assert shaping_run_key(run) == "dag/task[3]/manual__1/2"


class BrokenRuntime:
    """A runtime whose controller cannot be built (database down while the task starts)."""

    def ledger(self) -> Any:
        return InMemoryLedger()

    def shaper(self, *args: Any, **kwargs: Any) -> ShapingController:
        raise RuntimeError("event store unavailable")


def test_a_task_whose_shaping_breaks_keeps_its_limits_and_is_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = ManualClock()
    backend = FakeBackend(clock)
    backend.add_script("t", ramp_script(100, 0.5, 60, ramp_s=1, base_mb=100))
    handle = backend.provision(ProvisionSpec("t"), _alloc(128))
    item = Running("k", RunIdentity(TaskKey("d", "t"), "r"), None, None, 0.0, 60.0, handle=handle)
    shaping = LocalShaping(BrokenRuntime(), backend, 1.0)
    try:
        assert shaping.start(item, task_settings({"predictive": {"shaping": True}}))
        with caplog.at_level(logging.DEBUG):
            for _ in range(3):
                shaping.group.round()
        assert sum("failed; the task keeps its resources" in r.getMessage() for r in caplog.records) == 1
        assert backend.state(handle).kind is ExitKind.RUNNING
        assert shaping.allocation("k") is None  # nothing applied: the task holds what it started with
        assert shaping.stop("k") is not None and len(shaping.group) == 0
    finally:
        shaping.close()


def test_a_try_after_an_oom_kill_is_never_reclaimed_below_its_retry_plan() -> None:
    from airflow_predictive.core.model.plan import AllocationPlan, PlanSource
    from airflow_predictive.executors.local_shaping import retry_floor

    base = ShapingSettings(minimum=ResourceVector(memory_bytes=64 * MIB))
    alloc = Allocation.exactly(ResourceVector(memory_bytes=300 * MIB))
    retry = AllocationPlan.flat(alloc, 60.0, source=PlanSource.OOM_RETRY, why="OOM retry")
    assert retry_floor(base, retry).minimum.memory_bytes == 300 * MIB
    planned = AllocationPlan.flat(alloc, 60.0, source=PlanSource.FORECAST, why="forecast")
    assert retry_floor(base, planned).minimum.memory_bytes == 64 * MIB
    assert retry_floor(base, None) is base
    held = replace(planned, memory_floor=512 * MIB)  # earlier runs reached their declared memory
    assert retry_floor(base, held).minimum.memory_bytes == 512 * MIB


def test_a_grow_through_the_gate_keeps_the_plans_later_steps_reserved() -> None:
    clock = ManualClock()
    wall = lambda: clock.now().timestamp()  # noqa: E731
    backend = FakeBackend(clock)
    backend.add_script("task", ramp_script(250, 0.5, 600, ramp_s=30, base_mb=50))
    ledger = InMemoryLedger(clock=wall)
    ledger.set_pool(
        Pool("local", PoolKind.LOCAL, PoolCapacity(limits=ResourceVector(memory_bytes=4096 * MIB)))
    )
    plan = AllocationPlan(_alloc(200), (PlanStep(300.0, _alloc(1024), "the peak"),), duration_s=600.0)
    start = wall()
    got = ledger.reserve(ReservationRequest("local", RunIdentity(TaskKey("d", "t"), "r"), "me", plan, start))
    assert got.reservation is not None
    handle = backend.provision(ProvisionSpec("task"), _alloc(200))
    gate = PoolGate(backend, ledger, got.reservation.id, clock=wall, plan=plan, started=start)
    clock.advance(10.0)
    assert gate.resize(handle, _alloc(300)).applied
    res = ledger.get(got.reservation.id)
    assert res is not None
    assert res.charge_at(start + 20.0).limits.memory_bytes == 300 * MIB  # the grow, held now
    assert res.charge_at(start + 350.0).limits.memory_bytes == 1024 * MIB  # the planned step stays
