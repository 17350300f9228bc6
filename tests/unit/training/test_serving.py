"""The storage-backed ForecastService: forecasts for *this* run, through real stored runs."""

from __future__ import annotations

import logging
import shutil
import subprocess
import sys
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import numpy as np
import pytest

from airflow_predictive.core.model.query import ForecastQuery, ForecastSource
from airflow_predictive.core.model.resources import GIB, MIB, Metric, ResourceVector
from airflow_predictive.core.model.runs import Outcome, RunIdentity, RunRecord, RunSource, TaskKey
from airflow_predictive.core.model.series import ResourceSample
from airflow_predictive.core.profiler.estimators.base import RunExample
from airflow_predictive.core.profiler.features import run_features
from airflow_predictive.core.profiler.selection import SelectionPolicy
from airflow_predictive.storage.model_store import ModelStore
from airflow_predictive.storage.profile_store import ForecastCache, ProfileStore
from airflow_predictive.training.artefacts import ArtefactSaver
from airflow_predictive.training.candidates import factories
from airflow_predictive.training.dataset import load_examples
from airflow_predictive.training.pipeline import train
from airflow_predictive.training.serving import StoredForecastService
from tests._real_parts import require_module

if TYPE_CHECKING:
    from pathlib import Path

    from airflow_predictive.storage.run_store import SqlRunStore

KEY = TaskKey("etl", "transform")
MEM = Metric.MEMORY_BYTES
BASELINES = ("last_run", "median_peak", "linear_input", "vpa")


def _record_runs(
    store: SqlRunStore, key: TaskKey, sizes_mb: list[float], *, legacy: bool = False, first: int = 0
) -> None:
    """Runs as the listener records them: features from the run's params (``input_mb``), memory
    200 MiB + 2x the input, ramping to its peak. ``legacy``: only ``param.*`` features, as runs
    recorded before ``run_features`` existed."""
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    for i, mb in enumerate(sizes_mb, start=first):
        features = {"param.input_mb": mb} if legacy else run_features({"input_mb": mb}, try_number=1)
        start = t0 + timedelta(hours=i)
        pk = store.start_run(
            RunRecord(
                identity=RunIdentity(key, f"run_{i}", 1, RunSource.LISTENER),
                start=start,
                operator="PythonOperator",
                features=features,
                declared=ResourceVector(memory_bytes=4 * GIB),
            )
        )
        peak = (200 + 2 * mb) * MIB
        samples = [
            ResourceSample(
                float(t), ResourceVector(cpu_cores=1.0, memory_bytes=peak * min(1.0, (t + 1) / 20))
            )
            for t in range(0, 40, 2)
        ]
        store.add_samples(pk, samples)
        store.finish_run(
            pk,
            outcome=Outcome.SUCCESS,
            end=start + timedelta(seconds=40),
            peak=ResourceVector(memory_bytes=peak),
        )


def _train(store: SqlRunStore, tmp_path: Path, names: tuple[str, ...] = BASELINES) -> ModelStore:
    saver = ArtefactSaver(tmp_path / "models")
    train(
        load_examples(store),
        factories(names),
        profiles=ProfileStore(store.engine),
        cache=ForecastCache(store.engine),
        model_saver=saver,
        policy=SelectionPolicy(folds=2),
    )
    return saver.store


SIZES = [100, 400, 250, 50, 300, 150, 350, 200, 450, 120, 380, 260]


@pytest.mark.parametrize("legacy", [False, True], ids=["run_features", "param_only"])
def test_forecasts_of_two_runs_with_different_input_mb_differ_accordingly(run_store, tmp_path, legacy):
    _record_runs(run_store, KEY, SIZES, legacy=legacy)
    service = StoredForecastService(run_store.engine, model_store=_train(run_store, tmp_path))
    small = service.forecast_for(ForecastQuery(KEY, run_features({"input_mb": 100})))
    large = service.forecast_for(ForecastQuery(KEY, run_features({"input_mb": 800})))
    assert small.source is ForecastSource.TASK and large.source is ForecastSource.TASK
    assert small.forecast is not None and large.forecast is not None
    p_small, p_large = small.forecast.curve(MEM).peak(0.5), large.forecast.curve(MEM).peak(0.5)
    # the truth is 200 + 2 * input MiB: 400 MiB and 1800 MiB
    assert p_small == pytest.approx(400 * MIB, rel=0.1)
    assert p_large == pytest.approx(1800 * MIB, rel=0.1)
    assert "champion" in small.note and small.calibration_version is not None


def test_linear_in_input_wins_on_runs_whose_input_comes_from_params(run_store, tmp_path):
    """The best cheap predictor fires on listener-recorded runs: their input size is only in a
    param (``input_mb``), which the features turn into ``input_bytes``."""
    _record_runs(run_store, KEY, SIZES, legacy=True)
    _train(run_store, tmp_path)
    profile = ProfileStore(run_store.engine).profile(KEY)
    assert profile is not None and profile.champion == "linear_input"


def test_a_task_without_profile_answers_from_history_then_declared_then_none(run_store, tmp_path):
    _record_runs(run_store, KEY, SIZES[:2])
    service = StoredForecastService(run_store.engine, model_store=ModelStore(tmp_path / "m", keep=2))
    known = service.forecast_for(ForecastQuery(KEY, run_features({"input_mb": 100})))
    assert known.source is ForecastSource.TASK and "no trained profile" in known.note
    new = TaskKey("etl", "new")
    declared = service.forecast_for(ForecastQuery(new, declared=ResourceVector(memory_bytes=2 * GIB)))
    assert declared.source is ForecastSource.DECLARED
    assert declared.forecast is not None and declared.forecast.curve(MEM).peak(0.99) == 2 * GIB
    nothing = service.forecast_for(ForecastQuery(new))
    assert nothing.source is ForecastSource.NONE and nothing.forecast is None


def test_storage_down_answers_declared_within_the_call_and_logs_once(tmp_path, caplog):
    from airflow_predictive.storage.engine import engine_for

    engine = engine_for(f"sqlite:///{tmp_path / 'missing-dir' / 'nothing.db'}")
    service = StoredForecastService(engine)
    q = ForecastQuery(KEY, declared=ResourceVector(memory_bytes=GIB))
    with caplog.at_level(logging.WARNING):
        a = service.forecast_for(q)
        b = service.forecast_for(q)
    assert a.source is ForecastSource.DECLARED and b.source is ForecastSource.DECLARED
    assert "storage unavailable" in a.note
    assert len([r for r in caplog.records if "forecasts unavailable" in r.getMessage()]) == 1


def test_invalidate_serves_a_newer_training_at_once(run_store, tmp_path):
    _record_runs(run_store, KEY, SIZES)
    service = StoredForecastService(run_store.engine, model_store=_train(run_store, tmp_path, ("vpa",)))
    q = ForecastQuery(KEY, run_features({"input_mb": 100}))
    assert service.forecast_for(q).forecast.estimator == "vpa"  # type: ignore[union-attr]
    _train(run_store, tmp_path, ("linear_input",))
    assert service.forecast_for(q).forecast.estimator == "vpa"  # type: ignore[union-attr]  (cached)
    service.invalidate(KEY)
    assert service.forecast_for(q).forecast.estimator == "linear_input"  # type: ignore[union-attr]


@pytest.mark.tensorflow
def test_lstm_champion_is_served_by_numpy_pinned_to_its_calibration(run_store, tmp_path):
    require_module("tensorflow", "install the lstm extra")
    from airflow_predictive.core.profiler.estimators.lstm import LstmConfig
    from airflow_predictive.core.profiler.windows import WindowConfig

    _record_runs(run_store, KEY, SIZES * 3)
    tiny = LstmConfig(window=WindowConfig(horizon_steps=8, prefix_steps=4), units=8, hidden=16, epochs=3)
    saver = ArtefactSaver(tmp_path / "models")
    result = train(
        load_examples(run_store),
        factories(("lstm",), lstm={"config": tiny}),
        profiles=ProfileStore(run_store.engine),
        model_saver=saver,
        policy=SelectionPolicy(folds=2),
    )
    assert result.tasks[0].champion == "lstm"
    service = StoredForecastService(run_store.engine, model_store=saver.store)
    served = service.forecast_for(ForecastQuery(KEY, run_features({"input_mb": 300})))
    assert served.source is ForecastSource.TASK and served.model_version == "lstm:v1"
    assert served.calibration_version is not None and served.calibration_version.startswith("lstm:v1#")
    assert served.forecast is not None and served.forecast.estimator == "lstm"
    # the model folder is replaced by another training's content under the same version number
    shutil.rmtree(saver.store.root)
    ArtefactSaver(tmp_path / "models")({"lstm": _refit(run_store, tiny)})
    service.invalidate()
    refused = service.forecast_for(ForecastQuery(KEY, run_features({"input_mb": 300})))
    assert refused.source is not ForecastSource.TASK or refused.forecast.estimator != "lstm"  # type: ignore[union-attr]
    assert "calibration was fitted for" in refused.note


def _refit(run_store: SqlRunStore, config):  # another model with other weights
    from dataclasses import replace

    from airflow_predictive.core.profiler.estimators.lstm import LstmForecaster

    return LstmForecaster(replace(config, seed=99)).fit(load_examples(run_store))


def test_the_serving_path_imports_no_tensorflow():
    code = (
        "import sys\n"
        "import airflow_predictive.training.serving\n"
        "import airflow_predictive.core.profiler.serving\n"
        "heavy = [m for m in ('tensorflow', 'keras', 'statsmodels') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr


def test_quantile_levels_follow_the_input_not_only_the_median(run_store, tmp_path):
    """The served p99 also moves with the input (a band around this run's line, not the task's)."""
    _record_runs(run_store, KEY, SIZES)
    service = StoredForecastService(
        run_store.engine, model_store=_train(run_store, tmp_path, ("linear_input",))
    )
    peaks = [
        service.forecast_for(ForecastQuery(KEY, run_features({"input_mb": mb})))
        .forecast.curve(MEM)
        .peak(0.99)  # type: ignore[union-attr]
        for mb in (50, 200, 450)
    ]
    assert np.all(np.diff(peaks) > 100 * MIB)


def test_a_finished_run_changes_the_next_forecast_at_once(run_store, tmp_path):
    """Online update: a run far above its forecast joins the history and widens the calibration
    without retraining; a regime change asks for retraining."""
    from airflow_predictive.training.dataset import load_examples as load

    _record_runs(run_store, KEY, SIZES)
    service = StoredForecastService(
        run_store.engine, model_store=_train(run_store, tmp_path, ("median_peak",))
    )
    q = ForecastQuery(KEY, run_features({"input_mb": 200}))
    before = service.forecast_for(q)
    assert before.forecast is not None
    _record_runs(run_store, TaskKey("etl", "other"), [3000] * 8)  # runs of another task, 6.2 GiB
    big = [e for e in load(run_store) if e.key.task_id == "other"]
    updates = []
    for i, run in enumerate(big):
        moved = RunExample(
            replace(run.record, identity=replace(run.record.identity, key=KEY, run_id=f"x{i}")), run.series
        )
        updates.append(service.observe(moved))
    after = service.forecast_for(q)
    assert after.forecast is not None and after.calibration_version.endswith("+online:8")  # type: ignore[union-attr]
    assert after.forecast.curve(MEM).peak(0.99) > 2 * before.forecast.curve(MEM).peak(0.99)
    assert any(u is not None and u.drifted for u in updates)
    assert service.retrain_due() == frozenset({KEY}) and service.retrain_due() == frozenset()


def test_runs_recorded_after_a_finish_notice_are_folded_in_at_the_next_query(run_store, tmp_path):
    """The executor's feedback hook: ``run_finished`` does no I/O, the next query reads the runs
    recorded since and updates the calibration from them (each once), no observe call needed."""
    _record_runs(run_store, KEY, SIZES)
    service = StoredForecastService(
        run_store.engine, model_store=_train(run_store, tmp_path, ("median_peak",))
    )
    q = ForecastQuery(KEY, run_features({"input_mb": 200}))
    before = service.forecast_for(q)
    assert before.forecast is not None
    _record_runs(run_store, KEY, [3000] * 6, first=len(SIZES))  # far above the forecast
    assert service.forecast_for(q).calibration_version == before.calibration_version  # still cached
    service.run_finished(KEY)
    after = service.forecast_for(q)
    assert after.forecast is not None and after.calibration_version.endswith("+online:6")  # type: ignore[union-attr]
    assert after.forecast.curve(MEM).peak(0.99) > 2 * before.forecast.curve(MEM).peak(0.99)
    assert service.retrain_due() == frozenset({KEY})
    service.run_finished(KEY)  # nothing new: the same runs are not folded in twice
    assert service.forecast_for(q).calibration_version.endswith("+online:6")  # type: ignore[union-attr]


def test_maintenance_retrains_a_task_whose_few_new_runs_drifted_not_one_whose_runs_fit(run_store, tmp_path):
    """The drift trigger: two new runs 15x the forecast are below the schedule's 3 new runs but
    drift (Page-Hinkley replayed); two ordinary new runs do not."""
    from airflow_predictive.training.maintenance import drifted_tasks

    other = TaskKey("etl", "steady")
    _record_runs(run_store, KEY, SIZES)
    _record_runs(run_store, other, SIZES)
    models = tmp_path / "models"
    _train(run_store, tmp_path, ("median_peak",))
    _record_runs(run_store, KEY, [3000, 3000], first=len(SIZES))
    _record_runs(run_store, other, [200, 260], first=len(SIZES))
    assert drifted_tasks(run_store.engine, {KEY: 2, other: 2}, str(models)) == frozenset({KEY})


# -- the shaping loop's task history (k-Segments re-forecast) -------------------------------------


def test_task_history_is_the_newest_successful_runs_with_series_oldest_first(run_store):
    from airflow_predictive.training.serving import task_history

    _record_runs(run_store, KEY, [10.0 * i for i in range(1, 8)])
    failed = run_store.start_run(
        RunRecord(
            identity=RunIdentity(KEY, "run_failed", 1, RunSource.LISTENER),
            start=datetime(2026, 2, 1, tzinfo=UTC),
        )
    )
    run_store.finish_run(failed, outcome=Outcome.FAILED, end=datetime(2026, 2, 1, 0, 1, tzinfo=UTC))
    got = task_history(run_store, KEY, 3)
    assert [e.record.identity.run_id for e in got] == ["run_4", "run_5", "run_6"]
    assert all(e.series is not None and len(e.series) > 1 for e in got)
    assert task_history(run_store, TaskKey("etl", "other"), 3) == ()
    assert task_history(run_store, KEY, 0) == ()


def test_the_shaping_loop_gets_its_tasks_history_from_the_run_key_or_the_prefix_path_with_one_line(
    run_store, caplog
):
    from types import SimpleNamespace

    from airflow_predictive.core.shaping.reforecast import ReforecastSettings
    from airflow_predictive.runtime import Runtime

    _record_runs(run_store, KEY, [10.0, 20.0, 30.0])
    settings = ReforecastSettings(60)
    runtime = SimpleNamespace(run_store=lambda: run_store)
    got = Runtime.shaping_history(runtime, "etl/transform/manual__1/1", settings)  # type: ignore[arg-type]
    assert [e.record.identity.run_id for e in got] == ["run_0", "run_1", "run_2"]
    assert Runtime.shaping_history(runtime, "etl/transform[3]/manual__1/1", settings) == ()  # type: ignore[arg-type]
    assert Runtime.shaping_history(runtime, "not-a-run-key", settings) == ()  # type: ignore[arg-type]
    off = ReforecastSettings(60, segments=None)
    assert Runtime.shaping_history(runtime, "etl/transform/manual__1/1", off) == ()  # type: ignore[arg-type]

    def down() -> SqlRunStore:
        raise ConnectionError("database is down")

    with caplog.at_level(logging.WARNING, logger="airflow_predictive.runtime"):
        broken = SimpleNamespace(run_store=down)
        assert Runtime.shaping_history(broken, "etl/transform/manual__1/1", settings) == ()  # type: ignore[arg-type]
    assert [r.getMessage() for r in caplog.records if "prefix re-forecast only" in r.getMessage()] != []
