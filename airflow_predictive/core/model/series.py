"""Time series of measured usage and forecast demand curves.

``UsageSeries`` is what a run really consumed (irregular sample times, gaps allowed).
``DemandCurve`` is a forecast for one metric on a regular step, with quantiles (p50/p90/p99).
Both are immutable: arrays are copied and made read-only on construction.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from airflow_predictive.core.model.resources import Metric, ResourceVector

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence


def _frozen(values: Sequence[float] | np.ndarray) -> np.ndarray:
    arr = np.array(values, dtype=float, copy=True)
    arr.setflags(write=False)
    return arr


@dataclass(frozen=True, slots=True)
class ResourceSample:
    """One reading: seconds since the run started, and the usage at that moment."""

    t_s: float
    usage: ResourceVector


@dataclass(frozen=True, eq=False)
class UsageSeries:
    """Measured usage of one run: ``times`` (s since start, increasing) and one array per metric.

    Missing readings are NaN inside an array; a metric never measured has no array at all.
    """

    times: np.ndarray  # [samples]
    values: Mapping[Metric, np.ndarray]  # metric -> [samples]

    def __post_init__(self) -> None:
        times = _frozen(self.times)
        if times.ndim != 1:
            raise ValueError("times must be one-dimensional")
        if times.size and (not np.all(np.isfinite(times)) or np.any(np.diff(times) <= 0)):
            raise ValueError("sample times must be finite and strictly increasing")
        values: dict[Metric, np.ndarray] = {}
        for metric, arr in self.values.items():
            a = _frozen(arr)
            if a.shape != times.shape:
                raise ValueError(f"{metric.value}: {a.size} values for {times.size} sample times")
            values[Metric(metric)] = a
        object.__setattr__(self, "times", times)
        object.__setattr__(self, "values", values)

    @classmethod
    def from_samples(cls, samples: Sequence[ResourceSample]) -> UsageSeries:
        """Sort, drop duplicate times (last wins) and keep metrics present at least once."""
        by_time: dict[float, ResourceVector] = {}
        for s in samples:
            if math.isfinite(s.t_s):
                by_time[float(s.t_s)] = s.usage
        times = sorted(by_time)
        values: dict[Metric, np.ndarray] = {}
        for metric in Metric:
            col = [by_time[t].get(metric) for t in times]
            if any(v is not None for v in col):
                values[metric] = np.array([np.nan if v is None else v for v in col], dtype=float)
        return cls(np.array(times, dtype=float), values)

    def __len__(self) -> int:
        return int(self.times.size)

    @property
    def metrics(self) -> tuple[Metric, ...]:
        return tuple(self.values)

    @property
    def duration_s(self) -> float:
        return float(self.times[-1] - self.times[0]) if self.times.size > 1 else 0.0

    def get(self, metric: Metric) -> np.ndarray | None:
        return self.values.get(metric)

    def peak(self, metric: Metric) -> float | None:
        arr = self.values.get(metric)
        if arr is None or not np.any(np.isfinite(arr)):
            return None
        return float(np.nanmax(arr))

    def peaks(self) -> ResourceVector:
        return ResourceVector.from_mapping({m: self.peak(m) for m in self.values})

    def resampled(self, step_s: float, metric: Metric, horizon_s: float | None = None) -> np.ndarray:
        """Values of ``metric`` on a regular grid 0, step, 2*step ... (max over each step, gaps held)."""
        if step_s <= 0:
            raise ValueError("step must be positive")
        arr = self.values.get(metric)
        if arr is None or not self.times.size:
            return np.zeros(0)
        t0 = self.times[0]
        if horizon_s is not None:
            n = max(1, math.ceil(horizon_s / step_s))
        else:
            n = int(float(self.times[-1] - t0) // step_s) + 1
        out = np.full(n, np.nan)
        idx = np.minimum(((self.times - t0) // step_s).astype(int), n - 1)
        ok = np.isfinite(arr)
        np.fmax.at(out, idx[ok], arr[ok])
        # hold the last known value across gaps; leading gaps take the first known value
        last = np.nan
        for i in range(n):
            if math.isnan(out[i]):
                out[i] = last
            else:
                last = out[i]
        if n and math.isnan(out[0]):
            finite = out[np.isfinite(out)]
            out[np.isnan(out)] = finite[0] if finite.size else 0.0
        return out


QUANTILES: tuple[float, ...] = (0.5, 0.9, 0.99)


@dataclass(frozen=True, eq=False)
class DemandCurve:
    """Forecast demand of one metric over a run's timeline, on a regular step, per quantile.

    ``quantiles[q][i]`` is the q-quantile of demand during ``[i*step_s, (i+1)*step_s)``.
    Higher quantiles never sit below lower ones (enforced on construction).
    """

    metric: Metric
    step_s: float
    quantiles: Mapping[float, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.step_s > 0:
            raise ValueError("step_s must be positive")
        if not self.quantiles:
            raise ValueError("a demand curve needs at least one quantile")
        qs = sorted(float(q) for q in self.quantiles)
        if any(not 0 < q < 1 for q in qs):
            raise ValueError("quantiles must lie strictly between 0 and 1")
        arrays = [np.asarray(self.quantiles[q], dtype=float) for q in qs]
        n = arrays[0].size
        if any(a.shape != (n,) for a in arrays):
            raise ValueError("every quantile needs the same number of steps")
        if any(not np.all(np.isfinite(a)) for a in arrays):
            raise ValueError(f"{self.metric.value}: forecast contains NaN or infinite values")
        fixed: dict[float, np.ndarray] = {}
        floor = np.zeros(n)
        for q, a in zip(qs, arrays, strict=True):
            floor = np.maximum(floor, np.maximum(a, 0.0))  # monotone in q, never negative
            fixed[q] = _frozen(floor)
        object.__setattr__(self, "metric", Metric(self.metric))
        object.__setattr__(self, "quantiles", fixed)

    @property
    def steps(self) -> int:
        return int(next(iter(self.quantiles.values())).size)

    @property
    def horizon_s(self) -> float:
        return self.steps * self.step_s

    def at(self, q: float) -> np.ndarray:
        """The curve for quantile q (nearest stored quantile at or above q, else the highest)."""
        above = [k for k in self.quantiles if k >= q - 1e-9]
        return self.quantiles[min(above) if above else max(self.quantiles)]

    def value_at(self, t_s: float, q: float) -> float:
        curve = self.at(q)
        i = min(max(int(t_s // self.step_s), 0), curve.size - 1)
        return float(curve[i])

    def peak(self, q: float) -> float:
        return float(np.max(self.at(q)))

    def peak_time_s(self, q: float) -> float:
        return float(np.argmax(self.at(q)) * self.step_s)


@dataclass(frozen=True, eq=False)
class Forecast:
    """What the profiler predicts for one task run: a curve per metric plus its duration.

    estimator: the name of the estimator that produced it (for the record and the UI).
    duration_s: predicted duration quantiles, e.g. {0.5: 130.0, 0.9: 170.0}.
    peak_only: True when the source only knew peaks (a flat curve over the duration).
    """

    curves: Mapping[Metric, DemandCurve]
    duration_s: Mapping[float, float]
    estimator: str
    peak_only: bool = False

    def curve(self, metric: Metric) -> DemandCurve | None:
        return self.curves.get(metric)

    def peaks(self, q: float) -> ResourceVector:
        return ResourceVector.from_mapping({m: c.peak(q) for m, c in self.curves.items()})
