"""Translate an Airflow task instance into what the provider records (identity, declared, features).

Declared resources come from, in order: ``executor_config={"predictive": {"cpu": ..., "memory": ...}}``,
a Kubernetes ``pod_override`` (the base container's limits, else requests), and the operator's
``resources`` (Airflow's Resources: cpus, ram in MB, gpus). Features are what is known before the
try starts: the resolved params (primitives only), the operator class, try number.
Never imports kubernetes: pod objects are read through attributes.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from airflow_predictive.core.model.quantity import InvalidQuantity, parse_quantity
from airflow_predictive.core.model.resources import MIB, Metric, ResourceVector
from airflow_predictive.core.model.runs import FeatureValue, RunIdentity, RunRecord, RunSource, TaskKey
from airflow_predictive.core.profiler.run_features import run_features

log = logging.getLogger(__name__)

PREDICTIVE_KEY = "predictive"


def _quantity(value: Any) -> float | None:
    if value is None:
        return None
    try:
        return parse_quantity(value)
    except InvalidQuantity:
        log.warning("predictive: ignoring declared quantity %r (not a valid quantity)", value)
        return None


def _from_predictive_config(cfg: Mapping[str, Any]) -> ResourceVector:
    return ResourceVector(
        cpu_cores=_quantity(cfg.get("cpu")),
        memory_bytes=_quantity(cfg.get("memory")),
        gpu_util=_quantity(cfg.get("gpu")),
    )


def _from_pod_override(pod: Any) -> ResourceVector:
    containers = getattr(getattr(pod, "spec", None), "containers", None) or []
    base = next((c for c in containers if getattr(c, "name", None) == "base"), None)
    base = base or (containers[0] if containers else None)
    resources = getattr(base, "resources", None)
    if resources is None:
        return ResourceVector()
    chosen = getattr(resources, "limits", None) or getattr(resources, "requests", None) or {}
    return ResourceVector(
        cpu_cores=_quantity(chosen.get("cpu")),
        memory_bytes=_quantity(chosen.get("memory")),
        gpu_util=_quantity(chosen.get("nvidia.com/gpu")),
    )


def _from_operator_resources(resources: Any) -> ResourceVector:
    def qty(name: str) -> float | None:
        res = getattr(resources, name, None)
        value = getattr(res, "qty", None)
        return float(value) if isinstance(value, int | float) and value > 0 else None

    ram_mb = qty("ram")
    return ResourceVector(
        cpu_cores=qty("cpus"), memory_bytes=ram_mb * MIB if ram_mb else None, gpu_util=qty("gpus")
    )


def declared_resources(executor_config: Any, operator_resources: Any) -> ResourceVector:
    """The first source that declares anything wins, metric by metric."""
    sources: list[ResourceVector] = []
    if isinstance(executor_config, Mapping):
        cfg = executor_config.get(PREDICTIVE_KEY)
        if isinstance(cfg, Mapping):
            sources.append(_from_predictive_config(cfg))
        if executor_config.get("pod_override") is not None:
            sources.append(_from_pod_override(executor_config["pod_override"]))
    if operator_resources is not None:
        sources.append(_from_operator_resources(operator_resources))
    out: dict[Metric, float | None] = {}
    for metric in Metric:
        out[metric] = next((v for s in sources if (v := s.get(metric)) is not None), None)
    return ResourceVector.from_mapping(out)


def is_predictive(executor_config: Any, operator: Any) -> bool:
    if getattr(operator, "predictive", False) is True:
        return True
    if isinstance(executor_config, Mapping):
        cfg = executor_config.get(PREDICTIVE_KEY)
        if cfg is True:
            return True
        if isinstance(cfg, Mapping):
            return bool(cfg.get("enabled", True))
    return False


def primitive_features(params: Mapping[str, Any] | None) -> dict[str, FeatureValue]:
    """Params as features ``param.<name>``: numbers, strings and booleans only."""
    out: dict[str, FeatureValue] = {}
    for name, value in (params or {}).items():
        if isinstance(value, bool | str) or (isinstance(value, int | float) and math.isfinite(float(value))):
            out[f"param.{name}"] = value
    return out


def executor_config_json(executor_config: Any) -> str | None:
    """executor_config as JSON text; objects (pod_override) are kept as their string form."""
    if not executor_config:
        return None
    try:
        return json.dumps(executor_config, default=str, sort_keys=True)
    except (TypeError, ValueError):
        return json.dumps({"unserialisable": str(executor_config)})


def _resolved_params(ti: Any) -> Mapping[str, Any]:
    try:
        context = ti.get_template_context()
        params = context.get("params") or {}
        return {k: params[k] for k in params}
    except Exception:
        params = getattr(getattr(ti, "task", None), "params", None) or {}
        try:
            return {k: params[k] for k in params}
        except Exception:
            return {}


def record_for_running(ti: Any, hostname: str) -> RunRecord:
    """The RunRecord of a try that just started, from a RuntimeTaskInstance."""
    task = ti.task
    executor_config = getattr(task, "executor_config", None) or {}
    # the profiler's one feature extraction (param.*, input_bytes from input_* / *_mb params or
    # executor_config["predictive"]["input_size"], try_number): forecasts are asked with the same
    features: dict[str, FeatureValue] = run_features(
        _resolved_params(ti), executor_config=executor_config, try_number=int(ti.try_number)
    )
    features["predictive"] = is_predictive(executor_config, task)
    map_index = getattr(ti, "map_index", -1)
    start = getattr(ti, "start_date", None) or datetime.now(UTC)
    return RunRecord(
        identity=RunIdentity(
            key=TaskKey(ti.dag_id, ti.task_id, -1 if map_index is None else int(map_index)),
            run_id=ti.run_id,
            try_number=int(ti.try_number),
            source=RunSource.LISTENER,
        ),
        start=start,
        declared=declared_resources(executor_config, getattr(task, "resources", None)),
        operator=type(task).__name__,
        pool=getattr(task, "pool", None),
        queue=getattr(task, "queue", None) or getattr(ti, "queue", None),
        hostname=hostname,
        features=features,
        executor_config=executor_config_json(executor_config),
    )
