"""The shaping sensor defers to its trigger and checks its settings when the DAG is parsed."""

from __future__ import annotations

import pytest
from airflow.sdk.exceptions import TaskDeferred

from airflow_predictive.sensors.shaping import ResourceShapingSensor
from airflow_predictive.triggers.shaping import ResourceShapingTrigger


def test_deferrable_mode_defers_to_the_shaping_trigger() -> None:
    sensor = ResourceShapingSensor(
        task_id="shape", selector="app=x", interval_s=1.5, shaping={"tolerance": 0.2}
    )
    with pytest.raises(TaskDeferred) as deferred:
        sensor.execute({})  # type: ignore[arg-type]
    trigger = deferred.value.trigger
    assert isinstance(trigger, ResourceShapingTrigger)
    assert (
        trigger.selector == "app=x" and trigger.interval_s == 1.5 and trigger.settings == {"tolerance": 0.2}
    )
    assert deferred.value.method_name == "execute_complete"


def test_a_bad_setting_fails_when_the_dag_is_parsed() -> None:
    with pytest.raises(ValueError, match="unknown shaping settings"):
        ResourceShapingSensor(task_id="shape", selector="app=x", shaping={"tolerence": 0.2})


def test_an_event_without_shaping_never_fails_the_sensor() -> None:
    sensor = ResourceShapingSensor(task_id="shape", selector="app=x")
    event = {"status": "not_found", "message": "no pod matches"}
    assert sensor.execute_complete({}, event) == event  # type: ignore[arg-type]
