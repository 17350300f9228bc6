"""ETS / ARIMA over each task's per-run summaries (peak memory, mean CPU, duration): trends across runs.

Why: a task whose input grows every day drifts; the median of earlier peaks lags behind and the
LSTM sees too few runs of a new task. A classic time-series model over the sequence of runs (one
point per run, oldest first, on a log scale so that intervals stay positive and relative) follows
the drift and gives prediction intervals, turned into the p50/p90/p99 of a flat forecast.

This is the only module that imports statsmodels, lazily inside functions (it costs ~1 s). With
fewer than ``min_runs`` earlier runs, or when the fit fails, it raises ``NotFitted`` so that the
fallback chain moves on; it never forecasts a metric without history.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from statistics import NormalDist
from typing import TYPE_CHECKING, Self

import numpy as np

from airflow_predictive.core.model.resources import Metric
from airflow_predictive.core.model.series import QUANTILES, Forecast
from airflow_predictive.core.profiler.estimators.base import ForecastQuery, NotFitted, RunExample
from airflow_predictive.core.profiler.estimators.baselines import ConfiguredEstimator, flat_forecast
from airflow_predictive.core.profiler.features import clean_array, example_duration, example_peak

if TYPE_CHECKING:
    from collections.abc import Sequence

METHODS = ("ets", "arima")


def run_summary(example: RunExample, metric: Metric, cpu_statistic: str) -> float | None:
    """The per-run number modelled for ``metric``: mean CPU (when asked and a series exists), else the peak."""
    if metric is Metric.CPU_CORES and cpu_statistic == "mean" and example.series is not None:
        arr = example.series.get(metric)
        if arr is not None:
            clean = clean_array(metric, arr)
            if np.any(np.isfinite(clean)):
                return float(np.nanmean(clean))
    return example_peak(example, metric)


def log_quantiles(y: np.ndarray, method: str) -> dict[float, float]:
    """Quantiles of the next value of a series, fitted on log(y); values in y's unit.

    Raises ``NotFitted`` when statsmodels cannot fit the series.
    """
    from statsmodels.tsa.arima.model import ARIMA
    from statsmodels.tsa.statespace.exponential_smoothing import ExponentialSmoothing

    z = np.log(np.maximum(y, 1e-12))
    if np.ptp(z) < 1e-9:  # a constant series: nothing to fit, no spread seen
        return dict.fromkeys(QUANTILES, float(y[-1]))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if method == "arima":
                res = ARIMA(z, order=(1, 1, 0)).fit()
            else:
                res = ExponentialSmoothing(z, trend=z.size >= 12, damped_trend=z.size >= 12).fit(disp=False)
            forecast = res.get_forecast(1)
            mean = float(np.asarray(forecast.predicted_mean)[0])
            lower, upper = np.asarray(forecast.conf_int(alpha=0.3173))[0]  # +-1 standard error
    except Exception as exc:  # convergence failures, singular matrices, numerical trouble
        raise NotFitted(f"statsmodels {method} could not fit {z.size} runs: {exc}") from exc
    sigma = max(float(upper - lower) / 2.0, 0.0)
    if not (math.isfinite(mean) and math.isfinite(sigma)):
        raise NotFitted(f"statsmodels {method} gave a non-finite forecast")
    normal = NormalDist()
    return {q: float(np.exp(np.clip(mean + normal.inv_cdf(q) * sigma, -60, 60))) for q in QUANTILES}


@dataclass
class StatsmodelsTrend(ConfiguredEstimator):
    """ETS (damped additive trend on log values) or ARIMA(1,1,0) over the task's earlier runs.

    method: "ets" or "arima". min_runs: fewer earlier runs -> ``NotFitted``.
    max_history: only the newest runs are modelled. cpu_statistic: "mean" (CPU is compressible:
    the level that keeps it busy) or "peak".
    """

    name: str = "ets"
    method: str = "ets"
    min_runs: int = 8
    max_history: int = 100
    cpu_statistic: str = "mean"
    step_s: float = 2.0

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")

    def fit(self, examples: Sequence[RunExample]) -> Self:
        import statsmodels  # noqa: F401  (fail at fit time, clearly, where statsmodels is missing)

        return self

    def predict(self, query: ForecastQuery) -> Forecast:
        history = list(query.history)[-self.max_history :]
        if len(history) < self.min_runs:
            raise NotFitted(
                f"{self.name}: {query.key} has {len(history)} earlier runs, needs {self.min_runs}"
            )
        levels: dict[Metric, dict[float, float]] = {}
        for metric in dict.fromkeys(query.metrics):
            values = [run_summary(e, metric, self.cpu_statistic) for e in history]
            y = np.array([v for v in values if v is not None and v > 0])
            if y.size >= self.min_runs:
                levels[metric] = log_quantiles(y, self.method)
        durations = [example_duration(e) for e in history]
        d = np.array([v for v in durations if v is not None])
        duration = log_quantiles(d, self.method) if d.size >= self.min_runs else {}
        return flat_forecast(self.name, levels, duration, self.step_s)
