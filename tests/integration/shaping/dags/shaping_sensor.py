"""Test DAG: a deferrable ResourceShapingSensor shaping the pod named in the run's conf."""

from __future__ import annotations

import os
from datetime import datetime

from airflow.sdk import DAG

from airflow_predictive.sensors.shaping import ResourceShapingSensor

with DAG("shaping_sensor", start_date=datetime(2026, 1, 1), schedule=None, catchup=False):
    ResourceShapingSensor(
        task_id="shape",
        selector="{{ dag_run.conf['selector'] }}",
        kubeconfig=os.environ.get("SHAPING_TEST_KUBECONFIG"),
        interval_s=0.5,
        shaping={"metrics": ["memory_bytes"], "grow_margin": 1.0, "near_limit": 0.3, "grow_cooldown_s": 0.5},
        wait_for_pods_s=60,
        deferrable=True,
    )
