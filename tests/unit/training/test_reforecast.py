"""Re-forecasting many running tasks in one call gives each task what it would get alone."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np

from airflow_predictive.core.model.runs import TaskKey
from airflow_predictive.core.profiler.estimators.base import ForecastQuery, RunExample
from airflow_predictive.core.profiler.prefix import condition_on_prefix
from airflow_predictive.training.candidates import cold_start_chain, factories
from airflow_predictive.training.evaluation import truncated
from airflow_predictive.training.reforecast import Reforecaster
from tests.unit.core.profiler.synthetic_runs import example

if TYPE_CHECKING:
    from airflow_predictive.core.model.series import Forecast

NAMES = ("scaled_curve", "linear_input", "median_peak", "last_run", "vpa")


def _same(a: Forecast, b: Forecast) -> bool:
    return (
        a.estimator == b.estimator
        and dict(a.duration_s) == dict(b.duration_s)
        and set(a.curves) == set(b.curves)
        and all(
            a.curves[m].step_s == b.curves[m].step_s
            and all(
                np.array_equal(a.curves[m].quantiles[q], b.curves[m].quantiles[q])
                for q in a.curves[m].quantiles
            )
            for m in a.curves
        )
    )


def _random_tasks(rng: np.random.Generator, n_tasks: int) -> dict[str, list[RunExample]]:
    tasks = {}
    for t in range(n_tasks):
        level = float(rng.uniform(0.5, 4.0))
        runs = []
        for i in range(int(rng.integers(1, 30))):
            run = example(
                f"t{t}", i, level * float(rng.uniform(0.7, 1.4)), seconds=int(rng.integers(20, 300))
            )
            size = float(rng.uniform(1, 100))
            runs.append(replace(run, record=replace(run.record, features={"input_bytes": size})))
        tasks[f"t{t}"] = runs
    return tasks


def test_batched_reforecast_equals_one_by_one_on_random_tasks() -> None:
    rng = np.random.default_rng(7)
    tasks = _random_tasks(rng, 40)
    train = [e for runs in tasks.values() for e in runs[:-1]]
    fitted = {n: f().fit(train) for n, f in factories(NAMES).items()}
    champions: dict[TaskKey, str | None] = {}
    queries = []
    for i, (name, runs) in enumerate(tasks.items()):
        key = TaskKey("wf", name)
        champions[key] = None if i % 9 == 0 else NAMES[i % len(NAMES)]  # some on the cold-start chain
        running = runs[-1]
        prefix = truncated(running.series, float(rng.uniform(0.05, 0.8))) if i % 7 else None
        queries.append(
            ForecastQuery(
                key,
                features=running.record.features,
                declared=running.record.declared,
                history=tuple(runs[:-1]),
                prefix=prefix,
            )
        )
    ref = Reforecaster(fitted, champions, cold_start_chain().fit(train))
    batched = ref.reforecast(queries)
    assert len(batched) == len(queries)
    for q in queries:
        alone = ref.reforecast([replace(q, history=list(q.history))])[q.key]  # no shared columns
        assert _same(batched[q.key], alone), q.key
        name = champions[q.key]
        if name is not None and q.history:  # and what the champion itself says, conditioned
            direct = fitted[name].predict(replace(q, history=tuple(q.history)))
            assert _same(batched[q.key], condition_on_prefix(direct, q.prefix)), q.key
