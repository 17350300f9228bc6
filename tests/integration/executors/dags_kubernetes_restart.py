"""The DAG of the PredictiveKubernetesExecutor scheduler-restart test (one DAG run, two real
schedulers, the first SIGKILLed mid-run):

- ramp_shaped / ramp_unshaped: the same two-phase memory ramp past the worker pod's planned 400Mi,
  shaped (its pod grown in place as its use nears the limit) and unshaped (OOM-killed by its
  container's cgroup). Phase 1 runs under the first scheduler; the second phase waits for the
  file RESTARTED in AIRFLOW_HOME (written by the test once the second scheduler adopted the pods),
  so only the adopted pod's shaping can grow it then;
- stepped: no shaping; its seeded history plans a low start and a timed step STEP_AT_S (40 s) in,
  due after the restart: the new executor applies it.
"""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import dag, task

LIMIT = "400Mi"  # the worker's own memory (supervisor + task process) plus one phase does not fit
PHASE_MB, STEP_MB, STEP_S = 224, 16, 0.5  # each phase +224 MiB at 32 MiB/s
RESTARTED = "restarted"
STEPPED_RUN_S = 60  # past the adoption (~25-40 s after the pods start: the 20 s health threshold)
# grow early and wide (a pod resize takes a round, a metrics read and the kubelet's actuation)
SHAPING = {"grow_margin": 0.5, "near_limit": 0.25, "grow_cooldown_s": 1.0, "reclaim_after_s": 30.0}


def _two_phases() -> dict:
    import os
    import time

    flag = os.path.join(os.environ["AIRFLOW_HOME"], RESTARTED)
    blocks: list[bytearray] = []

    def grow() -> None:
        for _ in range(PHASE_MB // STEP_MB):
            blocks.append(bytearray(b"\x01") * (STEP_MB << 20))  # written: resident
            time.sleep(STEP_S)

    grow()
    deadline = time.monotonic() + 180
    while not os.path.exists(flag) and time.monotonic() < deadline:
        time.sleep(0.2)
    grow()
    time.sleep(1.0)
    return {"allocated_mb": len(blocks) * STEP_MB, "waited_for_restart": os.path.exists(flag)}


@dag(
    dag_id="predictive_k8s_restart",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    is_paused_upon_creation=False,
)
def predictive_k8s_restart() -> None:
    # min = its limit: grown only, never reclaimed below where it started
    @task(
        retries=0,
        executor_config={
            "predictive": {"memory": LIMIT, "min": {"memory": LIMIT}, "duration": 90, "shaping": SHAPING}
        },
    )
    def ramp_shaped() -> dict:
        return _two_phases()

    @task(retries=0, executor_config={"predictive": {"memory": LIMIT, "duration": 90, "shaping": False}})
    def ramp_unshaped() -> dict:
        return _two_phases()

    @task(task_id="stepped", retries=0, executor_config={"predictive": {"duration": 90}})
    def stepped() -> str:
        import time

        time.sleep(STEPPED_RUN_S)
        return "done"

    ramp_shaped()
    ramp_unshaped()
    stepped()


predictive_k8s_restart()
