"""A local shadow run: the command it replays, and its run in a small cgroup with a hard deadline.

Why: two places shadow a local task and must do it the same way: ``ShadowRunOperator`` (a setup
task, in the worker) and the PredictiveLocalExecutor's shadow pre-stage (``executors/local_shadow.py``,
in the scheduler, for a task that asked for a shadow without a ShadowRunOperator). Both resolve
what to run the same way (``bash_command_of``: a BashOperator-family task's ``bash_command``,
rendered by the caller), start it through the cgroup backend with ``AIRFLOW_PREDICTIVE_SHADOW=1``
and the shadow's small resources (``bash_start``), and run, record and re-forecast it through
``run_local`` (``core.shadow.runner.run_shadow`` + ``ShadowCalibration.finish``).
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

    from airflow_predictive.core.model.backend import Allocation, Handle
    from airflow_predictive.core.model.resources import ResourceVector
    from airflow_predictive.core.model.runs import TaskKey
    from airflow_predictive.core.shadow.runner import ShadowRun
    from airflow_predictive.operators.shadow_run import ShadowCalibration, ShadowPlan

SHADOW_ENV = "AIRFLOW_PREDICTIVE_SHADOW"


def bash_command_of(task: Any, render: Callable[[str], str] | None = None) -> str | None:
    """The command a shadow of ``task`` replays: its ``bash_command`` when it has one as a string
    (a BashOperator or a subclass; a ``@task.bash`` command only exists once its callable ran, so
    it has none), passed through ``render`` (its Jinja template, rendered for the DAG run). None:
    nothing to replay."""
    if task is None or "Decorated" in str(getattr(task, "task_type", "") or ""):
        return None
    command = getattr(task, "bash_command", None)
    if not isinstance(command, str) or not command.strip():
        return None
    return str(render(command)) if render is not None else command


def bash_argv(command: str) -> tuple[str, ...]:
    return ("/bin/bash", "-c", command)


def shadow_name(task_id: str) -> str:
    """A unique, cgroup-safe name for one shadow of ``task_id``."""
    raw = f"shadow-{task_id}-{uuid.uuid4().hex[:8]}"
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in raw)[:63]


def shadow_labels(key: TaskKey, run_id: str) -> dict[str, str]:
    return {"dag_id": key.dag_id, "task_id": key.task_id, "run_id": run_id, "shadow": "1"}


def bash_start(
    backend: Any,
    name: str,
    argv: Sequence[str],
    env: Mapping[str, str],
    labels: Mapping[str, str],
) -> Callable[[Allocation], Handle]:
    """``start`` for ``run_shadow``: ``argv`` in a new group of the cgroup backend, with the flag set."""

    def start(allocation: Allocation) -> Handle:
        from airflow_predictive.core.model.backend import ProvisionSpec

        spec = ProvisionSpec(
            name=name, command=tuple(argv), env={**env, SHADOW_ENV: "1"}, labels=dict(labels)
        )
        return backend.provision(spec, allocation)

    return start


def run_local(
    calibration: ShadowCalibration,
    plan: ShadowPlan,
    backend: Any,
    start: Callable[[Allocation], Handle],
    *,
    try_number: int,
    operator: str,
    overhead: ResourceVector | None,
    settle: Callable[[ShadowRun], ShadowRun] | None = None,
) -> dict[str, Any]:
    """Run the shadow (sampled, killed at ``plan.budget``), record it, store its re-forecast; the
    summary (``ShadowCalibration.finish``). ``settle``: fixes the run's end once its process is
    reaped (a forked callable's exit code). Never raises for the shadow's own failures."""
    from airflow_predictive.core.ports import SystemClock
    from airflow_predictive.core.shadow.runner import run_shadow

    assert plan.budget is not None, "run_local needs a plan that shadows"
    run = run_shadow(
        backend,
        start,
        plan.budget,
        clock=SystemClock(),
        sample_interval_s=calibration.settings.sample_interval_s,
    )
    if settle is not None:
        run = settle(run)
    return calibration.finish(plan, run, try_number=try_number, operator=operator, overhead=overhead)
