"""A ``Forecast`` read as the shaping policy's ``Expectation`` (demand at t, and the peak ahead).

The policy compares usage with one quantile of the forecast (the task's risk, e.g. 0.9) on the
run's own timeline. Past the forecast's horizon the last step holds (the run is late, not done).
``next_change_s`` says when any of these readings can next change (the forecast's step edges
where a value differs), so an event-driven loop can skip the ticks in between.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from collections.abc import Mapping

    from airflow_predictive.core.model.resources import Metric
    from airflow_predictive.core.model.series import Forecast


WHOLE_AFTER = 3  # questions with a ``before`` answered from the edges in between, then the whole curve


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

    _lists: dict[tuple[Metric, float], tuple[list[float], float] | None] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )
    _merged: dict[tuple[Metric, tuple[float, ...]], list[float]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )
    _windowed: dict[tuple[Metric, tuple[float, ...]], int] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )
    _edge_cache: dict[tuple[Metric, float | None], tuple[np.ndarray, list[float]] | None] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )
    _values_cache: dict[Metric, np.ndarray] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def _values(self, metric: Metric, quantile: float) -> tuple[list[float], float] | None:
        """The curve at ``quantile`` as a Python list (read every tick: small slices are cheaper
        as lists than as numpy reductions) and its step."""
        key = (metric, quantile)
        if key in self._lists:
            return self._lists[key]
        curve = self.forecast.curve(metric)
        found = (
            None if curve is None else (np.asarray(curve.at(quantile), dtype=float).tolist(), curve.step_s)
        )
        self._lists[key] = found
        return found

    def _curve(self, metric: Metric) -> tuple[list[float], float] | None:
        return self._values(metric, self.quantiles.get(metric, self.quantile))

    def predicted(self, metric: Metric, t_s: float) -> float | None:
        found = self._curve(metric)
        if found is None:
            return None
        values, step = found
        i = min(max(int((t_s - self.offset_s) // step), 0), len(values) - 1)
        return values[i]

    def ahead(self, metric: Metric, t_s: float, horizon_s: float) -> float | None:
        return self._ahead(self._curve(metric), t_s, horizon_s)

    def ahead_at(self, metric: Metric, t_s: float, horizon_s: float, quantile: float) -> float | None:
        """The largest demand over [t_s, t_s + horizon_s] at another ``quantile`` of the forecast."""
        return self._ahead(self._values(metric, quantile), t_s, horizon_s)

    def _ahead(self, found: tuple[list[float], float] | None, t_s: float, horizon_s: float) -> float | None:
        if found is None:
            return None
        values, step = found
        first = min(max(int((t_s - self.offset_s) // step), 0), len(values) - 1)
        last = min(max(int((t_s - self.offset_s + horizon_s) // step), first), len(values) - 1)
        return max(values[first : last + 1])

    def next_change_s(
        self, metric: Metric, t_s: float, horizons: tuple[float, ...] = (), before: float = math.inf
    ) -> float:
        """The first time after ``t_s`` at which ``predicted`` or ``ahead`` / ``ahead_at`` over one
        of ``horizons`` may read a different value, at any quantile (inf: never again). With
        ``before``, a change at or after it may be answered by any time >= ``before`` (the
        caller's promise ends there anyway): only the edges in between are read, which is what a
        re-forecast's expectation, replaced within a minute, is asked about a few times; one asked
        more often reads the whole curve once."""
        key = (metric, horizons)
        times = self._merged.get(key)
        if times is None and before < math.inf and self._windowed.get(key, 0) < WHOLE_AFTER:
            self._windowed[key] = self._windowed.get(key, 0) + 1
            first = math.inf
            for horizon in (None, *horizons):  # each next one only before the earliest change so far
                first = min(first, self._first_change(metric, horizon, t_s, min(before, first)))
            return first
        if times is None:  # every horizon's change times in one sorted list, read once
            merged = [self._changed(metric, h, 0, None) for h in (None, *horizons)]
            times = self._merged[key] = np.unique(np.concatenate(merged)).tolist()
        i = bisect.bisect_right(times, t_s)
        return float(times[i]) if i < len(times) else math.inf

    def _edges(self, metric: Metric, horizon: float | None) -> tuple[np.ndarray, list[float]] | None:
        """The curve's step edges (over a horizon, with those edges minus the horizon), sorted, as
        an array and a list: between two of them no reading changes. None when none ever does.
        Each horizon has its own (edges of two horizons may be a rounding apart: read between
        them, a floor could fall on either side)."""
        key = (metric, horizon)
        if key in self._edge_cache:
            return self._edge_cache[key]
        curve = self.forecast.curve(metric)
        found = None
        if curve is not None and curve.steps >= 2:
            edges: np.ndarray = self.offset_s + curve.step_s * np.arange(1, curve.steps)
            if horizon is not None:
                edges = np.unique(np.concatenate([edges, edges - horizon]))
            found = (edges, edges.tolist())
        self._edge_cache[key] = found
        return found

    def _changed(self, metric: Metric, horizon: float | None, a: int, b: int | None) -> np.ndarray:
        """The edges among ``edges[a:b]`` (None: to the end) where a reading changes."""
        edges_found = self._edges(metric, horizon)
        if edges_found is None:
            return np.zeros(0)
        edges, listed = edges_found
        b = len(listed) if b is None else b
        step = self._step(metric)
        before = (listed[a - 1] + listed[a]) / 2 if a > 0 else listed[0] - step / 2
        after = (listed[b - 1] + listed[b]) / 2 if b < len(listed) else listed[-1] + step / 2
        return self._changes_among(metric, horizon, edges[a:b], before, after)

    def _step(self, metric: Metric) -> float:
        curve = self.forecast.curve(metric)
        assert curve is not None
        return float(curve.step_s)

    def _changes_among(
        self, metric: Metric, horizon: float | None, edges: np.ndarray, before: float, after: float
    ) -> np.ndarray:
        """Of consecutive ``edges``, those where the reading (now, or the peak over ``horizon``, at
        any quantile) differs on their two sides: each interval between two edges is read at its
        middle (never on an edge: float floors); ``before`` / ``after``: the middles before the
        first and after the last."""
        curve = self.forecast.curve(metric)
        assert curve is not None
        values = self._stacked(metric)
        n, step, o = curve.steps, curve.step_s, self.offset_s
        mids = np.concatenate([[before], (edges[:-1] + edges[1:]) / 2, [after]])
        first = np.clip(((mids - o) // step).astype(np.int64), 0, n - 1)
        read: np.ndarray
        if horizon is None:
            read = values[:, first]
        else:
            last = np.clip(np.maximum(((mids - o + horizon) // step).astype(np.int64), first), 0, n - 1)
            lo, hi = int(first[0]), int(last[-1]) + 1  # both ascend: read the part of the curve in reach
            read = window_max(values[:, lo:hi], first - lo, last - lo)
        changed = np.any(read[:, 1:] != read[:, :-1], axis=0)
        out: np.ndarray = edges[changed]
        return out

    def _stacked(self, metric: Metric) -> np.ndarray:
        values = self._values_cache.get(metric)
        if values is None:
            curve = self.forecast.curve(metric)
            assert curve is not None
            values = self._values_cache[metric] = np.stack(
                [np.asarray(v, dtype=float) for v in curve.quantiles.values()]
            )
        return values

    def _first_change(self, metric: Metric, horizon: float | None, t_s: float, before: float) -> float:
        """The first change in (t_s, before), else inf. Only the edges in between (and their two
        neighbours) are made, as the whole curve's edges would be (the same floats)."""
        curve = self.forecast.curve(metric)
        if curve is None or curve.steps < 2:
            return math.inf
        n, step, o = curve.steps, curve.step_s, self.offset_s

        def near(lo_t: float, hi_t: float) -> np.ndarray:  # step edges o + step * k around (lo_t, hi_t)
            k0 = max(1, math.floor((lo_t - o) / step) - 1)
            k1 = min(n - 1, math.ceil((hi_t - o) / step) + 1)
            edges: np.ndarray = o + step * np.arange(k0, k1 + 1)
            return edges

        made = near(t_s, before)
        if horizon is not None:
            made = np.unique(np.concatenate([made, near(t_s + horizon, before + horizon) - horizon]))
        inside = made[(made > t_s) & (made < before)]
        if inside.size == 0:
            return math.inf
        prev, nxt = made[made <= t_s], made[made >= before]
        head = (float(prev[-1]) + float(inside[0])) / 2 if prev.size else float(inside[0]) - step / 2
        tail = (float(inside[-1]) + float(nxt[0])) / 2 if nxt.size else float(inside[-1]) + step / 2
        changed = self._changes_among(metric, horizon, inside, head, tail)
        return float(changed[0]) if changed.size else math.inf


def window_max(values: np.ndarray, first: np.ndarray, last: np.ndarray) -> np.ndarray:
    """``values[:, first[i] : last[i] + 1].max(axis=1)`` for every i (a sparse table, O(n log n))."""
    table = [values]
    span = 1
    while 2 * span <= values.shape[1]:
        prev = table[-1]
        table.append(np.maximum(prev[:, :-span], prev[:, span:]))
        span *= 2
    length = last - first + 1
    level = np.floor(np.log2(length)).astype(np.int64)
    out = np.empty((values.shape[0], first.size))
    for k in np.unique(level):
        sel = level == k
        t = table[k]
        out[:, sel] = np.maximum(t[:, first[sel]], t[:, last[sel] - (1 << k) + 1])
    return out
