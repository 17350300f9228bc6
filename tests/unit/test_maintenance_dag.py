"""The maintenance DAG's retrain task takes its database and model folder from the runtime."""

from __future__ import annotations

import runpy
from pathlib import Path
from typing import TYPE_CHECKING

from airflow_predictive import runtime
from airflow_predictive.storage import migrate

if TYPE_CHECKING:
    import pytest

REPO_DAG = Path(__file__).resolve().parents[2] / "dags" / "predictive_maintenance.py"


def test_retrain_task_runs_on_the_configured_database(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("AIRFLOW__PREDICTIVE__SQL_ALCHEMY_CONN", f"sqlite:///{tmp_path / 'p.db'}")
    monkeypatch.setenv("AIRFLOW__PREDICTIVE__MODEL_DIR", str(tmp_path / "models"))
    runtime.reset_runtime()
    try:
        migrate.upgrade(runtime.get_runtime().engine())
        dag = runpy.run_path(str(REPO_DAG))["predictive_maintenance"]()  # the @dag factory
        retrain = dag.get_task("retrain_tasks_with_new_runs").python_callable
        assert retrain(min_new_runs=1) == {"retrained": 0}  # an empty history: nothing is due
    finally:
        runtime.reset_runtime()
