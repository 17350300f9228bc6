"""Freshly migrated provider databases for tests: a SQLite file, or a new PostgreSQL database on the
server `make test` starts (URL in ``AIRFLOW_PREDICTIVE_TEST_PG_URL``), dropped afterwards."""

from __future__ import annotations

import os
import uuid
from contextlib import contextmanager
from typing import TYPE_CHECKING

from sqlalchemy import create_engine, text

from airflow_predictive.storage import migrate
from airflow_predictive.storage.engine import engine_for
from tests._real_parts import require

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from sqlalchemy.engine import Engine

PG_URL_ENV = "AIRFLOW_PREDICTIVE_TEST_PG_URL"


@contextmanager
def migrated_engine(kind: str, directory: Path, prefix: str = "t") -> Iterator[Engine]:
    """A freshly migrated database: a SQLite file in ``directory`` (kind "sqlite"), or a new
    PostgreSQL database on the server `make test` started, dropped afterwards."""
    if kind == "sqlite":
        engine = engine_for(f"sqlite:///{directory / 'predictive.db'}")
        migrate.upgrade(engine)
        yield engine
        engine.dispose()
        return
    url = os.environ.get(PG_URL_ENV) or None
    require(url, f"PostgreSQL: {PG_URL_ENV} is not set (`make test` starts PostgreSQL and sets it)")
    assert url is not None
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    engine = engine_for(url.rsplit("/", 1)[0] + f"/{name}")
    try:
        migrate.upgrade(engine)
        yield engine
    finally:
        engine.dispose()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
