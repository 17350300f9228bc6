"""The start choice: wait for coming capacity, or start now on a smaller plan at the same risk."""

from __future__ import annotations

import numpy as np

from airflow_predictive.core.model.backend import Allocation
from airflow_predictive.core.model.plan import PoolCapacity
from airflow_predictive.core.model.resources import GIB, Metric, ResourceVector
from airflow_predictive.core.model.series import DemandCurve, Forecast
from airflow_predictive.core.scheduling.coming import ComingCapacity, phantom_pieces, with_coming
from airflow_predictive.core.scheduling.planner import PlanSettings, plan_from_forecast
from airflow_predictive.core.scheduling.profile import Profile
from airflow_predictive.core.scheduling.start_choice import StartDecision, choose_start

NOW = 2_000_000.0
CAP = PoolCapacity(requests=ResourceVector(memory_bytes=8 * GIB), limits=ResourceVector(memory_bytes=8 * GIB))
HELD = (NOW - 10, NOW + 600, Allocation.exactly(ResourceVector(memory_bytes=6 * GIB)))  # 2 GiB free for 600 s
NODE = ComingCapacity("k8s", CAP, NOW + 90, "node n1 (n2-standard-8) provisioning", "n1")
FLAT_TASK = PlanSettings(max_steps=0, duration_margin=0.0)  # the task's own plan: flat at its peak


def forecast(mem_gib: np.ndarray, step: float = 10.0) -> Forecast:
    curve = DemandCurve(
        Metric.MEMORY_BYTES, step, {0.5: mem_gib * GIB * 0.7, 0.9: mem_gib * GIB * 0.9, 0.99: mem_gib * GIB}
    )
    d = mem_gib.size * step
    return Forecast({Metric.MEMORY_BYTES: curve}, {0.5: d * 0.9, 0.9: d}, "test")


def profiles(coming: list[ComingCapacity]) -> tuple[Profile, Profile]:
    present = Profile(CAP, [HELD])
    return present, Profile(with_coming(CAP, coming), [HELD, *phantom_pieces(CAP, coming, NOW)])


def choose(f: Forecast, coming: list[ComingCapacity], *, with_forecast: bool = True) -> object:
    outcome = plan_from_forecast(f, declared=ResourceVector(), settings=FLAT_TASK)
    present, ahead = profiles(coming)
    return choose_start(
        outcome,
        present=present,
        with_coming=ahead,
        coming=coming,
        now=NOW,
        forecast=f if with_forecast else None,
        declared=ResourceVector(),
        settings=FLAT_TASK,
    )


RAMP = np.concatenate([np.full(12, 1.5), np.full(48, 6.0)])  # 1.5 GiB for 120 s, then 6 GiB (600 s)
HIGH = np.full(60, 6.0)


def test_ramping_task_starts_now_on_a_finer_plan_that_grows_into_the_coming_node() -> None:
    choice = choose(forecast(RAMP), [NODE])
    assert choice.decision is StartDecision.START_SMALLER
    assert choice.start == NOW
    # the smaller plan still covers the p99 curve at every moment
    for t in range(0, 600, 5):
        assert choice.plan.allocation_at(float(t)).limits.memory_bytes >= RAMP[t // 10] * GIB
    assert choice.plan.initial.limits.memory_bytes < 6 * GIB
    assert "smaller plan" in choice.reason and "memory_bytes p99" in choice.reason


def test_task_high_from_the_start_waits_for_the_coming_node() -> None:
    choice = choose(forecast(HIGH), [NODE])
    assert choice.decision is StartDecision.WAIT_FOR_COMING
    assert choice.start == NOW + 90 and choice.ready_at == NOW + 90
    assert "n1" in choice.waits_for and "ready in 90 s" in choice.reason


def test_without_a_forecast_there_is_no_smaller_plan_and_the_task_waits() -> None:
    choice = choose(forecast(RAMP), [NODE], with_forecast=False)
    assert choice.decision is StartDecision.WAIT_FOR_COMING


def test_without_coming_capacity_the_task_waits_for_the_reservation_to_end() -> None:
    choice = choose(forecast(HIGH), [])
    assert choice.decision is StartDecision.WAIT
    assert choice.start == NOW + 600


def test_ramp_without_coming_capacity_waits_rather_than_risk_its_peak() -> None:
    # 2 GiB free for 600 s: the finer plan fits its first 120 s but not its 6 GiB peak
    choice = choose(forecast(RAMP), [])
    assert choice.decision is StartDecision.WAIT


def test_plan_above_present_and_coming_capacity_never_fits() -> None:
    choice = choose(forecast(np.full(60, 30.0)), [NODE])
    assert choice.decision is StartDecision.NEVER_FITS and choice.start is None


def test_plan_that_fits_now_starts_now() -> None:
    choice = choose(forecast(np.full(60, 1.0)), [NODE])
    assert choice.decision is StartDecision.START_NOW and choice.starts_now
