from __future__ import annotations

import io

import numpy as np
import pytest

from airflow_predictive.core.model.resources import GIB
from airflow_predictive.simulation.bench import BASELINES, BenchOptions, ProgressBar, run_on_workload
from airflow_predictive.simulation.cluster import PoolSpec, replay
from airflow_predictive.simulation.execution import SimSettings
from airflow_predictive.simulation.metrics import summarise
from airflow_predictive.simulation.policies.baselines import DeclaredPolicy
from tests.unit.simulation.helpers import sim_run, workload

KEYS = {
    "memory_slack",
    "cpu_slack",
    "memory_waste_gib_s",
    "cpu_waste_core_s",
    "oom_per_1000",
    "throttled_share",
    "queue_wait_s_p50",
    "queue_wait_s_p95",
    "makespan_s",
    "resizes_per_run",
}


def test_slack_and_waste_count_a_killed_trys_whole_allocation() -> None:
    killed = sim_run(np.array([1, 1, 5, 5], dtype=float) * GIB, index=0, declared_memory=4 * GIB)
    fine = sim_run(np.full(10, 2 * GIB), index=1, arrival_s=1000.0, declared_memory=4 * GIB)
    result = replay(workload(killed, fine), DeclaredPolicy(), PoolSpec(), SimSettings())
    m = summarise(result)
    assert m.tries == 3 and m.oom_kills == 1
    assert m.oom_per_1000 == pytest.approx(1000 / 3)
    # killed try: 3 s x 4 GiB all waste; its retry (8 GiB x 4 s, 12 GiB used); fine run 40 / 20
    alloc, used = 12 + 32 + 40, 12 + 20
    assert m.memory_waste_gib_s == pytest.approx(alloc - used)
    assert m.memory_slack == pytest.approx((alloc - used) / alloc)


def test_the_json_has_the_issues_shape_with_fractions() -> None:
    runs = [sim_run(np.linspace(1, 3, 100) * GIB, index=i, arrival_s=50.0 * i) for i in range(3)]
    result = run_on_workload(workload(*runs), BenchOptions(policies=BASELINES))
    out = result.as_json()
    assert out["runs"] == 3
    assert set(out["policies"]) == set(BASELINES)
    for figures in out["policies"].values():
        assert set(figures) >= KEYS
        assert 0 <= figures["memory_slack"] <= 1 and 0 <= figures["throttled_share"] <= 1
    assert out["policies"]["oracle"]["memory_slack"] < out["policies"]["declared"]["memory_slack"]


def test_unknown_policies_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown policies"):
        BenchOptions(policies=("declared", "magic"))


def test_the_progress_bar_reports_long_replays_only() -> None:
    out = io.StringIO()
    bar = ProgressBar("vpa", out, min_runs=10)
    for i in range(1, 101):
        bar(i, 100)
    text = out.getvalue()
    assert "100/100 runs  vpa" in text and text.count("\n") == 11  # the start, then every 10%
    quiet = io.StringIO()
    ProgressBar("vpa", quiet, min_runs=10)(1, 5)
    assert quiet.getvalue() == ""
