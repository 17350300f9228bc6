"""Storage adapter: SQLAlchemy 2 tables on the provider's own MetaData, Alembic migrations, stores.

Works on SQLite and PostgreSQL. No Airflow import here: the class `airflow db migrate` needs
(``airflow_predictive.db_manager``) is an adapter above the runtime.
"""

from __future__ import annotations
