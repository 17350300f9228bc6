"""``@task.predictive_kubernetes`` builds a PredictiveKubernetesPodOperator and is registered
through provider info so that ``task.predictive_kubernetes`` resolves."""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import DAG, task

from airflow_predictive.decorators.predictive_kubernetes import predictive_kubernetes_task
from airflow_predictive.operators.kubernetes_pod import PredictiveKubernetesPodOperator
from airflow_predictive.provider_info import get_provider_info


def test_the_decorator_makes_a_predictive_pod_operator_with_its_arguments() -> None:
    with DAG("d", start_date=datetime(2026, 1, 1), schedule=None):

        @predictive_kubernetes_task(image="python:3.11-slim", tolerance=0.3, shaping_interval_s=1.0)
        def work() -> int:
            return 1

        op = work().operator
    assert isinstance(op, PredictiveKubernetesPodOperator)
    assert op.tolerance == 0.3 and op.shaping_interval_s == 1.0 and op.predictive


def test_registered_as_task_predictive_kubernetes() -> None:
    [entry] = get_provider_info()["task-decorators"]
    assert entry == {
        "name": "predictive_kubernetes",
        "class-name": "airflow_predictive.decorators.predictive_kubernetes.predictive_kubernetes_task",
    }
    assert task.predictive_kubernetes is not None  # resolved through the providers manager
