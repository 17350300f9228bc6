"""The PredictiveLocalExecutor's shadow pre-stage: a shadow run before a local task is planned.

Why: issue 11 asks shadow runs "for local tasks under the PredictiveExecutor", not only through a
``ShadowRunOperator`` setup task. A task that asks (``executor_config={"predictive": {"shadow_run":
"auto" | True, "shadow_cmds": [...]}}``) is held here before the coordinator plans it: the shadow
(the task's ``shadow_cmds``, else a BashOperator's own ``bash_command`` read from its serialized DAG,
never any other code: running a task's real code twice can have side effects) runs in a small
cgroup with ``AIRFLOW_PREDICTIVE_SHADOW=1`` and a hard deadline (``operators/shadow_local.run_local``,
the code ``ShadowRunOperator`` runs), is recorded as a run of source ``shadow``, and its re-forecast
is stored for this DAG run; when the pre-stage lets the task go, the coordinator plans it and the
``ShadowOverlay`` serves it the sharpened forecast.

It never blocks the executor heartbeat and never hurts the task: each shadow runs in a background
thread (at most ``slots`` at a time); ``poll()`` (from the heartbeat) hands back the tasks whose
shadow ended, failed, was skipped or outlived its bound (deciding: ``grace_s``; running: its budget
+ ``grace_s``; waiting for a free slot: ``grace_s``), each with one log line; the task is then
planned as if no shadow had been asked. ``ShadowPreStage`` is the state machine (injected clock,
runner and thread starter: unit-tested without threads); ``LocalShadowRunner`` is the real runner.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from airflow_predictive.core.model.resources import MIB, ResourceVector
from airflow_predictive.core.shadow.policy import ShadowMode, local_gate

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from airflow_predictive.core.model.query import ForecastQuery
    from airflow_predictive.core.model.runs import RunIdentity
    from airflow_predictive.core.shadow.policy import ShadowSettings
    from airflow_predictive.executors.coordinator import Coordinator
    from airflow_predictive.executors.opt_in import TaskSettings

log = logging.getLogger(__name__)

# What an Airflow 3.3 task process holds in the task's cgroup beyond its command (the forked task
# runner parses the DAG and runs the operator there); a shadow replays the command alone, so this
# is added to its prefix (``reforecast``'s ``overhead``). ShadowRunOperator measures its own task
# process instead; the executor has none to measure.
TASK_PROCESS_OVERHEAD = ResourceVector(memory_bytes=64 * MIB)
DEFAULT_GRACE_S = 10.0
DEFAULT_SLOTS = 2
OPERATOR = "PredictiveLocalExecutor"


class Phase(StrEnum):
    WAITING = "waiting"  # for a free shadow slot
    DECIDING = "deciding"  # its thread resolves the command and decides (history, forecast)
    RUNNING = "running"  # the shadow process runs (until its budget)
    DONE = "done"


@dataclass(frozen=True)
class ShadowRequest:
    """One try to shadow: what the task asked (``TaskSettings``) and which DAG run it is."""

    run: RunIdentity
    mode: ShadowMode
    declared: ResourceVector = field(default_factory=ResourceVector)
    shadow_cmds: tuple[str, ...] | None = None
    duration_s: float | None = None


@dataclass(frozen=True)
class ShadowResult:
    """How the pre-stage of one try ended. ``shadowed``: a shadow process ran (and was recorded)."""

    shadowed: bool
    reason: str  # a ShadowReason (not shadowed), a ShadowEnd (shadowed), "timed_out", "no_slot", "error"
    note: str
    summary: Mapping[str, Any] = field(default_factory=dict)
    reforecast_stored: bool = False


@dataclass(frozen=True)
class StageEvent:
    """What ``poll`` reports: a shadow ``started`` (the task stays queued) or the try is ``done``
    (plan it now)."""

    key: Any
    request: ShadowRequest
    kind: str  # "started" | "done"
    note: str
    result: ShadowResult | None = None


@dataclass
class _Entry:
    key: Any
    request: ShadowRequest
    submitted: float
    phase: Phase = Phase.WAITING
    since: float = 0.0  # when the current phase began
    bound: float = 0.0  # when the current phase is given up
    note: str = ""
    result: ShadowResult | None = None
    ran: bool = False  # the shadow process was started (the runner said so)
    announced: bool = False  # "started" reported


def _thread(target: Callable[[], None], name: str) -> None:
    threading.Thread(target=target, name=name, daemon=True).start()


class ShadowPreStage:
    """Holds the tries whose shadow is wanted until it ends (module docstring)."""

    def __init__(
        self,
        runner: Callable[[ShadowRequest, Callable[[str, float], None]], ShadowResult],
        *,
        clock: Callable[[], float] = time.monotonic,
        grace_s: float = DEFAULT_GRACE_S,
        slots: int = DEFAULT_SLOTS,
        spawn: Callable[[Callable[[], None], str], None] = _thread,
    ) -> None:
        if slots < 1 or grace_s <= 0:
            raise ValueError("the shadow pre-stage needs slots >= 1 and grace_s > 0")
        self.runner = runner
        self.clock = clock
        self.grace_s = grace_s
        self.slots = slots
        self.spawn = spawn
        self._entries: dict[Any, _Entry] = {}
        self._busy = 0  # threads still running (an abandoned one keeps its slot until it ends)
        self._lock = threading.Lock()
        self._closed = False

    def __contains__(self, key: Any) -> bool:
        return key in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def phase(self, key: Any) -> Phase | None:
        entry = self._entries.get(key)
        return None if entry is None else entry.phase

    def submit(self, key: Any, request: ShadowRequest) -> None:
        """Hold ``key`` for its shadow; it starts now when a slot is free (no I/O here)."""
        now = self.clock()
        with self._lock:
            self._entries[key] = _Entry(key, request, now, since=now, bound=now + self.grace_s)
        self._start_waiting()

    def forget(self, key: Any) -> None:
        """Drop a held try (revoked); a shadow already running still ends at its own deadline."""
        with self._lock:
            self._entries.pop(key, None)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._entries.clear()

    def poll(self) -> list[StageEvent]:
        """What happened since the last poll (from the heartbeat; never blocks, never raises)."""
        now = self.clock()
        events: list[StageEvent] = []
        with self._lock:
            for entry in list(self._entries.values()):
                if entry.ran and not entry.announced:  # even when it has ended since
                    entry.announced = True
                    events.append(StageEvent(entry.key, entry.request, "started", entry.note))
                if entry.phase is not Phase.DONE and now >= entry.bound:
                    entry.result = self._given_up(entry, now)
                    entry.phase = Phase.DONE
                if entry.phase is Phase.DONE:
                    del self._entries[entry.key]
                    result = entry.result or ShadowResult(False, "error", "no result")
                    events.append(StageEvent(entry.key, entry.request, "done", result.note, result))
        self._start_waiting()
        return events

    def _given_up(self, entry: _Entry, now: float) -> ShadowResult:
        waited = now - entry.submitted
        if entry.phase is Phase.WAITING:
            return ShadowResult(
                False, "no_slot", f"no free shadow slot within {self.grace_s:g} s ({self.slots} busy)"
            )
        what = "deciding" if entry.phase is Phase.DECIDING else "running"
        return ShadowResult(
            False,
            "timed_out",
            f"the shadow pre-stage gave up after {waited:.1f} s ({what} past its bound); "
            "it ends at its own deadline",
        )

    def _start_waiting(self) -> None:
        to_start: list[_Entry] = []
        with self._lock:
            if self._closed:
                return
            for entry in self._entries.values():
                if entry.phase is Phase.WAITING and self._busy < self.slots:
                    now = self.clock()
                    entry.phase, entry.since, entry.bound = Phase.DECIDING, now, now + self.grace_s
                    self._busy += 1
                    to_start.append(entry)
        for entry in to_start:
            try:
                self.spawn(self._job(entry), f"predictive-shadow-{entry.request.run.key.task_id}"[:60])
            except Exception as exc:  # no thread: no shadow
                with self._lock:
                    self._busy -= 1
                    entry.result = ShadowResult(False, "error", f"cannot start its thread: {exc}")
                    entry.phase = Phase.DONE

    def _job(self, entry: _Entry) -> Callable[[], None]:
        def started(note: str, budget_s: float) -> None:
            with self._lock:
                if entry.phase is Phase.DECIDING:
                    now = self.clock()
                    entry.phase, entry.since, entry.note, entry.ran = Phase.RUNNING, now, note, True
                    entry.bound = now + max(0.0, budget_s) + self.grace_s

        def job() -> None:
            try:
                result = self.runner(entry.request, started)
            except Exception as exc:  # the runner's own failures: the task runs unshadowed
                result = ShadowResult(False, "error", f"{type(exc).__name__}: {exc}")
            with self._lock:
                self._busy -= 1
                if entry.phase is not Phase.DONE:  # not given up meanwhile
                    entry.result, entry.phase = result, Phase.DONE

        return job


class LocalShadowRunner:
    """The real runner: resolve the command, decide, run it in a small cgroup, record, re-forecast."""

    def __init__(
        self,
        backend: Any,
        *,
        settings: Callable[[], ShadowSettings] | None = None,
        resolve: Callable[[RunIdentity], tuple[tuple[str, ...], dict[str, str]] | None] | None = None,
        overhead: ResourceVector = TASK_PROCESS_OVERHEAD,
    ) -> None:
        self.backend = backend
        self.settings = settings
        self.resolve = resolve or serialized_bash_command
        self.overhead = overhead
        self._active: dict[str, Any] = {}  # shadows running now (handle ref -> handle)
        self._lock = threading.Lock()
        self._closed = False

    def __call__(self, request: ShadowRequest, started: Callable[[str, float], None]) -> ShadowResult:
        from airflow_predictive.operators.shadow_local import (
            bash_start,
            run_local,
            shadow_labels,
            shadow_name,
        )
        from airflow_predictive.operators.shadow_run import ShadowCalibration, shadow_settings

        run = request.run
        argv, env, source = self._command(request)
        gate = local_gate(request.mode, source)
        if gate is not None:
            return ShadowResult(False, gate.reason.value, gate.note)
        assert argv is not None
        if self._already_shadowed(run):
            return ShadowResult(
                False, "already_shadowed", "this DAG run's shadow re-forecast is stored already"
            )
        settings = self.settings() if self.settings is not None else shadow_settings()
        calibration = ShadowCalibration(run.key, run.run_id, settings, request.declared)
        plan = calibration.plan(request.mode.value, runtime_hint_s=request.duration_s)
        if not plan.decision.run or plan.budget is None:
            return ShadowResult(False, plan.decision.reason.value, plan.decision.note)
        started(f"{plan.decision.note}; {source}; budget {plan.budget.note}", plan.budget.seconds)
        start = self._tracked(
            bash_start(
                self.backend, shadow_name(run.key.task_id), argv, env, shadow_labels(run.key, run.run_id)
            )
        )
        try:
            summary = run_local(
                calibration,
                plan,
                self.backend,
                start,
                try_number=run.try_number,
                operator=OPERATOR,
                overhead=self.overhead,
            )
        finally:
            self._untrack()
        return ShadowResult(
            True,
            str(summary.get("end")),
            str(summary.get("note", "")),
            summary,
            reforecast_stored=bool(summary.get("reforecast_stored")),
        )

    def _tracked(self, start: Callable[[Any], Any]) -> Callable[[Any], Any]:
        def tracked(allocation: Any) -> Any:
            with self._lock:
                if self._closed:
                    raise RuntimeError("the executor is ending")
            handle = start(allocation)
            with self._lock:
                self._active[f"{threading.get_ident()}:{handle.ref}"] = handle
            return handle

        return tracked

    def _untrack(self) -> None:
        me = f"{threading.get_ident()}:"
        with self._lock:
            for ref in [r for r in self._active if r.startswith(me)]:
                del self._active[ref]

    def close(self) -> None:
        """The executor ends: kill the shadows still running (their threads then record them)."""
        with self._lock:
            self._closed = True
            handles = list(self._active.values())
        for handle in handles:
            try:
                self.backend.release(handle)
            except Exception as exc:
                log.warning("predictive: shadow %s not released at executor end (%s)", handle.ref, exc)

    @staticmethod
    def _already_shadowed(run: RunIdentity) -> bool:
        """A ShadowRunOperator (or an earlier try) already left this DAG run's re-forecast."""
        from airflow_predictive.runtime import get_runtime

        try:
            return get_runtime().shadow_forecasts().get(run.key, run.run_id) is not None
        except Exception:  # unreadable: the calibration's own reads decide
            return False

    def _command(self, request: ShadowRequest) -> tuple[tuple[str, ...] | None, dict[str, str], str | None]:
        if request.mode is ShadowMode.NEVER:
            return None, {}, None
        if request.shadow_cmds:
            return request.shadow_cmds, {}, "shadow_cmds"
        try:
            found = self.resolve(request.run)
        except Exception as exc:
            log.info("predictive: no bash_command of %s to shadow (%s)", request.run.key, exc)
            return None, {}, None
        if found is None:
            return None, {}, None
        return found[0], found[1], "its bash_command"


def serialized_bash_command(run: RunIdentity) -> tuple[tuple[str, ...], dict[str, str]] | None:
    """The argv and env of a BashOperator-family task's command, from its serialized DAG (the newest
    version) with its Jinja template rendered for this run (``run_id``, ``dag_id``, ``task_id``,
    ``map_index``, ``try_number``, its ``params``; anything else the executor cannot know: no
    command, ValueError saying which). None: not a BashOperator-family task."""
    from airflow.models.serialized_dag import SerializedDagModel

    from airflow_predictive.operators.shadow_local import bash_argv, bash_command_of

    dag = SerializedDagModel.get_dag(run.key.dag_id)
    if dag is None or not dag.has_task(run.key.task_id):
        return None
    task = dag.get_task(run.key.task_id)
    context = {
        "run_id": run.run_id,
        "dag_id": run.key.dag_id,
        "task_id": run.key.task_id,
        "map_index": run.key.map_index,
        "try_number": run.try_number,
        "params": _params(task),
    }
    exts = tuple(getattr(task, "template_ext", ()) or ())
    command = bash_command_of(task, lambda text: render_minimal(text, context, exts))
    if command is None:
        return None
    env = getattr(task, "env", None)
    plain_env = (
        {str(k): str(v) for k, v in env.items() if not _templated(str(v))} if isinstance(env, dict) else {}
    )
    return bash_argv(command), plain_env


def _params(task: Any) -> dict[str, Any]:
    params = getattr(task, "params", None)
    try:
        return {str(k): _plain(v) for k, v in dict(params or {}).items()}
    except Exception:
        return {}


def _plain(value: Any) -> Any:
    return getattr(value, "value", value)


def _templated(text: str) -> bool:
    return "{{" in text or "{%" in text or "{#" in text


def render_minimal(text: str, context: Mapping[str, Any], exts: tuple[str, ...] = ()) -> str:
    """``text`` rendered with the few facts the executor knows (a sandboxed Jinja environment;
    an undefined name raises ValueError). A template file (``.sh`` ...) is not read."""
    if exts and text.strip().endswith(exts):
        raise ValueError(f"its bash_command is a template file ({text.strip()!r}); not read by the executor")
    if not _templated(text):
        return text
    import jinja2
    from jinja2.sandbox import SandboxedEnvironment

    env = SandboxedEnvironment(undefined=jinja2.StrictUndefined, autoescape=False)
    try:
        return env.from_string(text).render(**context)
    except jinja2.TemplateError as exc:
        raise ValueError(
            f"its bash_command needs template context the executor does not have ({exc})"
        ) from exc


class ExecutorShadows:
    """The executor's side of the pre-stage: which tries it holds, and handing them to the
    coordinator when their shadow ends (each step one stored decision and one log line)."""

    def __init__(
        self,
        stage: ShadowPreStage,
        coordinator: Coordinator,
        default: ShadowMode = ShadowMode.NEVER,
        on_close: Callable[[], None] | None = None,
    ) -> None:
        self.stage = stage
        self.coordinator = coordinator
        self.on_close = on_close  # the runner's close (kills the shadows still running)
        self.default = default  # shadow_run of a task that sets none ([predictive] local_shadow_run)
        self._held: dict[Any, tuple[RunIdentity, TaskSettings, ForecastQuery, int]] = {}

    def __contains__(self, key: Any) -> bool:
        return key in self._held

    def take(
        self, key: Any, run: RunIdentity, settings: TaskSettings, query: ForecastQuery, priority: int
    ) -> bool:
        """Hold the try for its shadow (True), or leave it to be planned now (False: not asked)."""
        if settings.shadow_run is ShadowMode.NEVER:
            return False
        request = ShadowRequest(
            run, settings.shadow_run, settings.declared, settings.shadow_cmds, settings.duration_s
        )
        self._held[key] = (run, settings, query, priority)
        self.stage.submit(key, request)
        return True

    def release(self) -> list[Any]:
        """Poll the pre-stage; submit the tries whose shadow is over to the coordinator (their keys)."""
        out = []
        for event in self.stage.poll():
            held = self._held.get(event.key)
            if held is None:
                continue
            run, settings, query, priority = held
            if event.kind == "started":
                log.info("predictive: %s waits for its shadow run: %s", run.key, event.note)
                self.coordinator.hold_for_shadow(run, event.note)
                continue
            del self._held[event.key]
            result = event.result or ShadowResult(False, "error", "no result")
            if result.reforecast_stored:
                log.info("predictive: %s shadowed (%s); planning it", run.key, result.reason)
            elif result.shadowed or result.reason in ("timed_out", "no_slot", "error"):
                log.warning(
                    "predictive: %s: shadow %s (%s); planned as if no shadow was asked",
                    run.key,
                    result.reason,
                    result.note,
                )
            else:
                log.info("predictive: no shadow run for %s: %s", run.key, result.note)
            self.coordinator.shadow_ended(run, result.reason, result.note, dict(result.summary))
            self.coordinator.submit(event.key, run, settings, query, priority)
            out.append(event.key)
        return out

    def forget(self, key: Any) -> None:
        self._held.pop(key, None)
        self.stage.forget(key)

    def close(self) -> None:
        self._held.clear()
        self.stage.close()
        if self.on_close is not None:
            try:
                self.on_close()
            except Exception as exc:
                log.warning("predictive: shadows not stopped at executor end (%s)", exc)


def executor_shadows(coordinator: Coordinator, backend: Any) -> ExecutorShadows:
    """The PredictiveLocalExecutor's pre-stage on its cgroup backend (``[predictive] shadow_*``,
    ``local_shadow_run``)."""
    from airflow_predictive.runtime import get_runtime

    if backend is None or not hasattr(backend, "provision"):
        raise ValueError("no cgroup backend to run shadows on")
    default = ShadowMode.parse(get_runtime().scheduler_settings().local_shadow_run)
    runner = LocalShadowRunner(backend)
    return ExecutorShadows(ShadowPreStage(runner), coordinator, default, on_close=runner.close)
