"""``@task.predictive_kubernetes``: ``@task.kubernetes`` on ``PredictiveKubernetesPodOperator``.

The cncf-kubernetes provider's decorated operator and ours combined by inheritance only (no
method copied): the function runs in a pod sized from the plan and shaped while it runs, with
every ``PredictiveKubernetesPodOperator`` argument (``predictive``, ``tolerance``, ``risk``, bounds,
``shaping_interval_s``) accepted by the decorator. Registered in provider info under
``task-decorators`` with the key ``class-name`` (what Airflow 3.3 reads).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow.providers.cncf.kubernetes.decorators.kubernetes import _KubernetesDecoratedOperator
from airflow.sdk.bases.decorator import task_decorator_factory

from airflow_predictive.operators.kubernetes_pod import PredictiveKubernetesPodOperator

if TYPE_CHECKING:
    from collections.abc import Callable

    from airflow.sdk.bases.decorator import TaskDecorator


class _PredictiveKubernetesDecoratedOperator(_KubernetesDecoratedOperator, PredictiveKubernetesPodOperator):
    custom_operator_name = "@task.predictive_kubernetes"


def predictive_kubernetes_task(
    python_callable: Callable[..., Any] | None = None, multiple_outputs: bool | None = None, **kwargs: Any
) -> TaskDecorator:
    """Run the decorated function in a pod sized from its forecast and shaped while it runs."""
    return task_decorator_factory(
        python_callable=python_callable,
        multiple_outputs=multiple_outputs,
        decorated_operator_class=_PredictiveKubernetesDecoratedOperator,
        **kwargs,
    )
