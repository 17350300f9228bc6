"""Predicted starts and pod requests for the node-level replay (synthetic runs, known answers)."""

from __future__ import annotations

import numpy as np

from airflow_predictive.core.model.resources import GIB, Metric
from airflow_predictive.core.model.series import DemandCurve, Forecast
from airflow_predictive.core.scheduling.planner import PlanSettings
from airflow_predictive.simulation.warm_capacity import (
    Arrival,
    Sizing,
    WarmSettings,
    pods_for,
    predict_starts,
)
from tests.unit.simulation.helpers import example, sim_run, workload


def arrival(i: int, submit: float, end: float, p50: float | None = None, group: str = "g") -> Arrival:
    return Arrival(i, group, submit, end, p50, None if p50 is None else p50 * 1.5)


def test_start_is_predicted_from_the_predicted_end_of_the_run_that_frees_the_slot() -> None:
    runs = [arrival(0, 0.0, 1000.0, p50=900.0), arrival(1, 1004.0, 1500.0, group="h")]
    pred = predict_starts(runs, WarmSettings())
    assert set(pred) == {1}
    p = pred[1]
    assert p.releaser == 0 and p.start_s == 900.0 and p.late_s == 1350.0
    assert p.known_at == 0.0  # known once the releaser started (nothing of its group ran before)


def test_prediction_is_known_only_once_the_task_is_ready() -> None:
    upstream = arrival(0, 0.0, 600.0, group="s")  # same sample, ends at 600: the task is ready then
    releaser = arrival(1, 100.0, 1000.0, p50=850.0, group="x")
    task = arrival(2, 1002.0, 1400.0, group="s")
    assert predict_starts([upstream, releaser, task], WarmSettings())[2].known_at == 600.0


def test_no_prediction_without_a_releaser_close_before_or_without_its_forecast() -> None:
    lonely = [arrival(0, 0.0, 100.0, p50=90.0), arrival(1, 500.0, 900.0)]
    assert 1 not in predict_starts(lonely, WarmSettings(match_window_s=30.0))
    unforecast = [arrival(0, 0.0, 100.0), arrival(1, 101.0, 300.0)]
    assert predict_starts(unforecast, WarmSettings()) == {}


def _forecast(gib: float, seconds: float) -> Forecast:
    n = int(seconds // 10)
    mem = DemandCurve(
        Metric.MEMORY_BYTES, 10.0, {0.5: np.full(n, gib * GIB * 0.8), 0.99: np.full(n, gib * GIB)}
    )
    cpu = DemandCurve(Metric.CPU_CORES, 10.0, {0.9: np.full(n, 1.5)})
    return Forecast(
        {Metric.MEMORY_BYTES: mem, Metric.CPU_CORES: cpu}, {0.5: seconds, 0.9: seconds * 1.2}, "t"
    )


def test_pods_request_the_plan_peak_and_get_placeholders_a_lead_time_ahead() -> None:
    first = sim_run(np.full(600, GIB), index=0, arrival_s=0.0)
    second = sim_run(np.full(300, GIB), index=1, arrival_s=602.0)
    wl = workload(first, second)
    forecasts = {0: _forecast(3.0, 500.0), 1: _forecast(2.0, 300.0)}
    pods, starts = pods_for(
        wl,
        forecasts,
        Sizing.PLAN,
        provisioning_delay_s=90.0,
        plan_settings=PlanSettings(),
        settings=WarmSettings(margin_s=30.0, lapse_margin_s=60.0),
    )
    assert pods[0].memory == 3.0 * GIB and pods[0].cpu == 1.5
    assert starts[1].start_s == 500.0
    assert pods[1].warm_at_s == 500.0 - 120.0  # lead = delay + margin
    assert pods[1].warm_until_s == 600.0 + 60.0  # the releaser's p90 end, plus the lapse margin
    declared, _ = pods_for(
        wl, forecasts, Sizing.DECLARED, provisioning_delay_s=90.0, plan_settings=PlanSettings()
    )
    assert declared[0].memory == 8 * GIB and declared[0].cpu == 4.0


def test_training_run_as_releaser_is_predicted_from_its_earlier_runs_only() -> None:
    older = example(np.full(400, GIB), np.full(400, 1.0), start_s=-5000.0, name="t0")
    releaser = example(np.full(1000, GIB), np.full(1000, 1.0), start_s=-200.0, name="t1")
    replayed = sim_run(np.full(100, GIB), index=0, arrival_s=801.0)  # starts as t1 ends (at 800)
    wl = workload(replayed, train=(older, releaser))
    _, starts = pods_for(wl, {}, Sizing.DECLARED, provisioning_delay_s=90.0, plan_settings=PlanSettings())
    # t1's predicted duration is t0's (400 s), not its own 1000 s
    assert starts[0].start_s == -200.0 + 400.0
    _, none = pods_for(
        wl,
        {},
        Sizing.DECLARED,
        provisioning_delay_s=90.0,
        plan_settings=PlanSettings(),
        releasers_outside=False,
    )
    assert none == {}


def test_placeholder_waits_while_its_releaser_overruns_the_predicted_window() -> None:
    first = sim_run(np.full(900, GIB), index=0, arrival_s=0.0)  # predicted 500 s (p90 600 s), runs 900 s
    second = sim_run(np.full(300, GIB), index=1, arrival_s=903.0)
    wl = workload(first, second)
    pods, _ = pods_for(
        wl,
        {0: _forecast(3.0, 500.0)},
        Sizing.PLAN,
        provisioning_delay_s=90.0,
        plan_settings=PlanSettings(),
        settings=WarmSettings(lapse_margin_s=60.0),
    )
    assert pods[1].warm_at_s == 500.0 - 120.0
    assert pods[1].warm_until_s == 900.0 + 60.0  # the plan lapses only after the releaser ended
