"""How good a forecast was, measured against what the run really used.

Pure numpy, no I/O. Every figure the backtest, ``airflow predictive evaluate`` and the benchmark
report comes from here, so they cannot drift apart:

- peak error: |forecast peak (p50) - actual peak| / actual peak;
- under-prediction at q: the actual peak exceeded the q-forecast's peak (coverage = its opposite);
- pinball (quantile) loss over the run's timeline, scaled by the actual peak (comparable across
  tasks), averaged over the forecast's quantiles;
- curve error over segments: the run cut into k equal segments, relative error of each segment's
  peak (p50), averaged;
- memory waste: the GiB*s an allocation (flat, or stepped with steps of at least 30 s) holds
  above the actual curve, and whether the actual curve ever exceeded it (an OOM).

It must never raise on bad data: runs with no usable actual value get ``None`` figures.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from airflow_predictive.core.model.resources import GIB, Metric

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from airflow_predictive.core.model.series import DemandCurve, UsageSeries

MIN_STEP_S = 30.0
DEFAULT_SEGMENTS = 4


def pinball(actual: np.ndarray, predicted: np.ndarray, q: float) -> float:
    """Mean pinball loss of quantile ``q`` (0 when both arrays are empty)."""
    if actual.size == 0:
        return 0.0
    diff = actual - predicted
    return float(np.mean(np.maximum(q * diff, (q - 1) * diff)))


def actual_curve(series: UsageSeries, metric: Metric, step_s: float) -> np.ndarray | None:
    """The run's usage on the forecast's grid (max per step, gaps held); None if never measured."""
    arr = series.get(metric)
    if arr is None or not np.any(np.isfinite(arr)) or len(series) == 0:
        return None
    return resample_max(series.times, arr, step_s)


class ActualCurves:
    """``actual_curve`` memoised per (series, metric, step) for one scoring pass.

    Scoring asks for the same run's actual curve on the same grid once per estimator and metric
    (every flat forecast uses the same 2 s grid, the waste figures one fine grid per run); the
    caller keeps one memo for as long as the runs are scored, then drops it. The arrays are
    read-only (shared between scores).
    """

    def __init__(self) -> None:
        self._memo: dict[tuple[int, Metric, float], tuple[UsageSeries, np.ndarray | None]] = {}

    def get(self, series: UsageSeries, metric: Metric, step_s: float) -> np.ndarray | None:
        key = (id(series), metric, step_s)
        hit = self._memo.get(key)
        if hit is not None and hit[0] is series:  # the entry holds the series: its id is not reused
            return hit[1]
        arr = actual_curve(series, metric, step_s)
        if arr is not None:
            arr.flags.writeable = False
        self._memo[key] = (series, arr)
        return arr


def resample_max(times: np.ndarray, values: np.ndarray, step_s: float) -> np.ndarray:
    """Max per step on 0, step, 2*step... with gaps holding the last value (vectorised:
    the same result as ``UsageSeries.resampled``, fast enough to score thousands of runs)."""
    t = times - times[0]
    n = int(float(t[-1]) // step_s) + 1  # the grid UsageSeries.resampled uses
    out = np.full(n, np.nan)
    ok = np.isfinite(values)
    idx = np.minimum((t // step_s).astype(int), n - 1)
    np.fmax.at(out, idx[ok], values[ok])
    have = np.isfinite(out)
    if not have.any():
        return np.zeros(n)
    pos = np.where(have, np.arange(n), 0)
    np.maximum.accumulate(pos, out=pos)
    filled = out[pos]
    filled[: int(np.argmax(have))] = out[int(np.argmax(have))]
    return filled


def aligned(curve: np.ndarray, n: int) -> np.ndarray:
    """``curve`` cut or extended (last value held) to ``n`` steps."""
    if curve.size >= n:
        return curve[:n]
    if curve.size == 0:
        return np.zeros(n)
    return np.concatenate([curve, np.full(n - curve.size, curve[-1])])


def on_grid(curve: np.ndarray, step_s: float, grid_s: float, n: int) -> np.ndarray:
    """``curve`` (on ``step_s``) read at ``n`` points ``0, grid_s, 2*grid_s...``; last value held."""
    if curve.size == 0:
        return np.zeros(n)
    idx = np.minimum((np.arange(n) * grid_s // step_s).astype(int), curve.size - 1)
    return curve[idx]


def stepped(curve: np.ndarray, step_s: float, min_step_s: float = MIN_STEP_S) -> np.ndarray:
    """An allocation that follows ``curve`` but changes at most every ``min_step_s``: each block of
    steps takes the block's maximum (an allocation never sits below the demand it was built from)."""
    if curve.size == 0:
        return curve
    block = max(1, math.ceil(min_step_s / step_s))
    if block == 1:
        return curve.copy()
    starts = np.arange(0, curve.size, block)
    tops = np.maximum.reduceat(curve, starts)  # one vectorised pass, not a Python loop per block
    return np.repeat(tops, block)[: curve.size].astype(curve.dtype, copy=False)


@dataclass(frozen=True)
class WasteFigures:
    """An allocation held against an actual curve.

    allocated_gib_s: the allocation's area; used_gib_s: the actual curve's area below it;
    waste_gib_s: allocated - used (the idle memory*time); oom: the actual exceeded the allocation.
    """

    allocated_gib_s: float
    used_gib_s: float
    waste_gib_s: float
    oom: bool

    @property
    def unused_fraction(self) -> float:
        return self.waste_gib_s / self.allocated_gib_s if self.allocated_gib_s > 0 else 0.0


def memory_waste(allocation: np.ndarray, actual: np.ndarray, step_s: float) -> WasteFigures:
    """Waste of ``allocation`` (bytes per step, extended by holding its last value) vs ``actual``."""
    alloc = aligned(allocation, actual.size)
    held = np.minimum(actual, alloc)
    allocated = float(np.sum(alloc)) * step_s / GIB
    used = float(np.sum(held)) * step_s / GIB
    return WasteFigures(allocated, used, max(0.0, allocated - used), bool(np.any(actual > alloc * 1.0001)))


@dataclass(frozen=True)
class RunScore:
    """One forecast of one metric for one run, scored. ``None`` = not computable for this run.

    under: quantile -> True when the actual peak exceeded that quantile's forecast peak.
    waste: quantile -> the waste of that quantile's curve used as a stepped allocation.
    """

    metric: Metric
    actual_peak: float
    predicted_peak: float
    peak_error: float
    under: Mapping[float, bool]
    pinball: float
    segment_error: float | None = None
    waste: Mapping[float, WasteFigures] = field(default_factory=dict)
    duration_s: float | None = None


def score_run(
    curve: DemandCurve,
    *,
    series: UsageSeries | None,
    actual_peak: float | None,
    segments: int = DEFAULT_SEGMENTS,
    min_step_s: float = MIN_STEP_S,
    with_waste: bool = True,
    actuals: ActualCurves | None = None,
) -> RunScore | None:
    """Score one metric's forecast against the run's series (or only its peak when no series).
    ``with_waste=False`` skips the allocation figures (the backtest only ranks by loss);
    ``actuals``: a memo of the runs' actual curves shared by the scores of one pass."""
    curve_of = actuals.get if actuals is not None else actual_curve
    actual = curve_of(series, curve.metric, curve.step_s) if series is not None else None
    if actual is not None:
        peak = float(np.max(actual))
    elif actual_peak is not None and math.isfinite(actual_peak) and actual_peak >= 0:
        peak = float(actual_peak)
    else:
        return None
    if peak <= 0:
        peak_scale = 1.0
    else:
        peak_scale = peak
    p50 = curve.at(0.5)
    predicted_peak = float(np.max(p50))
    under = {q: bool(peak > float(np.max(c)) * 1.0001) for q, c in curve.quantiles.items()}
    if actual is not None:
        losses = [pinball(actual, aligned(c, actual.size), q) for q, c in curve.quantiles.items()]
        seg = segment_error(actual, aligned(p50, actual.size), segments)
        # waste on one fine grid for every forecast, so coarse and fine forecasts compare fairly
        waste = {}
        if with_waste:
            fine = max(1.0, (series.duration_s if series is not None else 0.0) / 4096)
            actual_fine = curve_of(series, curve.metric, fine) if series is not None else None
            fine_actual = actual_fine if actual_fine is not None else actual
            waste = {
                q: memory_waste(
                    on_grid(stepped(c, curve.step_s, min_step_s), curve.step_s, fine, fine_actual.size),
                    fine_actual,
                    fine,
                )
                for q, c in curve.quantiles.items()
            }
        duration = actual.size * curve.step_s
    else:
        losses = [
            pinball(np.array([peak]), np.array([float(np.max(c))]), q) for q, c in curve.quantiles.items()
        ]
        seg, waste, duration = None, {}, None
    return RunScore(
        metric=curve.metric,
        actual_peak=peak,
        predicted_peak=predicted_peak,
        peak_error=abs(predicted_peak - peak) / peak_scale,
        under=under,
        pinball=float(np.mean(losses)) / peak_scale,
        segment_error=seg,
        waste=waste,
        duration_s=duration,
    )


def segment_error(
    actual: np.ndarray, predicted: np.ndarray, segments: int = DEFAULT_SEGMENTS
) -> float | None:
    """Mean relative error of each segment's peak (the k-Segments view of a curve)."""
    n = min(actual.size, predicted.size)
    if n == 0:
        return None
    k = max(1, min(segments, n))
    bounds = np.unique(np.linspace(0, n, k + 1).astype(int)[:-1])  # segment starts (non-empty)
    top = np.maximum.reduceat(actual[:n], bounds)
    pred = np.maximum.reduceat(predicted[:n], bounds)
    with np.errstate(divide="ignore", invalid="ignore"):
        errs = np.where(top > 0, np.abs(pred - top) / top, 0.0)
    return float(np.mean(errs)) if errs.size else None


def flat_waste(level: float, actual: np.ndarray, step_s: float) -> WasteFigures:
    """Waste of one number held for the whole run (VPA-style, declared)."""
    return memory_waste(np.full(max(1, actual.size), level), actual, step_s)


# ----------------------------------------------------------------------------- aggregation


def quantile_of(values: Sequence[float], q: float) -> float | None:
    clean = [v for v in values if v is not None and math.isfinite(v)]
    return float(np.quantile(np.array(clean), q)) if clean else None


@dataclass(frozen=True)
class Summary:
    """Scores of many runs of one metric, reduced to the figures we report.

    under_rate / coverage: quantile -> share of runs whose actual peak was above / within it.
    unused_fraction: quantile -> total waste / total allocation of that quantile's stepped curve.
    """

    metric: Metric
    runs: int
    peak_error_median: float | None
    peak_error_p90: float | None
    under_rate: Mapping[float, float]
    coverage: Mapping[float, float]
    pinball: float | None
    segment_error: float | None
    waste_gib_s: Mapping[float, float]
    unused_fraction: Mapping[float, float]
    oom_rate: Mapping[float, float]

    def as_dict(self) -> dict[str, object]:
        """Nested plain values keyed by statistic and quantile (the evaluate JSON's shape)."""

        def qkey(q: float) -> str:
            return f"p{round(q * 100)}"

        return {
            "runs": self.runs,
            "peak_error": {"median": self.peak_error_median, "p90": self.peak_error_p90},
            "under_rate": {qkey(q): v for q, v in self.under_rate.items()},
            "coverage": {qkey(q): v for q, v in self.coverage.items()},
            "pinball": self.pinball,
            "segment_error": self.segment_error,
            "waste_gib_s": {qkey(q): v for q, v in self.waste_gib_s.items()},
            "unused_fraction": {qkey(q): v for q, v in self.unused_fraction.items()},
            "oom_rate": {qkey(q): v for q, v in self.oom_rate.items()},
        }


def summarise(metric: Metric, scores: Sequence[RunScore]) -> Summary:
    scores = [s for s in scores if s.metric is metric]
    qs = sorted({q for s in scores for q in s.under})
    under = {q: float(np.mean([s.under[q] for s in scores if q in s.under])) for q in qs}
    wq = sorted({q for s in scores for q in s.waste})
    waste = {q: float(sum(s.waste[q].waste_gib_s for s in scores if q in s.waste)) for q in wq}
    alloc = {q: float(sum(s.waste[q].allocated_gib_s for s in scores if q in s.waste)) for q in wq}
    ooms = {q: float(np.mean([s.waste[q].oom for s in scores if q in s.waste])) for q in wq}
    segs = [s.segment_error for s in scores if s.segment_error is not None]
    return Summary(
        metric=metric,
        runs=len(scores),
        peak_error_median=quantile_of([s.peak_error for s in scores], 0.5),
        peak_error_p90=quantile_of([s.peak_error for s in scores], 0.9),
        under_rate=under,
        coverage={q: 1.0 - v for q, v in under.items()},
        pinball=float(np.mean([s.pinball for s in scores])) if scores else None,
        segment_error=float(np.mean(segs)) if segs else None,
        waste_gib_s=waste,
        unused_fraction={q: (waste[q] / alloc[q] if alloc[q] > 0 else 0.0) for q in wq},
        oom_rate=ooms,
    )
