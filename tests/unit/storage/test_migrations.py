"""The migrations are the schema: they must agree with tables.py, upgrade, downgrade and re-run."""

from __future__ import annotations

from typing import TYPE_CHECKING

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from airflow_predictive.storage import migrate
from airflow_predictive.storage.tables import VERSION_TABLE, metadata

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine


def test_migrated_schema_matches_the_table_definitions(db_engine: Engine) -> None:
    with db_engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE, "compare_type": True})
        diff = compare_metadata(ctx, metadata)
    assert diff == []


def test_upgrade_is_idempotent_and_downgrade_removes_everything(db_engine: Engine) -> None:
    migrate.upgrade(db_engine)
    assert migrate.current_revision(db_engine) == migrate.head_revision()
    migrate.downgrade(db_engine, "base")
    names = set(inspect(db_engine).get_table_names())
    assert not {t for t in names if t.startswith("predictive_") and t != VERSION_TABLE}
    migrate.upgrade(db_engine)
    assert set(metadata.tables) <= set(inspect(db_engine).get_table_names())
