"""Listener that records every task try: start, samples (through the sampler sidecar) and outcome.

Inside the task process (RuntimeTaskInstance hooks) it never touches the database: the start hook
spawns the sampler sidecar and hands it the try's record on a pipe, the end hooks write the
outcome on that pipe, and ``before_stopping`` tells it when the task process exits because the try
deferred or was rescheduled (Airflow calls no end hook then). The sidecar, outside the task path,
creates or resumes the run row, writes samples and records the end (``sampling.recorder``). Each
hook costs the task a fork/exec and a pipe write: milliseconds, whatever the database does.

Failures the scheduler or API server decide (killed tasks, zombies, UI marks) arrive as
``on_task_instance_failed`` with an ORM TaskInstance; their write goes to a bounded background
queue (``listeners.background``) so the scheduler loop and requests never wait for it.

Rules: hooks never raise; a failure in a task process opens a circuit breaker (one clear warning,
no further attempts in that process) and the task goes on with its declared resources. Components
that launch local tasks export the SQLite sibling store to their children (``on_starting``; see
``config.storage_url`` and docs/recording.md; settings through ``runtime``). Import-light: no numpy/SQLAlchemy at import time.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from airflow.listeners import hookimpl

from airflow_predictive import runtime

if TYPE_CHECKING:
    from airflow_predictive.core.model.runs import Outcome
    from airflow_predictive.listeners.background import BackgroundWriter
    from airflow_predictive.runtime import RecordingSettings
    from airflow_predictive.sampling.launcher import RecorderHandle

log = logging.getLogger(__name__)

_logged: set[str] = set()
_lock = threading.Lock()


def _settings() -> RecordingSettings:
    return runtime.get_runtime().recording_settings()


def _log_once(key: str, message: str, *args: Any, exc_info: bool = False) -> None:
    with _lock:
        if key in _logged:
            log.debug(message, *args)
            return
        _logged.add(key)
    log.warning(message, *args, exc_info=exc_info)


class _Breaker:
    """Open after the first failure in this process: later hooks return at once."""

    def __init__(self) -> None:
        self.reason: str | None = None

    @property
    def open(self) -> bool:
        return self.reason is not None

    def trip(self, reason: str) -> None:
        if self.reason is None:
            self.reason = reason
            log.warning(
                "predictive: recording stops in this task process (%s); the task is not affected "
                "and runs with its declared resources",
                reason,
            )

    def reset(self) -> None:
        self.reason = None


breaker = _Breaker()


@dataclass
class _Active:
    ti: Any
    recorder: RecorderHandle | None
    cgroup: str | None = None  # the task's cgroup ref when it runs in one of ours
    delivery: threading.Thread | None = None  # hands a late store URL to the sidecar

    def settle(self) -> None:
        """Before the last control line: give a late store URL the rest of this hook's budget."""
        if self.delivery is not None and self.delivery.is_alive():
            self.delivery.join(_share_of_budget())


_active: dict[str, _Active] = {}
_writer: BackgroundWriter | None = None


def _background() -> BackgroundWriter:
    global _writer
    if _writer is None:
        from airflow_predictive.listeners.background import BackgroundWriter

        _writer = BackgroundWriter()
    return _writer


def _ti_key(ti: Any) -> str:
    return f"{ti.dag_id}|{ti.task_id}|{ti.run_id}|{getattr(ti, 'map_index', -1)}|{ti.try_number}"


def _is_task_process(ti: Any) -> bool:
    """True for the RuntimeTaskInstance of the task process (it carries the operator)."""
    return type(ti).__name__ == "RuntimeTaskInstance" and hasattr(ti, "task")


def _guarded(hook: str, fn: Any, *args: Any) -> None:
    started = time.monotonic()
    in_task = bool(args) and _is_task_process(args[0])
    try:
        if not _settings().enabled:
            return
        fn(*args)
    except Exception as exc:
        from airflow_predictive.runtime import InvalidConfig, RecordingUnavailable

        if isinstance(exc, RecordingUnavailable):
            breaker.trip(str(exc))  # raised in task processes only
            return
        expected = isinstance(exc, InvalidConfig)
        _log_once(
            f"{hook}:{type(exc).__name__}",
            "predictive: could not record %s of a task try (%s: %s); the task is not affected "
            "and runs with its declared resources",
            hook,
            type(exc).__name__,
            str(exc).splitlines()[0][:300] if str(exc) else "",
            exc_info=not expected,
        )
        if in_task:
            breaker.trip(f"{hook} failed: {type(exc).__name__}")
    finally:
        elapsed = time.monotonic() - started
        try:
            budget = _settings().budget_s
        except Exception:
            budget = 1.0
        if in_task and elapsed > budget:
            breaker.trip(f"the {hook} hook took {elapsed:.2f}s, more than record_budget {budget:g}s")


# -- start ------------------------------------------------------------------------------------------


def _on_running(ti: Any) -> None:
    if not _is_task_process(ti) or breaker.open:
        return
    from dataclasses import replace

    from airflow_predictive.listeners.task_facts import record_for_running

    record = record_for_running(ti, socket.gethostname())
    settings = _settings()
    if not (settings.record_all_tasks or record.features.get("predictive")):
        return
    store = runtime.get_runtime().recording_store(_share_of_budget())  # RecordingUnavailable: warns
    record = replace(record, sample_interval_s=settings.sample_interval_s)
    cgroup = _own_cgroup()
    recorder = _start_recorder(record, store if isinstance(store, str) else None, cgroup)
    if recorder is None:
        breaker.trip("the resource sampler could not be started")
    active = _Active(ti=ti, recorder=recorder, cgroup=cgroup)
    if recorder is not None and not isinstance(store, str):
        active.delivery = threading.Thread(
            target=_deliver_store, args=(recorder, store), name="predictive-store-url", daemon=True
        )
        active.delivery.start()
    _active[_ti_key(ti)] = active


def _share_of_budget() -> float:
    """What one hook may wait for the store connection: most of ``record_budget`` (the rest is
    the sidecar's fork/exec)."""
    return max(0.0, _settings().budget_s * 0.8)


def _deliver_store(recorder: RecorderHandle, lookup: runtime.ConnectionLookup) -> None:
    """The sidecar samples from the start; its store URL follows when the slow lookup answers."""
    try:
        url = runtime.get_runtime().pending_store_url(lookup)
    except runtime.RecordingUnavailable as exc:
        breaker.trip(str(exc))
        recorder.give_store(None, str(exc)[:300])
        return
    except Exception as exc:  # never raise on a task's thread
        recorder.give_store(None, f"{type(exc).__name__}: {exc}"[:300])
        return
    log.info("predictive: the store connection %s answered after the start hook", lookup.conn_id)
    recorder.give_store(url)


def _start_recorder(record: Any, url: str | None, cgroup: str | None) -> RecorderHandle | None:
    try:
        from airflow_predictive.sampling.launcher import launch_recorder
    except ImportError as exc:
        _log_once("sampler-import", "predictive: the sampler is unavailable (%s); nothing recorded", exc)
        return None
    settings = _settings()
    return launch_recorder(
        record,
        os.getpid(),
        url,
        interval=settings.sample_interval_s,
        flush=settings.flush_interval_s,
        cgroup=cgroup,
        gpu=settings.gpu_metrics,
        timeout=settings.budget_s,
    )


def _own_cgroup() -> str | None:
    """The task's cgroup when the cgroup backend runs it in one (usage and OOM kills from there)."""
    try:
        from airflow_predictive.backends.cgroups.hierarchy import own_task_group_ref
    except ImportError:
        return None
    return own_task_group_ref()


# -- end --------------------------------------------------------------------------------------------


def _finish(ti: Any, outcome: Outcome, note: str | None, exit_code: int | None = None) -> None:
    active = _active.pop(_ti_key(ti), None)
    if active is None or active.recorder is None:
        return
    active.settle()
    active.recorder.end(outcome, datetime.now(UTC), exit_code, note)


def _on_success(ti: Any) -> None:
    from airflow_predictive.core.model.runs import Outcome

    _finish(ti, Outcome.SUCCESS, None, 0)


def _on_skipped(ti: Any) -> None:
    from airflow_predictive.core.model.runs import Outcome

    _finish(ti, Outcome.SKIPPED, None, 0)


def _oom_kills(cgroup: str | None) -> int:
    if not cgroup:
        return 0
    try:
        from airflow_predictive.backends.cgroups.group import group_from_ref

        reading = group_from_ref(cgroup).read()
    except (ImportError, OSError, ValueError):
        return 0
    return int(reading.oom_kills or 0) if reading is not None else 0


def _on_failed(ti: Any, error: Any) -> None:
    from airflow_predictive.core.feedback import FailureFacts, classify_failure

    active = _active.get(_ti_key(ti))
    facts = FailureFacts(
        error_type=type(error).__name__ if isinstance(error, BaseException) else "",
        message=str(error or ""),
        oom_events=_oom_kills(active.cgroup if active else None),
    )
    outcome, note = classify_failure(facts)
    if _is_task_process(ti):
        _finish(ti, outcome, note, facts.exit_code)
        return
    _finish_from_server(ti, outcome, note)


#: TaskInstanceState values with which a task process exits while its try goes on later
_RESUMING_STATES = {"deferred": "deferred", "up_for_reschedule": "rescheduled", "awaiting_input": "deferred"}


def _on_stopping() -> None:
    """The task process is about to exit: a try still open here deferred or was rescheduled."""
    from airflow_predictive.core.model.runs import LegEnd

    for key, active in list(_active.items()):
        state = getattr(active.ti, "state", None)
        value = str(getattr(state, "value", state) or "")
        _active.pop(key, None)
        if active.recorder is None:
            continue
        reason = _RESUMING_STATES.get(value)
        active.settle()
        if reason is not None:
            active.recorder.leg_ended(LegEnd(reason), datetime.now(UTC))
        else:  # no end hook ran (an unexpected state): the sidecar records the try as vanished
            active.recorder.close()


def _finish_from_server(ti: Any, outcome: Outcome, note: str) -> None:
    """The scheduler / API server failed a try (kill, zombie, UI): close its record if still open,
    on the background queue (never in the scheduler loop or the request)."""
    from airflow_predictive.core.model.runs import RunIdentity, RunSource, TaskKey

    map_index = getattr(ti, "map_index", -1)
    identity = RunIdentity(
        key=TaskKey(ti.dag_id, ti.task_id, -1 if map_index is None else int(map_index)),
        run_id=ti.run_id,
        try_number=int(ti.try_number),
        source=RunSource.LISTENER,
    )
    url = runtime.get_runtime().storage_url()
    budget = _settings().budget_s
    end = datetime.now(UTC)

    def write() -> None:
        from airflow_predictive.storage.engine import recording_engine
        from airflow_predictive.storage.run_store import SqlRunStore

        store = SqlRunStore(recording_engine(url, budget))
        record = store.get_run(identity)
        if record is None or record.run_pk is None or record.outcome.finished:
            return
        store.finish_run(
            record.run_pk,
            outcome=outcome,
            end=end,
            peak=store.series(record.run_pk).peaks(),
            note=f"ended outside the task process: {note}",
            only_if_running=True,
        )

    _background().submit(f"the failure of {identity.key}", write)


def export_inherited_store() -> None:
    """In a component that launches local tasks: pass the SQLite sibling store down to them (the
    only URL a task may inherit; never the metadata database). No-op otherwise."""
    try:
        url = runtime.get_runtime().inherited_store()
    except Exception as exc:
        log.debug("predictive: no store to pass to tasks (%s)", exc)
        return
    if url:
        os.environ[runtime.INHERITED_STORE_ENV] = url


# -- hooks (never raise) ------------------------------------------------------------------------------


@hookimpl
def on_starting(component: Any) -> None:
    if type(component).__name__ == "TaskRunnerMarker":
        return  # the task process itself: it inherits, it never exports
    try:
        export_inherited_store()
    except Exception:  # never break a component's start
        log.debug("predictive: on_starting failed", exc_info=True)


@hookimpl
def before_stopping(component: Any) -> None:
    if type(component).__name__ != "TaskRunnerMarker" or not _active:
        return
    try:
        _on_stopping()
    except Exception:
        log.debug("predictive: before_stopping failed", exc_info=True)


@hookimpl
def on_task_instance_running(previous_state: Any, task_instance: Any) -> None:
    _guarded("start", _on_running, task_instance)


@hookimpl
def on_task_instance_success(previous_state: Any, task_instance: Any) -> None:
    _guarded("success", _on_success, task_instance)


@hookimpl
def on_task_instance_skipped(previous_state: Any, task_instance: Any) -> None:
    _guarded("skip", _on_skipped, task_instance)


@hookimpl
def on_task_instance_failed(previous_state: Any, task_instance: Any, error: Any) -> None:
    _guarded("failure", _on_failed, task_instance, error)
