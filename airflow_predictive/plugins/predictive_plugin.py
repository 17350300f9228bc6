"""PredictivePlugin: the provider's listener and its UI, registered with Airflow (``airflow.plugins``).

Import-light: every process that loads plugins imports this module (scheduler, triggerer, task
runners), so it imports neither FastAPI nor the stores. The UI app is built on its first request
(``LazyApp``), which only happens in the API server.

UI entries (facts checked on Airflow 3.3.2, airflow/api_fastapi/app.py and the UI bundle): the app
is mounted at ``/predictive``; an external view in the navigation opens the overview, and an
external view on the task-instance page ("Resources") opens that try; the UI fills ``{DAG_ID}``,
``{RUN_ID}``, ``{TASK_ID}`` and ``{MAP_INDEX}`` in ``href``.
"""

from __future__ import annotations

from typing import Any

from airflow.plugins_manager import AirflowPlugin

from airflow_predictive.listeners import run_recorder

URL_PREFIX = "/predictive"


class LazyApp:
    """An ASGI app that builds ``airflow_predictive.ui.app.create_app()`` on its first call."""

    def __init__(self) -> None:
        self._app: Any = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if self._app is None:
            from airflow_predictive.ui.app import create_app

            self._app = create_app()
        await self._app(scope, receive, send)


class PredictivePlugin(AirflowPlugin):
    name = "predictive"
    listeners = [run_recorder]
    fastapi_apps = [{"app": LazyApp(), "url_prefix": URL_PREFIX, "name": "Predictive resources"}]
    external_views = [
        {
            "name": "Predictive resources",
            "href": f"{URL_PREFIX}/",
            "destination": "nav",
            "url_route": "predictive",
            "category": "browse",
        },
        {
            "name": "Resources",
            "href": (
                f"{URL_PREFIX}/try?dag_id={{DAG_ID}}&task_id={{TASK_ID}}&run_id={{RUN_ID}}"
                "&map_index={MAP_INDEX}"
            ),
            "destination": "task_instance",
            "url_route": "predictive-resources",
        },
    ]
