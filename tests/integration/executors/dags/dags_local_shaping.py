"""The local shaping DAG (copied into the test's own DAGs folder): the same memory ramp, past its
initial limit, shaped and unshaped; and a task whose use drops after a busy start."""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import dag, task

RAMP = {"target_mb": 192, "steps": 16, "step_s": 0.75, "hold_s": 1.0}  # 16 MiB/s for 12 s
LIMIT = "160Mi"  # the ramp alone passes it: the task's baseline plus 192 MiB does not fit
# shaping settings for a short test: grow early and wide, reclaim after 3 s below the band
SHAPING = {
    "grow_margin": 0.5,
    "near_limit": 0.25,
    "grow_cooldown_s": 1.0,
    "reclaim_after_s": 3.0,
    "shrink_cooldown_s": 4.0,
}


def _ramp() -> dict:
    from airflow_predictive.examples.workloads import memory_ramp

    return memory_ramp(**RAMP).as_dict()


@dag(dag_id="shaping_local", schedule=None, start_date=datetime(2026, 1, 1), catchup=False)
def shaping_local() -> None:
    # min = its limit: grown only (the ramp twin of ramp_unshaped, not reclaimed while it starts)
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

    @task(
        retries=0,
        executor_config={
            "predictive": {
                "memory": "768Mi",
                "cpu": 2,
                "duration": 60,
                "shaping": {**SHAPING, "warmup_s": 12},
            }
        },
    )
    def drops() -> list:
        from airflow_predictive.examples.workloads import cpu_burn, idle, memory_ramp

        # 16 MiB/s: a reclaim while it started (a loaded machine outlasts the warm-up) is grown back
        busy = [memory_ramp(96, steps=6, step_s=1.0, hold_s=0.5).as_dict(), cpu_burn(2.0).as_dict()]
        return [*busy, idle(14.0).as_dict()]  # then nearly nothing: memory and CPU are reclaimed

    ramp_shaped()
    ramp_unshaped()
    drops()


shaping_local()
