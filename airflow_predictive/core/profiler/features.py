"""Numbers every forecaster reads from a run: cleaned peaks, durations, input size, feature vectors.

Why: baselines, statsmodels and the LSTM must agree on what "the peak of an earlier run" or "the
input size" means, and on how bad readings (NaN, negative, absurd values) are dropped. This module
is the one place that decides. It must never invent a value: what is unknown stays NaN (with a
missing flag in feature vectors) so that callers can fall back explicitly.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from airflow_predictive.core.model.resources import Metric

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from airflow_predictive.core.model.runs import FeatureValue
    from airflow_predictive.core.profiler.estimators.base import RunExample

# Feature keys the importers and the recorder use for a run's input size (first present wins).
INPUT_SIZE_KEYS: tuple[str, ...] = ("input_bytes", "input_size_bytes", "input_size")

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


def example_peak(example: RunExample, metric: Metric) -> float | None:
    """Peak of one finished run: from its series when it has one, else from its record."""
    if example.series is not None:
        arr = example.series.get(metric)
        if arr is not None:
            clean = clean_array(metric, arr)
            if np.any(np.isfinite(clean)):
                return float(np.nanmax(clean))
    return plausible(metric, example.record.peak.get(metric))


def example_duration(example: RunExample) -> float | None:
    """Duration in seconds: the record's start/end, else the series span; None when unknown or absurd."""
    d = example.record.duration_s
    if (d is None or d <= 0) and example.series is not None and len(example.series) > 1:
        d = example.series.duration_s
    if d is None or not math.isfinite(d) or d <= 0 or d > _ABSURD_DURATION_S:
        return None
    return float(d)


def history_peaks(history: Sequence[RunExample], metric: Metric) -> np.ndarray:
    """Plausible peaks of ``metric`` over the history, oldest first (runs without one are left out)."""
    peaks = [example_peak(e, metric) for e in history]
    return np.array([p for p in peaks if p is not None], dtype=float)


def history_durations(history: Sequence[RunExample]) -> np.ndarray:
    durations = [example_duration(e) for e in history]
    return np.array([d for d in durations if d is not None], dtype=float)


def numeric_feature(features: Mapping[str, FeatureValue], keys: Sequence[str]) -> float | None:
    """The first of ``keys`` that holds a finite, non-negative number (bools and text are not numbers)."""
    for key in keys:
        value = features.get(key)
        if value is None or isinstance(value, bool | str):
            continue
        v = float(value)
        if math.isfinite(v) and v >= 0:
            return v
    return None


def input_size(features: Mapping[str, FeatureValue]) -> float | None:
    """The run's input size in bytes, when an importer or the recorder supplied one."""
    return numeric_feature(features, INPUT_SIZE_KEYS)
