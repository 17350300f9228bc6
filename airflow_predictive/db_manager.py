"""PredictiveDBManager: lets `airflow db migrate` create and upgrade the provider's tables.

An Airflow-facing adapter (Airflow instantiates it by the class path in provider_info), so it
takes the provider's engine from the runtime; the storage package below it imports no Airflow.
The tables may live outside Airflow's metadata database (``[predictive] sql_alchemy_conn``), so
every operation runs the provider's own Alembic migrations on the provider's own engine; creating
tables straight from the ORM is never used, which keeps the migration files the only schema
definition that reaches a database.
"""

from __future__ import annotations

from typing import Any

from airflow.utils.db_manager import BaseDBManager

from airflow_predictive.runtime import get_runtime
from airflow_predictive.storage import migrate
from airflow_predictive.storage.tables import VERSION_TABLE, metadata


class PredictiveDBManager(BaseDBManager):
    metadata = metadata
    migration_dir = migrate.MIGRATIONS_DIR
    alembic_file = migrate.MIGRATIONS_DIR + "/alembic.ini"
    version_table_name = VERSION_TABLE
    supports_table_dropping = True

    def _engine(self) -> Any:
        return get_runtime().engine()

    def get_alembic_config(self) -> Any:
        return migrate.alembic_config(get_runtime().storage_url())

    def get_current_revision(self) -> Any:
        return migrate.current_revision(self._engine())

    def create_db_from_orm(self) -> None:
        self.log.info("Creating the predictive tables through their migrations")
        migrate.upgrade(self._engine())

    def initdb(self, use_migration_files: bool = False) -> None:
        migrate.upgrade(self._engine())

    def upgradedb(
        self,
        to_revision: str | None = None,
        from_revision: str | None = None,
        show_sql_only: bool = False,
        use_migration_files: bool = False,
    ) -> None:
        self.log.info("Upgrading the predictive tables")
        migrate.upgrade(self._engine(), to_revision or "heads")

    def downgrade(
        self, to_revision: str, from_revision: str | None = None, show_sql_only: bool = False
    ) -> None:
        migrate.downgrade(self._engine(), to_revision)

    def drop_tables(self, connection: Any) -> None:
        engine = self._engine()
        self.metadata.drop_all(engine)
        from sqlalchemy import inspect, text

        with engine.begin() as conn:
            if inspect(conn).has_table(VERSION_TABLE):
                conn.execute(text(f"DROP TABLE {VERSION_TABLE}"))
