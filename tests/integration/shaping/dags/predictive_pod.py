"""Test DAG: the same memory ramp in a PredictiveKubernetesPodOperator with shaping on and off.

The pod's python program grows resident memory by 8 MiB every 0.5 s to 256 MiB under a 128 MiB
limit: shaped, its pod is resized in place in time and succeeds; unshaped, the kernel OOM-kills it.
Defined only when the emulator connection is in the environment (the test sets it).
"""

from __future__ import annotations

import os
from datetime import datetime

from airflow.sdk import DAG

RAMP = (
    "import time\nblocks = []\nfor i in range(32):\n    blocks.append(bytearray(b'\\x01') * (8 << 20))\n"
    "    print('allocated', (i + 1) * 8, 'MiB', flush=True)\n    time.sleep(1.0)\n"
)

if os.environ.get("AIRFLOW_CONN_KUBE_EMULATOR"):
    from kubernetes.client import models as k8s

    from airflow_predictive.operators.kubernetes_pod import PredictiveKubernetesPodOperator

    resources = k8s.V1ResourceRequirements(
        requests={"cpu": "200m", "memory": "64Mi"}, limits={"cpu": "1", "memory": "128Mi"}
    )
    with DAG("predictive_pod", start_date=datetime(2026, 1, 1), schedule=None, catchup=False):
        for name, predictive, deferrable in (
            ("shaped", True, False),
            ("unshaped", False, False),
            ("deferred", True, True),  # its trigger waits for the pod and shapes it
        ):
            PredictiveKubernetesPodOperator(
                task_id=name,
                deferrable=deferrable,
                name=f"{name}-ramp",
                image="python:3.11-slim",
                cmds=["python", "-c", RAMP],
                kubernetes_conn_id="kube_emulator",
                namespace="default",
                container_resources=resources,
                predictive=predictive,
                shaping_interval_s=0.5,
                shaping={
                    "metrics": ["memory_bytes"],
                    "grow_margin": 1.0,
                    "near_limit": 0.3,
                    "grow_cooldown_s": 0.5,
                },
                on_finish_action="keep_pod",
                get_logs=False,
            )
