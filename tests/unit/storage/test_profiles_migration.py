"""Revision 0002 (profiles, forecasts, selections): downgrades to 0001 cleanly and back.

Agreement of tables.py with the migrations (both revisions) is checked by test_migrations.py.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy import inspect

from airflow_predictive.storage import migrate

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

PROFILE_TABLES = {"predictive_task_profile", "predictive_forecast", "predictive_selection"}


def test_profiles_revision_downgrades_to_runs_only_and_back(db_engine: Engine) -> None:
    assert set(inspect(db_engine).get_table_names()) >= PROFILE_TABLES
    migrate.downgrade(db_engine, "0001_runs_and_samples")
    names = set(inspect(db_engine).get_table_names())
    assert not PROFILE_TABLES & names and "predictive_task_run" in names
    migrate.upgrade(db_engine)
    assert migrate.current_revision(db_engine) == migrate.head_revision()
    assert set(inspect(db_engine).get_table_names()) >= PROFILE_TABLES
