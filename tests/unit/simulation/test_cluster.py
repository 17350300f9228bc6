from __future__ import annotations

import numpy as np
import pytest

from airflow_predictive.core.model.resources import GIB
from airflow_predictive.simulation.cluster import PoolSpec, replay
from airflow_predictive.simulation.execution import SimSettings
from airflow_predictive.simulation.policies.baselines import DeclaredPolicy, OraclePolicy
from tests.unit.simulation.helpers import sim_run, workload

SETTINGS = SimSettings()


def test_a_try_waits_in_the_queue_until_capacity_is_free() -> None:
    pool = PoolSpec(nodes=1, cpu_cores=8, memory_bytes=10 * GIB)
    first = sim_run(np.full(100, GIB), index=0, arrival_s=0.0)
    second = sim_run(np.full(50, GIB), index=1, arrival_s=10.0)  # 8 + 8 GiB declared > 10 GiB
    result = replay(workload(first, second), DeclaredPolicy(), pool, SETTINGS)
    by_run = {t.run: t for t in result.tries}
    assert by_run[1].started_s == pytest.approx(100.0)
    assert by_run[1].wait_s == pytest.approx(90.0)
    assert result.makespan_s == pytest.approx(150.0)


def test_a_smaller_later_try_may_start_ahead_of_one_that_does_not_fit() -> None:
    pool = PoolSpec(nodes=1, cpu_cores=8, memory_bytes=10 * GIB)
    running = sim_run(np.full(100, GIB), index=0, declared_memory=6 * GIB)
    big = sim_run(np.full(10, GIB), index=1, arrival_s=1.0, declared_memory=8 * GIB)
    small = sim_run(np.full(10, GIB), index=2, arrival_s=2.0, declared_memory=2 * GIB, declared_cpu=2.0)
    result = replay(workload(running, big, small), DeclaredPolicy(), pool, SETTINGS)
    by_run = {t.run: t for t in result.tries}
    assert by_run[2].started_s == pytest.approx(2.0)
    assert by_run[1].started_s == pytest.approx(100.0)


def test_an_oom_killed_try_is_retried_under_the_policys_rule() -> None:
    run = sim_run(np.array([1, 2, 3, 6, 6, 2], dtype=float) * GIB, declared_memory=4 * GIB)
    result = replay(workload(run), DeclaredPolicy(), PoolSpec(), SETTINGS)
    assert [t.result.oom for t in result.tries] == [True, False]
    # declared retries with memory x try number; the retry queues at the kill
    assert result.tries[1].result.limit_at_end.memory_bytes == 8 * GIB
    assert result.tries[1].queued_s == pytest.approx(result.tries[0].ended_s)
    assert result.failed_runs == 0


def test_a_run_that_keeps_being_killed_fails_after_max_tries() -> None:
    run = sim_run(np.array([1, 40], dtype=float) * GIB, declared_memory=4 * GIB)
    result = replay(workload(run), DeclaredPolicy(), PoolSpec(), SimSettings(max_tries=3))
    assert len(result.tries) == 3 and all(t.result.oom for t in result.tries)
    assert result.failed_runs == 1


def test_grows_past_a_full_node_are_counted_as_overcommitted() -> None:
    pool = PoolSpec(nodes=1, cpu_cores=8, memory_bytes=4 * GIB)
    up = np.concatenate([np.full(30, 1.0), np.full(30, 3.0)]) * GIB
    a = sim_run(up, index=0)
    b = sim_run(up, index=1)
    result = replay(workload(a, b), OraclePolicy(), pool, SETTINGS)
    assert result.overcommitted_grows >= 1
    assert not any(t.result.oom for t in result.tries)


def test_a_whole_node_try_starts_once_the_node_is_idle_whatever_float_residue_its_sums_left() -> None:
    pool = PoolSpec(nodes=1, cpu_cores=64, memory_bytes=64 * GIB)
    sizes = (15.89217319166068, 6.762941795499621, 10.055342128894761)  # summed, then released
    ends = (200, 100, 300)  # b, a, c: the node's float sum is a few 1e-6 bytes, not 0
    runs = [
        sim_run(np.full(n, GIB), index=i, declared_memory=s * GIB, declared_cpu=1.0)
        for i, (s, n) in enumerate(zip(sizes, ends, strict=True))
    ]
    whole = sim_run(np.full(10, GIB), index=3, arrival_s=1.0, declared_memory=64 * GIB, declared_cpu=1.0)
    result = replay(workload(*runs, whole), DeclaredPolicy(), pool, SETTINGS)
    by_run = {t.run: t for t in result.tries}
    assert sorted(by_run) == [0, 1, 2, 3]
    assert by_run[3].started_s == pytest.approx(300.0)
