"""A time-varying curve from the first recorded run on: the recorded curve, scaled to this run.

Why: with one to a few runs of a task, flat numbers (Autopilot-style, "from peaks only") throw
away both the recorded curve (a ramp, a burst at start) and the next run's different input size.
This estimator answers from the first run: it takes the shape of the task's newest recorded
curves (each divided by its own peak, averaged over up to ``shape_runs`` runs), sets the level to
the peak expected for *this* run's input size, stretches the timeline to the expected duration,
and widens p90 / p99 by how far such a guess strayed on other tasks (learned across tasks at fit).

The level: with at least ``MIN_RUNS_FOR_LINEAR`` runs and a line that stays within 4x of the median
(``features.reference``), linear in input size; else the newest peaks' median scaled by
``(size / their median size) ** elasticity``, the elasticity learned across tasks (log-log slope of
peak on input size within tasks, clipped to [0, 1]); without an input size, the median. Duration
the same way. The spread: per quantile, the cross-task quantile of actual / forecast peak at each
amount of history (1, 2, 3-4, 5+ runs); a task's own spread takes over as its history grows.
Pure numpy; state is JSON.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Self

import numpy as np

from airflow_predictive.core.model.resources import Metric
from airflow_predictive.core.model.series import QUANTILES, DemandCurve, Forecast
from airflow_predictive.core.profiler.estimators.base import ForecastQuery, NotFitted, RunExample
from airflow_predictive.core.profiler.estimators.baselines import (
    CONFIG_FILE,
    DEFAULT_SPREAD,
    MIN_RUNS_FOR_SPREAD,
    flat_forecast,
    spread,
)
from airflow_predictive.core.profiler.features import (
    capped_fit,
    example_duration,
    example_peak,
    forward_max,
    history_columns,
    history_peaks,
    input_size,
    median,
    reference,
)
from airflow_predictive.core.profiler.windows import timeline_targets

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from pathlib import Path

HISTORY_BUCKETS: tuple[int, ...] = (1, 2, 3, 5)  # spread learned for 1, 2, 3-4 and 5+ earlier runs
STEPS = 64  # points of the shape on the run's own timeline
ELASTICITY_GRID = np.linspace(0.0, 1.0, 21)


def _bucket(n: int) -> str:
    return str(max(b for b in HISTORY_BUCKETS if b <= max(n, 1)))


@dataclass(frozen=True)
class LevelGuess:
    """The expected peak (or duration) of this run and how it was found."""

    value: float
    how: str  # "linear", "scaled", "median"


def level_for(
    sizes: np.ndarray, values: np.ndarray, size: float | None, elasticity: float, recent: int = 5
) -> LevelGuess | None:
    """This run's expected value of a per-run quantity (peak or duration) from earlier runs."""
    ok = np.isfinite(values) & (values > 0)
    if not ok.any():
        return None
    v, s = values[ok], sizes[ok]
    med = median(v[-recent:])
    if size is None or not math.isfinite(size) or size <= 0:
        return LevelGuess(med, "median")
    fit = capped_fit(s, v)
    if fit is not None:
        lin = max(fit[0] + fit[1] * min(size, fit[2]), 0.0)
        chosen = reference(median(v), lin, int(v.size))
        if chosen == lin and chosen > 0:
            return LevelGuess(lin, "linear")
    s_recent = s[-recent:]
    known = s_recent[np.isfinite(s_recent) & (s_recent > 0)]
    if not known.size:
        return LevelGuess(med, "median")
    ratio = float(np.clip(size / median(known), 1 / 50, 50))
    return LevelGuess(med * ratio**elasticity, "scaled")


@dataclass
class ScaledCurve:
    """Estimator contract; ``fit`` learns the cross-task elasticity and spread (JSON state)."""

    name: str = "scaled_curve"
    shape_runs: int = 3
    elasticity: dict[str, float] = field(default_factory=dict)  # metric (or "duration") -> exponent
    spreads: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)  # metric -> bucket -> q

    # ------------------------------------------------------------------ fit

    def fit(self, examples: Sequence[RunExample]) -> Self:
        by_task: dict[str, list[RunExample]] = {}
        for e in examples:
            by_task.setdefault(str(e.key), []).append(e)
        for runs in by_task.values():
            runs.sort(key=lambda e: (e.record.start is None, e.record.start or 0))  # type: ignore[operator]
        self.elasticity = {}
        for metric in (*Metric, None):
            pairs = []  # (log size ratio, log value ratio) of each run against the run before it
            for runs in by_task.values():
                sizes = np.array([input_size(e.record.features) or np.nan for e in runs])
                vals = np.array([_value(e, metric) for e in runs])
                with np.errstate(divide="ignore", invalid="ignore"):
                    ds, dv = np.diff(np.log(sizes)), np.diff(np.log(vals))
                ok = np.isfinite(ds) & np.isfinite(dv)
                pairs += list(zip(ds[ok], dv[ok], strict=True))
            if len(pairs) >= 10:
                ds_all, dv_all = np.array(pairs).T
                # the exponent whose one-run-ahead guesses err least (median absolute log error)
                errors = [float(np.median(np.abs(dv_all - b * ds_all))) for b in ELASTICITY_GRID]
                key = metric.value if metric is not None else "duration"
                self.elasticity[key] = float(ELASTICITY_GRID[int(np.argmin(errors))])
        self.spreads = {}
        for metric in Metric:
            ratios: dict[str, list[float]] = {}
            for runs in by_task.values():
                for i in range(1, len(runs)):
                    actual = example_peak(runs[i], metric)
                    if actual is None or actual <= 0:
                        continue
                    for n in HISTORY_BUCKETS:
                        if i < n:
                            continue
                        hist = (
                            runs[max(0, i - n) : i] if n < HISTORY_BUCKETS[-1] else runs[max(0, i - 50) : i]
                        )
                        guess = self._peak(hist, runs[i].record.features, metric)
                        if guess is not None and guess.value > 0:
                            ratios.setdefault(str(n), []).append(actual / guess.value)
            if ratios:
                self.spreads[metric.value] = {
                    b: {str(q): float(np.quantile(r, q)) for q in QUANTILES if q > 0.5}
                    for b, r in ratios.items()
                    if len(r) >= 10
                }
        return self

    # ------------------------------------------------------------------ predict

    def _peak(
        self, history: Sequence[RunExample], features: Mapping[str, Any], metric: Metric
    ) -> LevelGuess | None:
        cols = history_columns(history)
        sizes, peaks = cols.sizes_known(), cols.peaks(metric)
        return level_for(sizes, peaks, input_size(features), self.elasticity.get(metric.value, 0.0))

    def _factors(self, metric: Metric, history: Sequence[RunExample], guess: float) -> dict[float, float]:
        """p90 / p99 multipliers: the cross-task spread for this much history, moving to the task's
        own spread of peaks around this guess as its runs accumulate."""
        learned = self.spreads.get(metric.value, {}).get(_bucket(len(history)))
        pooled = (
            {float(q): max(1.0, f) for q, f in learned.items()}
            if learned
            else {q: DEFAULT_SPREAD[q] for q in QUANTILES if q > 0.5}
        )
        peaks = history_peaks(history, metric)
        own = spread(peaks / guess) if peaks.size and guess > 0 else {}
        w = min(len(history), 2 * MIN_RUNS_FOR_SPREAD) / (2 * MIN_RUNS_FOR_SPREAD)
        return {0.5: 1.0, **{q: max(1.0, w * own.get(q, f) + (1 - w) * f) for q, f in pooled.items()}}

    def predict(self, query: ForecastQuery) -> Forecast:
        history = list(query.history)
        if not history:
            raise NotFitted(f"{self.name}: task {query.key} has no earlier run")
        duration = self._duration(history, query.features)
        curves: dict[Metric, DemandCurve] = {}
        flat: dict[Metric, dict[float, float]] = {}
        for metric in dict.fromkeys(query.metrics):
            guess = self._peak(history, query.features, metric)
            if guess is None:
                continue
            factors = self._factors(metric, history, guess.value)
            shape = _shape(history, metric, self.shape_runs)
            if shape is None or duration is None:
                flat[metric] = {q: guess.value * f for q, f in factors.items()}
                continue
            base = shape * guess.value
            step = duration[0.5] / STEPS
            levels = {q: base * f for q, f in factors.items()}
            if duration.get(0.99, duration[0.5]) > duration[0.5]:  # a slower run keeps its peak longer
                ahead = math.ceil(STEPS * (1 - duration[0.5] / duration[0.99]))
                for q in levels:
                    if q > 0.5:
                        levels[q] = _forward_max(levels[q], ahead)
            curves[metric] = DemandCurve(metric, step, levels)
        dur = duration or {}
        if not curves:
            return flat_forecast(self.name, flat, dur, 2.0)
        if flat:  # metrics without a recorded curve: flat over the same timeline
            step = next(iter(curves.values())).step_s
            for m, qs in flat.items():
                curves[m] = DemandCurve(m, step, {q: np.full(STEPS, v) for q, v in qs.items()})
        return Forecast(curves=curves, duration_s=dur, estimator=self.name)

    def _duration(
        self, history: Sequence[RunExample], features: Mapping[str, Any]
    ) -> dict[float, float] | None:
        cols = history_columns(history)
        sizes, durations = cols.sizes_known(), cols.durations()
        guess = level_for(sizes, durations, input_size(features), self.elasticity.get("duration", 0.0))
        if guess is None or guess.value <= 0:
            return None
        ok = durations[np.isfinite(durations)]
        factors = spread(ok / guess.value) if ok.size >= MIN_RUNS_FOR_SPREAD else dict(DEFAULT_SPREAD)
        return {q: guess.value * max(1.0, f) if q > 0.5 else guess.value for q, f in factors.items()}

    # ------------------------------------------------------------------ persistence

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        state = {
            "name": self.name,
            "shape_runs": self.shape_runs,
            "elasticity": self.elasticity,
            "spreads": self.spreads,
        }
        (directory / CONFIG_FILE).write_text(json.dumps(state, sort_keys=True))

    @classmethod
    def load(cls, directory: Path) -> Self:
        try:
            return cls(**json.loads((directory / CONFIG_FILE).read_text()))
        except (OSError, ValueError, TypeError) as exc:
            raise NotFitted(f"cannot load {cls.__name__} from {directory}: {exc}") from exc


def _value(e: RunExample, metric: Metric | None) -> float:
    v = example_duration(e) if metric is None else example_peak(e, metric)
    return np.nan if v is None else float(v)


def _shape(history: Sequence[RunExample], metric: Metric, runs: int) -> np.ndarray | None:
    """Mean of the newest recorded curves on their own timeline, each divided by its peak, then
    divided by its own maximum (so that the level sets the peak): [STEPS], or None."""
    shapes = []
    for e in reversed(history):
        if e.series is not None and len(e.series) > 1 and e.series.get(metric) is not None:
            one = _run_shape(e, metric)
            if one is not None:
                shapes.append(one)
            if len(shapes) >= runs:
                break
    if not shapes:
        return None
    mean = np.mean(shapes, axis=0)
    return mean / max(float(mean.max()), 1e-12)


def _run_shape(e: RunExample, metric: Metric) -> np.ndarray | None:
    """One recorded run's curve on its timeline divided by its peak ([STEPS]; None without a
    positive peak), memoised on the run (runs are immutable)."""
    key = ("scaled_curve.shape", metric, STEPS)
    if key in e.facts:
        return e.facts[key]  # type: ignore[return-value]
    assert e.series is not None
    c = timeline_targets(e.series, (metric,), np.ones(1), STEPS, np.inf)[:, 0]
    top = np.nanmax(c) if np.any(np.isfinite(c)) else 0.0
    shape = np.nan_to_num(c / top, nan=0.0) if top > 0 else None
    if shape is not None:
        shape.flags.writeable = False
    e.facts[key] = shape
    return shape


def _forward_max(values: np.ndarray, ahead: int) -> np.ndarray:
    return forward_max(values, ahead)
