"""A real Airflow (LocalExecutor, API server) runs the maintenance DAG on a history of eight tasks:
retraining fans out as mapped shard tasks and stores every task's profile, the same champions as
one process retraining them all."""

from __future__ import annotations

import sqlite3
from typing import TYPE_CHECKING

import pytest

from airflow_predictive.storage.engine import engine_for
from airflow_predictive.storage.profile_store import ForecastCache, ProfileStore
from airflow_predictive.storage.run_store import SqlRunStore
from airflow_predictive.traces import import_traces
from airflow_predictive.training.maintenance import retrain
from tests._databases import migrated_engine
from tests.integration.airflow_runs.airflow_env import AirflowEnv
from tests.unit.training.fanout_history import write_history

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

pytestmark = pytest.mark.airflow

TASKS = 8
CANDIDATES = "scaled_curve,last_run,median_peak,linear_input,vpa,autopilot"  # no LSTM: kept fast here


@pytest.fixture(scope="module")
def maintained(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[AirflowEnv, Path]]:
    home = tmp_path_factory.mktemp("airflow-home")
    env = AirflowEnv.create(
        home,
        {
            "AIRFLOW__PREDICTIVE__MODEL_DIR": str(home / "models"),
            "AIRFLOW__PREDICTIVE__TRAINING_SHARD_SIZE": "4",
            # the maintenance DAG's own tasks stay out of the history (one process sees none)
            "AIRFLOW__PREDICTIVE__RECORD_ALL_TASKS": "False",
            "AIRFLOW__PREDICTIVE__TRAINING_CANDIDATES": CANDIDATES,
        },
    )
    env.migrate()
    import_traces(write_history(home / "trace", tasks=TASKS), SqlRunStore(engine_for(env.predictive_url)))
    env.start_api_server()
    try:
        out = env.dags_test("predictive_maintenance", {})
        assert out.returncode == 0, (out.stdout + out.stderr)[-6000:]
        yield env, home
    finally:
        env.stop()


def _states(home: Path) -> dict[tuple[str, int], str]:
    with sqlite3.connect(home / "airflow.db") as conn:
        rows = conn.execute(
            "SELECT task_id, map_index, state, start_date, end_date FROM task_instance"
            " WHERE dag_id = 'predictive_maintenance' ORDER BY start_date"
        ).fetchall()
    for row in rows:
        print(*row)
    return {(t, m): s for t, m, s, *_ in rows}


def test_shards_ran_as_mapped_tasks(maintained: tuple[AirflowEnv, Path]) -> None:
    _, home = maintained
    states = _states(home)
    assert {m for (t, m) in states if t == "backtest_shard"} == {0, 1}  # 8 tasks, 4 a shard
    assert set(states.values()) == {"success"}, states
    assert not list((home / "models" / "fanout").glob("*"))  # clean_up removed the work folder


def test_every_task_has_the_profile_one_process_would_store(
    maintained: tuple[AirflowEnv, Path], tmp_path: Path
) -> None:
    env, home = maintained
    engine = engine_for(env.predictive_url)
    profiles = {str(p.key): p for p in ProfileStore(engine).profiles()}
    assert len(profiles) == TASKS
    assert all(p.champion is not None for p in profiles.values())
    assert all(ForecastCache(engine).get(p.key) is not None for p in profiles.values())
    with migrated_engine("sqlite", tmp_path) as alone:  # the same history, retrained by one process
        import_traces(home / "trace", SqlRunStore(alone))
        one = retrain(alone, model_dir=str(tmp_path / "one"), candidates=tuple(CANDIDATES.split(",")))
        assert one is not None
        assert {str(t.key): t.champion for t in one.tasks} == {k: p.champion for k, p in profiles.items()}
        assert {str(p.key): p.scores for p in ProfileStore(alone).profiles()} == {
            k: p.scores for k, p in profiles.items()
        }


@pytest.fixture(scope="module")
def hourly(maintained: tuple[AirflowEnv, Path]) -> tuple[AirflowEnv, Path]:
    """The next run, with new runs of two tasks only: one shard, retrained inside the planner."""
    from datetime import UTC, datetime, timedelta

    env, home = maintained
    later = write_history(
        home / "later",
        tasks=2,
        runs_per_task=4,
        seed=1,
        start=datetime.now(UTC) + timedelta(days=1),
        prefix="L",
    )
    import_traces(later, SqlRunStore(engine_for(env.predictive_url)))
    out = env.dags_test("predictive_maintenance", {})  # the module's API server is still up
    assert out.returncode == 0, (out.stdout + out.stderr)[-6000:]
    return env, home


def test_a_few_due_tasks_retrain_inside_the_planner_and_launch_nothing_else(
    hourly: tuple[AirflowEnv, Path],
) -> None:
    env, home = hourly
    with sqlite3.connect(home / "airflow.db") as conn:
        (run_id,) = conn.execute(
            "SELECT run_id FROM dag_run WHERE dag_id = 'predictive_maintenance' ORDER BY id DESC LIMIT 1"
        ).fetchone()
        rows = conn.execute(
            "SELECT task_id, state, pid FROM task_instance WHERE run_id = ? AND dag_id = 'predictive_maintenance'",
            (run_id,),
        ).fetchall()
    states = {t: (s, pid) for t, s, pid in rows}
    assert states["plan_retraining"][0] == "success"
    for task_id in ("train_global_models", "select_and_store", "clean_up"):
        assert states[task_id] == ("skipped", None), states  # skipped without a process
    engine = engine_for(env.predictive_url)
    recent = sorted(ProfileStore(engine).profiles(), key=lambda p: p.updated_at)[-2:]
    assert {p.key.task_id for p in recent} == {"t0000", "t0001"}
    assert all(p.runs == 16 for p in recent)  # the 12 first runs and the 4 new ones
