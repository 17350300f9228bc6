"""A task's predictive settings, read from its ``executor_config["predictive"]``.

``True`` / ``False`` opt in or out; a dict opts in with settings: ``cpu`` / ``memory`` (the declared
resources: the plan when nothing is forecast, and the fallback), ``risk`` (one quantile for every
metric, or ``{"memory": 0.99, "cpu": 0.9}``), ``min`` / ``max`` (bounds, same keys), ``shaping`` (``True``, or
a dict of shaping settings such as ``{"reclaim_after_s": 5}``, plus ``warmup_s``: the task's limits
follow its use while it runs), ``shadow_run`` (``"auto"`` | ``True`` | ``False``: a shadow run before the
task, by the executor's pre-stage, executors/local_shadow.py) and ``shadow_cmds`` (what that shadow runs:
an argv list, or one string for bash; default: a BashOperator's own ``bash_command``), ``duration``
(seconds, the plan's length when nothing predicts it) and ``enabled``.
A DAG-wide default goes through ``default_args={"executor_config": {...}}``; ``[predictive]
default_enabled`` opts in every task that says nothing. Bad values are ignored with one log line:
a typo in a setting never stops the task.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from airflow_predictive.core.model.quantity import InvalidQuantity, parse_quantity
from airflow_predictive.core.model.resources import Metric, ResourceVector
from airflow_predictive.core.scheduling.planner import DEFAULT_RISK
from airflow_predictive.core.shadow.policy import ShadowMode
from airflow_predictive.core.shaping.codec import settings_from_dict
from airflow_predictive.listeners.task_facts import PREDICTIVE_KEY, declared_resources

if TYPE_CHECKING:
    from airflow_predictive.core.shaping.policy import ShapingSettings

log = logging.getLogger(__name__)

# no reclaim below the planned allocation during a task's first seconds: an Airflow task process
# starts small (fork of its supervisor) and then parses its DAG and imports its code, faster than
# a grow can follow (a reclaimed starting task was OOM-killed on a loaded 2-core machine)
DEFAULT_WARMUP_S = 30.0

_NAMES = {"cpu": Metric.CPU_CORES, "memory": Metric.MEMORY_BYTES, "gpu_memory": Metric.GPU_MEMORY_BYTES}


@dataclass(frozen=True, slots=True)
class TaskSettings:
    """What one task asked of the PredictiveExecutor."""

    enabled: bool
    declared: ResourceVector = field(default_factory=ResourceVector)
    risk: Mapping[Metric, float] = field(default_factory=lambda: dict(DEFAULT_RISK))
    minimum: ResourceVector = field(default_factory=ResourceVector)
    maximum: ResourceVector = field(default_factory=ResourceVector)
    shaping: bool = False
    shadow_run: ShadowMode = ShadowMode.NEVER
    shadow_cmds: tuple[str, ...] | None = None  # argv of the shadow (None: the task's bash_command)
    duration_s: float | None = None
    shaping_settings: ShapingSettings | None = None  # None: the policy's defaults
    shaping_warmup_s: float = DEFAULT_WARMUP_S


def _vector(raw: Any, what: str) -> ResourceVector:
    if not isinstance(raw, Mapping):
        if raw is not None:
            log.warning("predictive: ignoring %s=%r (expected a dict such as {'memory': '2Gi'})", what, raw)
        return ResourceVector()
    values: dict[Metric, float | None] = {}
    for name, value in raw.items():
        metric = _NAMES.get(str(name))
        if metric is None:
            log.warning("predictive: ignoring %s key %r (known: %s)", what, name, ", ".join(_NAMES))
            continue
        try:
            values[metric] = parse_quantity(value)
        except InvalidQuantity:
            log.warning("predictive: ignoring %s %s=%r (not a quantity)", what, name, value)
    return ResourceVector.from_mapping(values)


def _risk(raw: Any) -> dict[Metric, float]:
    risk = dict(DEFAULT_RISK)
    if raw is None:
        return risk
    items = (
        {m: raw for m in (Metric.MEMORY_BYTES, Metric.CPU_CORES)}
        if not isinstance(raw, Mapping)
        else {_NAMES.get(str(k)): v for k, v in raw.items()}
    )
    for metric, value in items.items():
        try:
            q = float(value)
        except (TypeError, ValueError):
            q = -1.0
        if metric is None or not 0 < q < 1:
            log.warning("predictive: ignoring risk %r (a quantile between 0 and 1, e.g. 0.99)", raw)
            continue
        risk[metric] = q
    return risk


def _shaping(raw: Any) -> tuple[bool, ShapingSettings | None, float]:
    if isinstance(raw, Mapping):
        options = dict(raw)
        warmup = DEFAULT_WARMUP_S
        if "warmup_s" in options:
            try:
                warmup = max(0.0, float(options.pop("warmup_s")))
            except (TypeError, ValueError):
                log.warning(
                    "predictive: ignoring shaping warmup_s=%r (seconds expected)", raw.get("warmup_s")
                )
        try:
            return True, settings_from_dict(options), warmup
        except (ValueError, TypeError, KeyError) as exc:
            log.warning("predictive: shaping=%r: %s; shaping with the default settings", raw, exc)
            return True, None, warmup
    return bool(raw), None, DEFAULT_WARMUP_S


def _shadow_run(raw: Any, default: ShadowMode) -> ShadowMode:
    if raw is None:
        return default
    try:
        return ShadowMode.parse(raw)
    except ValueError as exc:
        log.warning("predictive: ignoring %s; no shadow run", exc)
        return ShadowMode.NEVER


def _shadow_cmds(raw: Any) -> tuple[str, ...] | None:
    if raw is None:
        return None
    if isinstance(raw, str) and raw.strip():
        return ("/bin/bash", "-c", raw)
    if isinstance(raw, list | tuple) and raw and all(isinstance(x, str) for x in raw):
        return tuple(raw)
    log.warning(
        "predictive: ignoring shadow_cmds=%r (an argv list such as ['python', 'dry.py'], or a bash string)",
        raw,
    )
    return None


def task_settings(
    executor_config: Any, *, default_enabled: bool = False, default_shadow: ShadowMode = ShadowMode.NEVER
) -> TaskSettings:
    """Settings of one task from its executor_config (never raises). ``default_shadow``: the
    ``shadow_run`` of a task that says nothing (False unless ``[predictive]`` says otherwise)."""
    declared = declared_resources(executor_config, None)
    cfg = executor_config.get(PREDICTIVE_KEY) if isinstance(executor_config, Mapping) else None
    if cfg is None:
        return TaskSettings(enabled=default_enabled, declared=declared, shadow_run=default_shadow)
    if isinstance(cfg, bool):
        return TaskSettings(enabled=cfg, declared=declared, shadow_run=default_shadow)
    if not isinstance(cfg, Mapping):
        log.warning("predictive: executor_config['predictive']=%r is neither a bool nor a dict; ignored", cfg)
        return TaskSettings(enabled=default_enabled, declared=declared, shadow_run=default_shadow)
    duration = cfg.get("duration")
    try:
        duration_s = float(duration) if duration is not None and float(duration) > 0 else None
    except (TypeError, ValueError):
        log.warning("predictive: ignoring duration=%r (seconds expected)", duration)
        duration_s = None
    shaping, shaping_settings, warmup_s = _shaping(cfg.get("shaping", False))
    return TaskSettings(
        enabled=bool(cfg.get("enabled", True)),
        declared=declared,
        risk=_risk(cfg.get("risk")),
        minimum=_vector(cfg.get("min"), "min"),
        maximum=_vector(cfg.get("max"), "max"),
        shaping=shaping,
        shadow_run=_shadow_run(cfg.get("shadow_run"), default_shadow),
        shadow_cmds=_shadow_cmds(cfg.get("shadow_cmds")),
        duration_s=duration_s,
        shaping_settings=shaping_settings,
        shaping_warmup_s=warmup_s,
    )
