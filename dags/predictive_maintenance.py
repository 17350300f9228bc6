"""Maintenance DAG of the predictive provider: close runs a crash left RUNNING (upkeep), then
retrain tasks that have new runs (the feedback loop): every hour, tasks with at least 3 new runs,
and tasks with fewer new runs whose forecasts drifted (``training/maintenance.py``). Between two
runs of this DAG the executor's forecast service folds every finished run into its task's
calibration at once (``StoredForecastService.run_finished``).

Import-light at parse time: nothing beyond the Airflow SDK is imported at module level; the
training code (numpy, statsmodels, TensorFlow) loads inside the task, on a worker, never in the
DAG processor or the scheduler.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import dag, task


@dag(
    dag_id="predictive_maintenance",
    schedule=timedelta(hours=1),
    start_date=datetime(2024, 1, 1),
    catchup=False,
    max_active_runs=1,
    tags=["predictive", "maintenance"],
    doc_md=__doc__,
)
def predictive_maintenance() -> None:
    @task(execution_timeout=timedelta(minutes=30))
    def retrain_tasks_with_new_runs(min_new_runs: int = 3) -> dict[str, object]:
        from airflow_predictive.runtime import get_runtime
        from airflow_predictive.training.maintenance import retrain

        runtime = get_runtime()
        result = retrain(
            runtime.engine(), model_dir=str(runtime.model_store().root), min_new_runs=min_new_runs
        )
        if result is None:
            return {"retrained": 0}
        return {
            "retrained": len(result.tasks),
            "model_versions": dict(result.model_versions),
            "champions": {str(t.key): t.champion for t in result.tasks},
        }

    @task(execution_timeout=timedelta(minutes=5))
    def close_stale_runs(older_than_s: float = 6 * 3600.0) -> dict[str, object]:
        """Runs whose current leg started hours ago without an end: their task and sampler died."""
        from airflow_predictive.cli.commands.upkeep import upkeep
        from airflow_predictive.runtime import get_runtime

        closed = upkeep(get_runtime().run_store(), older_than_s)
        return {"closed": len(closed), "run_pks": closed[:100]}

    close_stale_runs() >> retrain_tasks_with_new_runs()


predictive_maintenance()
