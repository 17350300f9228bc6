"""The UI app's HTTP contract: login required, 403 for a DAG the user may not read, errors that
never leak internal text, an OpenAPI schema, and the pages with their bundled chart library."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.exc import OperationalError

from airflow_predictive.ui import access
from airflow_predictive.ui.app import GENERIC_ERROR, UNAVAILABLE, create_app, get_queries
from airflow_predictive.ui.queries import UiQueries
from tests.integration.ui.seed import seed
from tests.unit.ui.conftest import AllowDags, stores_on

if TYPE_CHECKING:
    from collections.abc import Iterator

    from fastapi import FastAPI

    from tests.integration.ui.seed import Seeded


@pytest.fixture(scope="module")
def app_on(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[FastAPI, Seeded]]:
    from airflow_predictive.storage import migrate
    from airflow_predictive.storage.engine import engine_for

    engine = engine_for(f"sqlite:///{tmp_path_factory.mktemp('ui_app') / 'ui.db'}")
    migrate.upgrade(engine)
    data = seed(engine, runs=3, samples=400)
    app = create_app()
    app.dependency_overrides[get_queries] = lambda: UiQueries(stores_on(engine))
    yield app, data
    engine.dispose()


def _as(app: FastAPI, *dags: str) -> TestClient:
    app.dependency_overrides[access.dag_access] = lambda: AllowDags(*dags)
    return TestClient(app, raise_server_exceptions=False)


@pytest.mark.parametrize(
    "path",
    [
        "/api/overview",
        "/api/pools",
        "/api/pools/ui-pool",
        "/api/tries/1",
        "/api/tasks/ui_demo/transform/runs",
    ],
)
def test_api_routes_refuse_requests_without_login(path: str) -> None:
    client = TestClient(create_app(), raise_server_exceptions=False)
    response = client.get(path)
    assert response.status_code == 401
    assert "ui_demo" not in response.text


def test_a_dag_the_user_may_not_read_gets_403(app_on: tuple[FastAPI, Seeded]) -> None:
    app, data = app_on
    client = _as(app, "ui_secret")
    assert client.get(f"/api/tries/{data.latest.run_pk}").status_code == 403
    assert client.get("/api/tasks/ui_demo/transform/runs").status_code == 403
    assert (
        client.get(
            "/api/try", params={"dag_id": "ui_demo", "task_id": "transform", "run_id": data.run_id}
        ).status_code
        == 403
    )
    overview = client.get("/api/overview").json()
    assert {t["dag_id"] for t in overview["tasks"]} == {"ui_secret"}


def test_allowed_user_gets_pages_of_runs_and_the_try(app_on: tuple[FastAPI, Seeded]) -> None:
    app, data = app_on
    client = _as(app, "ui_demo")
    page = client.get("/api/tasks/ui_demo/transform/runs", params={"limit": 2, "offset": 1}).json()
    assert (page["total"], len(page["items"]), page["offset"]) == (3, 2, 1)
    detail = client.get(
        "/api/try", params={"dag_id": "ui_demo", "task_id": "transform", "run_id": data.run_id}
    ).json()
    assert detail["run"]["run_pk"] == data.latest.run_pk
    assert client.get("/api/tries/999999").status_code == 404
    assert client.get("/api/tasks/ui_demo/transform/runs", params={"limit": 0}).status_code == 422


class _Exploding:
    def __init__(self, exc: Exception) -> None:
        self.exc = exc

    def overview(self, _access: object) -> None:
        raise self.exc


def test_internal_errors_are_logged_and_answered_with_a_generic_message(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = create_app()
    app.dependency_overrides[get_queries] = lambda: _Exploding(
        RuntimeError("secret: password=hunter2 at /srv/x")
    )
    client = _as(app, "ui_demo")
    with caplog.at_level(logging.ERROR, logger="airflow_predictive.ui.app"):
        response = client.get("/api/overview")
    assert response.status_code == 500
    assert response.json() == {"detail": GENERIC_ERROR}
    assert "hunter2" not in response.text
    assert "hunter2" in caplog.text  # the operator still finds the cause in the server log


def test_a_store_that_is_down_gives_503_without_its_url() -> None:
    app = create_app()
    exc = OperationalError("SELECT 1", {}, Exception("could not connect to postgresql://admin:pw@db:5432/x"))
    app.dependency_overrides[get_queries] = lambda: _Exploding(exc)
    response = _as(app, "ui_demo").get("/api/overview")
    assert response.status_code == 503
    assert response.json() == {"detail": UNAVAILABLE}
    assert "admin:pw" not in response.text


def test_openapi_documents_every_api_route() -> None:
    schema = TestClient(create_app()).get("/openapi.json").json()
    assert {
        "/api/overview",
        "/api/tasks/{dag_id}/{task_id}/runs",
        "/api/tries/{run_pk}",
        "/api/try",
        "/api/pools",
        "/api/pools/{name}",
    } <= set(schema["paths"])
    assert "TryDetail" in schema["components"]["schemas"]


def test_pages_and_the_bundled_chart_library_are_served() -> None:
    client = TestClient(create_app())
    for path in ("/", "/task", "/try", "/pools"):
        response = client.get(path)
        assert response.status_code == 200
        assert "static/vendor/uPlot.iife.min.js" in response.text
        assert "http" not in response.text.split("<body")[0]  # nothing from another origin
    lib = client.get("/static/vendor/uPlot.iife.min.js")
    assert lib.status_code == 200 and "uPlot" in lib.text
    assert client.get("/static/vendor/uPlot.LICENSE").status_code == 200


def test_stores_that_cannot_be_built_give_503_without_the_cause(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from airflow_predictive import runtime

    def broken() -> None:
        raise RuntimeError("bad [predictive] sql_alchemy_conn = postgresql://u:secret@h/db")

    monkeypatch.setattr(runtime, "get_runtime", broken)
    app = create_app()
    with caplog.at_level(logging.ERROR, logger="airflow_predictive.ui.app"):
        response = _as(app, "ui_demo").get("/api/overview")
    assert response.status_code == 503
    assert response.json() == {"detail": UNAVAILABLE}
    assert "secret" not in response.text and "secret" in caplog.text
