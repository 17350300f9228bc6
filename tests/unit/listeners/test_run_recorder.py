"""The listener never raises into the task and logs a storage failure once."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest

from airflow_predictive import config
from airflow_predictive.listeners import run_recorder


class RuntimeTaskInstance(SimpleNamespace):
    """Same class name as Airflow's, so the listener treats it as a task-process instance."""


def _ti() -> RuntimeTaskInstance:
    task = SimpleNamespace(
        executor_config={}, resources=None, pool="default_pool", queue="default", params={}
    )
    return RuntimeTaskInstance(
        dag_id="d", task_id="t", run_id="r", map_index=-1, try_number=1, task=task, start_date=None,
        get_template_context=lambda: {"params": {"input_mb": 5}},
    )  # fmt: skip


@pytest.fixture(autouse=True)
def _fresh(monkeypatch: pytest.MonkeyPatch) -> None:
    run_recorder._logged.clear()
    run_recorder._active.clear()
    config.reset_cache()
    yield
    config.reset_cache()


def test_database_down_is_logged_once_and_never_raises(
    monkeypatch: pytest.MonkeyPatch, tmp_path, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("AIRFLOW__PREDICTIVE__SQL_ALCHEMY_CONN", f"sqlite:///{tmp_path}/missing/dir/x.db")
    with caplog.at_level(logging.WARNING):
        run_recorder.on_task_instance_running(None, _ti())
        run_recorder.on_task_instance_running(None, _ti())
        run_recorder.on_task_instance_success(None, _ti())
    warnings = [r for r in caplog.records if "could not record start" in r.getMessage()]
    assert len(warnings) == 1
    assert "declared resources" in warnings[0].getMessage()


def test_invalid_config_is_logged_not_raised(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("AIRFLOW__PREDICTIVE__SAMPLE_INTERVAL", "-1")
    monkeypatch.setenv("AIRFLOW__PREDICTIVE__SQL_ALCHEMY_CONN", "sqlite://")
    with caplog.at_level(logging.WARNING):
        run_recorder.on_task_instance_running(None, _ti())
    assert any("sample_interval" in r.getMessage() for r in caplog.records)


def test_disabled_records_nothing(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("AIRFLOW__PREDICTIVE__ENABLED", "false")
    monkeypatch.setenv("AIRFLOW__PREDICTIVE__SQL_ALCHEMY_CONN", "sqlite:////nonexistent/dir/x.db")
    with caplog.at_level(logging.WARNING):
        run_recorder.on_task_instance_running(None, _ti())
    assert not caplog.records and not run_recorder._active


def test_records_start_and_end_with_a_real_store(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    from airflow_predictive.core.model.runs import Outcome, TaskKey
    from airflow_predictive.storage import migrate
    from airflow_predictive.storage.engine import engine_for
    from airflow_predictive.storage.run_store import SqlRunStore

    url = f"sqlite:///{tmp_path}/p.db"
    migrate.upgrade(engine_for(url))
    monkeypatch.setenv("AIRFLOW__PREDICTIVE__SQL_ALCHEMY_CONN", url)
    monkeypatch.setenv("AIRFLOW__PREDICTIVE__SAMPLE_INTERVAL", "0.2")
    ti = _ti()
    run_recorder.on_task_instance_running(None, ti)
    run_recorder.on_task_instance_failed(None, ti, MemoryError("boom"))
    [run] = SqlRunStore(engine_for(url)).runs(TaskKey("d", "t"))
    assert run.outcome is Outcome.OOM_KILLED
    assert run.features["param.input_mb"] == 5
    assert run.end is not None
