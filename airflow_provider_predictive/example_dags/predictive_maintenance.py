"""Maintenance DAG of the predictive provider: close runs a crash left RUNNING (upkeep), then
retrain tasks that have new runs (the feedback loop): every hour, tasks with at least 3 new runs,
and tasks with fewer new runs whose forecasts drifted (``training/maintenance.py``). Between two
runs of this DAG the executor's forecast service folds every finished run into its task's
calibration at once (``StoredForecastService.run_finished``).

Retraining fans out as mapped Airflow tasks (``training/fanout.py``), so Airflow's own executors
are the distributed engine when one machine is not enough: ``plan_retraining`` shards the due
tasks (``[predictive] training_shard_size``, one shard for a small deployment);
``train_global_models`` fits the models learnt across tasks (LSTM, scaled curve) once per
backtest fold and once on all runs; ``backtest_shard`` (one mapped task per shard, after it)
backtests every candidate on its shard's tasks, the cross-task ones with those fold models;
``select_and_store`` chooses every champion once (the choice pools over tasks) and stores the
profiles, forecasts and models; ``clean_up`` removes the run's work folder. The result is the same
as one process retraining everything.

It ships in the package: with ``[core] load_examples`` on, Airflow loads it with the example
bundle (``airflow-provider-predictive-example-dags``, paused at creation like every new DAG);
with examples off, a DAGs folder gets it from ``dags/predictive_maintenance.py`` (one import).

Import-light at parse time: nothing beyond the Airflow SDK is imported at module level; the
training code (numpy, statsmodels, TensorFlow) loads inside the tasks, on a worker, never in the
DAG processor or the scheduler.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from airflow.sdk import dag, task


@dag(
    dag_id="predictive_maintenance",
    schedule=timedelta(hours=1),
    start_date=datetime(2024, 1, 1),
    catchup=False,
    max_active_runs=1,
    tags=["predictive", "maintenance"],
    doc_md=__doc__,
)
def predictive_maintenance() -> None:
    @task(execution_timeout=timedelta(minutes=5))
    def close_stale_runs(older_than_s: float = 6 * 3600.0) -> dict[str, object]:
        """Runs whose current leg started hours ago without an end: their task and sampler died."""
        from airflow_predictive.cli.commands.upkeep import upkeep
        from airflow_predictive.runtime import get_runtime

        closed = upkeep(get_runtime().run_store(), older_than_s)
        return {"closed": len(closed), "run_pks": closed[:100]}

    @task.short_circuit(execution_timeout=timedelta(minutes=40))
    def plan_retraining(min_new_runs: int = 3, run_id: str | None = None, ti: Any = None) -> list[int]:
        """The due tasks, in shards: returns the shard indices (what ``backtest_shard`` expands
        over); the plan itself goes to the XCom key ``plan`` ({}: none). With one shard (a small
        deployment) it retrains here, in this task, and returns no shard. No shard (that, or
        nothing due) short-circuits: every task after it is skipped without a process.
        ``run_id`` and ``ti`` come from the task's context."""
        from airflow_predictive.runtime import get_runtime
        from airflow_predictive.training.fanout import make_plan, run_in_process

        runtime = get_runtime()  # candidates and shards: [predictive] training_* options
        plan = make_plan(
            runtime.engine(),
            runtime.model_store().root,
            run_id or "manual",
            min_new_runs=min_new_runs,
            **runtime.training_fanout(),
        )
        if plan is not None and len(plan.shards) == 1:
            result = run_in_process(runtime.engine(), plan)
            ti.xcom_push(key="plan", value={})
            ti.xcom_push(key="retrained", value=_summary(result, shards=0))
            return []
        # {} (not None: Airflow reads a None XCom as missing) when nothing is left to fan out
        ti.xcom_push(key="plan", value=plan.to_json() if plan is not None else {})
        return list(range(len(plan.shards))) if plan is not None else []

    @task(execution_timeout=timedelta(minutes=60))
    def train_global_models(plan: dict[str, Any]) -> dict[str, int]:
        from airflow.exceptions import AirflowSkipException

        from airflow_predictive.runtime import get_runtime
        from airflow_predictive.training.fanout import Plan, train_global

        if not plan:
            raise AirflowSkipException("nothing to fan out (no task has new runs, or one shard)")
        return train_global(get_runtime().engine(), Plan.from_json(plan))

    @task(execution_timeout=timedelta(minutes=30))
    def backtest_shard(plan: dict[str, Any], versions: dict[str, int], index: int) -> int:
        from airflow_predictive.runtime import get_runtime
        from airflow_predictive.training.fanout import Plan
        from airflow_predictive.training.fanout import backtest_shard as run_shard

        return run_shard(get_runtime().engine(), Plan.from_json(plan), index, versions)

    @task(execution_timeout=timedelta(minutes=30))
    def select_and_store(
        plan: dict[str, Any], versions: dict[str, int], shards: list[int]
    ) -> dict[str, object]:
        from airflow_predictive.runtime import get_runtime
        from airflow_predictive.training.fanout import Plan
        from airflow_predictive.training.fanout import select_and_store as store

        return _summary(store(get_runtime().engine(), Plan.from_json(plan), versions), len(list(shards)))

    @task(trigger_rule="all_done_min_one_success", execution_timeout=timedelta(minutes=5))
    def clean_up(run_id: str | None = None) -> None:
        """The run's work folder goes once the fan-out ran, whatever failed in it (all skipped:
        there was none). A folder left behind anyway is swept by a later plan after a day."""
        from airflow_predictive.runtime import get_runtime
        from airflow_predictive.training.fanout import clean_up as remove
        from airflow_predictive.training.fanout import work_folder

        remove(work_folder(get_runtime().model_store().root, run_id or "manual"))

    close_stale_runs()  # beside the retraining: a run it closes is no success, so trains nothing
    planned = plan_retraining()
    versions = train_global_models(planned["plan"])
    shards = backtest_shard.partial(plan=planned["plan"], versions=versions).expand(index=planned)
    stored = select_and_store(planned["plan"], versions, shards)
    [versions, shards, stored] >> clean_up()


def _summary(result: Any, shards: int) -> dict[str, object]:
    """What a retraining returns to XCom (``TrainingResult`` or None: nothing was due)."""
    if result is None:
        return {"retrained": 0}
    return {
        "retrained": len(result.tasks),
        "shards": shards,
        "model_versions": dict(result.model_versions),
        "champions": {str(t.key): t.champion for t in result.tasks},
    }


maintenance_dag = predictive_maintenance()
