"""Where recording writes (docs/recording.md): tasks never read the metadata database's URL.

Inside an Airflow 3 task process the metadata URL is replaced by a blocking marker; the store is
then ``[predictive] sql_alchemy_conn``, the ``predictive_store`` connection, or the SQLite sibling
its launcher exported, else recording is disabled with one clear error, never another database.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from airflow_predictive import config

BLOCKED = "airflow-db-not-allowed:///"


@pytest.fixture(autouse=True)
def _fresh(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "AIRFLOW__PREDICTIVE__SQL_ALCHEMY_CONN",
        config.INHERITED_STORE_ENV,
        "AIRFLOW_CONN_PREDICTIVE_STORE",
    ):
        monkeypatch.delenv(name, raising=False)
    config.reset_cache()
    yield
    config.reset_cache()


@pytest.fixture
def task_process(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    """What block_orm_access leaves in a task process, with an airflow.cfg naming a SQLite file."""
    (tmp_path / "airflow.cfg").write_text(f"[database]\nsql_alchemy_conn = sqlite:///{tmp_path}/airflow.db\n")
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path))
    monkeypatch.setenv("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", BLOCKED)


@pytest.mark.usefixtures("task_process")
def test_a_task_without_a_store_is_told_how_to_get_one_and_never_falls_back_to_airflow_cfg() -> None:
    assert config.in_task_process()
    with pytest.raises(config.RecordingUnavailable, match="db-grants") as err:
        config.storage_url()
    assert "predictive_store" in str(err.value) and "sqlite" not in str(err.value)


@pytest.mark.usefixtures("task_process")
def test_a_task_uses_the_sqlite_sibling_its_launcher_exported(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(config.INHERITED_STORE_ENV, "sqlite:////srv/airflow/predictive.db")
    assert config.storage_url() == "sqlite:////srv/airflow/predictive.db"


@pytest.mark.usefixtures("task_process")
def test_an_inherited_server_url_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(config.INHERITED_STORE_ENV, "postgresql://airflow:secret@db/airflow")
    with pytest.raises(config.RecordingUnavailable):
        config.storage_url()


@pytest.mark.usefixtures("task_process")
def test_the_dedicated_url_wins_in_a_task(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW__PREDICTIVE__SQL_ALCHEMY_CONN", "postgresql+psycopg2://rec:pw@db/airflow")
    monkeypatch.setenv(config.INHERITED_STORE_ENV, "sqlite:////srv/airflow/predictive.db")
    assert config.storage_url() == "postgresql+psycopg2://rec:pw@db/airflow"


@pytest.mark.usefixtures("task_process")
def test_a_task_finds_the_store_connection_through_the_task_sdk(monkeypatch: pytest.MonkeyPatch) -> None:
    # the environment secrets backend is one of those the Task SDK consults
    monkeypatch.setenv("AIRFLOW_CONN_PREDICTIVE_STORE", "postgres://rec:p%40ss@db.internal:5433/airflow")
    monkeypatch.setenv(config.INHERITED_STORE_ENV, "sqlite:////srv/airflow/predictive.db")
    assert config.storage_url() == "postgresql+psycopg2://rec:p%40ss@db.internal:5433/airflow"


def test_outside_tasks_the_server_database_is_shared_and_nothing_is_exported(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "postgresql+psycopg2://a:b@db/airflow")
    import airflow.configuration

    monkeypatch.setattr(
        airflow.configuration.conf, "get", lambda *a, **k: "postgresql+psycopg2://a:b@db/airflow"
    )
    assert config.storage_url() == "postgresql+psycopg2://a:b@db/airflow"
    assert config.inherited_store() is None  # credentials are never passed down to tasks


@pytest.mark.parametrize(
    ("conn", "url"),
    [
        (SimpleNamespace(conn_type="postgres", login="u", password="p/w@", host="h", port=5432, schema="d",
                         extra_dejson={}), "postgresql+psycopg2://u:p%2Fw%40@h:5432/d"),
        (SimpleNamespace(conn_type="sqlite", host="/x/p.db", extra_dejson={}), "sqlite:////x/p.db"),
        (SimpleNamespace(conn_type="http", host="h", extra_dejson={}), None),
        (SimpleNamespace(conn_type="generic", extra_dejson={"sqlalchemy_url": "sqlite:///y.db"}), "sqlite:///y.db"),
    ],
)  # fmt: skip
def test_connections_become_sqlalchemy_urls(conn: object, url: str | None) -> None:
    assert config.connection_to_url(conn) == url


@pytest.mark.usefixtures("task_process")
def test_a_slow_store_connection_is_handed_over_still_pending_and_answers_later(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import threading

    from airflow.sdk import BaseHook

    answer = threading.Event()

    def slow(conn_id: str) -> object:
        answer.wait(10)
        return SimpleNamespace(conn_type="postgres", login="rec", password="pw", host="db", port=None,
                               schema="airflow", extra_dejson={})  # fmt: skip

    monkeypatch.setattr(BaseHook, "get_connection", staticmethod(slow))
    store = config.recording_store(0.05)
    assert isinstance(store, config.ConnectionLookup) and store.pending
    answer.set()
    assert config.pending_store_url(store) == "postgresql+psycopg2://rec:pw@db/airflow"


@pytest.mark.usefixtures("task_process")
def test_a_store_connection_that_fails_late_disables_recording_with_the_reason(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import time

    from airflow.sdk import BaseHook

    def failing(conn_id: str) -> object:
        time.sleep(0.3)
        raise RuntimeError("API server unreachable")

    monkeypatch.setattr(BaseHook, "get_connection", staticmethod(failing))
    store = config.recording_store(0.01)
    assert isinstance(store, config.ConnectionLookup)
    with pytest.raises(config.RecordingUnavailable, match="API server unreachable"):
        config.pending_store_url(store)
