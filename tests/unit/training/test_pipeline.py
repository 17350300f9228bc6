from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from airflow_predictive.core.model.resources import Metric
from airflow_predictive.core.model.runs import TaskKey
from airflow_predictive.core.profiler.estimators.base import ForecastQuery
from airflow_predictive.core.profiler.selection import NO_HISTORY, SelectionPolicy
from airflow_predictive.storage.model_store import ModelStore
from airflow_predictive.storage.profile_store import ForecastCache, ProfileStore
from airflow_predictive.training.artefacts import ArtefactSaver, scope_of
from airflow_predictive.training.candidates import cold_start_chain, factories
from airflow_predictive.training.dataset import load_examples
from airflow_predictive.training.evaluation import truncated
from airflow_predictive.training.maintenance import due_tasks, retrain
from airflow_predictive.training.pipeline import train
from airflow_predictive.training.reforecast import Reforecaster

if TYPE_CHECKING:
    from pathlib import Path

    from airflow_predictive.storage.run_store import SqlRunStore

ALIGN, ONCE = TaskKey("wf", "align"), TaskKey("wf", "once")
FAST = ("last_run", "median_peak", "linear_input", "vpa")


def test_training_records_champions_and_caches_forecasts(filled_store: SqlRunStore, tmp_path: Path) -> None:
    engine = filled_store.engine
    result = train(
        load_examples(filled_store),
        factories(FAST),
        profiles=ProfileStore(engine),
        cache=ForecastCache(engine),
        model_saver=ArtefactSaver(tmp_path / "models"),
        policy=SelectionPolicy(folds=2),
    )
    by_task = {t.key: t for t in result.tasks}
    assert set(by_task) == {ALIGN, TaskKey("wf", "sort"), ONCE}
    # memory of `align` follows its input size: the input-size model should win there
    assert by_task[ALIGN].champion == "linear_input"
    assert by_task[ONCE].champion is None and by_task[ONCE].selection.reason == NO_HISTORY
    profile = ProfileStore(engine).profile(ALIGN)
    assert profile is not None and profile.model_version == result.model_versions["linear_input"]
    assert profile.model_version == "linear_input:v1"
    assert {s.estimator for s in profile.scores} == set(FAST)
    cached = ForecastCache(engine).get(ALIGN)
    assert cached is not None and cached.forecast.estimator == "linear_input"
    assert cached.explanation and cached.explanation.startswith("memory peaks at")
    once = ForecastCache(engine).get(ONCE)  # cold start: the chain still answers from its one run
    assert once is not None
    saved = ModelStore(tmp_path / "models").load(scope_of("linear_input"))
    assert saved.name == "linear_input"


def test_retrain_only_touches_tasks_with_new_runs(filled_store: SqlRunStore) -> None:
    engine = filled_store.engine
    assert due_tasks(engine).due == {ALIGN, TaskKey("wf", "sort"), ONCE}
    first = retrain(engine, candidates=FAST)
    assert first is not None and len(first.tasks) == 3
    assert due_tasks(engine).due == frozenset()
    assert retrain(engine, candidates=FAST) is None


def test_reforecast_of_many_running_tasks_falls_back_per_task(filled_store: SqlRunStore) -> None:
    examples = load_examples(filled_store)
    align = [e for e in examples if e.key == ALIGN]
    fitted = {"vpa": factories(("vpa",))["vpa"]().fit(examples)}
    chain = cold_start_chain().fit(examples)
    ref = Reforecaster(fitted, {ALIGN: "vpa", ONCE: "lstm-not-loaded"}, chain)
    prefix = truncated(align[-1].series, 0.2)  # type: ignore[arg-type]
    queries = [
        ForecastQuery(ALIGN, history=tuple(align[:-1]), prefix=prefix),
        ForecastQuery(ONCE, history=tuple(e for e in examples if e.key == ONCE)),
        ForecastQuery(TaskKey("wf", "unknown")),  # nothing known: left out, no exception
    ]
    out = ref.reforecast(queries)
    assert out[ALIGN].estimator == "vpa"
    assert ONCE in out and TaskKey("wf", "unknown") not in out


def test_reforecast_uses_the_prefix_of_a_try_running_far_above_its_history(filled_store: SqlRunStore) -> None:
    """A try whose first fifth already holds 3x the task's usual memory gets a higher rest-of-run
    forecast than the same query without its prefix (fails if the prefix is dropped anywhere)."""
    from airflow_predictive.core.model.series import UsageSeries

    examples = load_examples(filled_store)
    align = [e for e in examples if e.key == ALIGN]
    fitted = {"vpa": factories(("vpa",))["vpa"]().fit(examples)}
    ref = Reforecaster(fitted, {ALIGN: "vpa"}, cold_start_chain().fit(examples))
    pre = truncated(align[-1].series, 0.2)  # type: ignore[arg-type]
    assert pre is not None
    usual = float(np.median([e.record.peak.memory_bytes or 0 for e in align]))
    hot = UsageSeries(pre.times, {Metric.MEMORY_BYTES: np.full(len(pre), 3 * usual)})
    with_prefix = ref.reforecast([ForecastQuery(ALIGN, history=tuple(align[:-1]), prefix=hot)])[ALIGN]
    without = ref.reforecast([ForecastQuery(ALIGN, history=tuple(align[:-1]))])[ALIGN]
    elapsed = float(hot.times[-1] - hot.times[0])
    a, b = with_prefix.curve(Metric.MEMORY_BYTES), without.curve(Metric.MEMORY_BYTES)
    assert a is not None and b is not None
    assert a.value_at(elapsed + 1, 0.5) > 1.3 * b.value_at(elapsed + 1, 0.5)
