"""The shaping loop driven by a manual clock over the scripted backend: grows before OOM, reclaims,
adjusts the ledger, records every decision, follows pending resizes, survives failing parts."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import pytest

from airflow_predictive.backends.fake import FakeBackend, ManualClock, curve_script, ramp_script
from airflow_predictive.core.model.backend import (
    Allocation,
    ExitKind,
    Handle,
    ProvisionSpec,
    ResizeResult,
    ResizeStatus,
)
from airflow_predictive.core.model.resources import MIB, Metric, ResourceVector
from airflow_predictive.core.shaping.controller import ControllerOptions, ShapingController
from airflow_predictive.core.shaping.events import Action, ShapingEvent, Verdict
from airflow_predictive.core.shaping.policy import MetricHistory, ShapingSettings

MEM = Metric.MEMORY_BYTES


@dataclass
class Sink:
    events: list[ShapingEvent] = field(default_factory=list)

    def record(self, events: Any) -> None:
        self.events.extend(events)


@dataclass
class Ledger:
    calls: list[tuple[str, float, Allocation]] = field(default_factory=list)

    def adjust(self, reservation_id: str, at: float, allocated: Allocation, **kw: Any) -> None:
        self.calls.append((reservation_id, at, allocated))


def _alloc(mb: float, cpu: float = 1.0) -> Allocation:
    return Allocation(
        requests=ResourceVector(cpu_cores=cpu / 2, memory_bytes=mb * MIB),
        limits=ResourceVector(cpu_cores=cpu, memory_bytes=mb * MIB),
    )


def _run(ctrl: ShapingController, clock: ManualClock, seconds: float, step: float = 1.0) -> None:
    t = 0.0
    while t < seconds:
        ctrl.tick()
        if ctrl.finished is not None:
            return
        clock.advance(step)
        t += step


def _ramp_task(shaping: bool) -> tuple[FakeBackend, Handle, ShapingController, Sink, Ledger, ManualClock]:
    clock = ManualClock()
    backend = FakeBackend(clock)
    # memory ramps 50 -> 600 MiB over 60 s, then holds for 30 s; it starts with 200 MiB
    backend.add_script("ramp", ramp_script(600, 0.5, 90, ramp_s=60, base_mb=50))
    handle = backend.provision(ProvisionSpec("ramp"), _alloc(200))
    sink, ledger = Sink(), Ledger()
    ctrl = ShapingController(
        backend,
        handle,
        ShapingSettings(metrics=(MEM,) if shaping else ()),
        clock=clock,
        events=sink,
        ledger=ledger,
        reservation_id="r1",
    )
    return backend, handle, ctrl, sink, ledger, clock


def test_grows_memory_before_oom_and_adjusts_the_ledger_for_each_grow() -> None:
    backend, handle, ctrl, sink, ledger, clock = _ramp_task(shaping=True)
    _run(ctrl, clock, 120)
    assert backend.state(handle).kind is ExitKind.SUCCEEDED
    grows = [e for e in sink.events if e.action is Action.GROW and e.verdict is Verdict.APPLIED]
    assert len(grows) >= 2
    assert all(e.after is not None and e.before is not None and e.after > e.before for e in grows)
    assert len(ledger.calls) == ctrl.applied == len(grows)
    assert ledger.calls[-1][2].limits.memory_bytes == grows[-1].after


def test_the_same_task_is_oom_killed_without_shaping() -> None:
    backend, handle, ctrl, sink, _, clock = _ramp_task(shaping=False)
    _run(ctrl, clock, 120)
    assert backend.state(handle).kind is ExitKind.OOM_KILLED
    assert not sink.events


def test_reclaims_when_use_drops_and_never_below_usage() -> None:
    clock = ManualClock()
    backend = FakeBackend(clock)
    backend.add_script(
        "drop",
        curve_script(
            [0, 20, 25, 300],
            {MEM: [900 * MIB, 900 * MIB, 200 * MIB, 200 * MIB], Metric.CPU_CORES: [1.5, 1.5, 0.2, 0.2]},
        ),
    )
    handle = backend.provision(ProvisionSpec("drop"), _alloc(1200, cpu=2.0))
    sink = Sink()
    ctrl = ShapingController(backend, handle, ShapingSettings(shrink_cooldown_s=20), clock=clock, events=sink)
    _run(ctrl, clock, 200)
    reclaims = [e for e in sink.events if e.action is Action.RECLAIM and e.verdict is Verdict.APPLIED]
    metrics = {e.metric for e in reclaims}
    assert metrics == {MEM, Metric.CPU_CORES}
    for e in reclaims:
        assert e.after is not None and e.usage is not None and e.after > e.usage
    assert ctrl.allocation.limits.memory_bytes is not None
    assert ctrl.allocation.limits.memory_bytes < 600 * MIB
    assert ctrl.allocation.limits.memory_bytes >= 200 * MIB + 16 * MIB
    held = [e for e in sink.events if e.verdict is Verdict.HELD_BACK_HYSTERESIS]
    assert held and all(e.reason for e in held)  # the dwell before the first reclaim is recorded


def test_a_resize_waiting_for_room_is_followed_on_later_ticks_then_applied() -> None:
    clock = ManualClock()
    backend = FakeBackend(
        clock, allocatable=ResourceVector(cpu_cores=8, memory_bytes=1000 * MIB), defer_over_commit=True
    )
    backend.add_script("a", ramp_script(600, 0.1, 60, ramp_s=30, base_mb=300))  # +10 MiB/s
    backend.add_script("hog", ramp_script(100, 0.1, 300, ramp_s=0))
    handle = backend.provision(ProvisionSpec("a"), _alloc(400))
    hog = backend.provision(ProvisionSpec("hog"), _alloc(580))
    sink = Sink()
    ctrl = ShapingController(backend, handle, ShapingSettings(metrics=(MEM,)), clock=clock, events=sink)
    _run(ctrl, clock, 8)
    assert ctrl.in_flight is not None  # the grow at 360 MiB waits for room held by the hog
    assert any(e.verdict is Verdict.PENDING for e in sink.events)
    assert ctrl.allocation.limits.memory_bytes == 400 * MIB  # what is in force, not what was asked
    backend.release(hog)
    _run(ctrl, clock, 80)
    assert backend.state(handle).kind is ExitKind.SUCCEEDED
    assert any(e.verdict is Verdict.APPLIED for e in sink.events)


class Flaky(FakeBackend):
    """Every part of the backend fails once in a while: raising, not answering."""

    def usage(self, handle: Handle) -> ResourceVector | None:
        if int(self.clock.monotonic()) % 5 == 0:
            raise ConnectionError("metrics API down")
        return super().usage(handle)

    def resize(self, handle: Handle, allocation: Allocation) -> ResizeResult:
        if int(self.clock.monotonic()) % 3 == 0:
            raise RuntimeError("HTTP 500")
        return super().resize(handle, allocation)


class BrokenSink:
    def record(self, events: Any) -> None:
        raise OSError("database down")


class BrokenLedger:
    def adjust(self, *a: Any, **kw: Any) -> None:
        raise OSError("database down")


def test_failing_backend_sink_and_ledger_never_fail_the_task() -> None:
    clock = ManualClock()
    backend = Flaky(clock)
    backend.add_script("ramp", ramp_script(600, 0.5, 90, ramp_s=60, base_mb=50))
    handle = backend.provision(ProvisionSpec("ramp"), _alloc(200))
    ctrl = ShapingController(
        backend,
        handle,
        ShapingSettings(metrics=(MEM,)),
        clock=clock,
        events=BrokenSink(),
        ledger=BrokenLedger(),
        reservation_id="r",
    )
    _run(ctrl, clock, 120)
    assert backend.state(handle).kind is ExitKind.SUCCEEDED  # still shaped in time despite the faults
    assert ctrl.resizes > ctrl.applied  # some resizes raised, and were survived


def test_reforecast_hook_replaces_the_expectation_from_the_observed_prefix() -> None:
    clock = ManualClock()
    backend = FakeBackend(clock)
    backend.add_script("t", ramp_script(300, 0.5, 60, ramp_s=1, base_mb=300))
    handle = backend.provision(ProvisionSpec("t"), _alloc(400))
    seen: list[int] = []

    @dataclass(frozen=True)
    class Const:
        value: float
        rise_at: float = float("inf")
        risen: float = 0.0

        def predicted(self, metric: Metric, t_s: float) -> float | None:
            if metric is not MEM:
                return None
            return self.risen if t_s >= self.rise_at else self.value

        def ahead(self, metric: Metric, t_s: float, horizon_s: float) -> float | None:
            if metric is not MEM:
                return None
            return self.risen if t_s + horizon_s >= self.rise_at else self.value

    def hook(prefix: Any) -> Const:
        seen.append(len(prefix))
        return Const(300 * MIB, rise_at=25.0, risen=2000 * MIB)  # the prefix says: a rise is coming

    ctrl = ShapingController(
        backend,
        handle,
        ShapingSettings(metrics=(MEM,)),
        clock=clock,
        expectation=Const(300 * MIB),
        reforecast=hook,
        options=ControllerOptions(reforecast_every_s=10),
    )
    _run(ctrl, clock, 30)
    assert seen and seen[0] >= 2
    assert ctrl.allocation.limits.memory_bytes is not None
    assert ctrl.allocation.limits.memory_bytes >= 2000 * MIB  # grown ahead of the re-forecast rise


def test_repeated_holds_are_stored_once_per_repeat_interval() -> None:
    clock = ManualClock()
    backend = FakeBackend(clock)
    backend.add_script("t", ramp_script(100, 0.5, 200, ramp_s=0, base_mb=100))
    handle = backend.provision(ProvisionSpec("t"), _alloc(1000))
    sink = Sink()
    ctrl = ShapingController(
        backend,
        handle,
        ShapingSettings(metrics=(MEM,), shrink_cooldown_s=1000),
        clock=clock,
        events=sink,
        options=ControllerOptions(repeat_event_s=30),
    )
    ctrl.histories[MEM] = MetricHistory(last_change_s=0.0)  # just changed: the cooldown holds
    _run(ctrl, clock, 100)
    cooldown = [e for e in sink.events if e.verdict is Verdict.HELD_BACK_COOLDOWN]
    assert 1 <= len(cooldown) <= 4  # ~85 ticks held back by the cooldown, stored every 30 s


def test_stops_when_the_task_ends() -> None:
    _backend, _handle, ctrl, _, _, clock = _ramp_task(shaping=True)
    _run(ctrl, clock, 200)
    report = ctrl.tick()
    assert not report.running and "succeeded" in report.note


def test_a_run_at_half_its_flat_forecast_is_reclaimed_and_not_grown_back() -> None:
    """The cluster benchmark's 43 resizes per run: every reclaim of a run using half its forecast
    was grown back to the forecast 2 s later (a forecast above the limit is no rise)."""
    clock = ManualClock()
    backend = FakeBackend(clock)
    backend.add_script("half", ramp_script(400, 0.5, 900, ramp_s=0, base_mb=400))
    handle = backend.provision(ProvisionSpec("half"), _alloc(1000))

    @dataclass(frozen=True)
    class Flat:
        def predicted(self, metric: Metric, t_s: float) -> float | None:
            return 800 * MIB if metric is MEM else None

        def ahead(self, metric: Metric, t_s: float, horizon_s: float) -> float | None:
            return 800 * MIB if metric is MEM else None

    ctrl = ShapingController(
        backend, handle, ShapingSettings(metrics=(MEM,)), clock=clock, expectation=Flat()
    )
    _run(ctrl, clock, 900)
    assert backend.state(handle).kind is ExitKind.SUCCEEDED
    grows = [c for c in ctrl.changes if c[2] is Action.GROW]
    assert not grows, grows
    limit = ctrl.allocation.limits.memory_bytes
    assert limit is not None and limit < 400 * MIB * 1.25 * 1.2  # close to usage x (1 + margin)


@dataclass
class KwLedger:
    calls: list[dict[str, Any]] = field(default_factory=list)

    def adjust(self, reservation_id: str, at: float, allocated: Allocation, **kw: Any) -> None:
        self.calls.append({"at": at, "allocated": allocated, **kw})


def test_an_applied_grow_adjusts_the_ledger_only_up_to_the_plans_next_step() -> None:
    from airflow_predictive.core.model.plan import AllocationPlan, PlanSource, PlanStep

    _backend, _handle, ctrl, _sink, _ledger, clock = _ramp_task(shaping=True)
    ledger = KwLedger()
    ctrl.ledger = ledger
    ctrl.plan = AllocationPlan(
        _alloc(200), (PlanStep(100.0, _alloc(700), "late rise"),), 200.0, PlanSource.FORECAST, "test"
    )
    _run(ctrl, clock, 60)
    assert ledger.calls, "the ramp was grown"
    epoch = datetime(2026, 1, 1, tzinfo=UTC).timestamp()
    for call in ledger.calls:  # each change holds [now, next planned step): the step at 100 s stays
        assert call["until"] == pytest.approx(epoch + 100.0)
        assert call["at"] < call["until"]


def test_without_a_plan_step_ahead_the_ledger_adjust_runs_to_the_reservations_end() -> None:
    _backend, _handle, ctrl, _sink, _ledger, clock = _ramp_task(shaping=True)
    ledger = KwLedger()
    ctrl.ledger = ledger
    _run(ctrl, clock, 60)
    assert ledger.calls and all(call["until"] is None for call in ledger.calls)


class PoolFull(FakeBackend):
    """A backend behind a full pool (the local executor's PoolGate): grows are rejected while
    ``full``."""

    full = True

    def resize(self, handle: Handle, allocation: Allocation) -> ResizeResult:
        limit = allocation.limits.memory_bytes or 0.0
        if self.full and limit > (handle.allocation.limits.memory_bytes or 0.0):
            return ResizeResult(ResizeStatus.REJECTED, "pool full: memory", allocation=handle.allocation)
        return super().resize(handle, allocation)


def test_a_grow_held_by_a_full_pool_is_stored_once_per_held_episode() -> None:
    clock = ManualClock()
    backend = PoolFull(clock)
    # 190 MiB under a 200 MiB limit for a minute: the policy asks for a grow at every cooldown
    backend.add_script("t", ramp_script(190, 0.5, 300, ramp_s=0, base_mb=190))
    handle = backend.provision(ProvisionSpec("t"), _alloc(200))
    sink = Sink()
    ctrl = ShapingController(backend, handle, ShapingSettings(metrics=(MEM,)), clock=clock, events=sink)
    _run(ctrl, clock, 60)
    rejected = [e for e in sink.events if e.verdict is Verdict.REJECTED]
    assert ctrl.resizes >= 10  # asked again at every grow cooldown ...
    assert len(rejected) == 1  # ... stored once
    backend.full = False  # room again: the grow is applied, the episode is over
    _run(ctrl, clock, 5)
    assert any(e.verdict is Verdict.APPLIED for e in sink.events)


class HeldReclaims(FakeBackend):
    """A node that never actuates a memory decrease (the kubelet's "memory limit below current
    usage" after usage rose) and applies every increase: submit / poll like the Kubernetes backend."""

    def submit_resize(self, handle: Handle, allocation: Allocation) -> ResizeResult:
        limit = allocation.limits.memory_bytes or 0.0
        if limit < (handle.allocation.limits.memory_bytes or 0.0):
            return ResizeResult(ResizeStatus.PENDING, "PodResizeInProgress: Error", handle.allocation)
        return self.resize(handle, allocation)

    def poll_resize(self, handle: Handle) -> ResizeResult | None:
        return ResizeResult(ResizeStatus.PENDING, "memory limit below current usage", handle.allocation)


def test_a_grow_supersedes_a_reclaim_the_node_holds_back_once_usage_rose() -> None:
    clock = ManualClock()
    backend = HeldReclaims(clock)
    # idle at 20 MiB for 30 s (reclaimed), then 190 MiB: above the reclaim still in flight
    backend.add_script(
        "t", curve_script([0, 30, 30.5, 120], {MEM: [20 * MIB, 20 * MIB, 190 * MIB, 190 * MIB]})
    )
    handle = backend.provision(ProvisionSpec("t"), _alloc(200))
    sink = Sink()
    ctrl = ShapingController(backend, handle, ShapingSettings(metrics=(MEM,)), clock=clock, events=sink)
    _run(ctrl, clock, 29)
    assert ctrl.in_flight is not None  # the reclaim, held by the node
    _run(ctrl, clock, 10)
    assert backend.state(handle).kind is ExitKind.RUNNING  # not OOM-killed: grown in time
    grows = [e for e in sink.events if e.action is Action.GROW and e.verdict is Verdict.APPLIED]
    assert grows and grows[0].after is not None and grows[0].after > 200 * MIB
    superseded = [e for e in sink.events if e.verdict is Verdict.SUPERSEDED]
    assert superseded and all(e.action is Action.RECLAIM for e in superseded)


class SlowGrows(FakeBackend):
    """A node that actuates a resize only after it has been asked for 2 s unchanged: each new spec
    restarts the wait (the kubelet's actuation of the newest desired resources)."""

    def __init__(self, clock: ManualClock) -> None:
        super().__init__(clock)
        self.asked: tuple[Allocation, float] | None = None

    def submit_resize(self, handle: Handle, allocation: Allocation) -> ResizeResult:
        self.asked = (allocation, self.clock.monotonic())
        return ResizeResult(ResizeStatus.PENDING, "PodResizeInProgress", handle.allocation)

    def poll_resize(self, handle: Handle) -> ResizeResult | None:
        if self.asked is None:
            return None
        allocation, at = self.asked
        if self.clock.monotonic() - at < 2.0:
            return ResizeResult(ResizeStatus.PENDING, "PodResizeInProgress", handle.allocation)
        self.asked = None
        return self.resize(handle, allocation)


def test_a_grow_in_flight_is_not_superseded_by_a_larger_one_on_a_ramp() -> None:
    clock = ManualClock()
    backend = SlowGrows(clock)
    backend.add_script("t", ramp_script(260, 0.5, 40, ramp_s=20, base_mb=50))  # 10.5 MiB/s
    handle = backend.provision(ProvisionSpec("t"), _alloc(120))
    sink = Sink()
    settings = ShapingSettings(metrics=(MEM,), grow_margin=0.6, near_limit=0.3, grow_cooldown_s=0.5)
    ctrl = ShapingController(backend, handle, settings, clock=clock, events=sink)
    _run(ctrl, clock, 30, step=0.5)  # the trigger's interval
    assert backend.state(handle).kind is ExitKind.RUNNING  # grown in time, never OOM-killed
    assert not [e for e in sink.events if e.verdict is Verdict.SUPERSEDED]


# the rise-aware headroom at its lowest floor (3 %, below the memory margin's): what a flat phase
# gets, while a ramp keeps near_limit (ShapingSettings.rise_horizon_s)
RISE_LOW = ShapingSettings(metrics=(MEM,), rise_horizon_s=10.0, rise_floor=0.03, rise_keeps_margin=False)


def _flaky_ramp(settings: ShapingSettings) -> tuple[Flaky, Handle, ShapingController]:
    clock = ManualClock()
    backend = Flaky(clock)
    backend.add_script("ramp", ramp_script(600, 0.5, 90, ramp_s=60, base_mb=50))
    handle = backend.provision(ProvisionSpec("ramp"), _alloc(200))
    ctrl = ShapingController(
        backend, handle, settings, clock=clock, events=BrokenSink(), ledger=BrokenLedger(), reservation_id="r"
    )
    _run(ctrl, clock, 120)
    return backend, handle, ctrl


def test_with_the_rise_aware_headroom_a_failing_backend_still_never_kills_a_fast_ramp() -> None:
    backend, handle, ctrl = _flaky_ramp(RISE_LOW)
    assert backend.state(handle).kind is ExitKind.SUCCEEDED  # the ramp's rise kept near_limit's headroom
    assert ctrl.resizes > ctrl.applied
    # the same floor as a fixed headroom (near_limit 0.03) is killed on the same ramp
    backend, handle, _ = _flaky_ramp(ShapingSettings(metrics=(MEM,), near_limit=0.03))
    assert backend.state(handle).kind is ExitKind.OOM_KILLED


@dataclass(frozen=True)
class KnowsTheFlat:
    """A re-forecast that knows a flat phase at ``level`` (from ``from_s``: before it, no forecast)
    and offers the reclaim above its need."""

    level: float
    from_s: float = 30.0
    reclaim_margin: float | None = 0.05

    def predicted(self, metric: Metric, t_s: float) -> float | None:
        return self.level if metric is MEM and t_s >= self.from_s else None

    def ahead(self, metric: Metric, t_s: float, horizon_s: float) -> float | None:
        return self.predicted(metric, t_s)


def _flat_then_ramp(settings: ShapingSettings) -> tuple[FakeBackend, Handle, ShapingController, list[float]]:
    """1,000 MiB flat for 400 s, then +4 %/s to 3,000 MiB (a jump the forecast did not see)."""
    clock = ManualClock()
    backend = FakeBackend(clock)
    backend.add_script(
        "t", curve_script([0, 400, 450, 500], {MEM: [1000 * MIB, 1000 * MIB, 3000 * MIB, 3000 * MIB]})
    )
    handle = backend.provision(ProvisionSpec("t"), _alloc(2000))
    ctrl = ShapingController(backend, handle, settings, clock=clock, expectation=KnowsTheFlat(1000 * MIB))
    limits: list[float] = []
    for _ in range(500):
        ctrl.tick()
        if ctrl.finished is not None:
            break
        limit = ctrl.allocation.limits.memory_bytes
        assert limit is not None
        limits.append(limit)
        clock.advance(1.0)
    return backend, handle, ctrl, limits


def test_with_the_rise_aware_headroom_a_flat_phase_is_held_nearer_its_level_and_a_ramp_out_of_it_grows_in_time() -> (
    None
):
    flat = ShapingSettings(metrics=(MEM,), rise_horizon_s=None)  # a fixed headroom, near_limit
    _, _, _, today = _flat_then_ramp(flat)
    backend, handle, _, limits = _flat_then_ramp(replace(flat, rise_horizon_s=10.0))
    assert today[399] == pytest.approx(1000 * MIB * 1.02 / 0.9)  # near_limit's smallest margin
    assert limits[399] == pytest.approx(1000 * MIB * 1.02 * 1.1)  # the memory margin's floor
    assert limits[399] < today[399]
    assert backend.state(handle).kind is ExitKind.SUCCEEDED  # the ramp out of it grew in time
    assert max(limits) >= 3000 * MIB
