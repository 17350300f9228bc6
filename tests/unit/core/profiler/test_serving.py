"""The serving ladder: a task's history that reached its declared memory is said so."""

from __future__ import annotations

from airflow_predictive.core.model.query import ForecastQuery
from airflow_predictive.core.model.resources import GIB, ResourceVector
from airflow_predictive.core.profiler.estimators.baselines import MedianPeak
from airflow_predictive.core.profiler.serving import serve

DECLARED = ResourceVector(memory_bytes=8 * GIB)


def test_the_served_forecast_says_when_an_earlier_run_reached_its_declared_memory(synth, task_key):
    below = [synth.make_run(task_key, i, peak_gib=5.0, declared=DECLARED) for i in range(4)]
    query = ForecastQuery(task_key)
    chain = MedianPeak()
    assert not serve(query, below, None, chain).limit_bound
    served = serve(query, [*below, synth.make_run(task_key, 4, peak_gib=8.0, declared=DECLARED)], None, chain)
    assert served.forecast is not None and served.limit_bound
