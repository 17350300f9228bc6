"""Re-forecasting the rest of a running try from its observed prefix, in numpy (any estimator).

Why: the shaping controller and the shadow run re-forecast a try while it runs; most champions
(baselines, the scaled curve) forecast at start only and would ignore what the try already shows.
``condition_on_prefix`` turns any at-start forecast into a rest-of-run forecast:
- level: the prefix's peak so far against the forecast's p50 peak over the same elapsed time; the
  rest of the curve is multiplied by that ratio to the power ``shrink`` (0: ignore the prefix,
  1: trust it fully), clipped to ``[1/max_ratio, max_ratio]``. A prefix *below* the forecast
  moves it by ``shrink_down`` only (default 0: not at all), because peaks come late: on kseg-eager
  the memory peak is reached within the first 20% in under 5% of runs, so a low start says little
  about the peak, while a try already above its forecast will not come back under it; a flat,
  peak-only forecast is likewise only ever raised;
- persistence: for the next ``persist_s`` seconds each quantile is at least the level the try
  holds now (memory in use now is still in use in the next minutes: what the controller sizes);
- time: a try that already ran longer than its p50 duration gets a duration of at least
  ``elapsed * (1 + overrun)``, the curve's last value held.
The LSTM conditions on the prefix itself (``uses_prefix = True`` on the estimator): callers use
``needs_conditioning`` so that no forecast is conditioned twice. Pure numpy; no TensorFlow.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np

from airflow_predictive.core.model.resources import Metric
from airflow_predictive.core.model.series import DemandCurve
from airflow_predictive.core.profiler.features import clean_array

if TYPE_CHECKING:
    from airflow_predictive.core.model.series import Forecast, UsageSeries


@dataclass(frozen=True)
class PrefixPolicy:
    """How much an observed prefix moves the forecast of the rest (see the module docstring)."""

    shrink: float = 0.5
    shrink_down: float = 0.0
    max_ratio: float = 4.0
    persist_s: float = 300.0
    recent_s: float = 30.0  # "the level now": the prefix's maximum over its last ``recent_s``
    overrun: float = 0.1


def needs_conditioning(estimator: object) -> bool:
    """True for estimators that ignore ``query.prefix`` (everything but the LSTM today)."""
    return not getattr(estimator, "uses_prefix", False)


def condition_on_prefix(
    forecast: Forecast, prefix: UsageSeries | None, policy: PrefixPolicy | None = None
) -> Forecast:
    """The forecast of the rest of a try given its observed ``prefix`` (unchanged without one)."""
    policy = policy or PrefixPolicy()
    if prefix is None or len(prefix) == 0:
        return forecast
    t = prefix.times - prefix.times[0]
    elapsed = float(t[-1])
    curves = dict(forecast.curves)
    for metric, curve in forecast.curves.items():
        raw = prefix.get(metric)
        if raw is None:
            continue
        obs = clean_array(metric, raw)
        ok = np.isfinite(obs)
        if not ok.any():
            continue
        seen = float(np.max(obs[ok]))
        recent = ok & (t >= elapsed - policy.recent_s)
        now = float(np.max(obs[recent])) if recent.any() else float(obs[ok][-1])
        curves[metric] = _conditioned(curve, elapsed, seen, now, policy, flat=forecast.peak_only)
    duration = dict(forecast.duration_s)
    if duration and elapsed > 0:
        floor = elapsed * (1 + policy.overrun)
        duration = {q: max(v, floor) for q, v in duration.items()}
    return replace(forecast, curves=curves, duration_s=duration)


def _conditioned(
    curve: DemandCurve, elapsed: float, seen: float, now: float, policy: PrefixPolicy, *, flat: bool
) -> DemandCurve:
    step = curve.step_s
    p50 = curve.at(0.5)
    n = p50.size
    cut = min(int(elapsed // step), n - 1)
    expected = float(np.max(p50[: cut + 1]))
    if expected > 0 and seen > 0:
        ratio = float(np.clip(seen / expected, 1 / policy.max_ratio, policy.max_ratio))
        if flat:  # a peak-only forecast says nothing about the level so far: it can only be exceeded
            ratio = max(1.0, ratio)
        factor = ratio ** (policy.shrink if ratio >= 1 else policy.shrink_down)
    else:
        factor = 1.0
    persist = max(1, math.ceil(policy.persist_s / step))
    out: dict[float, np.ndarray] = {}
    for q, arr in curve.quantiles.items():
        new = np.array(arr, dtype=float)
        new[cut:] = new[cut:] * factor
        new[cut : cut + persist] = np.maximum(new[cut : cut + persist], now)
        out[q] = new
    return DemandCurve(curve.metric, step, out)


def window_error(
    forecast: Forecast, series: UsageSeries, metric: Metric, start_s: float, window_s: float
) -> float | None:
    """Relative error of the p50 forecast's maximum over ``(start_s, start_s + window_s]`` against
    the run's actual maximum there (the demand of the next minutes; None when not measurable)."""
    m = Metric(metric)
    curve = forecast.curve(m)
    raw = series.get(m)
    if curve is None or raw is None:
        return None
    t = series.times - series.times[0]
    actual = clean_array(m, raw)
    inside = (t > start_s) & (t <= start_s + window_s) & np.isfinite(actual)
    if not inside.any():
        return None
    top = float(np.max(actual[inside]))
    if top <= 0:
        return None
    p50 = curve.at(0.5)
    a = min(int(start_s // curve.step_s), p50.size - 1)
    b = min(max(a + 1, math.ceil((start_s + window_s) / curve.step_s)), p50.size)
    return abs(float(np.max(p50[a:b])) - top) / top
