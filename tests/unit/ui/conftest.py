"""Fixtures of the UI's unit tests: seeded stores on a real database, a DagAccess by DAG id."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from airflow_predictive.storage.ledger_store import DecisionLog, SqlLedger
from airflow_predictive.storage.profile_store import ForecastCache, ProfileStore
from airflow_predictive.storage.run_store import SqlRunStore
from airflow_predictive.storage.shaping_store import SqlShapingEventStore
from airflow_predictive.ui.queries import UiStores
from tests.integration.ui.seed import Seeded, seed

if TYPE_CHECKING:
    from collections.abc import Iterable

    from sqlalchemy.engine import Engine


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


@pytest.fixture
def seeded(db_engine: Engine) -> tuple[UiStores, Seeded]:
    return stores_on(db_engine), seed(db_engine, runs=5, samples=600)
