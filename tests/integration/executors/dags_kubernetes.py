"""The DAG of the PredictiveKubernetesExecutor test (one DAG run for the whole module).

- pod_0, pod_1: each plans 800Mi on a 1.5Gi namespace quota (the second waits for the first);
- then, side by side:
  - stepped: no declared memory; its seeded history plans a low start and a timed step up a few
    seconds in (applied in place through the resize subresource); it grows after the step;
  - oom: declares OOM_DECLARED_MIB and ramps above it: the first try's pod is OOM-killed by the
    process kubelet's cgroup, the retry is planned from that kill and succeeds.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import dag, task

STEP_GROW_MIB = 400  # what `stepped` adds once the step is applied: above the initial limit
OOM_DECLARED_MIB = 400
OOM_RAMP_MIB = 260  # on top of the worker's own memory: above 400Mi, below the retry's plan


@dag(dag_id="predictive_k8s_quota", schedule=None, start_date=datetime(2026, 1, 1), catchup=False)
def predictive_k8s_quota() -> None:
    pods = []
    for i in range(2):

        @task(
            task_id=f"pod_{i}",
            executor_config={"predictive": {"memory": "800Mi", "cpu": "250m", "duration": 60}},
        )
        def work() -> str:
            import time

            time.sleep(3)
            return "done"

        pods.append(work())

    @task(task_id="stepped", executor_config={"predictive": {"duration": 60}})
    def stepped() -> dict:
        import time

        from airflow_predictive.examples.workloads import memory_ramp

        time.sleep(8)  # the plan's step (a few seconds after the pod started) is applied by now
        return memory_ramp(STEP_GROW_MIB, steps=3, step_s=0.5, hold_s=3.0).as_dict()

    @task(
        task_id="oom",
        retries=1,
        retry_delay=timedelta(seconds=3),
        executor_config={"predictive": {"memory": f"{OOM_DECLARED_MIB}Mi", "duration": 60}},
    )
    def oom() -> dict:
        from airflow_predictive.examples.workloads import memory_ramp

        # the kernel kills this task process (the largest); the process kubelet then kills the whole
        # container, as the kubelet's memory.oom.group does on cgroup v2: the pod ends OOMKilled
        return memory_ramp(OOM_RAMP_MIB, steps=13, step_s=0.3, hold_s=1.0).as_dict()

    pods >> stepped()
    pods >> oom()


predictive_k8s_quota()
