from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from airflow_predictive.traces import import_traces
from tests.unit.training.synthetic_traces import write_trace

if TYPE_CHECKING:
    from pathlib import Path

    from airflow_predictive.storage.run_store import SqlRunStore


@pytest.fixture
def filled_store(run_store: SqlRunStore, tmp_path: Path) -> SqlRunStore:
    import_traces(write_trace(tmp_path / "trace"), run_store)
    return run_store
