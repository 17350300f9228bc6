"""The listener: hands the whole recording to the sidecar, never touches the database in the task
process, never raises, trips its circuit breaker once, queues server-side writes, and keeps a
deferred try's leg open for its resume."""

from __future__ import annotations

import logging
import os
import threading
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import pytest

from airflow_predictive import config
from airflow_predictive.core.model.runs import LegEnd, Outcome, TaskKey
from airflow_predictive.listeners import run_recorder
from airflow_predictive.storage import migrate
from airflow_predictive.storage.engine import engine_for
from airflow_predictive.storage.run_store import SqlRunStore
from tests.faulty_db import HungServer

if TYPE_CHECKING:
    from pathlib import Path


class RuntimeTaskInstance(SimpleNamespace):
    """Same class name as Airflow's, so the listener treats it as a task-process instance."""


class TaskInstance(SimpleNamespace):
    """Same class name as Airflow's ORM model (the scheduler / API server side)."""


class TaskRunnerMarker:
    """Same class name as the component Airflow's task runner passes to lifecycle hooks."""


def _ti(run_id: str = "r", **extra: Any) -> RuntimeTaskInstance:
    task = SimpleNamespace(
        executor_config={}, resources=None, pool="default_pool", queue="default", params={}
    )
    return RuntimeTaskInstance(
        dag_id="d", task_id="t", run_id=run_id, map_index=-1, try_number=1, task=task, start_date=None,
        get_template_context=lambda: {"params": {"input_mb": 5}}, state=None, **extra,
    )  # fmt: skip


@pytest.fixture(autouse=True)
def _fresh(monkeypatch: pytest.MonkeyPatch) -> None:
    run_recorder._logged.clear()
    run_recorder._active.clear()
    run_recorder.breaker.reset()
    monkeypatch.delenv(config.INHERITED_STORE_ENV, raising=False)
    monkeypatch.setenv("AIRFLOW__PREDICTIVE__SAMPLE_INTERVAL", "0.2")
    monkeypatch.setenv("AIRFLOW__PREDICTIVE__SAMPLE_FLUSH_INTERVAL", "0.5")
    monkeypatch.setenv("AIRFLOW__PREDICTIVE__GPU_METRICS", "off")
    config.reset_cache()
    yield
    config.reset_cache()


@pytest.fixture
def store(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> SqlRunStore:
    url = f"sqlite:///{tmp_path}/p.db"
    migrate.upgrade(engine_for(url))
    monkeypatch.setenv("AIRFLOW__PREDICTIVE__SQL_ALCHEMY_CONN", url)
    return SqlRunStore(engine_for(url))


def _sidecar_of(ti: RuntimeTaskInstance) -> Any:
    return run_recorder._active[run_recorder._ti_key(ti)].recorder.process


def test_records_start_and_end_through_the_sidecar(store: SqlRunStore) -> None:
    ti = _ti()
    run_recorder.on_task_instance_running(None, ti)
    sidecar = _sidecar_of(ti)
    run_recorder.on_task_instance_failed(None, ti, MemoryError("boom"))
    assert sidecar.wait(60) == 0
    [run] = store.runs(TaskKey("d", "t"))
    assert run.outcome is Outcome.OOM_KILLED
    assert run.features["param.input_mb"] == 5
    assert run.end is not None and run.n_samples >= 1


def test_the_task_process_never_opens_a_database_connection(
    store: SqlRunStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sqlalchemy

    opened: list[str] = []
    real = sqlalchemy.create_engine
    monkeypatch.setattr(sqlalchemy, "create_engine", lambda *a, **k: opened.append(str(a)) or real(*a, **k))
    monkeypatch.setattr("airflow_predictive.storage.engine.create_engine", sqlalchemy.create_engine)
    engine_for.cache_clear()
    ti = _ti()
    run_recorder.on_task_instance_running(None, ti)
    sidecar = _sidecar_of(ti)
    run_recorder.on_task_instance_success(None, ti)
    assert opened == []  # start and end hooks: a spawn and two pipe writes, no engine, no connection
    assert sidecar.wait(60) == 0
    engine_for.cache_clear()
    assert store.runs(TaskKey("d", "t"))[0].outcome is Outcome.SUCCESS


def test_a_hung_database_never_reaches_the_task_and_the_sidecar_gives_up_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server = HungServer()
    try:
        monkeypatch.setenv("AIRFLOW__PREDICTIVE__SQL_ALCHEMY_CONN", server.url)
        ti = _ti()
        run_recorder.on_task_instance_running(None, ti)
        sidecar = _sidecar_of(ti)
        run_recorder.on_task_instance_success(None, ti)
        assert not run_recorder.breaker.open  # nothing failed on the task path
        assert sidecar.poll() is None  # the sidecar, outside the task path, is still trying
        for _ in range(300):
            if server.accepted:
                break
            threading.Event().wait(0.1)
        assert server.accepted >= 1  # the sidecar, not the task, met the hung server
        sidecar.terminate()  # its catch-up would retry for minutes
        sidecar.wait(30)
    finally:
        server.close()


def test_a_deferred_try_keeps_its_leg_for_the_resume(store: SqlRunStore) -> None:
    first = _ti()
    run_recorder.on_task_instance_running(None, first)
    leg1 = _sidecar_of(first)
    first.state = SimpleNamespace(value="deferred")  # what the task runner sets before exiting
    run_recorder.before_stopping(TaskRunnerMarker())
    assert leg1.wait(60) == 0 and not run_recorder._active
    [run] = store.runs(TaskKey("d", "t"))
    assert run.outcome is Outcome.RUNNING  # waiting, not UNKNOWN
    assert [leg.end for leg in store.legs(run.run_pk)] == [LegEnd.DEFERRED]
    n_first = run.n_samples
    resumed = _ti()
    run_recorder.on_task_instance_running(None, resumed)
    leg2 = _sidecar_of(resumed)
    run_recorder.on_task_instance_success(None, resumed)
    assert leg2.wait(60) == 0
    [run] = store.runs(TaskKey("d", "t"))
    assert run.outcome is Outcome.SUCCESS and run.n_samples > n_first
    assert [leg.end for leg in store.legs(run.run_pk)] == [LegEnd.DEFERRED, LegEnd.FINISHED]
    [wait] = store.wait_intervals(run.run_pk)
    assert wait.reason is LegEnd.DEFERRED and wait.t_end_s >= wait.t_start_s


def test_a_worker_without_a_store_warns_once_and_stops_trying(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv("AIRFLOW__PREDICTIVE__SQL_ALCHEMY_CONN", raising=False)
    monkeypatch.setenv("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "airflow-db-not-allowed:///")
    monkeypatch.setenv("AIRFLOW__PREDICTIVE__STORE_CONN_ID", "")
    with caplog.at_level(logging.WARNING):
        run_recorder.on_task_instance_running(None, _ti("r1"))
        run_recorder.on_task_instance_running(None, _ti("r2"))
        run_recorder.on_task_instance_success(None, _ti("r2"))
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1, warnings
    assert "recording disabled on this worker" in warnings[0] and "db-grants" in warnings[0]
    assert run_recorder.breaker.open and not run_recorder._active


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


def test_a_server_side_failure_is_queued_and_never_blocks_the_caller(monkeypatch: pytest.MonkeyPatch) -> None:
    server = HungServer()
    try:
        monkeypatch.setenv("AIRFLOW__PREDICTIVE__SQL_ALCHEMY_CONN", server.url)
        monkeypatch.setenv("AIRFLOW__PREDICTIVE__RECORD_BUDGET", "0.5")
        writer = run_recorder._background()
        before = writer.done + writer.failed
        orm_ti = TaskInstance(dag_id="d", task_id="t", run_id="r", map_index=-1, try_number=1)
        run_recorder.on_task_instance_failed(None, orm_ti, RuntimeError("zombie"))
        assert not run_recorder.breaker.open  # the scheduler never trips the task breaker
        assert writer.drain(timeout=30)  # the hung server made the job fail on the daemon thread
        assert writer.done + writer.failed == before + 1 and server.accepted >= 1
    finally:
        server.close()


def test_components_export_only_the_sqlite_sibling(monkeypatch: pytest.MonkeyPatch) -> None:
    import airflow.configuration

    monkeypatch.delenv("AIRFLOW__PREDICTIVE__SQL_ALCHEMY_CONN", raising=False)
    monkeypatch.setenv("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "sqlite:////srv/af/airflow.db")

    def conf_get(metadata_url: str) -> Any:
        return lambda section, key, **k: metadata_url if section == "database" else k.get("fallback")

    monkeypatch.setattr(airflow.configuration.conf, "get", conf_get("sqlite:////srv/af/airflow.db"))
    run_recorder.on_starting(SimpleNamespace(job_type="SchedulerJob"))
    assert os.environ[config.INHERITED_STORE_ENV] == "sqlite:////srv/af/predictive.db"
    monkeypatch.delenv(config.INHERITED_STORE_ENV)
    config.reset_cache()
    monkeypatch.setattr(airflow.configuration.conf, "get", conf_get("postgresql://a:secret@db/af"))
    monkeypatch.setenv("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "postgresql://a:secret@db/af")
    run_recorder.on_starting(SimpleNamespace(job_type="SchedulerJob"))
    assert config.INHERITED_STORE_ENV not in os.environ
