"""The plugin registers the UI where Airflow 3.3 looks for it, and stays import-light."""

from __future__ import annotations

from fastapi.testclient import TestClient

from airflow_predictive.plugins.predictive_plugin import URL_PREFIX, LazyApp, PredictivePlugin


def test_mounts_one_app_under_a_prefix_airflow_accepts() -> None:
    from airflow.api_fastapi.app import RESERVED_URL_PREFIXES

    (entry,) = PredictivePlugin.fastapi_apps
    assert entry["url_prefix"] == URL_PREFIX == "/predictive"
    assert not any(URL_PREFIX.startswith(p) for p in RESERVED_URL_PREFIXES)
    assert isinstance(entry["app"], LazyApp)


def test_has_a_nav_entry_and_a_task_instance_resources_tab() -> None:
    from airflow.api_fastapi.core_api.datamodels.plugins import ExternalViewResponse

    views = {v["destination"]: ExternalViewResponse(**v) for v in PredictivePlugin.external_views}
    assert set(views) == {"nav", "task_instance"}
    assert views["nav"].href == "/predictive/"
    tab = views["task_instance"]
    assert tab.name == "Resources"
    for placeholder in ("{DAG_ID}", "{TASK_ID}", "{RUN_ID}", "{MAP_INDEX}"):
        assert placeholder in tab.href
    assert tab.href.startswith("/predictive/try?")


def test_lazy_app_builds_the_ui_on_its_first_request() -> None:
    app = LazyApp()
    assert app._app is None
    response = TestClient(app).get("/openapi.json")
    assert response.status_code == 200
    assert "/api/overview" in response.json()["paths"]
    assert app._app is not None


def test_openapi_docs_and_pages_work_under_the_mount_prefix() -> None:
    from fastapi import FastAPI

    root = FastAPI()
    root.mount(URL_PREFIX, LazyApp())  # what airflow/api_fastapi/app.py::init_plugins does
    client = TestClient(root)
    docs = client.get("/predictive/docs")
    assert docs.status_code == 200 and "/predictive/openapi.json" in docs.text
    assert client.get("/predictive/openapi.json").status_code == 200
    page = client.get("/predictive")
    assert page.status_code == 200 and str(page.url).endswith("/predictive/")  # relative links resolve
