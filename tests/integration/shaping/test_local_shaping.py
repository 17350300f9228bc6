"""Local shaping through real cgroups and real processes: the same controller grows a task whose
memory ramps past its initial limit (it completes; without shaping it is OOM-killed), and reclaims
memory and CPU from a task whose use drops, never below what it uses."""

from __future__ import annotations

import subprocess
import sys
from typing import TYPE_CHECKING

import pytest

from airflow_predictive.backends.cgroups.backend import CgroupBackend
from airflow_predictive.core.model.backend import Allocation, ExitKind, ProvisionSpec
from airflow_predictive.core.model.resources import MIB, Metric, ResourceVector
from airflow_predictive.core.ports import SystemClock
from airflow_predictive.core.shaping.controller import ShapingController
from airflow_predictive.core.shaping.events import Action, ShapingEvent, Verdict
from airflow_predictive.core.shaping.policy import ShapingSettings
from airflow_predictive.core.shaping.runner import ShapingLoop

if TYPE_CHECKING:
    from collections.abc import Sequence

    from airflow_predictive.backends.cgroups.hierarchy import CgroupLayout

MEM, CPU = Metric.MEMORY_BYTES, Metric.CPU_CORES
# Grows resident memory by 8 MiB every 0.25 s (32 MiB/s) up to 260 MiB, holds 1 s, exits 0.
RAMP = (
    "import time\nblocks=[]\nfor _ in range(32):\n    blocks.append(bytearray(b'\\x01')*(8<<20))\n"
    "    time.sleep(0.25)\ntime.sleep(1.0)\n"
)
# Holds 240 MiB and burns a core for 2 s, then frees all but 30 MiB and sleeps 12 s.
DROP = (
    "import time\nbig=[bytearray(b'\\x01')*(8<<20) for _ in range(30)]\nkeep=bytearray(b'\\x01')*(30<<20)\n"
    "end=time.time()+2\nwhile time.time()<end: pass\ndel big\ntime.sleep(12)\n"
)
# Fast loop for a 2-core CI box: tick every 0.5 s, grow far enough to cover a tick of ramp.
SETTINGS = ShapingSettings(
    grow_margin=0.6,
    near_limit=0.3,
    hysteresis=0.1,
    grow_cooldown_s=0.5,
    reclaim_after_s=2.0,
    shrink_cooldown_s=2.0,
    shrink_fraction=1.0,
)


class Sink:
    def __init__(self) -> None:
        self.events: list[ShapingEvent] = []

    def record(self, events: Sequence[ShapingEvent]) -> None:
        self.events.extend(events)


def _shape(backend: CgroupBackend, program: str, allocation: Allocation, settings: ShapingSettings):
    spec = ProvisionSpec(name="shaping-test", command=(sys.executable, "-c", program))
    handle = backend.provision(spec, allocation)
    sink = Sink()
    ctrl = ShapingController(backend, handle, settings, clock=SystemClock(), events=sink)
    loop = ShapingLoop(ctrl, interval_s=0.5, max_ticks=200)
    try:
        loop.run()
        state = backend.state(handle)
        limits = backend.source(handle)
        return state, ctrl, sink.events, limits
    finally:
        backend.release(handle)


@pytest.fixture
def backend(layout: CgroupLayout) -> CgroupBackend:
    return CgroupBackend(layout, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _start() -> Allocation:
    return Allocation(
        requests=ResourceVector(cpu_cores=0.5, memory_bytes=64 * MIB),
        limits=ResourceVector(cpu_cores=1.0, memory_bytes=96 * MIB),
    )


@pytest.mark.cgroups
def test_a_memory_ramp_past_its_limit_completes_with_shaping(backend: CgroupBackend) -> None:
    state, ctrl, events, _ = _shape(backend, RAMP, _start(), SETTINGS)
    assert state.kind is ExitKind.SUCCEEDED, state
    grows = [
        e for e in events if e.metric is MEM and e.action is Action.GROW and e.verdict is Verdict.APPLIED
    ]
    assert len(grows) >= 2
    assert ctrl.allocation.limits.memory_bytes is not None
    assert ctrl.allocation.limits.memory_bytes > 260 * MIB  # the real cgroup limit moved past the ramp


@pytest.mark.cgroups
def test_the_same_ramp_is_oom_killed_without_shaping(backend: CgroupBackend) -> None:
    off = ShapingSettings(metrics=())
    state, _, events, _ = _shape(backend, RAMP, _start(), off)
    assert state.kind is ExitKind.OOM_KILLED, state
    assert not events


@pytest.mark.cgroups
def test_memory_and_cpu_are_reclaimed_when_use_drops_never_below_usage(backend: CgroupBackend) -> None:
    start = Allocation(
        requests=ResourceVector(cpu_cores=1.0, memory_bytes=256 * MIB),
        limits=ResourceVector(cpu_cores=2.0, memory_bytes=512 * MIB),
    )
    state, ctrl, events, _ = _shape(backend, DROP, start, SETTINGS)
    assert state.kind is ExitKind.SUCCEEDED, state
    reclaims = [e for e in events if e.action is Action.RECLAIM and e.verdict is Verdict.APPLIED]
    assert {e.metric for e in reclaims} == {MEM, CPU}
    for e in reclaims:
        assert e.after is not None and e.usage is not None
        assert e.after > e.usage
        if e.metric is MEM:
            assert e.after >= e.usage + 16 * MIB  # the usage floor
    final = ctrl.allocation.limits.memory_bytes
    assert final is not None and final < 200 * MIB  # 512 MiB given back down to ~30 MiB + margin
