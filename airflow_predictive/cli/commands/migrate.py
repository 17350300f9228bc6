"""`airflow predictive migrate`: create or upgrade the provider's tables where they live."""

from __future__ import annotations

from typing import Any

from airflow_predictive.runtime import get_runtime
from airflow_predictive.storage import migrate


def run(args: Any) -> None:
    engine = get_runtime().engine()
    before = migrate.current_revision(engine)
    migrate.upgrade(engine)
    after = migrate.current_revision(engine)
    print(f"predictive tables at {engine.url.render_as_string(hide_password=True)}: {before} -> {after}")
