"""The shaping trigger serialises to its class path and primitives, and is rebuilt identically."""

from __future__ import annotations

import importlib
import json

import pytest

from airflow_predictive.core.model.resources import MIB, Metric, ResourceVector
from airflow_predictive.core.shaping.codec import settings_from_dict, settings_to_dict
from airflow_predictive.core.shaping.policy import ShapingSettings
from airflow_predictive.triggers.shaping import ResourceShapingTrigger


def test_serialises_to_primitives_and_rebuilds_the_same_trigger() -> None:
    settings = ShapingSettings(tolerance=0.2, maximum=ResourceVector(memory_bytes=4096 * MIB))
    trigger = ResourceShapingTrigger(
        selector="app=x",
        namespace="ns",
        container="base",
        interval_s=2,
        settings=settings_to_dict(settings),
        started_at=1000.0,
        run_key="d/t/-1/r/1",
    )
    path, kwargs = trigger.serialize()
    json.dumps(kwargs)  # primitives only: Airflow stores them
    module, _, name = path.rpartition(".")
    rebuilt = getattr(importlib.import_module(module), name)(**kwargs)
    assert rebuilt.serialize() == (path, kwargs)
    assert rebuilt.started_at == 1000.0  # the run's clock survives a restart


def test_settings_codec_round_trips_and_refuses_unknown_keys() -> None:
    settings = ShapingSettings(
        grow_margin=0.5, near_limit=0.2, minimum=ResourceVector(cpu_cores=0.2), metrics=(Metric.MEMORY_BYTES,)
    )
    assert settings_from_dict(json.loads(json.dumps(settings_to_dict(settings)))) == settings
    for ramp in (None, 4.0):  # the ramp-aware grow margin, off or not the default, survives too
        custom = ShapingSettings(ramp_margin_s=ramp, ramp_margin_max=0.3)
        assert settings_from_dict(json.loads(json.dumps(settings_to_dict(custom)))) == custom
    with pytest.raises(ValueError, match="unknown shaping settings: tolerence"):
        settings_from_dict({"tolerence": 0.1})
