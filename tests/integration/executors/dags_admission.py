"""DAGs for the PredictiveExecutor integration tests (copied into the test's own DAGs folder)."""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import dag, task

HOG_MB = 200


@dag(dag_id="predictive_admission", schedule=None, start_date=datetime(2026, 1, 1), catchup=False)
def predictive_admission() -> None:
    for i in range(4):

        @task(task_id=f"hog_{i}", executor_config={"predictive": {"memory": "1Gi", "duration": 60}})
        def hog() -> dict:
            from airflow_predictive.examples.workloads import memory_ramp

            return memory_ramp(HOG_MB, steps=4, step_s=0.5, hold_s=3.0).as_dict()

        hog()


@dag(dag_id="predictive_oom_retry", schedule=None, start_date=datetime(2026, 1, 1), catchup=False)
def predictive_oom_retry() -> None:
    @task(
        retries=1,
        retry_delay=timedelta(seconds=0),
        executor_config={"predictive": {"memory": "160Mi", "duration": 60}},
    )
    def grows() -> dict:
        from airflow_predictive.examples.workloads import memory_ramp

        return memory_ramp(200, steps=5, step_s=0.4, hold_s=1.0).as_dict()

    grows()


predictive_admission()
predictive_oom_retry()
