"""A ``Forecast`` read as the shaping policy's ``Expectation`` (demand at t, and the peak ahead).

The policy compares usage with one quantile of the forecast (the task's risk, e.g. 0.9) on the
run's own timeline. Past the forecast's horizon the last step holds (the run is late, not done).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from collections.abc import Mapping

    from airflow_predictive.core.model.resources import Metric
    from airflow_predictive.core.model.series import Forecast


@dataclass(frozen=True)
class ForecastExpectation:
    """Expectation over a ``Forecast`` at ``quantile`` (per-metric overrides in ``quantiles``).

    offset_s: where the forecast's t=0 sits on the shaped run's timeline (a re-forecast made at
        t=60 s from the observed prefix starts at 60).
    """

    forecast: Forecast
    quantile: float = 0.9
    quantiles: Mapping[Metric, float] = field(default_factory=dict)
    offset_s: float = 0.0

    def _curve(self, metric: Metric) -> tuple[np.ndarray, float] | None:
        curve = self.forecast.curve(metric)
        if curve is None:
            return None
        return curve.at(self.quantiles.get(metric, self.quantile)), curve.step_s

    def predicted(self, metric: Metric, t_s: float) -> float | None:
        found = self._curve(metric)
        if found is None:
            return None
        values, step = found
        i = min(max(int((t_s - self.offset_s) // step), 0), values.size - 1)
        return float(values[i])

    def ahead(self, metric: Metric, t_s: float, horizon_s: float) -> float | None:
        return self._ahead(self._curve(metric), t_s, horizon_s)

    def ahead_at(self, metric: Metric, t_s: float, horizon_s: float, quantile: float) -> float | None:
        """The largest demand over [t_s, t_s + horizon_s] at another ``quantile`` of the forecast."""
        curve = self.forecast.curve(metric)
        if curve is None:
            return None
        return self._ahead((curve.at(quantile), curve.step_s), t_s, horizon_s)

    def _ahead(self, found: tuple[np.ndarray, float] | None, t_s: float, horizon_s: float) -> float | None:
        if found is None:
            return None
        values, step = found
        first = min(max(int((t_s - self.offset_s) // step), 0), values.size - 1)
        last = min(max(int((t_s - self.offset_s + horizon_s) // step), first), values.size - 1)
        return float(np.max(values[first : last + 1]))
