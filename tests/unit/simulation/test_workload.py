from __future__ import annotations

import numpy as np
import pytest

from airflow_predictive.core.model.resources import GIB
from airflow_predictive.core.model.runs import TaskKey
from airflow_predictive.simulation.workload import RunCurve, build_workload, scaled_up
from tests.unit.simulation.helpers import example

A = TaskKey("wf", "a")


def examples(n: int = 6, key: TaskKey = A) -> list:
    return [
        example(
            np.full(10 + i, (1 + i) * GIB),
            np.full(10 + i, 1.0),
            start_s=100.0 * i,
            key=key,
            name=f"{key.task_id}{i}",
        )
        for i in range(n)
    ]


def test_the_second_half_of_each_tasks_runs_is_replayed_in_recorded_order() -> None:
    runs = examples(6) + examples(4, TaskKey("wf", "b"))
    w = build_workload(list(reversed(runs)))
    assert len(w.train) == 5 and len(w.runs) == 5
    assert [r.arrival_s for r in w.runs] == sorted(r.arrival_s for r in w.runs)
    assert w.runs[0].arrival_s == 0.0
    assert {r.example.record.identity.run_id for r in w.runs} == {"a3", "a4", "a5", "b2", "b3"}


def test_a_runs_history_holds_only_its_tasks_earlier_runs() -> None:
    w = build_workload(examples(6))
    last = w.runs[-1]
    history = w.history_of(last)
    assert [h.record.identity.run_id for h in history] == ["a0", "a1", "a2", "a3", "a4"]
    assert all(h.record.start < last.example.record.start for h in history)


def test_usage_is_put_on_the_grid_with_prefix_sums_and_peaks() -> None:
    w = build_workload(examples(2))
    run = w.runs[0]
    assert run.steps == 11  # 11 samples 1 s apart: one grid step each
    assert run.peak_memory == 2 * GIB
    assert run.memory_cumsum[-1] == pytest.approx(run.memory.sum())


def test_a_scale_up_repeats_the_replay_back_to_back_sharing_the_arrays() -> None:
    w = build_workload(examples(6))
    big = scaled_up(w, 10)
    assert len(big.runs) == 10 and big.synthetic_factor == 4
    assert [r.index for r in big.runs] == list(range(10))
    assert big.runs[3].curve is w.runs[0].curve
    assert big.runs[3].origin == 0
    assert big.runs[3].arrival_s > max(r.arrival_s for r in w.runs)


def test_a_curve_rejects_unusable_usage() -> None:
    with pytest.raises(ValueError):
        RunCurve(np.array([1.0, np.nan]), np.array([1.0, 1.0]))
    with pytest.raises(ValueError):
        RunCurve(np.array([1.0]), np.array([1.0, 2.0]))
