"""``ShadowRunOperator``: a setup task that calibrates the forecast of the real task after it.

Why: on a cold start (or after drift, or when asked) the forecast of a task is weak. A shadow
run replays the start of the real task's command on small resources (a small cgroup through the
cgroup backend, env ``AIRFLOW_PREDICTIVE_SHADOW=1``, a hard deadline of at most 5% of the
predicted runtime), samples it, records it as a run of source ``shadow`` (never the real try's
row) and stores the re-forecast from its observed prefix for the real try of the same DAG run;
the planner serves it to that try (``core.shadow.serving.ShadowOverlay``).

It never fails: a shadow that cannot start, fails, is OOM-killed, times out, or whose storage is
down leaves the real try with its un-shadowed forecast (or declared resources), with one log line
saying why. Its cost (wall time x its small limits) is recorded with the shadow run and returned.

``ShadowCalibration`` holds the steps shared with the pod operator's shadow hook (decide, budget,
record, re-forecast, store); the operator adds the local start (bash command or python callable).
"""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

from airflow_predictive.operators.shadow_local import (
    SHADOW_ENV,
    bash_argv,
    bash_command_of,
    bash_start,
    run_local,
    shadow_labels,
    shadow_name,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from airflow.sdk import Context

    from airflow_predictive.core.model.backend import Allocation, Handle
    from airflow_predictive.core.model.query import ServedForecast
    from airflow_predictive.core.model.resources import ResourceVector
    from airflow_predictive.core.model.runs import TaskKey
    from airflow_predictive.core.shadow.policy import ShadowBudget, ShadowDecision, ShadowSettings
    from airflow_predictive.core.shadow.runner import ShadowRun

log = logging.getLogger(__name__)

__all__ = ["SHADOW_ENV", "ShadowCalibration", "ShadowPlan", "ShadowRunOperator", "shadow_settings"]


@dataclass(frozen=True)
class ShadowPlan:
    """What the calibration decided before the shadow starts."""

    decision: ShadowDecision
    budget: ShadowBudget | None
    served: ServedForecast | None
    note: str = ""


class ShadowCalibration:
    """The storage-facing steps of one shadow run (never raise; each failure is one log line)."""

    def __init__(self, key: TaskKey, run_id: str, settings: ShadowSettings, declared: ResourceVector) -> None:
        self.key = key
        self.run_id = run_id
        self.settings = settings
        self.declared = declared

    def plan(self, mode: str | bool, *, runtime_hint_s: float | None = None) -> ShadowPlan:
        """Shadow or not, and its budget. ``runtime_hint_s``: the runtime the task's author declared
        (the executor's ``duration``), the budget's base when no learned forecast predicts one."""
        from airflow_predictive.core.model.query import ForecastQuery, ForecastSource
        from airflow_predictive.core.model.resources import Metric
        from airflow_predictive.core.model.runs import Outcome, RunSource
        from airflow_predictive.core.shadow.policy import (
            ShadowDecision,
            ShadowMode,
            ShadowReason,
            budget_for,
            decide,
            relative_errors,
        )
        from airflow_predictive.runtime import get_runtime

        parsed = ShadowMode.parse(mode)
        if parsed is ShadowMode.NEVER:
            return ShadowPlan(ShadowDecision(False, ShadowReason.DISABLED, "shadow_run=False"), None, None)
        runtime = get_runtime()
        try:
            history = [
                r
                for r in runtime.run_store().runs(self.key, limit=50)
                if r.identity.source is not RunSource.SHADOW and r.outcome is Outcome.SUCCESS
            ]
        except Exception as exc:  # no storage: the re-forecast could not reach the real try anyway
            why = f"storage unavailable ({type(exc).__name__}: {exc})"
            return ShadowPlan(ShadowDecision(False, ShadowReason.DISABLED, why), None, None)
        served: ServedForecast | None
        try:
            served = runtime.forecasts().forecast_for(ForecastQuery(self.key, declared=self.declared))
        except Exception as exc:
            served, note = None, f"forecast unavailable ({exc})"
        else:
            note = served.note
        learned = (
            served is not None
            and served.forecast is not None
            and served.source not in (ForecastSource.NONE, ForecastSource.DECLARED)
        )
        mem = Metric.MEMORY_BYTES
        p50 = served.forecast.peaks(0.5).get(mem) if learned and served and served.forecast else None
        errors = relative_errors(p50, [r.peak.get(mem) for r in history[-self.settings.drift_window :]])
        decision = decide(parsed, len(history), errors, self.settings)
        predicted = runtime_hint_s
        if learned and served is not None and served.forecast is not None:
            predicted = served.forecast.duration_s.get(0.5) or runtime_hint_s
        budget = budget_for(predicted, self.settings) if decision.run else None
        return ShadowPlan(decision, budget, served if learned else None, note)

    def finish(
        self,
        plan: ShadowPlan,
        run: ShadowRun,
        *,
        try_number: int,
        operator: str,
        overhead: ResourceVector | None = None,
    ) -> dict[str, Any]:
        """Record the shadow, re-forecast, store it for the real try; the summary (XCom-safe).
        ``overhead``: what the real try holds beyond the shadowed command (``reforecast``)."""
        from airflow_predictive.core.shadow.reforecast import reforecast

        run_pk = self._record(run, try_number, operator, plan)
        at_start = plan.served.forecast if plan.served is not None else None
        horizon = plan.budget.predicted_s if plan.budget is not None else self.settings.default_runtime_s
        result = reforecast(
            run.observation, at_start, declared=self.declared, horizon_s=horizon, overhead=overhead
        )
        stored = False
        if result.used and result.forecast is not None:
            stored = self._store(result.forecast, result.note, run_pk, plan)
        obs = run.observation
        cost = run.cost
        summary: dict[str, Any] = {
            "shadowed": True,
            "reason": plan.decision.reason.value,
            "end": obs.end.value,
            "wall_s": round(obs.wall_s, 3),
            "budget_s": round(plan.budget.seconds, 3) if plan.budget else None,
            "predicted_s": round(plan.budget.predicted_s, 1) if plan.budget else None,
            "cost_cpu_core_s": round(cost.cpu_cores or 0.0, 3),
            "cost_memory_gib_s": round((cost.memory_bytes or 0.0) / 2**30, 3),
            "samples": len(run.samples),
            "overhead_mib": round((overhead.memory_bytes or 0.0) / 2**20, 1) if overhead else 0.0,
            "run_pk": run_pk,
            "reforecast_stored": stored,
            "note": result.note,
        }
        if stored:
            log.info("predictive: shadow of %s: %s", self.key, result.note)
        else:
            log.warning(
                "predictive: shadow of %s gave no re-forecast (%s); the real try runs with its "
                "un-shadowed forecast",
                self.key,
                result.note if result.used is False else "storage unavailable",
            )
        return summary

    def _record(self, run: ShadowRun, try_number: int, operator: str, plan: ShadowPlan) -> int | None:
        from airflow_predictive.core.model.runs import Outcome, RunIdentity, RunRecord, RunSource
        from airflow_predictive.core.shadow.reforecast import ShadowEnd
        from airflow_predictive.runtime import get_runtime

        outcome = {
            ShadowEnd.COMPLETED: Outcome.SUCCESS,
            ShadowEnd.BUDGET: Outcome.TIMED_OUT,
            ShadowEnd.OOM_KILLED: Outcome.OOM_KILLED,
            ShadowEnd.FAILED: Outcome.FAILED,
        }.get(run.observation.end, Outcome.UNKNOWN)
        cost = run.cost
        note = (
            f"shadow ({plan.decision.note}): {run.observation.end.value}"
            f"{': ' + run.observation.reason if run.observation.reason else ''}; cost "
            f"{cost.cpu_cores or 0:.2f} core-s, {(cost.memory_bytes or 0) / 2**30:.3f} GiB-s"
            f"{'; ' + '; '.join(run.notes) if run.notes else ''}"
        )
        record = RunRecord(
            identity=RunIdentity(self.key, self.run_id, try_number, RunSource.SHADOW),
            start=run.started_at,
            declared=run.observation.limits,
            operator=operator,
            hostname=os.uname().nodename,
            sample_interval_s=self.settings.sample_interval_s,
            note=note,
        )
        try:
            store = get_runtime().run_store()
            pk = store.start_run(record)
            if run.samples:
                store.add_samples(pk, run.samples)
            store.finish_run(
                pk,
                outcome=outcome,
                end=run.ended_at or run.started_at,  # type: ignore[arg-type]
                peak=run.peak,
                exit_code=run.exit_code,
                note=note,
            )
            return pk
        except Exception as exc:
            log.warning("predictive: the shadow run of %s could not be recorded: %s", self.key, exc)
            return None

    def _store(self, forecast: Any, note: str, run_pk: int | None, plan: ShadowPlan) -> bool:
        from airflow_predictive.core.shadow.serving import StoredShadowForecast
        from airflow_predictive.runtime import get_runtime

        try:
            get_runtime().shadow_forecasts().put(
                StoredShadowForecast(
                    self.key,
                    self.run_id,
                    forecast,
                    note,
                    shadow_run_pk=run_pk,
                    model_version=plan.served.model_version if plan.served is not None else None,
                )
            )
            return True
        except Exception as exc:
            log.warning("predictive: the shadow's re-forecast of %s could not be stored: %s", self.key, exc)
            return False


def shadow_settings(**overrides: float | None) -> ShadowSettings:
    """The configured settings (``[predictive] shadow_*``) with the operator's overrides."""
    from airflow_predictive.core.shadow.policy import ShadowSettings

    try:
        from airflow_predictive.runtime import get_runtime

        base = get_runtime().shadow_settings()
    except Exception as exc:
        log.warning("predictive: shadow settings unreadable (%s); defaults", exc)
        base = ShadowSettings()
    given: dict[str, Any] = {k: v for k, v in overrides.items() if v is not None}
    return replace(base, **given) if given else base


class ShadowRunOperator(BaseOperator):
    """Shadow-run ``target`` (the real task's id) before it: use as a setup task,
    ``ShadowRunOperator(task_id="shadow", target="work", bash_command=...) >> work``.

    bash_command / python_callable (+ op_args, op_kwargs): what the real task runs (or a dry
        variant of a side-effecting task); at most one. Neither: the target's own (a BashOperator's
        rendered ``bash_command``, a PythonOperator's ``python_callable``). The callable runs in a forked child
        process adopted into the shadow's cgroup, with ``AIRFLOW_PREDICTIVE_SHADOW=1`` set.
    shadow_run: "auto" (cold start or drift) | True | False.
    budget / deadline_s / cpu / memory (bytes) / min_runs: override ``[predictive] shadow_*``.
    declared: the real task's declared resources ({"cpu": cores, "memory": bytes}); default: read
        from the target task's executor_config / resources in the DAG.
    Returns (XCom) a summary: whether it shadowed, how it ended, its cost, whether a re-forecast
    was stored.
    """

    template_fields = ("bash_command", "env")

    def __init__(
        self,
        *,
        target: str,
        bash_command: str | None = None,
        python_callable: Callable[..., Any] | None = None,
        op_args: list[Any] | None = None,
        op_kwargs: dict[str, Any] | None = None,
        env: dict[str, str] | None = None,
        shadow_run: str | bool = "auto",
        budget: float | None = None,
        deadline_s: float | None = None,
        cpu: float | None = None,
        memory: float | None = None,
        min_runs: int | None = None,
        declared: Mapping[str, float] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        from airflow_predictive.core.shadow.policy import ShadowMode, ShadowSettings

        if bash_command is not None and python_callable is not None:
            raise ValueError("ShadowRunOperator takes at most one of bash_command or python_callable")
        ShadowMode.parse(shadow_run)  # a bad value fails when the DAG is parsed
        overrides = {"budget": budget, "deadline_s": deadline_s, "cpu_cores": cpu, "memory_bytes": memory}
        given: dict[str, Any] = {k: v for k, v in overrides.items() if v is not None}
        replace(ShadowSettings(), **given)  # a bad value fails when the DAG is parsed
        self.target = target
        self.bash_command = bash_command
        self.python_callable = python_callable
        self.op_args = list(op_args or [])
        self.op_kwargs = dict(op_kwargs or {})
        self.env = dict(env or {})
        self.shadow_run = shadow_run
        self.overrides: dict[str, float | None] = {**overrides, "min_runs": min_runs}
        self.declared = dict(declared or {})

    def execute(self, context: Context) -> dict[str, Any]:
        try:
            return self._shadow(context)
        except Exception as exc:  # a shadow never fails the real task
            self.log.warning(
                "predictive: shadow of %s failed (%s: %s); the real try runs with its un-shadowed forecast",
                self.target,
                type(exc).__name__,
                exc,
            )
            return {"shadowed": False, "reason": "error", "note": f"{type(exc).__name__}: {exc}"}

    def _shadow(self, context: Context) -> dict[str, Any]:
        from airflow_predictive.core.model.runs import TaskKey
        from airflow_predictive.runtime import get_runtime

        settings = shadow_settings(**self.overrides)
        run_id = str(context["run_id"])
        key = TaskKey(self.dag_id, self.target, -1)
        calibration = ShadowCalibration(key, run_id, settings, self._declared(context))
        plan = calibration.plan(self.shadow_run)
        if not plan.decision.run or plan.budget is None:
            self.log.info("predictive: no shadow run for %s: %s", self.target, plan.decision.note)
            return {"shadowed": False, "reason": plan.decision.reason.value, "note": plan.decision.note}
        self.log.info(
            "predictive: shadow of %s (%s), budget %s", self.target, plan.decision.note, plan.budget.note
        )
        if self.bash_command is None and self.python_callable is None:
            self._command_of_target(context)
        backend = get_runtime().local_backend()
        name = shadow_name(self.target)
        env = {**self.env, SHADOW_ENV: "1"}
        starter = _CallableStart(backend, name, env, self) if self.python_callable else None
        start = starter or bash_start(
            backend, name, bash_argv(str(self.bash_command)), env, shadow_labels(key, run_id)
        )
        ti = context.get("ti")
        try_number = int(getattr(ti, "try_number", 1) or 1)
        summary = run_local(
            calibration,
            plan,
            backend,
            start,
            try_number=try_number,
            operator=type(self).__name__,
            overhead=_task_overhead(),
            settle=starter.settled if starter is not None else None,
        )
        self.log.info(
            "predictive: shadow of %s ended %s after %.1f s (cost %.2f core-s); re-forecast stored: %s",
            self.target,
            summary["end"],
            summary["wall_s"],
            summary["cost_cpu_core_s"],
            summary["reforecast_stored"],
        )
        return summary

    def _command_of_target(self, context: Context) -> None:
        """The target's own command: a BashOperator's (rendered) bash_command or a PythonOperator's callable."""
        dag = context.get("dag") or getattr(self, "dag", None)
        task = dag.get_task(self.target) if dag is not None else None
        command = (
            bash_command_of(task, lambda text: str(task.render_template(text, context)))
            if task is not None
            else None
        )
        if command is not None:
            self.bash_command = command
            return
        fn = getattr(task, "python_callable", None)
        if callable(fn):
            self.python_callable = fn
            self.op_args = list(getattr(task, "op_args", None) or [])
            self.op_kwargs = dict(getattr(task, "op_kwargs", None) or {})
            return
        raise ValueError(f"no bash_command or python_callable given, and {self.target!r} has neither")

    def _declared(self, context: Context) -> ResourceVector:
        from airflow_predictive.core.model.resources import ResourceVector

        if self.declared:
            return ResourceVector(
                cpu_cores=self.declared.get("cpu"), memory_bytes=self.declared.get("memory")
            )
        try:
            from airflow_predictive.listeners.task_facts import declared_resources

            dag = context.get("dag") or getattr(self, "dag", None)
            task = dag.get_task(self.target) if dag is not None else None
            if task is None:
                return ResourceVector()
            return declared_resources(
                getattr(task, "executor_config", None), getattr(task, "resources", None)
            )
        except Exception as exc:
            self.log.info("predictive: declared resources of %s unknown (%s)", self.target, exc)
            return ResourceVector()


def _task_overhead() -> ResourceVector:
    """The memory this task process holds on its own (its unique set size): the real try runs its
    command under the same kind of Airflow task process, in the same cgroup; the shadow does not."""
    from airflow_predictive.core.model.resources import ResourceVector

    try:
        import psutil

        return ResourceVector(memory_bytes=float(psutil.Process().memory_full_info().uss))
    except Exception as exc:  # no /proc/<pid>/smaps: the prefix alone
        log.info("predictive: task process memory unknown (%s); the shadow's prefix alone", exc)
        return ResourceVector()


class _CallableStart:
    """Forks a child that waits until it is adopted into the shadow's group, then runs the callable
    (``os._exit`` with 0 on success, 1 on an exception). No pickling: the child inherits it."""

    def __init__(self, backend: Any, name: str, env: Mapping[str, str], op: ShadowRunOperator) -> None:
        self.backend, self.name, self.env, self.op = backend, name, dict(env), op
        self.pid: int | None = None

    def __call__(self, allocation: Allocation) -> Handle:
        from airflow_predictive.core.model.backend import ProvisionSpec

        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child (measured through its cgroup)
            code = 1
            try:
                os.close(write)
                os.read(read, 1)
                os.environ.update(self.env)
                assert self.op.python_callable is not None
                self.op.python_callable(*self.op.op_args, **self.op.op_kwargs)
                code = 0
            except BaseException:
                import traceback

                traceback.print_exc()  # the shadow's error, in the task's log
                code = 1
            finally:
                os._exit(code)
        os.close(read)
        self.pid = pid
        try:
            spec = ProvisionSpec(name=self.name, env=self.env)
            return self.backend.adopt(pid, spec, allocation)
        except Exception:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, 9)
            self._reap(block=True)
            raise
        finally:
            with contextlib.suppress(OSError):
                os.write(write, b"g")
            os.close(write)

    def _reap(self, *, block: bool) -> int | None:
        if self.pid is None:
            return None
        try:
            done, status = os.waitpid(self.pid, 0 if block else os.WNOHANG)
        except ChildProcessError:
            return None
        if done == 0:
            return None
        return os.waitstatus_to_exitcode(status)

    def settled(self, run: ShadowRun) -> ShadowRun:
        """The adopted child's exit code (the backend cannot know it): completed or failed."""
        from airflow_predictive.core.shadow.reforecast import ShadowEnd

        code = self._reap(block=True)
        obs = run.observation
        if obs.end is ShadowEnd.FAILED and code == 0:
            obs = replace(obs, end=ShadowEnd.COMPLETED, reason="finished within its budget")
        elif obs.end is ShadowEnd.FAILED and code is not None:
            obs = replace(obs, reason=f"exit code {code}")
        return replace(run, observation=obs, exit_code=code if code is not None else run.exit_code)
