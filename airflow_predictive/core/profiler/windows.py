"""Numpy windowing for sequence models: runs -> fixed-shape, normalised training and query arrays.

Why: runs last from seconds to hours and use bytes or cores. A network needs fixed shapes and values
near 1, so every run's curve is cut into ``horizon_steps`` segments of its own timeline (segment i
covers ``[i, i+1) * duration / horizon_steps``; the value is the maximum used in it) and divided by
the task's scale (median earlier peak, else declared, else the training set's median; see
``FeatureEncoder``). The observed prefix of a running try (shadow run or the first minutes of a live
run) becomes a short sequence of ``prefix_steps`` bins over the observed span plus a few numbers
(elapsed time, level so far). Training draws several prefixes per run so that one model serves
both "forecast at start" and "re-forecast mid-flight".

This module never imports TensorFlow: it returns plain arrays (shapes annotated inline).
"""

from __future__ import annotations

import math
import weakref
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from airflow_predictive.core.model.series import UsageSeries
from airflow_predictive.core.profiler.features import (
    EncodedQuery,
    FeatureEncoder,
    clean_array,
    example_duration,
    example_peak,
    median,
    query_for_example,
)

PREFIX_ANCHORS: tuple[str, ...] = ("level", "implied")

if TYPE_CHECKING:
    from collections.abc import Sequence

    from airflow_predictive.core.model.resources import Metric
    from airflow_predictive.core.profiler.estimators.base import ForecastQuery, RunExample


@dataclass(frozen=True)
class WindowConfig:
    """Shapes of the arrays fed to sequence models.

    horizon_steps: segments of a run's timeline the curve is forecast on.
    prefix_steps: bins the observed prefix is summarised into.
    prefix_fractions: for each training run, one extra window per fraction with that share of
        the run observed (plus one window with nothing observed).
    max_history: earlier runs summarised per query (the newest ones).
    target_clip: normalised values above this are clipped (a 50x jump is a broken sensor or a
        different task; it must not dominate the loss).
    prefix_rescale: with a prefix, multiply the scale by the ``prefix_anchor`` ratio (see
        ``prefix_ratios``) to this power (1: a try whose prefix implies a 30% higher peak is
        forecast from a 30% higher anchor; 0: off). Both ratios are also features (computed before
        rescaling), so the network learns how far to trust them.
    prefix_anchor: "level" or "implied" (which ratio re-anchors the scale).
    """

    horizon_steps: int = 32
    prefix_steps: int = 16
    prefix_fractions: tuple[float, ...] = (0.1, 0.2, 0.4)
    max_history: int = 50
    target_clip: float = 20.0
    prefix_rescale: float = 0.0
    prefix_anchor: str = "implied"

    def __post_init__(self) -> None:
        if self.prefix_anchor not in PREFIX_ANCHORS:
            raise ValueError(f"prefix_anchor must be one of {PREFIX_ANCHORS}, got {self.prefix_anchor!r}")

    def prefix_extra_size(self, dims: int) -> int:
        return 3 + 4 * dims


@dataclass(frozen=True)
class Windows:
    """A batch of windows. Targets are NaN where unknown (query batches, metrics never measured)."""

    static: np.ndarray  # [batch, features]
    task_ids: np.ndarray  # [batch] int32
    operator_ids: np.ndarray  # [batch] int32
    prefix: np.ndarray  # [batch, prefix_steps, dims + 1] (last channel: 1 = bin observed)
    prefix_extra: np.ndarray  # [batch, 3 + 4 * dims]
    curve: np.ndarray  # [batch, horizon_steps, dims] target / scale
    log_duration: np.ndarray  # [batch] log(duration / duration_scale)
    scales: np.ndarray  # [batch, dims]
    duration_scales: np.ndarray  # [batch]
    elapsed_s: np.ndarray  # [batch] seconds observed (0 without prefix)
    recency: np.ndarray  # [batch] the run's place in its task's history: 0 oldest .. 1 newest

    def __len__(self) -> int:
        return int(self.static.shape[0])

    def inputs(self) -> dict[str, np.ndarray]:
        """The network's named inputs."""
        return {
            "static": self.static,
            "task_id": self.task_ids,
            "operator_id": self.operator_ids,
            "prefix": self.prefix,
            "prefix_extra": self.prefix_extra,
        }

    def select(self, mask: np.ndarray) -> Windows:
        return Windows(**{k: getattr(self, k)[mask] for k in self.__dataclass_fields__})


def timeline_targets(
    series: UsageSeries, metrics: Sequence[Metric], scales: np.ndarray, steps: int, clip: float
) -> np.ndarray:
    """The run's curve on its own timeline: max per segment / scale; gaps held; NaN if never measured."""
    out = np.full((steps, len(metrics)), np.nan)  # [time, dims]
    if len(series) == 0:
        return out
    t = series.times - series.times[0]
    span = max(float(t[-1]), 1e-9)
    idx = np.minimum((t / span * steps).astype(int), steps - 1)
    for d, metric in enumerate(metrics):
        arr = series.get(metric)
        if arr is None:
            continue
        clean = clean_array(metric, arr)
        ok = np.isfinite(clean)
        if not ok.any():
            continue
        col = np.full(steps, np.nan)
        np.fmax.at(col, idx[ok], clean[ok])
        out[:, d] = _hold(col) / max(scales[d], 1e-12)
    return np.minimum(out, clip)


def _hold(col: np.ndarray) -> np.ndarray:
    """Fill NaN with the last known value (leading NaN with the first known one)."""
    ok = np.isfinite(col)
    if not ok.any():
        return col.copy()
    idx = np.where(ok, np.arange(col.size), 0)
    np.maximum.accumulate(idx, out=idx)
    out = col[idx]
    out[: int(np.argmax(ok))] = col[int(np.argmax(ok))]
    return out


# Normalised shapes of finished runs, per run object (immutable; weak keys keep nothing alive).
_SHAPES: weakref.WeakKeyDictionary[RunExample, dict[tuple[tuple[Metric, ...], int], np.ndarray]] = (
    weakref.WeakKeyDictionary()
)


def _run_shape(example: RunExample, metrics: tuple[Metric, ...], steps: int) -> np.ndarray:
    """One run's curve on its timeline divided by its own peak: [time, dims]."""
    cached = _SHAPES.setdefault(example, {})
    key = (metrics, steps)
    if key not in cached:
        assert example.series is not None
        curve = timeline_targets(example.series, metrics, np.ones(len(metrics)), steps, np.inf)
        top = np.where(np.isfinite(curve), curve, -np.inf).max(axis=0)  # [dims]
        with np.errstate(divide="ignore", invalid="ignore"):
            cached[key] = np.where(top > 0, curve / top, np.nan)
    return cached[key]


def history_shape(
    history: Sequence[RunExample], metrics: Sequence[Metric], steps: int, runs: int = 5
) -> np.ndarray:
    """The task's typical curve shape: mean of the newest runs' curves, each divided by its own peak.

    [time, dims]; NaN for a dimension no recent run measured (or without any run with a series).
    """
    shapes = []
    for e in reversed(history):
        if e.series is not None and len(e.series) > 1:
            shapes.append(_run_shape(e, tuple(metrics), steps))
            if len(shapes) >= runs:
                break
    if not shapes:
        return np.full((steps, len(metrics)), np.nan)
    stack = np.stack(shapes)  # [runs, time, dims]
    count = np.isfinite(stack).sum(axis=0)
    total = np.where(np.isfinite(stack), stack, 0.0).sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(count > 0, total / count, np.nan)


def truncate(series: UsageSeries, upto_s: float) -> UsageSeries:
    """The first ``upto_s`` seconds of a run (what a live run would have shown by then)."""
    keep = (series.times - series.times[0]) <= upto_s + 1e-9 if len(series) else np.zeros(0, bool)
    return UsageSeries(series.times[keep], {m: v[keep] for m, v in series.values.items()})


def prefix_inputs(
    prefix: UsageSeries | None,
    metrics: Sequence[Metric],
    scales: np.ndarray,
    duration_scale: float,
    config: WindowConfig,
    ratios: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, float]:
    """(sequence [prefix_steps, dims + 1], extra [3 + 4 * dims], elapsed seconds) of an observed prefix.

    extra = [has_prefix, log1p(elapsed / 60), elapsed / duration_scale, then per dim: max so far /
    scale, last value / scale, then ``ratios`` ([2, dims]: log level ratio, log implied-peak ratio,
    see ``prefix_ratios``)]. Without a prefix (or with no usable reading) everything is 0.
    """
    dims = len(metrics)
    seq = np.zeros((config.prefix_steps, dims + 1), dtype=np.float32)  # [time, dims + 1]
    extra = np.zeros(config.prefix_extra_size(dims), dtype=np.float32)
    if prefix is None or len(prefix) == 0:
        return seq, extra, 0.0
    curve = timeline_targets(prefix, metrics, scales, config.prefix_steps, config.target_clip)
    if not np.any(np.isfinite(curve)):
        return seq, extra, 0.0
    elapsed = float(prefix.duration_s)
    seq[:, :dims] = np.nan_to_num(curve, nan=0.0)
    seq[:, dims] = 1.0
    extra[0] = 1.0
    extra[1] = math.log1p(elapsed / 60.0)
    extra[2] = min(elapsed / max(duration_scale, 1e-9), config.target_clip)
    top = np.where(np.isfinite(curve), curve, -np.inf).max(axis=0)  # [dims]
    extra[3 : 3 + dims] = np.where(np.isfinite(top), top, 0.0)
    extra[3 + dims : 3 + 2 * dims] = np.nan_to_num(curve[-1], nan=0.0)
    if ratios is not None:
        extra[3 + 2 * dims :] = ratios.reshape(-1)
    return seq, extra, elapsed


# Cumulative maxima of finished runs' cleaned readings, per run object and metric (weak keys).
_CUMMAX: weakref.WeakKeyDictionary[RunExample, dict[Metric, tuple[np.ndarray, np.ndarray]]] = (
    weakref.WeakKeyDictionary()
)


def _run_cummax(example: RunExample, metric: Metric) -> tuple[np.ndarray, np.ndarray] | None:
    """(seconds since start [samples], running maximum [samples]) of one finished run's metric."""
    series = example.series
    arr = series.get(metric) if series is not None else None
    if series is None or arr is None or len(series) < 2:
        return None
    cached = _CUMMAX.setdefault(example, {})
    if metric not in cached:
        cached[metric] = (series.times - series.times[0], np.fmax.accumulate(clean_array(metric, arr)))
    return cached[metric]


def prefix_ratios(
    prefix: UsageSeries,
    history: Sequence[RunExample],
    metrics: Sequence[Metric],
    scales: np.ndarray,
    duration_scale: float,
    config: WindowConfig,
) -> np.ndarray:
    """[2, dims]: how this try's prefix compares with the task's earlier runs (log ratios, 0 = unknown).

    Row 0, level: mean observed / mean of the usual shape over the same part of the timeline.
    Row 1, implied peak: max so far x the median over recent runs of (their peak / their max at
    the same point of their own timeline), divided by the scale: "runs that looked like this by
    now went on to peak at ...".
    """
    out = np.zeros((2, len(metrics)), dtype=np.float32)
    recent = [e for e in reversed(history) if e.series is not None and len(e.series) > 1][:10]
    if not recent or len(prefix) == 0:
        return out
    clip = math.log(config.target_clip)
    elapsed = float(prefix.duration_s)
    shape = history_shape(recent[::-1], metrics, config.horizon_steps)
    out[0] = _level_ratio(prefix, metrics, scales, duration_scale, shape, config.target_clip)
    for d, metric in enumerate(metrics):
        arr = prefix.get(metric)
        if arr is None:
            continue
        clean = clean_array(metric, arr)
        if not np.any(np.isfinite(clean)):
            continue
        so_far = float(np.nanmax(clean))
        factors = []
        for e in recent:
            cm = _run_cummax(e, metric)
            peak = example_peak(e, metric)
            d_h = example_duration(e)
            if cm is None or peak is None or d_h is None:
                continue
            t_h = elapsed * d_h / max(duration_scale, 1e-9)
            i = int(np.searchsorted(cm[0], t_h, side="right")) - 1
            at = cm[1][max(i, 0)]
            if np.isfinite(at) and at > 0:
                factors.append(peak / at)
        if factors and so_far > 0:
            implied = so_far * median(np.array(factors, dtype=float))
            out[1, d] = min(max(math.log(implied / max(float(scales[d]), 1e-12)), -clip), clip)
    return out


def _level_ratio(
    prefix: UsageSeries,
    metrics: Sequence[Metric],
    scales: np.ndarray,
    duration_scale: float,
    shape: np.ndarray,
    clip: float,
) -> np.ndarray:
    """Per dim: log(mean observed / mean expected) over the prefix's samples (0 when unknown)."""
    out = np.zeros(len(metrics), dtype=np.float32)
    t = prefix.times - prefix.times[0]
    steps = shape.shape[0]
    idx = np.minimum((t / max(duration_scale, 1e-9) * steps).astype(int), steps - 1)
    for d, metric in enumerate(metrics):
        arr = prefix.get(metric)
        if arr is None or not np.all(np.isfinite(shape[:, d])):
            continue
        observed = clean_array(metric, arr) / max(scales[d], 1e-12)
        expected = shape[idx, d]
        ok = np.isfinite(observed)
        if ok.any() and expected[ok].mean() > 0 and observed[ok].mean() > 0:
            ratio = observed[ok].mean() / expected[ok].mean()
            out[d] = float(np.clip(np.log(ratio), -np.log(clip), np.log(clip)))
    return out


def _row(
    encoded: EncodedQuery,
    prefix: UsageSeries | None,
    target: UsageSeries | None,
    duration: float | None,
    encoder: FeatureEncoder,
    config: WindowConfig,
    history: Sequence[RunExample],
) -> tuple[Any, ...]:
    metrics = encoder.metrics
    scales = encoded.scales
    ratios = None
    if prefix is not None and len(prefix) and history:
        ratios = prefix_ratios(prefix, history, metrics, scales, encoded.duration_scale, config)
        if config.prefix_rescale > 0:
            # re-anchor on what this try shows (see WindowConfig.prefix_rescale)
            scales = scales * np.exp(
                config.prefix_rescale * ratios[PREFIX_ANCHORS.index(config.prefix_anchor)]
            )
    seq, extra, elapsed = prefix_inputs(prefix, metrics, scales, encoded.duration_scale, config, ratios)
    if target is not None:
        curve = timeline_targets(target, metrics, scales, config.horizon_steps, config.target_clip)
    else:
        curve = np.full((config.horizon_steps, len(metrics)), np.nan)
    log_d = math.log(duration / encoded.duration_scale) if duration else math.nan
    return (
        encoded.static,
        np.int32(encoded.task_id),
        np.int32(encoded.operator_id),
        seq,
        extra,
        curve,
        np.float32(log_d),
        scales,
        np.float64(encoded.duration_scale),
        np.float64(elapsed),
    )


def _stack(
    rows: list[tuple[Any, ...]],
    encoder: FeatureEncoder,
    config: WindowConfig,
    recency: list[float] | None = None,
) -> Windows:
    if not rows:
        dims = len(encoder.metrics)
        return Windows(
            static=np.zeros((0, encoder.n_static), np.float32),
            task_ids=np.zeros(0, np.int32),
            operator_ids=np.zeros(0, np.int32),
            prefix=np.zeros((0, config.prefix_steps, dims + 1), np.float32),
            prefix_extra=np.zeros((0, config.prefix_extra_size(dims)), np.float32),
            curve=np.zeros((0, config.horizon_steps, dims), np.float32),
            log_duration=np.zeros(0, np.float32),
            scales=np.zeros((0, dims)),
            duration_scales=np.zeros(0),
            elapsed_s=np.zeros(0),
            recency=np.zeros(0),
        )
    cols = list(zip(*rows, strict=True))
    return Windows(
        static=np.stack(cols[0]).astype(np.float32),
        task_ids=np.array(cols[1], np.int32),
        operator_ids=np.array(cols[2], np.int32),
        prefix=np.stack(cols[3]).astype(np.float32),
        prefix_extra=np.stack(cols[4]).astype(np.float32),
        curve=np.stack(cols[5]).astype(np.float32),
        log_duration=np.array(cols[6], np.float32),
        scales=np.stack(cols[7]),
        duration_scales=np.array(cols[8]),
        elapsed_s=np.array(cols[9]),
        recency=np.ones(len(rows)) if recency is None else np.array(recency, dtype=float),
    )


def chronological(examples: Sequence[RunExample]) -> dict[str, list[RunExample]]:
    """Runs grouped by task, oldest first (runs without a start keep their given order, last)."""
    by_task: dict[str, list[RunExample]] = {}
    for e in examples:
        by_task.setdefault(str(e.key), []).append(e)
    for runs in by_task.values():
        runs.sort(key=lambda e: (e.record.start is None, e.record.start or 0))  # type: ignore[operator]
    return by_task


def training_windows(
    examples: Sequence[RunExample], encoder: FeatureEncoder, config: WindowConfig
) -> Windows:
    """One window per run with a usable series, plus one per prefix fraction.

    Each run is seen as it would have been asked for: its history is the task's earlier runs only.
    Runs without a series (peak-only traces) serve as history but are not targets.
    """
    rows: list[tuple[Any, ...]] = []
    recency: list[float] = []
    for runs in chronological(examples).values():
        for i, run in enumerate(runs):
            duration = example_duration(run)
            if run.series is None or len(run.series) < 2 or duration is None:
                continue
            history = runs[max(0, i - config.max_history) : i]
            encoded = encoder.encode(query_for_example(run, history))
            rows.append(_row(encoded, None, run.series, duration, encoder, config, history))
            for fraction in config.prefix_fractions:
                prefix = truncate(run.series, fraction * run.series.duration_s)
                if len(prefix) >= 1:
                    rows.append(_row(encoded, prefix, run.series, duration, encoder, config, history))
            recency += [i / max(len(runs) - 1, 1)] * (len(rows) - len(recency))
    return _stack(rows, encoder, config, recency)


def query_windows(queries: Sequence[ForecastQuery], encoder: FeatureEncoder, config: WindowConfig) -> Windows:
    """Windows for forecasting (targets NaN), in query order."""
    rows = []
    for q in queries:
        trimmed = q if len(q.history) <= config.max_history else _with_history(q, config.max_history)
        rows.append(_row(encoder.encode(trimmed), q.prefix, None, None, encoder, config, trimmed.history))
    return _stack(rows, encoder, config)


def _with_history(query: ForecastQuery, n: int) -> ForecastQuery:
    return replace(query, history=tuple(query.history[-n:]))
