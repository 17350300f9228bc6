"""The maintenance DAG fans retraining out (plan, global models, mapped shards, one choice) and its
tasks take their database and model folder from the runtime."""

from __future__ import annotations

import runpy
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from airflow_predictive import runtime
from airflow_predictive.storage import migrate

if TYPE_CHECKING:
    from collections.abc import Iterator

SHIPPED_DAG = (
    Path(__file__).resolve().parents[2]
    / "airflow_provider_predictive"
    / "example_dags"
    / "predictive_maintenance.py"
)


class _Pushed:
    """What a task instance's ``xcom_push`` received (the only part of ``ti`` the planner uses)."""

    def __init__(self) -> None:
        self.values: dict[str, Any] = {}

    def xcom_push(self, key: str, value: Any) -> None:
        self.values[key] = value


@pytest.fixture
def maintenance(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Any]:
    monkeypatch.setenv("AIRFLOW__PREDICTIVE__SQL_ALCHEMY_CONN", f"sqlite:///{tmp_path / 'p.db'}")
    monkeypatch.setenv("AIRFLOW__PREDICTIVE__MODEL_DIR", str(tmp_path / "models"))
    monkeypatch.setenv("AIRFLOW__PREDICTIVE__TRAINING_CANDIDATES", "scaled_curve,last_run,median_peak,vpa")
    runtime.reset_runtime()
    try:
        migrate.upgrade(runtime.get_runtime().engine())
        yield runpy.run_path(str(SHIPPED_DAG))["predictive_maintenance"]()  # the @dag factory
    finally:
        runtime.reset_runtime()


def test_planner_runs_on_the_configured_database(maintenance: Any) -> None:
    ti = _Pushed()
    plan = maintenance.get_task("plan_retraining").python_callable
    assert plan(min_new_runs=1, run_id="manual__1", ti=ti) == []  # an empty history: nothing is due
    assert ti.values == {"plan": {}}  # not None: Airflow would read it as a missing XCom


def test_shards_are_mapped_between_the_plan_and_the_one_choice(maintenance: Any) -> None:
    shard = maintenance.get_task("backtest_shard")
    assert shard.is_mapped
    select = maintenance.get_task("select_and_store")
    assert select.upstream_task_ids == {"plan_retraining", "train_global_models", "backtest_shard"}
    assert maintenance.get_task("train_global_models").upstream_task_ids == {"plan_retraining"}
    assert shard.upstream_task_ids == {"plan_retraining", "train_global_models"}  # its fold models
    clean_up = maintenance.get_task("clean_up")
    assert clean_up.trigger_rule == "all_done_min_one_success"  # runs after any fan-out, never alone
    assert clean_up.upstream_task_ids == {"train_global_models", "backtest_shard", "select_and_store"}


def test_a_small_deployment_retrains_inside_the_planner(maintenance: Any, tmp_path: Path) -> None:
    """One shard: the planner retrains itself and maps nothing, so the other tasks skip without
    a process (one task's overhead, as before the fan-out)."""
    from airflow_predictive.storage.profile_store import ProfileStore
    from airflow_predictive.storage.run_store import SqlRunStore
    from airflow_predictive.traces import import_traces
    from tests.unit.training.synthetic_traces import write_trace

    engine = runtime.get_runtime().engine()
    import_traces(write_trace(tmp_path / "trace"), SqlRunStore(engine))
    ti = _Pushed()
    plan = maintenance.get_task("plan_retraining").python_callable
    assert plan(min_new_runs=3, run_id="scheduled__1", ti=ti) == []
    assert ti.values["plan"] == {} and ti.values["retrained"]["retrained"] == 3
    assert {str(p.key) for p in ProfileStore(engine).profiles()} == {"wf.align", "wf.sort", "wf.once"}
    assert not (tmp_path / "models" / "fanout" / "scheduled__1").exists()
