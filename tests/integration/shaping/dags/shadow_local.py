"""A cold-start task whose author declared too little memory, calibrated by a ShadowRunOperator.

``work`` holds 150 MiB for a few seconds under a declared 64 MiB: planned from its declaration
alone, the PredictiveLocalExecutor's cgroup would OOM-kill it. The shadow (setup task) runs the
same command for its 3 s deadline in a small cgroup, sees 150 MiB, and leaves a re-forecast that
the real try's plan is made from.

``work_local`` is the same task without a ShadowRunOperator: it asks the PredictiveLocalExecutor
for a shadow (``shadow_run: True``), which replays its bash_command before planning it.
``work_bad_shadow`` asks for a shadow whose ``shadow_cmds`` fails: it runs on its declared
resources and succeeds."""

from __future__ import annotations

import sys
from datetime import datetime

from airflow.providers.standard.operators.bash import BashOperator
from airflow.sdk import DAG

from airflow_predictive.operators.shadow_run import ShadowRunOperator

HOLD = (
    f'{sys.executable} -c "import os, time; b = bytearray(150 * 2**20); '
    f"print('shadow flag:', os.environ.get('AIRFLOW_PREDICTIVE_SHADOW', '0')); time.sleep(6)\""
)

with DAG("predictive_shadow_local", schedule=None, start_date=datetime(2026, 1, 1), catchup=False):
    # no command given: the shadow runs the target's own (rendered) bash_command
    shadow = ShadowRunOperator(task_id="shadow", target="work", deadline_s=3.0)
    work = BashOperator(
        task_id="work",
        bash_command=HOLD,
        executor_config={"predictive": {"memory": "64Mi", "duration": 30}},
    )
    shadow.as_setup() >> work
    BashOperator(
        task_id="work_local",
        bash_command=HOLD,
        executor_config={"predictive": {"memory": "64Mi", "duration": 30, "shadow_run": True}},
    )
    BashOperator(
        task_id="work_bad_shadow",
        bash_command=f'{sys.executable} -c "import time; b = bytearray(16 * 2**20); time.sleep(1)"',
        executor_config={
            "predictive": {
                "memory": "256Mi",
                "duration": 30,
                "shadow_run": True,
                "shadow_cmds": ["/bin/bash", "-c", "exit 3"],
            }
        },
    )
