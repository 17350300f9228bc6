"""``AuthManagerAccess`` asks Airflow's real auth manager (here the simple one) per DAG."""

from __future__ import annotations

from airflow.api_fastapi.auth.managers.simple.simple_auth_manager import SimpleAuthManager
from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser

from airflow_predictive.ui.access import AuthManagerAccess


def test_a_viewer_may_read_every_dag() -> None:
    access = AuthManagerAccess(SimpleAuthManagerUser(username="v", role="viewer"), SimpleAuthManager())
    assert access.can_read("ui_demo")
    assert access.allowed({"ui_demo", "ui_secret"}) == {"ui_demo", "ui_secret"}


def test_a_user_without_a_role_may_read_nothing() -> None:
    access = AuthManagerAccess(SimpleAuthManagerUser(username="n", role=None), SimpleAuthManager())
    assert not access.can_read("ui_demo")
    assert access.allowed({"ui_demo", "ui_secret"}) == set()
    assert access.allowed(set()) == set()
