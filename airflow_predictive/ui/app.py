"""The UI's FastAPI app: the JSON API under ``/api`` and the pages, mounted by Airflow's API server.

Why: Airflow 3 serves plugin apps under their ``url_prefix`` (``/predictive``) on the API server,
so the pages come from the same origin as Airflow's UI and the browser sends Airflow's ``_token``
cookie with every call. Every API route depends on ``access.dag_access`` (Airflow's login, then
the auth manager's DAG permissions); the pages themselves are data-free shells whose script calls
the API. Errors never leak: unexpected exceptions are logged here and answered with a generic
message; the stores' own messages never reach the client.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

from fastapi import Depends, FastAPI, HTTPException, Query, status
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

from airflow_predictive.core.model.runs import TaskKey
from airflow_predictive.ui import models as m
from airflow_predictive.ui.access import DagAccessDep  # noqa: TC001 (FastAPI reads it at runtime)
from airflow_predictive.ui.queries import Forbidden, NotFound, UiQueries, UiStores

if TYPE_CHECKING:
    from collections.abc import Callable

log = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
GENERIC_ERROR = "Internal error in the predictive UI; the API server log has the details."
UNAVAILABLE = "The predictive store is unavailable; the API server log has the details."
PAGES = ("overview", "task", "try", "pools")

T = TypeVar("T")


def get_queries() -> UiQueries:
    """The read side over the runtime's stores (a dependency: tests override it)."""
    try:
        from airflow_predictive.runtime import get_runtime

        return UiQueries(UiStores.from_runtime(get_runtime()))
    except Exception:
        log.exception("predictive UI: the stores could not be built")
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, UNAVAILABLE) from None


QueriesDep = Annotated[UiQueries, Depends(get_queries)]


def answer(fn: Callable[[], T]) -> T:
    """Run one query; map its known failures to HTTP answers and hide everything else."""
    try:
        return fn()
    except NotFound:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "Not found") from None
    except Forbidden:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "Forbidden") from None
    except HTTPException:
        raise
    except Exception as exc:
        from airflow_predictive.storage.engine import StorageUnavailable

        if isinstance(exc, StorageUnavailable) or type(exc).__module__.startswith("sqlalchemy"):
            log.warning(
                "predictive UI: store unavailable: %s", str(exc).splitlines()[0][:300] if str(exc) else exc
            )
            raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, UNAVAILABLE) from None
        log.exception("predictive UI: request failed")
        raise HTTPException(status.HTTP_500_INTERNAL_SERVER_ERROR, GENERIC_ERROR) from None


def _page(name: str) -> Callable[[], Any]:
    def page() -> FileResponse:
        return FileResponse(STATIC / f"{name}.html", media_type="text/html")

    page.__name__ = f"page_{name}"
    return page


def create_app() -> FastAPI:
    app = FastAPI(
        title="airflow-predictive",
        description=(
            "Resource predictions of Airflow tasks: measured curves against forecast bands, plans, "
            "the allocation in force, shaping events and pools. Requires Airflow's authentication "
            "(Bearer token or the `_token` cookie); lists only DAGs the user may read."
        ),
        version="1",
    )

    @app.get("/api/overview", response_model=m.Overview, tags=["overview"])
    def overview(access: DagAccessDep, queries: QueriesDep) -> m.Overview:
        """Tasks under prediction (accuracy, declared, predicted, savings) and per-day headroom."""
        return answer(lambda: queries.overview(access))

    @app.get("/api/tasks/{dag_id}/{task_id}/runs", response_model=m.RunPage, tags=["tasks"])
    def task_runs(
        dag_id: str,
        task_id: str,
        access: DagAccessDep,
        queries: QueriesDep,
        map_index: int = -1,
        offset: Annotated[int, Query(ge=0)] = 0,
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
    ) -> m.RunPage:
        """A task's tries, newest first, one page at a time."""
        return answer(
            lambda: queries.runs(access, TaskKey(dag_id, task_id, map_index), offset=offset, limit=limit)
        )

    @app.get("/api/tries/{run_pk}", response_model=m.TryDetail, tags=["tries"])
    def try_by_pk(run_pk: int, access: DagAccessDep, queries: QueriesDep) -> m.TryDetail:
        """One try: measured curves (downsampled, peaks kept), forecast bands, plan, shaping."""
        return answer(lambda: queries.try_detail(access, run_pk))

    @app.get("/api/try", response_model=m.TryDetail, tags=["tries"])
    def try_of_instance(
        dag_id: str,
        task_id: str,
        run_id: str,
        access: DagAccessDep,
        queries: QueriesDep,
        map_index: int = -1,
        try_number: int | None = None,
    ) -> m.TryDetail:
        """The try of a task instance (the latest recorded one unless ``try_number`` is given)."""
        return answer(
            lambda: queries.find_try(access, TaskKey(dag_id, task_id, map_index), run_id, try_number)
        )

    @app.get("/api/pools", response_model=m.PoolList, tags=["pools"])
    def pools(access: DagAccessDep, queries: QueriesDep) -> m.PoolList:
        """The ledger's pools with their capacity and active reservations."""
        return answer(queries.pools)

    @app.get("/api/pools/{name}", response_model=m.PoolDetail, tags=["pools"])
    def pool(
        name: str,
        access: DagAccessDep,
        queries: QueriesDep,
        window_s: Annotated[float, Query(gt=0, le=30 * 86400)] = 3600.0,
    ) -> m.PoolDetail:
        """Capacity, reserved and used over the last ``window_s`` seconds; tasks held back and why."""
        return answer(lambda: queries.pool_detail(access, name, window_s=window_s))

    for name in PAGES:
        path = "/" if name == "overview" else f"/{name}"
        app.add_api_route(path, _page(name), methods=["GET"], include_in_schema=False)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app
