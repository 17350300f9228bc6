from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING

import pytest

from airflow_predictive.core.model.resources import GIB, ResourceVector
from airflow_predictive.core.model.runs import Outcome, RunIdentity, RunRecord, TaskKey
from airflow_predictive.core.model.series import ResourceSample
from airflow_predictive.simulation.bench import BASELINES, BenchOptions, run_from_store
from airflow_predictive.storage import migrate
from airflow_predictive.storage.engine import engine_for
from airflow_predictive.storage.run_store import SqlRunStore
from tests.unit.simulation.helpers import T0

if TYPE_CHECKING:
    from pathlib import Path


def _recorded_store(tmp_path: Path, runs: int = 6) -> SqlRunStore:
    engine = engine_for(f"sqlite:///{tmp_path / 'predictive.db'}")
    migrate.upgrade(engine)
    store = SqlRunStore(engine)
    key = TaskKey("example_memory_ramp", "ramp")
    for i in range(runs):
        start = T0 + timedelta(minutes=10 * i)
        record = RunRecord(
            identity=RunIdentity(key, f"manual__{i}", 1),
            start=start,
            declared=ResourceVector(cpu_cores=2.0, memory_bytes=4 * GIB),
        )
        pk = store.start_run(record)
        samples = [
            ResourceSample(float(t), ResourceVector(cpu_cores=1.0, memory_bytes=(0.2 + 0.01 * t) * GIB))
            for t in range(60)
        ]
        store.add_samples(pk, samples)
        store.finish_run(pk, outcome=Outcome.SUCCESS, end=start + timedelta(seconds=60))
    return store


def test_the_providers_own_recorded_runs_can_be_replayed(tmp_path: Path) -> None:
    result = run_from_store(_recorded_store(tmp_path), BenchOptions(policies=BASELINES))
    assert len(result.workload.runs) == 3  # the later half of the task's six runs
    figures = result.as_json()["policies"]
    assert figures["oracle"]["memory_slack"] < figures["declared"]["memory_slack"]


def test_a_store_with_nothing_to_replay_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no held-out run"):
        run_from_store(_recorded_store(tmp_path, runs=1), BenchOptions(policies=BASELINES))
