from __future__ import annotations

from types import SimpleNamespace

from airflow_predictive.core.model.resources import MIB
from airflow_predictive.listeners.task_facts import (
    declared_resources,
    executor_config_json,
    is_predictive,
    primitive_features,
)


def _pod(limits: dict[str, str] | None, requests: dict[str, str] | None = None) -> SimpleNamespace:
    resources = SimpleNamespace(limits=limits, requests=requests)
    return SimpleNamespace(
        spec=SimpleNamespace(containers=[SimpleNamespace(name="base", resources=resources)])
    )


def test_predictive_executor_config_declares_resources() -> None:
    v = declared_resources({"predictive": {"cpu": "500m", "memory": "2Gi"}}, None)
    assert v.cpu_cores == 0.5 and v.memory_bytes == 2 * 1024**3


def test_pod_override_limits_then_requests() -> None:
    assert declared_resources({"pod_override": _pod({"memory": "1Gi"})}, None).memory_bytes == 1024**3
    assert declared_resources({"pod_override": _pod(None, {"cpu": "2"})}, None).cpu_cores == 2.0


def test_operator_resources_in_megabytes() -> None:
    res = SimpleNamespace(
        cpus=SimpleNamespace(qty=2), ram=SimpleNamespace(qty=512), gpus=SimpleNamespace(qty=0)
    )
    v = declared_resources({}, res)
    assert v.cpu_cores == 2 and v.memory_bytes == 512 * MIB and v.gpu_util is None


def test_first_source_wins_metric_by_metric() -> None:
    res = SimpleNamespace(cpus=SimpleNamespace(qty=4), ram=SimpleNamespace(qty=256), gpus=None)
    v = declared_resources({"predictive": {"memory": "1Gi"}}, res)
    assert v.memory_bytes == 1024**3 and v.cpu_cores == 4


def test_invalid_quantities_are_ignored_not_fatal() -> None:
    assert declared_resources({"predictive": {"memory": "lots"}}, None).memory_bytes is None


def test_predictive_flag_sources() -> None:
    assert is_predictive({"predictive": {"memory": "1Gi"}}, object())
    assert not is_predictive({"predictive": {"enabled": False}}, object())
    assert is_predictive({}, SimpleNamespace(predictive=True))
    assert not is_predictive({}, object())


def test_features_keep_only_primitives() -> None:
    feats = primitive_features({"input_mb": 512, "name": "x", "flag": True, "nan": float("nan"), "obj": [1]})
    assert feats == {"param.input_mb": 512, "param.name": "x", "param.flag": True}


def test_executor_config_with_objects_is_still_json() -> None:
    text = executor_config_json({"pod_override": object()})
    assert text is not None and "pod_override" in text
