"""Fixtures of the UI's unit tests: seeded stores on a real database, a DagAccess by DAG id."""

from __future__ import annotations

import os
import uuid
from typing import TYPE_CHECKING

import pytest
from sqlalchemy import create_engine, text

from airflow_predictive.storage import migrate
from airflow_predictive.storage.engine import engine_for
from airflow_predictive.storage.ledger_store import DecisionLog, SqlLedger
from airflow_predictive.storage.profile_store import ForecastCache, ProfileStore
from airflow_predictive.storage.run_store import SqlRunStore
from airflow_predictive.storage.shaping_store import SqlShapingEventStore
from airflow_predictive.ui.queries import UiStores
from tests._real_parts import require
from tests.integration.ui.seed import Seeded, seed

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator

    from sqlalchemy.engine import Engine


PG_URL_ENV = "AIRFLOW_PREDICTIVE_TEST_PG_URL"  # as in tests/conftest.py


class AllowDags:
    """A DagAccess that lets the user read exactly ``dags`` (what an auth manager would answer)."""

    def __init__(self, *dags: str) -> None:
        self.dags = set(dags)
        self.asked: list[str] = []

    def allowed(self, dag_ids: Iterable[str]) -> set[str]:
        return set(dag_ids) & self.dags

    def can_read(self, dag_id: str) -> bool:
        self.asked.append(dag_id)
        return dag_id in self.dags


def stores_on(engine: Engine) -> UiStores:
    return UiStores(
        runs=SqlRunStore(engine),
        profiles=ProfileStore(engine),
        forecasts=ForecastCache(engine),
        ledger=SqlLedger(engine),
        decisions=DecisionLog(engine),
        shaping=SqlShapingEventStore(engine),
    )


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def seeded(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[UiStores, Seeded]]:
    """One seeded database per module and backend: the UI only reads, so its tests share it."""
    if request.param == "sqlite":
        engine = engine_for(f"sqlite:///{tmp_path_factory.mktemp('ui') / 'predictive.db'}")
        admin = name = None
    else:
        url = os.environ.get(PG_URL_ENV)
        require(url, f"PostgreSQL: {PG_URL_ENV} is not set (`make test` starts PostgreSQL and sets it)")
        assert url is not None
        name = f"t_ui_{uuid.uuid4().hex[:10]}"
        admin = create_engine(url, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        engine = engine_for(url.rsplit("/", 1)[0] + f"/{name}")
    try:
        migrate.upgrade(engine)
        yield stores_on(engine), seed(engine, runs=5, samples=600)
    finally:
        engine.dispose()
        if admin is not None:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            admin.dispose()
