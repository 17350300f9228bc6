"""Two tasks for the PredictiveKubernetesExecutor test: each plans 600Mi on a 1Gi namespace quota."""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import dag, task


@dag(dag_id="predictive_k8s_quota", schedule=None, start_date=datetime(2026, 1, 1), catchup=False)
def predictive_k8s_quota() -> None:
    for i in range(2):

        @task(
            task_id=f"pod_{i}",
            executor_config={"predictive": {"memory": "600Mi", "cpu": "250m", "duration": 60}},
        )
        def work() -> str:
            import time

            time.sleep(3)
            return "done"

        work()


predictive_k8s_quota()
