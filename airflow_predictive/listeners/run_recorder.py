"""Listener that records every task try: start, samples (through the sampler sidecar) and outcome.

Runs inside Airflow's task process (RuntimeTaskInstance hooks) and, for failures the scheduler
or API server decides (killed tasks, zombies, UI state changes), on the server side with an ORM
TaskInstance. Rules: hooks never raise and never block the task for long; every failure is logged
once with a clear message, and the task goes on with its declared resources. Writes go through
the provider's own engine on ``[predictive] sql_alchemy_conn`` (Airflow 3 task processes have no
ORM access). Import-light: no numpy/SQLAlchemy at import time.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from airflow.listeners import hookimpl

from airflow_predictive import config

if TYPE_CHECKING:
    from airflow_predictive.core.model.runs import Outcome
    from airflow_predictive.storage.run_store import SqlRunStore

log = logging.getLogger(__name__)

_logged: set[str] = set()
_lock = threading.Lock()


def _log_once(key: str, message: str, *args: Any, exc_info: bool = False) -> None:
    with _lock:
        if key in _logged:
            log.debug(message, *args)
            return
        _logged.add(key)
    log.warning(message, *args, exc_info=exc_info)


@dataclass
class _Active:
    run_pk: int
    sidecar: Any  # airflow_predictive.sampling.launcher.SidecarHandle | None
    cgroup: str | None = None  # the task's cgroup ref when it runs in one of ours


_active: dict[str, _Active] = {}


def _store() -> SqlRunStore:
    from airflow_predictive.storage.engine import engine_for
    from airflow_predictive.storage.run_store import SqlRunStore

    return SqlRunStore(engine_for(config.storage_url()))


def _ti_key(ti: Any) -> str:
    return f"{ti.dag_id}|{ti.task_id}|{ti.run_id}|{getattr(ti, 'map_index', -1)}|{ti.try_number}"


def _is_task_process(ti: Any) -> bool:
    """True for the RuntimeTaskInstance of the task process (it carries the operator)."""
    return type(ti).__name__ == "RuntimeTaskInstance" and hasattr(ti, "task")


def _guarded(hook: str, fn: Any, *args: Any) -> None:
    try:
        if not config.enabled():
            return
        fn(*args)
    except Exception as exc:
        from airflow_predictive.config import InvalidConfig
        from airflow_predictive.storage.engine import StorageUnavailable

        expected = isinstance(exc, StorageUnavailable | InvalidConfig)
        _log_once(
            f"{hook}:{type(exc).__name__}",
            "predictive: could not record %s of a task try (%s: %s); the task is not affected "
            "and runs with its declared resources",
            hook,
            type(exc).__name__,
            str(exc).splitlines()[0][:300],
            exc_info=not expected,
        )


# -- start ------------------------------------------------------------------------------------------


def _on_running(ti: Any) -> None:
    if not _is_task_process(ti):
        return
    from airflow_predictive.listeners.task_facts import record_for_running

    record = record_for_running(ti, socket.gethostname())
    if not (config.record_all_tasks() or record.features.get("predictive")):
        return
    store = _store()
    record = _with_interval(record)
    run_pk = store.start_run(record)
    cgroup = _own_cgroup()
    sidecar = _start_sampler(run_pk, record.start.timestamp() if record.start else None, cgroup)
    _active[_ti_key(ti)] = _Active(run_pk=run_pk, sidecar=sidecar, cgroup=cgroup)


def _with_interval(record: Any) -> Any:
    from dataclasses import replace

    return replace(record, sample_interval_s=config.sample_interval())


def _start_sampler(run_pk: int, started_at: float | None, cgroup: str | None) -> Any:
    try:
        from airflow_predictive.sampling.launcher import start_sidecar
    except ImportError as exc:
        _log_once("sampler-import", "predictive: the sampler is unavailable (%s); no samples recorded", exc)
        return None
    return start_sidecar(
        run_pk,
        os.getpid(),
        config.storage_url(),
        interval=config.sample_interval(),
        flush=config.sample_flush_interval(),
        cgroup=cgroup,
        gpu=config.gpu_metrics(),
        timeout=config.sampler_start_timeout(),
        started_at=started_at,
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
    if active is None:
        return
    if active.sidecar is not None:
        from airflow_predictive.sampling.launcher import stop_sidecar

        stop_sidecar(active.sidecar, timeout=max(2.0, config.sample_interval() * 3))
    store = _store()
    peak = store.series(active.run_pk).peaks()
    store.finish_run(
        active.run_pk,
        outcome=outcome,
        end=datetime.now(UTC),
        peak=peak,
        exit_code=exit_code,
        note=note,
    )


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


def _finish_from_server(ti: Any, outcome: Outcome, note: str) -> None:
    """The scheduler / API server failed a try (kill, zombie, UI): close its record if still open."""
    from airflow_predictive.core.model.runs import RunIdentity, RunSource, TaskKey

    map_index = getattr(ti, "map_index", -1)
    identity = RunIdentity(
        key=TaskKey(ti.dag_id, ti.task_id, -1 if map_index is None else int(map_index)),
        run_id=ti.run_id,
        try_number=int(ti.try_number),
        source=RunSource.LISTENER,
    )
    store = _store()
    record = store.get_run(identity)
    if record is None or record.run_pk is None or record.outcome.finished:
        return
    store.finish_run(
        record.run_pk,
        outcome=outcome,
        end=datetime.now(UTC),
        peak=store.series(record.run_pk).peaks(),
        note=f"ended outside the task process: {note}",
        only_if_running=True,
    )


# -- hooks (never raise) ------------------------------------------------------------------------------


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
