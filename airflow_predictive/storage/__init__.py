"""Storage adapter: SQLAlchemy 2 tables on the provider's own MetaData, Alembic migrations, stores.

Works on SQLite and PostgreSQL. No Airflow import here except in ``db_manager`` (the one class
Airflow's `airflow db migrate` needs).
"""

from __future__ import annotations
