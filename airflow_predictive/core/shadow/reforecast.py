"""The real try's forecast from what its shadow run showed.

Why: a shadow run replays the start of the task on small resources; its observed prefix is the
task's own evidence, which a cold-start forecast (one or two runs, a cross-task prior) lacks.
``reforecast`` turns the at-start forecast into the forecast the real try is planned from:
- the prefix goes through the profiler's ``condition_on_prefix`` (a shadow already above the
  forecast raises the rest of the curve; a low start does not lower it: peaks come late), and
- the part of the curve the shadow covered is at least what it used there (the real try will
  repeat it).
A shadow on small resources is throttled or capped: what it shows is a lower bound (an OOM-killed
shadow used at least its memory limit), and the re-forecast only ever raises the forecast. With no
at-start forecast, the shadow can only raise the declared resources (a 5% prefix says nothing about
a late peak, so it never sizes a task below what its author declared, nor limits an undeclared one).
A shadow that failed, never started or showed no usable prefix leaves the forecast as it was.
``overhead``: what the real try holds that its shadow does not (locally, the Airflow task process
the real command runs under: a bash command's shadow runs the command alone); added to the
prefix's readings, so that the prefix is comparable with the real tries a forecast learned from.
Pure numpy: no Airflow, no storage.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import TYPE_CHECKING

import numpy as np

from airflow_predictive.core.model.resources import Metric, ResourceVector
from airflow_predictive.core.model.series import QUANTILES, DemandCurve, Forecast, UsageSeries
from airflow_predictive.core.profiler.prefix import PrefixPolicy, condition_on_prefix

if TYPE_CHECKING:
    from collections.abc import Mapping

SHAPED: tuple[Metric, ...] = (Metric.CPU_CORES, Metric.MEMORY_BYTES)


class ShadowEnd(StrEnum):
    """How a shadow run ended."""

    COMPLETED = "completed"  # the command finished (exit 0) within its budget: the whole run was seen
    BUDGET = "budget"  # stopped at its budget (the normal end of a shadow)
    OOM_KILLED = "oom_killed"  # hit its small memory limit: it needed at least that
    FAILED = "failed"  # exited non-zero before its budget
    NOT_STARTED = "not_started"  # could not be started (no command, no backend, cluster refused)
    ERROR = "error"  # the shadow machinery failed (usage unreadable, deadline not enforceable ...)

    @property
    def usable(self) -> bool:
        """Its prefix may re-forecast the real try."""
        return self in (ShadowEnd.COMPLETED, ShadowEnd.BUDGET, ShadowEnd.OOM_KILLED)


@dataclass(frozen=True, eq=False)
class ShadowObservation:
    """What one shadow run showed. ``limits``: its small resources (what its readings are capped at)."""

    prefix: UsageSeries | None
    end: ShadowEnd
    wall_s: float
    limits: ResourceVector
    reason: str = ""


@dataclass(frozen=True, eq=False)
class ShadowForecast:
    """The forecast the real try is planned from. ``used``: the shadow changed it (or made it)."""

    forecast: Forecast | None
    used: bool
    note: str


@dataclass(frozen=True)
class ReforecastSettings:
    """min_samples: fewer finite readings than this is no usable prefix. margin: headroom over what
    a shadow saw when it raises declared resources (no at-start forecast). saturated: a reading at
    this share of the shadow's limit is capped (a lower bound only)."""

    min_samples: int = 3
    margin: float = 0.25
    saturated: float = 0.95
    prefix: PrefixPolicy = field(default_factory=PrefixPolicy)


def reforecast(
    observation: ShadowObservation,
    at_start: Forecast | None,
    *,
    declared: ResourceVector | None = None,
    horizon_s: float = 600.0,
    settings: ReforecastSettings | None = None,
    overhead: ResourceVector | None = None,
) -> ShadowForecast:
    """The real try's forecast given its shadow (``at_start`` unchanged when the shadow is unusable)."""
    settings = settings or ReforecastSettings()
    if not observation.end.usable:
        why = observation.reason or observation.end.value
        return ShadowForecast(
            at_start, False, f"shadow {observation.end.value} ({why}): un-shadowed forecast"
        )
    prefix = _usable_prefix(observation, settings, overhead or ResourceVector())
    if prefix is None:
        return ShadowForecast(
            at_start, False, f"shadow {observation.end.value} without a usable prefix: un-shadowed forecast"
        )
    capped = _capped(prefix, observation.limits, settings.saturated)
    tail = f"; capped by its small limits: {', '.join(m.value for m in capped)}" if capped else ""
    if at_start is None:
        return _from_declared(prefix, declared or ResourceVector(), horizon_s, settings, tail)
    conditioned = condition_on_prefix(at_start, prefix, settings.prefix)
    curves = dict(conditioned.curves)
    for metric, curve in conditioned.curves.items():
        if prefix.get(metric) is not None:
            curves[metric] = _at_least_observed(curve, prefix, metric)
    out = replace(conditioned, curves=curves, estimator=f"{at_start.estimator}+shadow")
    before, after = _peak(at_start), _peak(out)
    change = f"memory p50 peak {_fmt(before)} -> {_fmt(after)}" if before is not None else "re-forecast"
    return ShadowForecast(
        out, True, f"re-forecast from a {observation.wall_s:.1f} s shadow prefix ({change}){tail}"
    )


def _usable_prefix(
    observation: ShadowObservation, settings: ReforecastSettings, overhead: ResourceVector
) -> UsageSeries | None:
    prefix = observation.prefix
    if prefix is None or len(prefix) < settings.min_samples:
        return None
    values: dict[Metric, np.ndarray] = {}
    for metric in SHAPED:
        raw = prefix.get(metric)
        if raw is None:
            continue
        arr = np.where(np.isfinite(raw) & (raw >= 0), raw, np.nan)
        if int(np.isfinite(arr).sum()) >= settings.min_samples:
            values[metric] = arr
    if not values:
        return None
    limit = observation.limits.get(Metric.MEMORY_BYTES)
    mem = values.get(Metric.MEMORY_BYTES)
    if observation.end is ShadowEnd.OOM_KILLED and mem is not None and limit is not None:
        mem = mem.copy()
        mem[-1] = max(float(np.nan_to_num(mem[-1])), limit)  # killed at its limit: it needed at least that
        values[Metric.MEMORY_BYTES] = mem
    for metric, extra in overhead.present().items():
        if metric in values and extra > 0:
            values[metric] = values[metric] + extra
    return UsageSeries(prefix.times, values)


def _capped(prefix: UsageSeries, limits: ResourceVector, share: float) -> list[Metric]:
    out = []
    for metric in prefix.metrics:
        limit, seen = limits.get(metric), prefix.peak(metric)
        if limit is not None and seen is not None and seen >= share * limit:
            out.append(metric)
    return out


def _at_least_observed(curve: DemandCurve, prefix: UsageSeries, metric: Metric) -> DemandCurve:
    """Each quantile over the part the shadow covered is at least what the shadow used there."""
    seen = prefix.resampled(curve.step_s, metric)
    n = min(seen.size, curve.steps)
    if n == 0:
        return curve
    out: dict[float, np.ndarray] = {}
    for q, arr in curve.quantiles.items():
        new = np.array(arr, dtype=float)
        new[:n] = np.maximum(new[:n], np.nan_to_num(seen[:n]))
        out[q] = new
    return DemandCurve(metric, curve.step_s, out)


def _from_declared(
    prefix: UsageSeries,
    declared: ResourceVector,
    horizon_s: float,
    settings: ReforecastSettings,
    tail: str,
) -> ShadowForecast:
    """No at-start forecast: raise a declared value the shadow already exceeded, nothing else."""
    raised: dict[Metric, float] = {}
    for metric in SHAPED:
        seen, limit = prefix.peak(metric), declared.get(metric)
        if seen is None or limit is None:
            continue
        wanted = seen * (1 + settings.margin)
        if wanted > limit:
            raised[metric] = wanted
    if not raised:
        return ShadowForecast(
            None, False, f"no forecast; the shadow stayed within the declared resources{tail}"
        )
    horizon = max(horizon_s, prefix.duration_s, 1.0)
    curves: Mapping[Metric, DemandCurve] = {
        m: DemandCurve(m, horizon, {q: np.array([v]) for q in QUANTILES}) for m, v in raised.items()
    }
    forecast = Forecast(curves=curves, duration_s={0.5: horizon}, estimator="shadow_prefix", peak_only=True)
    what = ", ".join(
        f"{m.value} {_fmt(v) if m is Metric.MEMORY_BYTES else f'{v:.2f}'}" for m, v in raised.items()
    )
    return ShadowForecast(
        forecast, True, f"no forecast; the shadow exceeded the declared resources: {what}{tail}"
    )


def _peak(forecast: Forecast) -> float | None:
    curve = forecast.curve(Metric.MEMORY_BYTES)
    return None if curve is None else curve.peak(0.5)


def _fmt(value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return "-"
    return f"{value / 2**20:.0f} MiB"
