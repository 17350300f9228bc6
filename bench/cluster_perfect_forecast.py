"""How much of ours' slack is the forecast's error and how much the planner's and controller's own
margins: the product's planner and shaping controller fed the true curve as their forecast.

Usage: .venv/bin/python bench/cluster_perfect_forecast.py [--data DIR] [--split training|held-out]

Every replayed run's forecast is its own true usage, max over each 30 s step (the profiler's
finest step), every quantile equal, the duration exact. The planner, the controller and their
safety margins are the shipped ones (``PredictiveSettings()``), so what slack remains is what they
cost even when the forecast is perfect. Rows: the true curve with the shipped mid-run re-forecast
(which replaces the forecast by segments fitted on the task's earlier runs), the true curve with no
re-forecast, and the true peak as a flat curve (the best any peak-only forecast could give). The
30 s oracle is the reference. Default: the training split, as bench/cluster_bench.py ``--split
training`` builds it. Not part of ``make bench`` (a diagnostic; a few minutes).
"""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from cluster_bench import diagnostic_workload  # noqa: E402

from airflow_predictive.core.model.resources import Metric  # noqa: E402
from airflow_predictive.core.model.series import (  # noqa: E402
    QUANTILES,
    DemandCurve,
    Forecast,
    UsageSeries,
)
from airflow_predictive.core.profiler.metrics import MIN_STEP_S  # noqa: E402
from airflow_predictive.core.shaping.policy import ShapingSettings  # noqa: E402
from airflow_predictive.core.shaping.reforecast import PrefixReforecaster  # noqa: E402
from airflow_predictive.simulation.bench import DEFAULT_POOL  # noqa: E402
from airflow_predictive.simulation.cluster import replay  # noqa: E402
from airflow_predictive.simulation.execution import SimSettings  # noqa: E402
from airflow_predictive.simulation.forecasting import HeldOutForecasts  # noqa: E402
from airflow_predictive.simulation.metrics import summarise  # noqa: E402
from airflow_predictive.simulation.policies.baselines import OraclePolicy  # noqa: E402
from airflow_predictive.simulation.policies.predictive import PredictivePolicy, PredictiveSettings  # noqa: E402

if TYPE_CHECKING:
    from airflow_predictive.simulation.workload import SimRun, Workload


def _stepped(values: np.ndarray, per_step: int, flat: bool) -> np.ndarray:
    if flat:
        return np.full(max(1, -(-values.size // per_step)), float(values.max()))
    pad = (-values.size) % per_step
    padded = np.concatenate([values, np.full(pad, values[-1])]) if pad else values
    return padded.reshape(-1, per_step).max(axis=1)


def true_forecast(run: SimRun, *, flat: bool) -> Forecast:
    per_step = max(1, round(MIN_STEP_S / run.grid_s))
    curves = {
        metric: DemandCurve(
            metric, per_step * run.grid_s, {q: _stepped(values, per_step, flat) for q in QUANTILES}
        )
        for metric, values in ((Metric.MEMORY_BYTES, run.memory), (Metric.CPU_CORES, run.cpu))
    }
    return Forecast(curves, {q: run.duration_s for q in QUANTILES}, "true_peak" if flat else "true_curve")


class TrueReforecaster(PrefixReforecaster):
    """The re-forecast hook answering with the true curve (the at-start forecast, already exact),
    as if the task's history had answered: the reclaim margin is offered as the segments' is."""

    def _reforecast(self, prefix: UsageSeries) -> tuple[Forecast, bool]:
        return self.forecast, True


class PerfectPolicy(PredictivePolicy):
    """Ours with a perfect re-forecast: the same planner, controller and margins."""

    def _reforecaster(self, forecast: Forecast | None, run: SimRun) -> PrefixReforecaster | None:
        settings = self.settings.reforecast
        if forecast is None or settings is None or settings.every_s <= 0:
            return None
        return TrueReforecaster(forecast, quantile=self.settings.expectation_quantile, settings=settings)


def perfect(workload: Workload, *, flat: bool) -> HeldOutForecasts:
    return HeldOutForecasts(
        forecasts={run.origin: true_forecast(run, flat=flat) for run in workload.runs},
        champions={},
        answered_by={},
        cold_start=frozenset(),
        seconds=0.0,
        candidates=("true_peak" if flat else "true_curve",),
    )


def main() -> int:
    workload, split = diagnostic_workload(__doc__.splitlines()[0])
    curve, peak = perfect(workload, flat=False), perfect(workload, flat=True)
    shipped = PredictiveSettings()
    rf = shipped.reforecast
    assert rf is not None
    lean = ShapingSettings(guard_margin=0.0, ratio_floor=0.3)
    rows = (
        ("true curve, true re-forecast", PerfectPolicy(curve, shipped)),
        (
            "true curve, true re-forecast, reclaim margin 0.05, guard +0 %, ratio floor 0.3",
            PerfectPolicy(curve, replace(shipped, reforecast=replace(rf, reclaim_margin=0.05), shaping=lean)),
        ),
        (
            "the same, near_limit 0.05",
            PerfectPolicy(
                curve,
                replace(
                    shipped,
                    reforecast=replace(rf, reclaim_margin=0.05),
                    shaping=replace(lean, near_limit=0.05),
                ),
            ),
        ),
        ("true curve, shipped re-forecast", PredictivePolicy(curve, shipped)),
        ("true curve, no re-forecast", PredictivePolicy(curve, replace(shipped, reforecast=None))),
        ("true peak (flat), no re-forecast", PredictivePolicy(peak, replace(shipped, reforecast=None))),
        ("oracle, 30 s steps", OraclePolicy()),
    )
    print(f"| ours fed | memory slack | OOM / 1,000 | tries |  ({split}, {len(workload.runs)} runs)")
    print("|---|---|---|---|")
    for label, policy in rows:
        r = replay(workload, policy, DEFAULT_POOL, SimSettings())
        m = summarise(r).as_dict()
        print(
            f"| {label} | {100 * m['memory_slack']:.1f} % | {m['oom_per_1000']:.1f} | {len(r.tries)} |",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
