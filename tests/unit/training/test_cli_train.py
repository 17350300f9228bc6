from __future__ import annotations

from types import SimpleNamespace
from typing import TYPE_CHECKING

import pytest
from sqlalchemy import create_engine

from airflow_predictive import config
from airflow_predictive.core.model.runs import TaskKey
from airflow_predictive.storage import migrate
from airflow_predictive.storage.profile_store import ForecastCache, ProfileStore
from airflow_predictive.storage.run_store import SqlRunStore
from airflow_predictive.traces import import_traces
from tests.unit.training.synthetic_traces import write_trace

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path


@pytest.fixture
def configured_db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    url = f"sqlite:///{tmp_path / 'p.db'}"
    engine = create_engine(url)
    migrate.upgrade(engine)
    import_traces(write_trace(tmp_path / "trace", runs_per_task=8), SqlRunStore(engine))
    engine.dispose()
    monkeypatch.setenv("AIRFLOW__PREDICTIVE__SQL_ALCHEMY_CONN", url)
    monkeypatch.setenv("AIRFLOW__PREDICTIVE__MODEL_DIR", str(tmp_path / "models"))
    config.reset_cache()
    yield url
    config.reset_cache()


def test_train_one_task_caches_its_forecast(configured_db: str, capsys: pytest.CaptureFixture[str]) -> None:
    from airflow_predictive.cli.commands import train

    train.run(SimpleNamespace(dag_id="wf", task_id="sort", candidates="median_peak,vpa"))
    out = capsys.readouterr().out
    assert "wf.sort: champion" in out and "memory peaks at" in out
    engine = create_engine(configured_db)
    assert ForecastCache(engine).get(TaskKey("wf", "sort")) is not None
    assert ForecastCache(engine).get(TaskKey("wf", "align")) is None  # not asked for
    assert ProfileStore(engine).profile(TaskKey("wf", "sort")) is not None


def test_train_unknown_task_exits_with_a_message(
    configured_db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from airflow_predictive.cli.commands import train

    with pytest.raises(SystemExit):
        train.run(SimpleNamespace(dag_id="wf", task_id="nope", candidates=None))
    assert "nothing to train" in capsys.readouterr().err
