"""The DAG of the PredictiveKubernetesExecutor adoption test: one task whose seeded history plans
a low start and a timed step up STEP_AT_S seconds in, running long enough for its scheduler to be
killed and a new one to adopt its pod before the step is due."""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import dag, task

RUN_S = 24  # the task's life: the restart happens in its first ~15 s, the step at STEP_AT_S (25 s)


@dag(
    dag_id="predictive_k8s_adoption",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    is_paused_upon_creation=False,
)
def predictive_k8s_adoption() -> None:
    @task(task_id="stepped", retries=0, executor_config={"predictive": {"duration": 90}})
    def stepped() -> str:
        import time

        time.sleep(RUN_S)
        return "done"

    stepped()


predictive_k8s_adoption()
