"""Who may see what: Airflow's login and the auth manager's DAG permissions, for the UI's routes.

Why: the plugin app is mounted inside the API server but is not one of its routers, so only the
security dependencies that do not read ``request.app.state`` work here (``get_user`` reads the
Bearer header, then the ``_token`` cookie; ``get_auth_manager()`` is process-wide). Every route
depends on ``dag_access``: no user, no data (401/403 from Airflow's own dependency). Lists are
filtered to the DAGs the user may read; a route about one DAG answers 403 when it is not allowed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Protocol

from airflow.api_fastapi.core_api.security import GetUserDep  # noqa: TC002 (FastAPI reads it at runtime)
from fastapi import Depends, HTTPException, status

if TYPE_CHECKING:
    from collections.abc import Iterable

    from airflow.api_fastapi.auth.managers.base_auth_manager import BaseAuthManager
    from airflow.api_fastapi.auth.managers.models.base_user import BaseUser


class DagAccess(Protocol):
    """The DAGs the current user may read."""

    def allowed(self, dag_ids: Iterable[str]) -> set[str]: ...

    def can_read(self, dag_id: str) -> bool: ...


class AuthManagerAccess:
    """``DagAccess`` answered by Airflow's auth manager for one logged-in user (method GET)."""

    def __init__(self, user: BaseUser, manager: BaseAuthManager | None = None) -> None:
        self._user = user
        self._manager = manager

    def _auth(self) -> BaseAuthManager:
        if self._manager is None:
            from airflow.api_fastapi.app import get_auth_manager

            self._manager = get_auth_manager()
        return self._manager

    def allowed(self, dag_ids: Iterable[str]) -> set[str]:
        wanted = set(dag_ids)
        if not wanted:
            return set()
        return set(self._auth().filter_authorized_dag_ids(dag_ids=wanted, user=self._user, method="GET"))

    def can_read(self, dag_id: str) -> bool:
        from airflow.api_fastapi.auth.managers.models.resource_details import DagDetails

        return bool(
            self._auth().is_authorized_dag(method="GET", details=DagDetails(id=dag_id), user=self._user)
        )


def dag_access(user: GetUserDep) -> DagAccess:
    """The FastAPI dependency every route uses (raises 401/403 through ``get_user`` first)."""
    return AuthManagerAccess(user)


DagAccessDep = Annotated[DagAccess, Depends(dag_access)]


def require_dag(access: DagAccess, dag_id: str) -> None:
    """403 unless the user may read ``dag_id`` (the same answer whether or not it exists)."""
    if not access.can_read(dag_id):
        raise HTTPException(status.HTTP_403_FORBIDDEN, "Forbidden")
