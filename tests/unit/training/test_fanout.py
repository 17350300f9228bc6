"""The maintenance DAG's fan-out stores what one process stores, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import pytest

from airflow_predictive.core.model.runs import TaskKey
from airflow_predictive.core.profiler.selection import SelectionPolicy, backtest_tallies
from airflow_predictive.storage.model_store import ModelStore
from airflow_predictive.storage.profile_store import ForecastCache, ProfileStore
from airflow_predictive.storage.run_store import SqlRunStore
from airflow_predictive.traces import import_traces
from airflow_predictive.training.candidates import DEFAULT_CANDIDATES, factories
from airflow_predictive.training.dataset import load_examples
from airflow_predictive.training.fanout import (
    CROSS_TASK,
    decode,
    encode,
    make_plan,
    retrain_fanned_out,
    shards_of,
)
from airflow_predictive.training.maintenance import retrain
from airflow_predictive.training.pipeline import next_query
from tests._databases import migrated_engine
from tests.unit.training.fanout_history import write_history
from tests.unit.training.synthetic_traces import write_trace

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from sqlalchemy.engine import Engine

STATISTICAL = ("scaled_curve", "last_run", "median_peak", "linear_input", "vpa", "autopilot")


def _key(i: int) -> TaskKey:
    return TaskKey("d", f"t{i:03d}")


def test_few_due_tasks_make_one_shard() -> None:
    assert shards_of({_key(i): 10 for i in range(40)}, shard_size=100, max_shards=32) == [
        tuple(_key(i) for i in range(40))
    ]
    assert shards_of({}, 100, 32) == []


def test_shards_cover_every_task_once_balanced_by_runs_and_capped() -> None:
    runs = {_key(i): (500 if i < 3 else 10) for i in range(250)}
    shards = shards_of(runs, shard_size=100, max_shards=32)
    assert len(shards) == 3
    assert sorted(k for s in shards for k in s) == sorted(runs)
    loads = [sum(runs[k] for k in s) for s in shards]
    assert max(loads) - min(loads) <= 10  # each heavy task alone in a shard, the light ones spread
    assert len(shards_of(runs, shard_size=1, max_shards=4)) == 4


@pytest.fixture
def filled(tmp_path: Path) -> Iterator[SqlRunStore]:
    """The small synthetic trace on SQLite (tests of pure computation: one database kind is enough)."""
    (tmp_path / "filled").mkdir()
    with migrated_engine("sqlite", tmp_path / "filled") as engine:
        store = SqlRunStore(engine)
        import_traces(write_trace(tmp_path / "small-trace"), store)
        yield store


def test_tallies_round_trip_through_json(filled: SqlRunStore) -> None:
    examples = load_examples(filled)
    measured = backtest_tallies(factories(STATISTICAL), examples, SelectionPolicy(folds=2))
    back = decode(json.loads(json.dumps(encode(measured))))
    assert back == measured
    assert any(t.ratios for by_name in back.tallies.values() for t in by_name.values())


def test_per_task_candidates_learn_nothing_from_other_tasks(filled: SqlRunStore) -> None:
    """What lets a shard backtest them on its tasks alone: fitted on every task or on one, they
    forecast that task the same (a candidate that starts learning across tasks fails here and
    must join ``CROSS_TASK``)."""
    examples = load_examples(filled)
    align = [e for e in examples if e.key.task_id == "align"]
    local = tuple(n for n in DEFAULT_CANDIDATES if n not in CROSS_TASK)
    assert local
    for name, factory in factories(local).items():
        everything = factory().fit(examples).predict(next_query(align))
        alone = factory().fit(align).predict(next_query(align))
        assert _curves(everything) == _curves(alone), name
    shaped = factories(("scaled_curve",))["scaled_curve"]  # the cross-task one does learn from others
    assert shaped().fit(examples).spreads != shaped().fit(align).spreads


def _curves(forecast: Any) -> dict[str, Any]:
    return {
        m.value: (c.step_s, {q: a.tolist() for q, a in c.quantiles.items()})
        for m, c in forecast.curves.items()
    }


def _second_store(kind: str, tmp_path: Path) -> Any:
    return migrated_engine(kind, tmp_path, prefix="fanout")


def _stored(engine: Engine, models: Path) -> dict[str, Any]:
    profiles = {
        str(p.key): (
            p.champion,
            p.model_version,
            p.scores,
            p.reason,
            p.runs,
            p.calibration,
            p.calibration_digest,
        )
        for p in ProfileStore(engine).profiles()
    }
    cache = ForecastCache(engine)
    forecasts = {}
    for p in ProfileStore(engine).profiles():
        got = cache.get(p.key)
        assert got is not None
        forecasts[str(p.key)] = (
            got.forecast.estimator,
            got.model_version,
            got.explanation,
            _curves(got.forecast),
        )
    store = ModelStore(models)
    versions = {s: [(v, store.manifest(s, v).digest) for v in store.versions(s)] for s in store.scopes()}
    return {"profiles": profiles, "forecasts": forecasts, "models": versions}


@pytest.fixture
def trace(tmp_path: Path) -> Path:
    return write_history(tmp_path / "trace", tasks=8, runs_per_task=12)


def test_fanned_out_retrain_stores_what_one_process_stores(
    db_engine: Engine, trace: Path, tmp_path: Path
) -> None:
    kind = db_engine.dialect.name
    import_traces(trace, SqlRunStore(db_engine))
    one = retrain(db_engine, model_dir=str(tmp_path / "one"), candidates=STATISTICAL)
    assert one is not None
    (tmp_path / "b").mkdir()
    with _second_store(kind, tmp_path / "b") as other:
        import_traces(trace, SqlRunStore(other))
        fanned = retrain_fanned_out(
            other, tmp_path / "fan", "manual__1", candidates=STATISTICAL, shard_size=1
        )
        assert fanned is not None
        assert {t.key: t.champion for t in fanned.tasks} == {t.key: t.champion for t in one.tasks}
        champions = [t.champion for t in one.tasks]
        # the pooled default (scaled_curve, a cross-task model saved from train_global's fit) and
        # per-task winners both decide something here
        assert "scaled_curve" in champions and len(set(champions)) >= 4
        assert _stored(other, tmp_path / "fan") == _stored(db_engine, tmp_path / "one")
        assert not (tmp_path / "fan" / "fanout" / "manual__1").exists()  # the work folder is gone
        assert retrain_fanned_out(other, tmp_path / "fan", "manual__2", candidates=STATISTICAL) is None


def test_plan_splits_due_tasks_and_refuses_unknown_candidates(filled: SqlRunStore, tmp_path: Path) -> None:
    plan = make_plan(filled.engine, tmp_path, "scheduled__2024-01-01T00:00:00+00:00", shard_size=2)
    assert plan is not None and len(plan.due) == 3 and len(plan.shards) == 2
    assert len(set(plan.due)) == len(plan.due)  # each due task in exactly one shard
    assert "/fanout/scheduled__2024-01-01T00_00_00_00_00" in plan.work
    assert type(plan).from_json(json.loads(json.dumps(plan.to_json()))) == plan
    with pytest.raises(ValueError, match="unknown estimator"):
        make_plan(filled.engine, tmp_path, "x", candidates=("last_run", "prophet"))


def test_choosing_per_shard_would_change_champions(trace: Path, tmp_path: Path) -> None:
    """Why ``select_and_store`` chooses once over every task: the robust default and the coverage
    widening are pooled over tasks, so a choice made inside each shard differs (on this history)."""
    from airflow_predictive.core.profiler.selection import backtest

    (tmp_path / "a").mkdir()
    with migrated_engine("sqlite", tmp_path / "a") as engine:
        import_traces(trace, SqlRunStore(engine))
        examples = load_examples(SqlRunStore(engine))
    policy = SelectionPolicy(folds=2)
    whole = {r.key: r.champion for r in backtest(factories(STATISTICAL), examples, policy)}
    keys = sorted(whole, key=str)
    per_shard: dict[TaskKey, str | None] = {}
    for i in range(0, len(keys), 3):
        only = frozenset(keys[i : i + 3])
        per_shard.update(
            {r.key: r.champion for r in backtest(factories(STATISTICAL), examples, policy, only)}
        )
    assert per_shard != whole


def test_runs_that_end_after_the_plan_are_left_to_the_next_run(trace: Path, tmp_path: Path) -> None:
    """The DAG's own tasks (and every other task) keep recording while it runs: every step trains
    on the history the plan saw, so the steps cannot disagree about it."""
    from airflow_predictive.training.fanout import backtest_shard, select_and_store, train_global

    (tmp_path / "a").mkdir()
    with migrated_engine("sqlite", tmp_path / "a") as engine:
        import_traces(trace, SqlRunStore(engine))
        plan = make_plan(engine, tmp_path / "fan", "r", min_new_runs=1, candidates=STATISTICAL, shard_size=3)
        assert plan is not None
        import_traces(write_trace(tmp_path / "later"), SqlRunStore(engine))  # ends after the plan
        versions = train_global(engine, plan)
        for i in range(len(plan.shards)):
            backtest_shard(engine, plan, i, versions)
        fanned = select_and_store(engine, plan, versions)
    (tmp_path / "b").mkdir()
    with migrated_engine("sqlite", tmp_path / "b") as alone:
        import_traces(trace, SqlRunStore(alone))
        one = retrain(alone, model_dir=str(tmp_path / "one"), candidates=STATISTICAL)
    assert fanned is not None and one is not None
    assert {t.key: t.selection.scores for t in fanned.tasks} == {t.key: t.selection.scores for t in one.tasks}


def test_an_hourly_run_with_a_few_due_tasks_stores_what_one_process_stores(
    trace: Path, tmp_path: Path
) -> None:
    """The steady state: every task has a profile, three have new runs. ``select_and_store`` then
    reads only the due tasks' runs; profiles, forecasts and saved models still match."""
    from datetime import UTC, datetime, timedelta

    later = write_history(
        tmp_path / "later",
        tasks=3,
        runs_per_task=4,
        seed=1,
        start=datetime.now(UTC) + timedelta(days=1),
        prefix="L",
    )
    stored = []
    for name, fan in (("one", False), ("fan", True)):
        (tmp_path / name).mkdir()
        with migrated_engine("sqlite", tmp_path / name) as engine:
            import_traces(trace, SqlRunStore(engine))
            assert retrain(engine, model_dir=str(tmp_path / name / "m"), candidates=STATISTICAL) is not None
            import_traces(later, SqlRunStore(engine))
            if fan:
                again = retrain_fanned_out(
                    engine,
                    tmp_path / name / "m",
                    "hourly",
                    min_new_runs=3,
                    candidates=STATISTICAL,
                    shard_size=2,
                )
            else:
                again = retrain(
                    engine, model_dir=str(tmp_path / name / "m"), min_new_runs=3, candidates=STATISTICAL
                )
            assert again is not None and len(again.tasks) == 3
            stored.append(_stored(engine, tmp_path / name / "m"))
    assert stored[0] == stored[1]
