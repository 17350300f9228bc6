"""Fixtures of the UI's unit tests: seeded stores on a real database, a DagAccess by DAG id."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from airflow_predictive.storage.ledger_store import DecisionLog, SqlLedger
from airflow_predictive.storage.profile_store import ForecastCache, ProfileStore
from airflow_predictive.storage.run_store import SqlRunStore
from airflow_predictive.storage.shaping_store import SqlShapingEventStore
from airflow_predictive.ui.queries import UiStores
from tests._databases import migrated_engine
from tests.integration.ui.seed import Seeded, seed

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator

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


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def seeded(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[UiStores, Seeded]]:
    """One seeded database per module and backend: the UI only reads, so its tests share it."""
    with migrated_engine(request.param, tmp_path_factory.mktemp("ui"), prefix="t_ui") as engine:
        yield stores_on(engine), seed(engine, runs=5, samples=600)
