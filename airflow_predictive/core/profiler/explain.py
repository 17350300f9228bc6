"""One plain sentence about a forecast, for the UI, the CLI and logs.

"memory peaks at 3.1 GiB (p90) about 2 min 10 s after start; CPU 80% of 4 cores for the first
90 s". Pure formatting of a ``Forecast``: it never computes a new forecast and never raises
(a forecast without a metric simply leaves that part out).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from airflow_predictive.core.model.resources import Metric, ResourceVector, format_bytes

if TYPE_CHECKING:
    from airflow_predictive.core.model.series import DemandCurve, Forecast

PHASE_TOLERANCE = 0.2  # a CPU phase lasts while the level stays within 20% of where it started


def format_duration(seconds: float) -> str:
    """'45 s', '2 min 10 s', '1 h 5 min' (rounded to whole seconds)."""
    s = max(0, round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        m, r = divmod(s, 60)
        return f"{m} min {r} s" if r else f"{m} min"
    h, r = divmod(s, 3600)
    m = r // 60
    return f"{h} h {m} min" if m else f"{h} h"


def _quantile_label(q: float) -> str:
    return f"p{round(q * 100)}"


def _pick(curve: DemandCurve, q: float) -> float:
    above = [k for k in curve.quantiles if k >= q - 1e-9]
    return min(above) if above else max(curve.quantiles)


def memory_phrase(curve: DemandCurve, q: float = 0.9) -> str:
    used_q = _pick(curve, q)
    peak = curve.peak(used_q)
    when = curve.peak_time_s(used_q)
    text = f"memory peaks at {format_bytes(peak)} ({_quantile_label(used_q)})"
    if curve.steps > 1:
        text += f" about {format_duration(when)} after start"
    return text


def cpu_phrase(curve: DemandCurve, declared_cores: float | None = None, q: float = 0.5) -> str:
    values = curve.at(q)
    first = float(values[0])
    end = 1
    while end < values.size and abs(float(values[end]) - first) <= PHASE_TOLERANCE * max(first, 1e-9):
        end += 1
    level = float(np.mean(values[:end]))
    if declared_cores and declared_cores > 0:
        amount = f"{100 * level / declared_cores:.0f}% of {declared_cores:g} cores"
    else:
        amount = f"{level:.1f} cores"
    if end >= values.size:
        return f"CPU {amount} throughout"
    return f"CPU {amount} for the first {format_duration(end * curve.step_s)}"


def explain(forecast: Forecast, declared: ResourceVector | None = None) -> str:
    """The sentence for ``forecast``; ``declared`` lets CPU read as a share of the declared cores."""
    parts = []
    mem = forecast.curve(Metric.MEMORY_BYTES)
    if mem is not None:
        parts.append(memory_phrase(mem))
    cpu = forecast.curve(Metric.CPU_CORES)
    if cpu is not None:
        parts.append(cpu_phrase(cpu, declared.cpu_cores if declared is not None else None))
    if forecast.duration_s:
        q = 0.5 if 0.5 in forecast.duration_s else min(forecast.duration_s)
        parts.append(f"runs about {format_duration(forecast.duration_s[q])} ({_quantile_label(q)})")
    if not parts:
        return f"no forecast ({forecast.estimator})"
    text = "; ".join(parts)
    if forecast.peak_only:
        text += " (from peaks only)"
    return text
