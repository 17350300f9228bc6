"""Reference forecasters the learned models must beat, and the cold-start fallback chain.

Why: every claim that the LSTM helps is measured against what users and existing tools already do:
repeat the last run, take the median of earlier peaks, scale with the input size, VPA's p90 x 1.15,
Autopilot's decayed percentile + margin, or trust the declared resources. They forecast from
``query.history`` alone, so they answer for any task with at least one earlier run.
``FallbackChain`` composes estimators for cold start (per-task -> global -> operator prior ->
declared) and logs which level answered.

These estimators never invent a metric: a metric without history is left out of the forecast, and
a query with nothing to go on raises ``NotFitted`` so that the chain moves to the next level.
"""

from __future__ import annotations

import importlib
import json
import logging
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Self

import numpy as np

from airflow_predictive.core.model.resources import Metric
from airflow_predictive.core.model.series import QUANTILES, DemandCurve, Forecast, UsageSeries
from airflow_predictive.core.profiler.estimators.base import Estimator, ForecastQuery, NotFitted, RunExample
from airflow_predictive.core.profiler.features import (
    clean_array,
    example_duration,
    example_peak,
    history_columns,
    history_durations,
    history_peaks,
    input_size,
    linear_fit,
    median,
    quantile,
)

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from pathlib import Path

log = logging.getLogger(__name__)

# With fewer earlier runs than this, spreads are widened toward these defaults (one run says little).
MIN_RUNS_FOR_SPREAD = 5
DEFAULT_SPREAD: dict[float, float] = {0.5: 1.0, 0.9: 1.2, 0.99: 1.5}
MAX_FLAT_STEPS = 512
CONFIG_FILE = "estimator.json"


# ----------------------------------------------------------------------------- small pure helpers


def weighted_quantile(values: np.ndarray, weights: np.ndarray, q: float) -> float:
    """The smallest value whose cumulative weight reaches ``q`` of the total."""
    order = np.argsort(values)
    v, w = values[order], weights[order]
    cum = np.cumsum(w)
    idx = int(np.searchsorted(cum, q * cum[-1] - 1e-12))
    return float(v[min(idx, v.size - 1)])


def spread(ratios: np.ndarray) -> dict[float, float]:
    """Multipliers on a central estimate for each quantile, from observed actual/central ratios.

    p50 stays 1; higher quantiles take the empirical ratio quantile (p99: at least the largest
    seen), never below 1, and are widened toward ``DEFAULT_SPREAD`` when history is short.
    """
    ratios = ratios[np.isfinite(ratios) & (ratios > 0)]
    out = {0.5: 1.0}
    n = ratios.size
    for q in QUANTILES:
        if q == 0.5:
            continue
        emp = quantile(ratios, q) if n else 1.0
        if q >= 0.99 and n:
            emp = max(emp, float(ratios.max()))
        weight = max(0, min(n, MIN_RUNS_FOR_SPREAD) - 1) / (MIN_RUNS_FOR_SPREAD - 1)
        out[q] = max(1.0, weight * emp + (1 - weight) * max(emp, DEFAULT_SPREAD[q]))
    return out


def duration_quantiles(history: Sequence[RunExample]) -> dict[float, float]:
    """Duration quantiles from earlier runs ({} when no earlier run has a duration)."""
    d = history_durations(history)
    if not d.size:
        return {}
    center = median(d)
    if center <= 0:
        return {}
    return {q: center * f for q, f in spread(d / center).items()}


def flat_forecast(
    name: str,
    levels: Mapping[Metric, Mapping[float, float]],
    duration: Mapping[float, float],
    step_s: float,
    *,
    peak_only: bool = True,
) -> Forecast:
    """Flat curves (one level per quantile) over the predicted p99 duration on a ``step_s`` grid.

    Without a known duration the curve has one step: ``DemandCurve.value_at`` holds the last step,
    so a flat one-step curve answers for any time.
    """
    if not levels:
        raise NotFitted(f"{name}: no metric could be forecast")
    horizon = max(duration.values()) if duration else step_s
    step = max(step_s, horizon / MAX_FLAT_STEPS)
    n = max(1, math.ceil(horizon / step))
    curves = {m: DemandCurve(m, step, {q: np.full(n, v) for q, v in qs.items()}) for m, qs in levels.items()}
    return Forecast(curves=curves, duration_s=dict(duration), estimator=name, peak_only=peak_only)


def _wanted(query: ForecastQuery) -> tuple[Metric, ...]:
    return tuple(dict.fromkeys(query.metrics))


def _require_history(name: str, query: ForecastQuery) -> None:
    if not query.history:
        raise NotFitted(f"{name}: task {query.key} has no earlier run")


@dataclass
class ConfiguredEstimator:
    """Save/load of estimators whose whole state is a few numbers (written as JSON, never pickle)."""

    name: str = "baseline"

    def _state(self) -> dict[str, Any]:
        return {k: v for k, v in vars(self).items() if not k.startswith("_")}

    def fit(self, examples: Sequence[RunExample]) -> Self:
        return self

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        (directory / CONFIG_FILE).write_text(json.dumps(self._state(), sort_keys=True))

    @classmethod
    def load(cls, directory: Path) -> Self:
        try:
            state = json.loads((directory / CONFIG_FILE).read_text())
            return cls(**state)
        except (OSError, ValueError, TypeError) as exc:
            raise NotFitted(f"cannot load {cls.__name__} from {directory}: {exc}") from exc


# ----------------------------------------------------------------------------- history baselines


@dataclass
class LastRunCurve(ConfiguredEstimator):
    """Repeat the most recent run's curve; p90/p99 scale it by how much peaks moved run to run."""

    name: str = "last_run"
    step_s: float = 2.0

    def predict(self, query: ForecastQuery) -> Forecast:
        _require_history(self.name, query)
        last = query.history[-1]
        duration = duration_quantiles(query.history)
        last_duration = example_duration(last)
        if last_duration is not None:
            duration[0.5] = last_duration
            duration = {q: max(v, last_duration) for q, v in duration.items()}
        curves: dict[Metric, DemandCurve] = {}
        flat: dict[Metric, dict[float, float]] = {}
        for metric in _wanted(query):
            peaks = history_peaks(query.history, metric)
            if not peaks.size:
                continue
            moves = peaks[1:] / peaks[:-1] if peaks.size > 1 else np.ones(0)
            factors = spread(moves[np.isfinite(moves)])
            arr = last.series.get(metric) if last.series is not None else None
            if arr is not None and last.series is not None and len(last.series) > 1:
                step = max(self.step_s, last.series.duration_s / 4096)
                if np.any(np.isfinite(clean_array(metric, arr))):
                    base = _resampled_clean(last.series, metric, step)
                    curves[metric] = DemandCurve(metric, step, {q: base * f for q, f in factors.items()})
                    continue
            peak = example_peak(last, metric)
            if peak is not None:
                flat[metric] = {q: peak * f for q, f in factors.items()}
        if curves and not flat:
            return Forecast(curves=curves, duration_s=duration, estimator=self.name)
        forecast = flat_forecast(self.name, flat, duration, self.step_s, peak_only=not curves)
        return Forecast(
            curves={**forecast.curves, **curves},
            duration_s=duration,
            estimator=self.name,
            peak_only=not curves,
        )


def _resampled_clean(series: UsageSeries, metric: Metric, step_s: float) -> np.ndarray:
    """The metric on a regular grid with implausible readings treated as gaps."""
    arr = series.values[metric]
    return UsageSeries(series.times, {metric: clean_array(metric, arr)}).resampled(step_s, metric)


@dataclass
class MedianPeak(ConfiguredEstimator):
    """Median of the task's earlier peaks; p90/p99 from how far earlier peaks strayed from it."""

    name: str = "median_peak"
    step_s: float = 2.0

    def predict(self, query: ForecastQuery) -> Forecast:
        _require_history(self.name, query)
        levels: dict[Metric, dict[float, float]] = {}
        for metric in _wanted(query):
            peaks = history_peaks(query.history, metric)
            if not peaks.size:
                continue
            center = median(peaks)
            ratios = peaks / center if center > 0 else np.ones(peaks.size)
            levels[metric] = {q: center * f for q, f in spread(ratios).items()}
        return flat_forecast(self.name, levels, duration_quantiles(query.history), self.step_s)


@dataclass
class LinearInputSize(ConfiguredEstimator):
    """Peak (and duration) linear in the input size; p90/p99 add the residual quantiles.

    Falls back to the median of earlier peaks for a metric when the input size is unknown for the
    query or when earlier runs do not span two distinct input sizes.
    """

    name: str = "linear_input"
    step_s: float = 2.0

    def predict(self, query: ForecastQuery) -> Forecast:
        _require_history(self.name, query)
        size = input_size(query.features)
        cols = history_columns(query.history)
        sizes = cols.sizes()
        levels: dict[Metric, dict[float, float]] = {}
        for metric in _wanted(query):
            peaks = cols.peaks(metric)
            if not np.any(np.isfinite(peaks)):
                continue
            fitted = linear_fit(sizes, peaks) if size is not None else None
            levels[metric] = _linear_levels(fitted, size, sizes, peaks)
        duration = duration_quantiles(query.history)
        durations = cols.durations()
        fitted_d = linear_fit(sizes, durations) if size is not None else None
        if fitted_d is not None and duration:
            duration = _linear_levels(fitted_d, size, sizes, durations)
        return flat_forecast(self.name, levels, duration, self.step_s)


def _linear_levels(
    fitted: tuple[float, float] | None, size: float | None, sizes: np.ndarray, y: np.ndarray
) -> dict[float, float]:
    finite = y[np.isfinite(y)]
    if fitted is None or size is None:
        center = median(finite)
        ratios = finite / center if center > 0 else np.ones(finite.size)
        return {q: center * f for q, f in spread(ratios).items()}
    a, b = fitted
    ok = np.isfinite(sizes) & np.isfinite(y)
    residuals = y[ok] - (a + b * sizes[ok])
    center = max(a + b * size, float(np.min(finite)) * 0.5, 0.0)
    out = {0.5: center}
    for q in QUANTILES:
        if q != 0.5:
            out[q] = center + max(0.0, quantile(residuals, q))
    if residuals.size < MIN_RUNS_FOR_SPREAD:  # two or three points fit any line: widen
        out = {q: max(v, center * DEFAULT_SPREAD[q]) for q, v in out.items()}
    return out


@dataclass
class VpaStyle(ConfiguredEstimator):
    """Kubernetes VPA's target: the p90 of earlier peaks x 1.15, one flat number for every quantile."""

    name: str = "vpa"
    percentile: float = 0.9
    margin: float = 0.15
    step_s: float = 2.0

    def predict(self, query: ForecastQuery) -> Forecast:
        _require_history(self.name, query)
        levels: dict[Metric, dict[float, float]] = {}
        for metric in _wanted(query):
            peaks = history_peaks(query.history, metric)
            if peaks.size:
                value = quantile(peaks, self.percentile) * (1 + self.margin)
                levels[metric] = dict.fromkeys(QUANTILES, value)
        return flat_forecast(self.name, levels, duration_quantiles(query.history), self.step_s)


@dataclass
class AutopilotStyle(ConfiguredEstimator):
    """Google Autopilot's moving window: exponentially decayed percentile of peaks + a margin.

    Half-life 12 h for CPU and 48 h for memory (ages from each run's start to the newest run's
    start; runs without a start are aged by position, ``half_life_runs`` per half-life), p95 for
    CPU and p98 for memory, +10%. One flat number for every quantile, as Autopilot allocates.
    """

    name: str = "autopilot"
    cpu_half_life_s: float = 12 * 3600.0
    memory_half_life_s: float = 48 * 3600.0
    half_life_runs: float = 10.0
    cpu_percentile: float = 0.95
    memory_percentile: float = 0.98
    margin: float = 0.10
    step_s: float = 2.0

    def predict(self, query: ForecastQuery) -> Forecast:
        _require_history(self.name, query)
        levels: dict[Metric, dict[float, float]] = {}
        for metric in _wanted(query):
            pairs = [(e, p) for e in query.history if (p := example_peak(e, metric)) is not None]
            if not pairs:
                continue
            ages = self._ages([e for e, _ in pairs], metric)
            weights = np.power(0.5, ages)
            pct = self.memory_percentile if metric is Metric.MEMORY_BYTES else self.cpu_percentile
            value = weighted_quantile(np.array([p for _, p in pairs]), weights, pct) * (1 + self.margin)
            levels[metric] = dict.fromkeys(QUANTILES, value)
        return flat_forecast(self.name, levels, duration_quantiles(query.history), self.step_s)

    def _ages(self, runs: Sequence[RunExample], metric: Metric) -> np.ndarray:
        """Age of each run in half-lives."""
        starts = [e.record.start for e in runs]
        if all(s is not None for s in starts):
            newest = max(s for s in starts if s is not None)
            half = self.memory_half_life_s if metric is Metric.MEMORY_BYTES else self.cpu_half_life_s
            return np.array([(newest - s).total_seconds() / half for s in starts if s is not None])
        return (len(runs) - 1 - np.arange(len(runs))) / self.half_life_runs


@dataclass
class DeclaredResources(ConfiguredEstimator):
    """What the DAG author asked for, flat, for every quantile (the last resort of the chain)."""

    name: str = "declared"
    step_s: float = 2.0

    def predict(self, query: ForecastQuery) -> Forecast:
        levels = {
            m: dict.fromkeys(QUANTILES, v)
            for m in _wanted(query)
            if (v := query.declared.get(m)) is not None and v > 0
        }
        if not levels:
            raise NotFitted(f"{self.name}: task {query.key} declares none of the requested metrics")
        return flat_forecast(self.name, levels, duration_quantiles(query.history), self.step_s)


@dataclass
class OperatorPrior(ConfiguredEstimator):
    """Peaks and durations of all runs of the same operator type (cold start for a new task)."""

    name: str = "operator_prior"
    step_s: float = 2.0
    min_runs: int = 3
    priors: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)

    def fit(self, examples: Sequence[RunExample]) -> Self:
        by_op: dict[str, list[RunExample]] = {}
        for e in examples:
            if e.record.operator:
                by_op.setdefault(e.record.operator, []).append(e)
        self.priors = {}
        for op, runs in by_op.items():
            if len(runs) < self.min_runs:
                continue
            entry: dict[str, dict[str, float]] = {}
            for metric in Metric:
                peaks = history_peaks(runs, metric)
                if peaks.size:
                    entry[metric.value] = {str(q): float(np.quantile(peaks, q)) for q in QUANTILES}
            d = history_durations(runs)
            if d.size:
                entry["duration_s"] = {str(q): float(np.quantile(d, q)) for q in QUANTILES}
            self.priors[op] = entry
        return self

    def predict(self, query: ForecastQuery) -> Forecast:
        entry = self.priors.get(query.operator or "")
        if entry is None:
            raise NotFitted(f"{self.name}: no prior for operator {query.operator!r}")
        levels = {
            m: {float(q): v for q, v in entry[m.value].items()} for m in _wanted(query) if m.value in entry
        }
        duration = {float(q): v for q, v in entry.get("duration_s", {}).items()}
        return flat_forecast(self.name, levels, duration, self.step_s)


# ----------------------------------------------------------------------------- cold-start chain

_ESTIMATOR_PACKAGE = "airflow_predictive.core.profiler.estimators."


@dataclass(frozen=True)
class ChainAnswer:
    """Which level of a chain answered the last query, and why the levels above it did not."""

    level: str
    skipped: tuple[tuple[str, str], ...]


class FallbackChain:
    """Ask each estimator in turn; the first that answers wins (and is logged).

    A level that cannot answer raises ``NotFitted`` (unknown task, no history), ``ImportError``
    (its library is not installed) or any ``Exception`` from a broken model: the chain logs one line
    and asks the next level. ``fit`` fits every level; a level that fails to fit is dropped with
    one log line. The forecast keeps the answering estimator's name.
    """

    def __init__(self, levels: Sequence[Estimator], name: str = "chain") -> None:
        if not levels:
            raise ValueError("a fallback chain needs at least one level")
        self.name = name
        self.levels: list[Estimator] = list(levels)
        self.last_answer: ChainAnswer | None = None

    def fit(self, examples: Sequence[RunExample]) -> Self:
        kept: list[Estimator] = []
        for level in self.levels:
            try:
                kept.append(level.fit(examples))
            except Exception as exc:  # an optional library missing, or a model that cannot train
                log.warning("%s: level %s dropped, fit failed: %s", self.name, level.name, exc)
        if not kept:
            raise NotFitted(f"{self.name}: no level could be fitted")
        self.levels = kept
        return self

    def predict(self, query: ForecastQuery) -> Forecast:
        skipped: list[tuple[str, str]] = []
        for level in self.levels:
            try:
                forecast = level.predict(query)
            except Exception as exc:
                skipped.append((level.name, f"{type(exc).__name__}: {exc}"))
                continue
            self.last_answer = ChainAnswer(level.name, tuple(skipped))
            if skipped:
                log.info(
                    "%s: %s answered for %s after %s",
                    self.name,
                    level.name,
                    query.key,
                    "; ".join(f"{n} ({why})" for n, why in skipped),
                )
            return forecast
        reasons = "; ".join(f"{n} ({why})" for n, why in skipped)
        raise NotFitted(f"{self.name}: no level could forecast {query.key}: {reasons}")

    def save(self, directory: Path) -> None:
        entries = save_parts(directory, self.levels, "level")
        (directory / CONFIG_FILE).write_text(json.dumps({"name": self.name, "levels": entries}))

    @classmethod
    def load(cls, directory: Path) -> Self:
        try:
            state = json.loads((directory / CONFIG_FILE).read_text())
            levels = [_estimator_class(e["class"]).load(directory / e["dir"]) for e in state["levels"]]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise NotFitted(f"cannot load chain from {directory}: {exc}") from exc
        return cls(levels, name=state["name"])


def save_parts(directory: Path, parts: Sequence[Estimator], prefix: str) -> list[dict[str, str]]:
    """Save each estimator of a composite (a chain's levels, a combination's members) in its own
    numbered folder under ``directory``; the entries name each folder and its class, for the
    composite's JSON (loaded back through ``_estimator_class``: never pickle)."""
    directory.mkdir(parents=True, exist_ok=True)
    entries = []
    for i, part in enumerate(parts):
        cls = type(part)
        entries.append({"dir": f"{prefix}_{i}", "class": f"{cls.__module__}:{cls.__qualname__}"})
        part.save(directory / f"{prefix}_{i}")
    return entries


def _estimator_class(path: str) -> Any:
    """Resolve ``module:Class`` only inside this package (a saved file never names arbitrary code)."""
    module, _, qualname = path.partition(":")
    if not module.startswith(_ESTIMATOR_PACKAGE) or not qualname.isidentifier():
        raise ValueError(f"refusing to load estimator class {path!r}")
    return getattr(importlib.import_module(module), qualname)
