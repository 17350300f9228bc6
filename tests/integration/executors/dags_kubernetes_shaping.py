"""The DAG of the PredictiveKubernetesExecutor shaping test (one DAG run for the whole module): the
same memory ramp past its worker pod's planned limit, side by side, shaped (``"shaping": True``
settings: its pod is grown in place as its use nears the limit) and unshaped (its pod is OOM-killed
by its container's cgroup)."""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import dag, task

LIMIT = "400Mi"  # the worker's own memory (supervisor + task process) plus the ramp does not fit
RAMP = {"target_mb": 384, "steps": 24, "step_s": 0.5, "hold_s": 1.0}  # 32 MiB/s for 12 s
# grow early and wide (a pod resize takes a round, a metrics read and the kubelet's actuation)
SHAPING = {"grow_margin": 0.5, "near_limit": 0.25, "grow_cooldown_s": 1.0, "reclaim_after_s": 30.0}


def _ramp() -> dict:
    from airflow_predictive.examples.workloads import memory_ramp

    return memory_ramp(**RAMP).as_dict()


@dag(dag_id="predictive_k8s_shaping", schedule=None, start_date=datetime(2026, 1, 1), catchup=False)
def predictive_k8s_shaping() -> None:
    # min = its limit: grown only, never reclaimed below where it started
    @task(
        retries=0,
        executor_config={
            "predictive": {"memory": LIMIT, "min": {"memory": LIMIT}, "duration": 60, "shaping": SHAPING}
        },
    )
    def ramp_shaped() -> dict:
        return _ramp()

    @task(retries=0, executor_config={"predictive": {"memory": LIMIT, "duration": 60, "shaping": False}})
    def ramp_unshaped() -> dict:
        return _ramp()

    ramp_shaped()
    ramp_unshaped()


predictive_k8s_shaping()
