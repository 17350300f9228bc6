"""Online updates of a task's statistical profile when one of its runs finishes (milliseconds, numpy).

Why: retraining once an hour means the next run of a task is planned without what its last run
showed. ``OnlineProfile.update`` folds one finished run into the task's profile at once:
- calibration: the run's actual peak against the p50 peak that was served for it joins a bounded
  window of ratios per metric (``window`` newest), and the upper-quantile factors are recomputed
  from it with the same rule as the backtest (``selection.calibration_from``), so a task whose
  forecasts start to run short gets wider bands from its next run on;
- drift: a two-sided Page-Hinkley test on the log of that ratio (``drift_delta`` tolerance,
  ``drift_threshold`` alarm level, in log units) flags a task whose forecasts drifted (a new input
  regime, a code change): the caller retrains its models for it (the LSTM retrains on the hourly
  schedule of the maintenance DAG, or at once when this flags drift);
- baselines need no state: they read the task's history, to which the caller appends the run.
No TensorFlow, no storage: the storage-backed service (``training/serving.py``) holds one per task.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from airflow_predictive.core.profiler.features import example_peak
from airflow_predictive.core.profiler.selection import calibration_from

if TYPE_CHECKING:
    from collections.abc import Mapping

    from airflow_predictive.core.model.resources import Metric
    from airflow_predictive.core.model.series import Forecast
    from airflow_predictive.core.profiler.estimators.base import RunExample


@dataclass
class PageHinkley:
    """Two-sided Page-Hinkley change detector on a stream of values (here log peak ratios).

    The mean starts at ``prior_mean`` with the weight of ``prior_n`` values: a calibrated p50 has
    a median log ratio of 0, so runs that are all far from their forecast from the first one on
    are a change too (a detector that learned its mean from them would never fire).
    """

    delta: float = 0.05
    threshold: float = 1.0
    prior_mean: float = 0.0
    prior_n: int = 10
    n: int = -1
    mean: float = 0.0
    up: float = 0.0
    down: float = 0.0

    def add(self, x: float) -> bool:
        """Add one value; True when the mean moved by more than the threshold allows (then reset)."""
        if self.n < 0:
            self.n, self.mean = self.prior_n, self.prior_mean
        self.n += 1
        self.mean += (x - self.mean) / self.n
        self.up = max(0.0, self.up + x - self.mean - self.delta)
        self.down = max(0.0, self.down + self.mean - x - self.delta)
        if self.up > self.threshold or self.down > self.threshold:
            self.n, self.prior_mean, self.up, self.down = -1, self.mean, 0.0, 0.0  # the new level
            return True
        return False


@dataclass(frozen=True)
class OnlineUpdate:
    """What one finished run changed: the calibration to serve from now on and whether it drifted."""

    calibration: Mapping[Metric, Mapping[float, float]]
    drifted: tuple[Metric, ...]
    runs_seen: int


@dataclass
class OnlineProfile:
    """A task's online state: recent peak ratios and a drift detector per metric."""

    window: int = 50
    min_runs: int = 5
    drift_delta: float = 0.05
    drift_threshold: float = 1.0
    base: Mapping[Metric, Mapping[float, float]] = field(default_factory=dict)  # training's calibration
    ratios: dict[Metric, deque[float]] = field(default_factory=dict)
    detectors: dict[Metric, PageHinkley] = field(default_factory=dict)
    runs_seen: int = 0

    def update(self, run: RunExample, served: Forecast | None) -> OnlineUpdate:
        """Fold ``run`` in, given the forecast that was served for it (None: none was served)."""
        self.runs_seen += 1
        drifted: list[Metric] = []
        if served is not None:
            for metric, curve in served.curves.items():
                actual = example_peak(run, metric)
                predicted = curve.peak(0.5)
                if actual is None or actual <= 0 or not predicted > 0:
                    continue
                ratio = actual / predicted
                self.ratios.setdefault(metric, deque(maxlen=self.window)).append(ratio)
                detector = self.detectors.setdefault(
                    metric, PageHinkley(self.drift_delta, self.drift_threshold)
                )
                if detector.add(math.log(ratio)):
                    drifted.append(metric)
        return OnlineUpdate(self.calibration(), tuple(drifted), self.runs_seen)

    def calibration(self) -> dict[Metric, dict[float, float]]:
        """Training's factors, replaced per metric by the recent window's once it has ``min_runs``
        ratios (markers such as the curve mode's are kept)."""
        out = {m: dict(f) for m, f in self.base.items()}
        for metric, factors in calibration_from(self.ratios, self.min_runs).items():
            out[metric] = {**out.get(metric, {}), **factors}
        return out
