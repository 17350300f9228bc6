"""Example DAGs with known resource shapes, parametrised by an input size.

`predictive_shapes`: one task per shape (memory ramp, CPU phases, disk write/read, loopback
network), each sized from the `input_mb` param so that runs differ like real workloads.
`predictive_etl`: a single task that goes through all phases in turn (read, transform, write).
`predictive_story`: a task whose author declared too little memory, calibrated by a shadow run
(a setup task) and shaped while it runs (``make demo`` runs it on a cold start).
Import-light at parse time: the workloads are imported inside the tasks.

Shipped in the wheel where Airflow looks for a provider's example DAGs (see the package's
docstring): with ``[core] load_examples`` on they appear without copying any file.
"""

from __future__ import annotations

import sys
from datetime import datetime, timedelta

from airflow.providers.standard.operators.bash import BashOperator
from airflow.sdk import Param, dag, task

from airflow_predictive.operators.shadow_run import ShadowRunOperator

PARAMS = {
    "input_mb": Param(256, type="integer", minimum=16, maximum=8192, description="input size in MiB"),
    "cpu_seconds": Param(4.0, type="number", minimum=0.5, maximum=600),
}


@dag(
    dag_id="predictive_shapes",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    params=PARAMS,
    tags=["predictive", "example"],
)
def predictive_shapes() -> None:
    @task(executor_config={"predictive": {"memory": "2Gi", "cpu": 1}})
    def memory_ramp(params: dict | None = None) -> dict:
        from airflow_predictive.examples.workloads import memory_ramp as ramp

        return ramp(int(params["input_mb"]), steps=8, step_s=0.5, hold_s=2.0).as_dict()

    @task(executor_config={"predictive": {"memory": "512Mi", "cpu": 1}})
    def cpu_phases(params: dict | None = None) -> list[dict]:
        from airflow_predictive.examples.workloads import cpu_burn, idle

        seconds = float(params["cpu_seconds"])
        return [idle(2.0).as_dict(), cpu_burn(seconds).as_dict(), idle(2.0).as_dict()]

    @task(executor_config={"predictive": {"memory": "512Mi", "cpu": 1}})
    def disk_io(params: dict | None = None) -> dict:
        from airflow_predictive.examples.workloads import disk_write_read

        return disk_write_read(max(8, int(params["input_mb"]) // 2)).as_dict()

    @task(executor_config={"predictive": {"memory": "512Mi", "cpu": 1}})
    def network(params: dict | None = None) -> dict:
        from airflow_predictive.examples.workloads import network_loopback

        return network_loopback(max(8, int(params["input_mb"]) // 2), rate_mb_s=40.0).as_dict()

    memory_ramp()
    cpu_phases()
    disk_io()
    network()


@dag(
    dag_id="predictive_etl",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    params=PARAMS,
    tags=["predictive", "example"],
)
def predictive_etl() -> None:
    @task(executor_config={"predictive": {"memory": "4Gi", "cpu": 2}})
    def transform(params: dict | None = None) -> list[dict]:
        from airflow_predictive.examples.workloads import cpu_burn, disk_write_read, memory_ramp

        size = int(params["input_mb"])
        return [
            disk_write_read(max(8, size // 4)).as_dict(),
            memory_ramp(size, steps=4, step_s=0.5, hold_s=1.0).as_dict(),
            cpu_burn(float(params["cpu_seconds"])).as_dict(),
        ]

    transform()


# 8 MiB/s to `input_mb` (256 MiB: 32 s): the shadow's first 3 s see the ramp start, the shaper
# follows the rest (at ~21 MiB/s the default shaper, ~30 MiB per 2 s grow cooldown, fell behind and
# the try was OOM-killed, then retried from its peak)
LOAD = (
    f'{sys.executable} -c "from airflow_predictive.examples.workloads import memory_ramp; '
    'memory_ramp({{ params.input_mb }}, steps=32, step_s=1.0, hold_s=2.0)"'
)


@dag(
    dag_id="predictive_story",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    params={"input_mb": Param(256, type="integer", minimum=16, maximum=4096, description="MiB to load")},
    tags=["predictive", "example"],
)
def predictive_story() -> None:
    load = BashOperator(
        task_id="load",
        bash_command=LOAD,
        retries=1,  # an OOM kill is retried from the observed peak (the PredictiveExecutor's rule)
        retry_delay=timedelta(seconds=5),
        executor_config={"predictive": {"memory": "128Mi", "cpu": 1, "duration": 30, "shaping": True}},
    )
    # no command given: the shadow replays the start of load's own rendered bash_command
    calibrate = ShadowRunOperator(task_id="calibrate", target="load", deadline_s=3.0)
    calibrate.as_setup() >> load


shapes_dag = predictive_shapes()
etl_dag = predictive_etl()
story_dag = predictive_story()
