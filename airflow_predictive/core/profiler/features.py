"""Numbers every forecaster reads from a run: cleaned peaks, durations, input size, feature vectors.

Why: baselines, statsmodels and the LSTM must agree on what "the peak of an earlier run" or "the
input size" means, and on how bad readings (NaN, negative, absurd values) are dropped. This module
is the one place that decides. It must never invent a value: what is unknown stays NaN (with a
missing flag in feature vectors) so that callers can fall back explicitly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from airflow_predictive.core.model.resources import FORECAST_METRICS, Metric
from airflow_predictive.core.model.runs import FeatureValue, TaskKey
from airflow_predictive.core.profiler.estimators.base import ForecastQuery, RunExample
from airflow_predictive.core.profiler.run_features import (
    INPUT_SIZE_KEYS,
    PARAM_PREFIX,
    SIZE_SUFFIXES,
    UPSTREAM_OUTPUT_KEYS,
    declared_input_size,
    input_size,
    numeric_feature,
    param_input_bytes,
    primitive_params,
    run_features,
)

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from datetime import datetime

__all__ = [  # the per-run feature extraction lives in run_features (no numpy: the listener imports it)
    "INPUT_SIZE_KEYS",
    "PARAM_PREFIX",
    "SIZE_SUFFIXES",
    "UPSTREAM_OUTPUT_KEYS",
    "declared_input_size",
    "input_size",
    "numeric_feature",
    "param_input_bytes",
    "primitive_params",
    "run_features",
]


# Readings above these are treated as broken sensors, not as usage (1 PiB of memory, 100k cores ...).
_ABSURD: dict[Metric, float] = {
    Metric.CPU_CORES: 1e5,
    Metric.MEMORY_BYTES: 2.0**50,
    Metric.DISK_READ_BPS: 1e12,
    Metric.DISK_WRITE_BPS: 1e12,
    Metric.NET_RX_BPS: 1e12,
    Metric.NET_TX_BPS: 1e12,
    Metric.GPU_UTIL: 1e3,
    Metric.GPU_MEMORY_BYTES: 2.0**50,
}
_ABSURD_DURATION_S = 366 * 86400.0


def plausible(metric: Metric, value: float | None) -> float | None:
    """The value when it can describe real usage of ``metric``, else None (NaN, < 0, absurd)."""
    if value is None:
        return None
    v = float(value)
    if not math.isfinite(v) or v < 0 or v > _ABSURD[metric]:
        return None
    return v


def clean_array(metric: Metric, values: np.ndarray) -> np.ndarray:
    """A copy with NaN where a reading is not plausible (negative, infinite, absurd)."""
    out = np.array(values, dtype=float, copy=True)
    bad = ~np.isfinite(out) | (out < 0) | (out > _ABSURD[metric])
    out[bad] = np.nan
    return out


# Peaks, durations and input sizes of finished runs are memoised on the run (``RunExample.facts``):
# runs are immutable, and forecasting 100 tasks with 50 earlier runs each would otherwise rescan
# 5,000 series (and re-parse 5,000 feature maps) per call.
_DURATION = "duration"
_SIZE = "input_size"


def example_peak(example: RunExample, metric: Metric) -> float | None:
    """Peak of one finished run: from its series when it has one, else from its record."""
    facts = example.facts
    try:
        return facts[metric]  # type: ignore[return-value]
    except KeyError:
        value = facts[metric] = _example_peak(example, metric)
        return value


AT_LIMIT = 0.995  # a memory peak within 0.5 % of the declared limit reached it


def reached_declared_memory(history: Sequence[RunExample]) -> bool:
    """Whether a run of ``history`` reached its declared memory limit (its peak at least
    ``AT_LIMIT`` x the limit): such a run took all the container allowed, so its peak is a lower
    bound of its need, not a level (``planner.held_at_declared`` uses it)."""
    for example in history:
        declared = example.record.declared.memory_bytes
        if not declared:
            continue
        peak = example_peak(example, Metric.MEMORY_BYTES)
        if peak is not None and math.isfinite(peak) and peak >= AT_LIMIT * declared:
            return True
    return False


def _example_peak(example: RunExample, metric: Metric) -> float | None:
    if example.series is not None:
        arr = example.series.get(metric)
        if arr is not None:
            clean = clean_array(metric, arr)
            if np.any(np.isfinite(clean)):
                return float(np.nanmax(clean))
    return plausible(metric, example.record.peak.get(metric))


def example_duration(example: RunExample) -> float | None:
    """Duration in seconds: the record's start/end, else the series span; None when unknown or absurd."""
    facts = example.facts
    try:
        return facts[_DURATION]  # type: ignore[return-value]
    except KeyError:
        value = facts[_DURATION] = _example_duration(example)
        return value


def _example_duration(example: RunExample) -> float | None:
    d = example.record.duration_s
    if (d is None or d <= 0) and example.series is not None and len(example.series) > 1:
        d = example.series.duration_s
    if d is None or not math.isfinite(d) or d <= 0 or d > _ABSURD_DURATION_S:
        return None
    return float(d)


def example_input_size(example: RunExample) -> float | None:
    """``input_size`` of the run's recorded features (memoised on the run)."""
    facts = example.facts
    try:
        return facts[_SIZE]  # type: ignore[return-value]
    except KeyError:
        value = facts[_SIZE] = input_size(example.record.features)
        return value


class HistoryColumns:
    """Per-run numbers of one history as read-only arrays, oldest first, NaN where unknown.

    Built once per history object (``history_columns``) and shared by every estimator asked about
    it: baselines, the scaled curve and the LSTM's encoder read the same columns instead of each
    walking the runs again.
    """

    __slots__ = ("_cache", "history")

    def __init__(self, history: Sequence[RunExample]) -> None:
        self.history = history
        self._cache: dict[object, np.ndarray] = {}

    def _column(self, key: object, values: list[float | None]) -> np.ndarray:
        arr = np.array([math.nan if v is None else v for v in values], dtype=float)
        arr.flags.writeable = False
        self._cache[key] = arr
        return arr

    def peaks(self, metric: Metric) -> np.ndarray:
        got = self._cache.get(metric)
        return (
            got if got is not None else self._column(metric, [example_peak(e, metric) for e in self.history])
        )

    def durations(self) -> np.ndarray:
        got = self._cache.get(_DURATION)
        return (
            got if got is not None else self._column(_DURATION, [example_duration(e) for e in self.history])
        )

    def sizes(self) -> np.ndarray:
        got = self._cache.get(_SIZE)
        return got if got is not None else self._column(_SIZE, [example_input_size(e) for e in self.history])

    def sizes_known(self) -> np.ndarray:
        """``sizes`` with 0 as unknown too (the ``input_size(...) or nan`` of the scaled curve)."""
        got = self._cache.get("sizes_known")
        if got is None:
            sizes = self.sizes()
            got = np.where(sizes == 0, math.nan, sizes)
            got.flags.writeable = False
            self._cache["sizes_known"] = got
        return got


# The columns of the last histories asked about, by object identity (the entry holds the history,
# so its id cannot be reused while cached; a history whose length or newest run changed is rebuilt).
_COLUMNS: dict[int, tuple[Sequence[RunExample], int, RunExample | None, HistoryColumns]] = {}
_COLUMNS_KEPT = 64


def history_columns(history: Sequence[RunExample]) -> HistoryColumns:
    n = len(history)
    last = history[-1] if n else None
    hit = _COLUMNS.get(id(history))
    if hit is not None and hit[0] is history and hit[1] == n and hit[2] is last:
        return hit[3]
    cols = HistoryColumns(history)
    if len(_COLUMNS) >= _COLUMNS_KEPT:
        _COLUMNS.pop(next(iter(_COLUMNS)), None)
    _COLUMNS[id(history)] = (history, n, last, cols)
    return cols


def history_peaks(history: Sequence[RunExample], metric: Metric) -> np.ndarray:
    """Plausible peaks of ``metric`` over the history, oldest first (runs without one are left out)."""
    peaks = history_columns(history).peaks(metric)
    return peaks[~np.isnan(peaks)]


def history_durations(history: Sequence[RunExample]) -> np.ndarray:
    durations = history_columns(history).durations()
    return durations[~np.isnan(durations)]


def quantile(values: np.ndarray, q: float) -> float:
    """``np.quantile(values, q)`` (linear method), bit for bit, at a fraction of its overhead.

    Forecasts ask for a few quantiles of short arrays thousands of times (spreads, residuals);
    np.quantile's generic machinery costs ~0.1 ms a call there. Non-finite input, or an empty
    array, goes to numpy itself (same result, same error).
    """
    n = values.size
    if n == 0 or not (0.0 <= q <= 1.0) or not np.isfinite(values).all():
        return float(np.quantile(values, q))
    ordered = np.sort(values, axis=None).tolist()
    virtual = (n - 1) * q
    if virtual >= n - 1:
        return float(ordered[-1])
    i = math.floor(virtual)
    a, b, t = ordered[i], ordered[i + 1], virtual - i
    diff = b - a
    return float(b - diff * (1 - t) if t >= 0.5 else a + diff * t)


def median(values: np.ndarray) -> float:
    """``np.median(values)``, bit for bit (see ``quantile``)."""
    n = values.size
    if n == 0 or not np.isfinite(values).all():
        return float(np.median(values))
    ordered = np.sort(values, axis=None).tolist()
    half = n // 2
    return float(ordered[half] if n % 2 else (ordered[half - 1] + ordered[half]) / 2)


def forward_max(values: np.ndarray, ahead: int) -> np.ndarray:
    """``out[i] = max(values[i : i + ahead + 1])`` (the window clipped at the end), in log2(ahead)
    array operations instead of one per step (curves look ahead by up to their whole length)."""
    if ahead <= 0:
        return values
    window = ahead + 1
    out = np.array(values, dtype=float, copy=True)
    span = 1
    while span * 2 <= window and span < out.size:
        out[:-span] = np.maximum(out[:-span], out[span:])
        span *= 2
    rest = window - span
    if 0 < rest < out.size:
        out[:-rest] = np.maximum(out[:-rest], out[rest:])
    return out


def linear_fit(x: np.ndarray, y: np.ndarray) -> tuple[float, float] | None:
    """Least-squares ``y = a + b*x`` over the finite pairs (None with fewer than two distinct x)."""
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    if x.size < 2 or np.ptp(x) <= 0:
        return None
    dx = x - x.mean()
    b = float(dx @ (y - y.mean()) / (dx @ dx))
    return float(y.mean() - b * x.mean()), b


CAP_GAIN = 0.9  # a capped fit must leave at most this share of the straight line's squared error
CAP_MIN_RUNS = 3  # runs needed on each side of the knot


def capped_fit(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float] | None:
    """Least-squares ``y = a + b*min(x, knot)``: linear in the input size up to a knot, flat above
    it, as (a, b, knot); knot = inf (the straight line of :func:`linear_fit`) unless a knot with at
    least ``CAP_MIN_RUNS`` runs on each side, a rising line below it and a squared error at most
    ``CAP_GAIN`` x the straight line's fits better. Why: a tool that sizes its buffers to the input
    up to a configured maximum (bwa's batch, a JVM's ``-Xmx``) plateaus, and the straight line
    through both regimes misses the small runs and extrapolates the large ones far above the cap
    (kseg-eager's bwa and markduplicates made most of the memory p90 peak error)."""
    line = linear_fit(x, y)
    if line is None:
        return None
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    order = np.sort(np.unique(x))
    if order.size < 2 * CAP_MIN_RUNS:
        return (*line, math.inf)
    knots = order[CAP_MIN_RUNS - 1 : order.size - CAP_MIN_RUNS]  # [K], runs on both sides
    if knots.size > 24:
        knots = knots[np.linspace(0, knots.size - 1, 24).round().astype(int)]
    xs = np.minimum(x[None, :], knots[:, None])  # [K, n]
    dx = xs - xs.mean(axis=1, keepdims=True)
    dy = y - y.mean()
    var = np.einsum("kn,kn->k", dx, dx)
    b = np.where(var > 0, (dx @ dy) / np.where(var > 0, var, 1.0), 0.0)
    sse = np.einsum("kn,kn->k", dy[None, :] - b[:, None] * dx, dy[None, :] - b[:, None] * dx)
    line_sse = float(np.sum((y - line[0] - line[1] * x) ** 2))
    best = int(np.argmin(np.where(b > 0, sse, np.inf)))
    if not b[best] > 0 or not sse[best] <= CAP_GAIN * line_sse:
        return (*line, math.inf)
    a = float(y.mean() - b[best] * xs[best].mean())
    return a, float(b[best]), float(knots[best])


# ----------------------------------------------------------------------------- history summaries


@dataclass(frozen=True)
class HistorySummary:
    """What the earlier runs of a task say about the next one (NaN = not known).

    peak_median / peak_last / peak_max / peak_linear: per metric, in the metric's unit
    (peak_linear: the linear-in-input-size prediction for this run's input size).
    """

    n_runs: int
    peak_median: Mapping[Metric, float]
    peak_last: Mapping[Metric, float]
    peak_max: Mapping[Metric, float]
    peak_linear: Mapping[Metric, float]
    duration_median: float
    duration_last: float
    duration_linear: float
    input_ratio: float  # this run's input size / median earlier input size


def _nan_if_none(value: float | None) -> float:
    return math.nan if value is None else float(value)


def summarise_history(
    history: Sequence[RunExample], features: Mapping[str, FeatureValue], metrics: Sequence[Metric]
) -> HistorySummary:
    size = input_size(features)
    cols = history_columns(history)
    sizes = cols.sizes()
    known_sizes = sizes[~np.isnan(sizes)]
    median_size = median(known_sizes) if known_sizes.size else math.nan
    med: dict[Metric, float] = {}
    last: dict[Metric, float] = {}
    top: dict[Metric, float] = {}
    lin: dict[Metric, float] = {}
    for metric in metrics:
        peaks = cols.peaks(metric)
        finite = peaks[np.isfinite(peaks)]
        med[metric] = median(finite) if finite.size else math.nan
        last[metric] = float(finite[-1]) if finite.size else math.nan
        top[metric] = float(finite.max()) if finite.size else math.nan
        fit = linear_fit(sizes, peaks) if size is not None else None
        lin[metric] = max(fit[0] + fit[1] * size, 0.0) if fit is not None and size is not None else math.nan
    durations = cols.durations()
    finite_d = durations[np.isfinite(durations)]
    fit_d = linear_fit(sizes, durations) if size is not None else None
    return HistorySummary(
        n_runs=len(history),
        peak_median=med,
        peak_last=last,
        peak_max=top,
        peak_linear=lin,
        duration_median=median(finite_d) if finite_d.size else math.nan,
        duration_last=float(finite_d[-1]) if finite_d.size else math.nan,
        duration_linear=(
            max(fit_d[0] + fit_d[1] * size, 0.0) if fit_d is not None and size is not None else math.nan
        ),
        input_ratio=(
            size / median_size
            if size is not None and math.isfinite(median_size) and median_size > 0
            else math.nan
        ),
    )


def query_for_example(example: RunExample, history: Sequence[RunExample]) -> ForecastQuery:
    """The query that would have been asked before ``example`` started, given its earlier runs."""
    rec = example.record
    return ForecastQuery(
        key=rec.key,
        features=rec.features,
        declared=rec.declared,
        operator=rec.operator,
        history=tuple(history),
        metrics=FORECAST_METRICS,
        start=rec.start,
        try_number=rec.identity.try_number,
    )


# ----------------------------------------------------------------------------- feature encoder

UNKNOWN_ID = 0  # vocabulary id of a task or operator never seen in training
_RATIO_CLIP = 50.0


def _log_ratio(a: float, b: float) -> float:
    """log(a / b), 0 when either side is unknown or not positive (callers add a missing flag)."""
    if not (math.isfinite(a) and math.isfinite(b)) or a <= 0 or b <= 0:
        return 0.0
    bound = math.log(_RATIO_CLIP)
    return min(max(math.log(a / b), -bound), bound)


def _flag(value: float) -> float:
    return 0.0 if math.isfinite(value) and value > 0 else 1.0


MIN_RUNS_FOR_LINEAR = 5


def reference(median: float, linear: float, n_runs: int) -> float:
    """The history's best single guess: linear in input size when it is trustworthy, else the median.

    Trustworthy = at least ``MIN_RUNS_FOR_LINEAR`` earlier runs and within 4x of the median (a
    line through a few scattered points extrapolates wildly).
    """
    if (
        n_runs >= MIN_RUNS_FOR_LINEAR
        and math.isfinite(linear)
        and math.isfinite(median)
        and median / 4 <= linear <= median * 4
    ):
        return linear
    return median


def _finite_number(v: FeatureValue) -> float | None:
    """A finite number (negative allowed), or None for text, bools, NaN and missing values."""
    if v is None or isinstance(v, bool | str):
        return None
    f = float(v)
    return f if math.isfinite(f) else None


def _signed_log(v: float) -> float:
    return math.copysign(math.log1p(abs(v)), v)


@dataclass(frozen=True)
class EncodedQuery:
    """One query as numbers: static features, vocabulary ids and the scales used to normalise.

    scales: per model metric, the divisor that makes this task's values O(1): the history's
    reference peak (linear in input size or median, see ``reference``), else the declared value,
    else the training set's median peak. A model predicting 1.0 reproduces that baseline.
    """

    static: np.ndarray  # [features]
    task_id: int
    operator_id: int
    scales: np.ndarray  # [dims]
    duration_scale: float
    summary: HistorySummary


@dataclass
class FeatureEncoder:
    """Turns queries into fixed-length vectors; its fitted state is plain JSON.

    metrics: the model's dimensions, in output order.
    numeric_keys: run features used as numbers (signed log, standardised; missing -> 0 + flag).
    tasks / operators: vocabularies (id 0 = unknown).
    """

    metrics: tuple[Metric, ...]
    numeric_keys: tuple[str, ...] = ()
    numeric_mean: tuple[float, ...] = ()
    numeric_std: tuple[float, ...] = ()
    tasks: dict[str, int] = field(default_factory=dict)
    operators: dict[str, int] = field(default_factory=dict)
    global_scale: dict[str, float] = field(default_factory=dict)
    global_duration: float = 60.0

    @classmethod
    def fit(
        cls, examples: Sequence[RunExample], metrics: Sequence[Metric], *, max_numeric: int = 16
    ) -> FeatureEncoder:
        counts: dict[str, int] = {}
        values: dict[str, list[float]] = {}
        for e in examples:
            for k, v in e.record.features.items():
                num = _finite_number(v)
                if num is not None:
                    counts[k] = counts.get(k, 0) + 1
                    values.setdefault(k, []).append(_signed_log(num))
        min_count = max(1, int(0.05 * len(examples)))
        always = [k for k in (*INPUT_SIZE_KEYS, *UPSTREAM_OUTPUT_KEYS) if k in counts]
        frequent = [
            k for k, c in sorted(counts.items(), key=lambda kv: -kv[1]) if c >= min_count and k not in always
        ]
        keys = sorted([*always, *frequent][:max_numeric])
        means = tuple(float(np.mean(values[k])) for k in keys)
        stds = tuple(max(float(np.std(values[k])), 1e-3) for k in keys)
        tasks = {t: i + 1 for i, t in enumerate(sorted({str(e.key) for e in examples}))}
        ops = {
            o: i + 1 for i, o in enumerate(sorted({e.record.operator for e in examples if e.record.operator}))
        }
        scale: dict[str, float] = {}
        for m in metrics:
            peaks = history_peaks(examples, m)
            scale[m.value] = float(np.median(peaks)) if peaks.size and np.median(peaks) > 0 else 1.0
        durations = history_durations(examples)
        return cls(
            metrics=tuple(metrics),
            numeric_keys=tuple(keys),
            numeric_mean=means,
            numeric_std=stds,
            tasks=tasks,
            operators=ops,
            global_scale=scale,
            global_duration=float(np.median(durations)) if durations.size else 60.0,
        )

    @property
    def n_static(self) -> int:
        return len(self.encode(ForecastQuery(key=TaskKey("_", "_"))).static)

    def task_id(self, key: TaskKey) -> int:
        return self.tasks.get(str(key), UNKNOWN_ID)

    def encode(self, query: ForecastQuery) -> EncodedQuery:
        s = summarise_history(query.history, query.features, self.metrics)
        out: list[float] = []
        scales = []
        for m in self.metrics:
            g = self.global_scale.get(m.value, 1.0)
            declared = _nan_if_none(query.declared.get(m))
            hist = reference(s.peak_median[m], s.peak_linear[m], s.n_runs)
            if math.isfinite(hist) and hist > 0:
                scale, source = hist, (1.0, 0.0, 0.0)
            elif math.isfinite(declared) and declared > 0:
                scale, source = declared, (0.0, 1.0, 0.0)
            else:
                scale, source = g, (0.0, 0.0, 1.0)
            scales.append(scale)
            out += [_log_ratio(scale, g), *source]
            for v in (s.peak_last[m], s.peak_max[m], s.peak_linear[m], declared):
                out += [_log_ratio(v, scale), _flag(v)]
        dref = reference(s.duration_median, s.duration_linear, s.n_runs)
        dscale = dref if math.isfinite(dref) and dref > 0 else self.global_duration
        out += [_log_ratio(dscale, self.global_duration), _flag(s.duration_median)]
        for v in (s.duration_last, s.duration_linear):
            out += [_log_ratio(v, dscale), _flag(v)]
        out += [math.log1p(s.n_runs), _log_ratio(s.input_ratio, 1.0), _flag(s.input_ratio)]
        out += [math.log(max(1, query.try_number))]
        out += _time_features(query.start)
        for k, mean, std in zip(self.numeric_keys, self.numeric_mean, self.numeric_std, strict=True):
            num = _finite_number(query.features.get(k))
            out += [0.0, 1.0] if num is None else [(_signed_log(num) - mean) / std, 0.0]
        static = np.clip(np.array(out, dtype=np.float32), -10.0, 10.0)
        return EncodedQuery(
            static=static,
            task_id=self.task_id(query.key),
            operator_id=self.operators.get(query.operator or "", UNKNOWN_ID),
            scales=np.array(scales, dtype=float),
            duration_scale=float(dscale),
            summary=s,
        )

    def to_json(self) -> dict[str, object]:
        return {
            "metrics": [m.value for m in self.metrics],
            "numeric_keys": list(self.numeric_keys),
            "numeric_mean": list(self.numeric_mean),
            "numeric_std": list(self.numeric_std),
            "tasks": self.tasks,
            "operators": self.operators,
            "global_scale": self.global_scale,
            "global_duration": self.global_duration,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> FeatureEncoder:
        return cls(
            metrics=tuple(Metric(m) for m in data["metrics"]),
            numeric_keys=tuple(str(k) for k in data["numeric_keys"]),
            numeric_mean=tuple(float(v) for v in data["numeric_mean"]),
            numeric_std=tuple(float(v) for v in data["numeric_std"]),
            tasks={str(k): int(v) for k, v in data["tasks"].items()},
            operators={str(k): int(v) for k, v in data["operators"].items()},
            global_scale={str(k): float(v) for k, v in data["global_scale"].items()},
            global_duration=float(data["global_duration"]),
        )


def _time_features(start: datetime | None) -> list[float]:
    """Hour of day and day of week on the unit circle (+ a missing flag)."""
    if start is None:
        return [0.0, 0.0, 0.0, 0.0, 1.0]
    hour = (start.hour + start.minute / 60.0) / 24.0 * 2 * math.pi
    dow = (start.weekday() + hour / (2 * math.pi)) / 7.0 * 2 * math.pi
    return [math.sin(hour), math.cos(hour), math.sin(dow), math.cos(dow), 0.0]
