"""Downsampling of long curves for the browser: min/max buckets, so peaks survive.

Why: a run sampled every second for hours has tens of thousands of points per metric; the page
must stay fast, yet the one spike that caused an OOM must still be on the chart. Averaging or
taking every n-th point would hide it. Each bucket keeps its minimum and its maximum (in time
order), so the global peak and trough of every bucket are kept exactly. Pure numpy; no I/O.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, slots=True)
class Downsampled:
    """``t`` and ``v`` of equal length (at most the requested points); ``source_points``: before."""

    t: tuple[float, ...]
    v: tuple[float | None, ...]
    source_points: int


def _as_list(values: np.ndarray) -> tuple[float | None, ...]:
    return tuple(float(x) if np.isfinite(x) else None for x in values)


def min_max_buckets(times: np.ndarray, values: np.ndarray, max_points: int) -> Downsampled:
    """At most ``max_points`` points of (times, values), keeping each bucket's min and max.

    Missing values (NaN) are dropped before bucketing unless every value is missing; times must
    be increasing (as in ``UsageSeries``). ``max_points`` below 2 is raised to 2.
    """
    t = np.asarray(times, dtype=float)
    v = np.asarray(values, dtype=float)
    if t.shape != v.shape or t.ndim != 1:
        raise ValueError("times and values must be one-dimensional and of equal length")
    n = int(t.size)
    limit = max(2, int(max_points))
    ok = np.isfinite(v) & np.isfinite(t)
    if ok.any():
        t, v = t[ok], v[ok]
    if t.size <= limit:
        return Downsampled(tuple(float(x) for x in t), _as_list(v), n)
    buckets = limit // 2
    edges = np.linspace(0, t.size, buckets + 1).astype(int)
    keep: list[int] = []
    for lo, hi in itertools.pairwise(edges):
        if hi <= lo:
            continue
        chunk = v[lo:hi]
        i_min = lo + int(np.argmin(chunk))
        i_max = lo + int(np.argmax(chunk))
        keep.extend(sorted({i_min, i_max}))
    idx = np.array(keep, dtype=int)
    return Downsampled(tuple(float(x) for x in t[idx]), _as_list(v[idx]), n)
