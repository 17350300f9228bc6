from __future__ import annotations

import numpy as np
import pytest

from airflow_predictive.core.model.resources import GIB, MIB
from airflow_predictive.simulation.cluster import PoolSpec, replay
from airflow_predictive.simulation.execution import Limits, SimSettings, run_try
from airflow_predictive.simulation.policies.base import NodeShape, TryContext, vpa_oom_bump, window_max
from airflow_predictive.simulation.policies.baselines import AutopilotPolicy, OraclePolicy, VpaPolicy
from airflow_predictive.simulation.policies.reactive import ReactivePolicy
from tests.unit.simulation.helpers import example, sim_run, workload

SETTINGS = SimSettings()
NODE = NodeShape(64 * GIB, 32.0)


def ctx(run, attempt: int = 1, previous=None, now_s: float = 0.0) -> TryContext:
    return TryContext(run, attempt, previous, now_s, SETTINGS, NODE)


def history(peaks_gib: list[float], start_s: float = -100_000.0):
    return tuple(
        example(np.full(10, p * GIB), np.full(10, 1.0), start_s=start_s + 100 * i, name=f"h{i}")
        for i, p in enumerate(peaks_gib)
    )


def test_window_max_takes_each_windows_maximum() -> None:
    assert window_max(np.array([1.0, 3.0, 2.0, 5.0, 4.0]), 2).tolist() == [3.0, 5.0, 4.0]


def test_the_oracle_follows_the_true_curve_in_windows_and_is_never_killed() -> None:
    mem = np.concatenate([np.full(30, 1.0), np.full(30, 4.0), np.full(15, 2.0)]) * GIB
    run = sim_run(mem)
    result = run_try(run, OraclePolicy().driver(ctx(run)), SETTINGS)
    assert not result.oom
    assert [lim.memory_bytes / GIB for _, lim in result.changes] == [1.0, 4.0, 2.0]
    assert [t for t, _ in result.changes] == [0.0, 30.0, 60.0]
    assert result.memory_alloc == pytest.approx(result.memory_used)


def test_vpa_starts_from_the_p90_of_earlier_peaks_plus_15_percent() -> None:
    run = sim_run(np.full(20, GIB), index=0)
    policy = VpaPolicy()
    policy.prepare(workload(run, train=history([1.0] * 9 + [2.0])), SETTINGS)
    start = policy.driver(ctx(run)).initial()
    expected = float(np.quantile([1.0] * 9 + [2.0], 0.9)) * 1.15 * GIB
    assert start.memory_bytes == pytest.approx(expected)


def test_vpa_bumps_memory_after_an_oom_kill() -> None:
    assert vpa_oom_bump(GIB) == pytest.approx(1.2 * GIB)
    assert vpa_oom_bump(100 * MIB) == pytest.approx(200 * MIB)
    run = sim_run(np.array([1.0] * 5 + [1.5] * 5) * GIB)
    policy = VpaPolicy()
    policy.prepare(workload(run, train=history([1.0] * 5)), SETTINGS)
    first = run_try(run, policy.driver(ctx(run)), SETTINGS)
    assert first.oom
    retry = policy.driver(ctx(run, 2, first)).initial()
    assert retry.memory_bytes == pytest.approx(1.15 * GIB * 1.2)


def test_vpas_in_place_loop_grows_a_pod_to_its_observed_peak_on_its_minute() -> None:
    mem = np.concatenate([np.linspace(0.5, 0.9, 60), np.linspace(0.9, 1.3, 600)]) * GIB
    run = sim_run(mem)
    policy = VpaPolicy()
    policy.prepare(workload(run, train=history([0.8] * 5)), SETTINGS)
    result = run_try(run, policy.driver(ctx(run)), SETTINGS)
    assert not result.oom
    assert result.resizes >= 1
    # changes only on the cluster's minute (loop at 60 s, plus the actuation delay)
    assert all(round(t) % 60 == SETTINGS.delay_steps for t, _ in result.changes[1:])


def test_autopilot_holds_the_largest_recommendation_of_the_last_hour() -> None:
    run = sim_run(np.full(10, GIB))
    policy = AutopilotPolicy()
    policy.prepare(workload(run, train=history([1.0] * 5)), SETTINGS)
    normal = policy.driver(ctx(run, now_s=0.0)).initial()
    assert normal.memory_bytes == pytest.approx(1.1 * GIB)  # decayed p98 of 1 GiB peaks + 10%
    policy.recent[run.key].append((100.0, Limits(3 * GIB, 2.0)))  # a larger one made at t=100
    assert policy.driver(ctx(run, now_s=3000.0)).initial().memory_bytes == 3 * GIB
    assert policy.driver(ctx(run, now_s=5000.0)).initial().memory_bytes == pytest.approx(1.1 * GIB)


def test_reactive_grows_on_its_trigger_and_shrinks_on_its_timer() -> None:
    mem = np.concatenate([np.full(100, 1.0), np.linspace(1.0, 3.0, 200), np.full(200, 3.0)]) * GIB
    run = sim_run(mem, declared_memory=2 * GIB)
    result = run_try(run, ReactivePolicy().driver(ctx(run)), SETTINGS)
    assert not result.oom
    sizes = [lim.memory_bytes / GIB for _, lim in result.changes]
    assert sizes[0] == 2.0
    assert min(sizes) == pytest.approx(1.2)  # shrunk to the window peak x 1.2 after 60 s
    assert max(sizes) >= 3.0  # grown on the ramp


def test_a_jump_kills_the_reactive_shaper_and_its_retries_never_shrink_below_the_kill() -> None:
    mem = np.concatenate([np.full(100, 0.5), np.full(50, 4.0)]) * GIB  # a jump: no sample warns
    run = sim_run(mem, declared_memory=8 * GIB)
    result = replay(workload(run), ReactivePolicy(), PoolSpec(), SETTINGS)
    assert result.tries[0].result.oom  # shrunk to 0.6 GiB after a minute, then the jump
    killed, retry = result.tries[0].result, result.tries[1].result
    assert min(lim.memory_bytes for _, lim in retry.changes) >= 1.2 * killed.peak_seen - 1


def test_limits_never_exceed_a_node() -> None:
    run = sim_run(np.full(10, GIB), declared_memory=500 * GIB, declared_cpu=400.0)
    from airflow_predictive.simulation.policies.baselines import DeclaredPolicy

    assert DeclaredPolicy().driver(ctx(run)).initial() == Limits(NODE.memory_bytes, NODE.cpu_cores)
