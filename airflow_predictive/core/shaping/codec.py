"""``ShapingSettings`` as JSON-safe primitives (trigger kwargs, operator arguments, config).

A trigger's kwargs are stored by Airflow and rebuilt with ``cls(**kwargs)`` on another triggerer:
only primitives survive, so the settings travel as a flat dict (bounds as {metric: value}).
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from airflow_predictive.core.model.backend import MemoryMargin
from airflow_predictive.core.model.resources import Metric, ResourceVector
from airflow_predictive.core.shaping.policy import ShapingSettings

_SCALARS = (
    "tolerance",
    "grow_margin",
    "near_limit",
    "hysteresis",
    "lookahead_s",
    "grow_cooldown_s",
    "shrink_cooldown_s",
    "reclaim_after_s",
    "shrink_fraction",
    "ramp_margin_max",
)
_OPTIONAL = ("ramp_margin_s",)  # a float, or None: off


def settings_to_dict(settings: ShapingSettings) -> dict[str, Any]:
    out: dict[str, Any] = {name: float(getattr(settings, name)) for name in _SCALARS}
    out["memory_margin"] = {
        "fraction": settings.memory_margin.fraction,
        "minimum_bytes": settings.memory_margin.minimum_bytes,
    }
    out["minimum"] = {m.value: v for m, v in settings.minimum.present().items()}
    out["maximum"] = {m.value: v for m, v in settings.maximum.present().items()}
    out["metrics"] = [m.value for m in settings.metrics]
    for name in _OPTIONAL:
        value = getattr(settings, name)
        out[name] = None if value is None else float(value)
    return out


def settings_from_dict(data: dict[str, Any] | None) -> ShapingSettings:
    """Settings from primitives; unknown keys are refused (a typo must not pass silently)."""
    if not data:
        return ShapingSettings()
    known = {f.name for f in fields(ShapingSettings)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(
            f"unknown shaping settings: {', '.join(unknown)} (known: {', '.join(sorted(known))})"
        )
    kwargs: dict[str, Any] = {name: float(data[name]) for name in _SCALARS if name in data}
    if "memory_margin" in data:
        margin = data["memory_margin"]
        kwargs["memory_margin"] = MemoryMargin(float(margin["fraction"]), float(margin["minimum_bytes"]))
    for bound in ("minimum", "maximum"):
        if bound in data:
            kwargs[bound] = ResourceVector.from_mapping({Metric(k): float(v) for k, v in data[bound].items()})
    if "metrics" in data:
        kwargs["metrics"] = tuple(Metric(m) for m in data["metrics"])
    for name in _OPTIONAL:
        if name in data:
            kwargs[name] = None if data[name] is None else float(data[name])
    return ShapingSettings(**kwargs)
