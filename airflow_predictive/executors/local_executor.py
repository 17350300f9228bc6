"""PredictiveLocalExecutor: Airflow's LocalExecutor that plans, reserves and holds tasks back.

Use alone (``[core] executor = airflow_predictive.executors.local_executor.PredictiveLocalExecutor``)
or in a list (``[core] executor = LocalExecutor,predictive:airflow_predictive.executors.
local_executor.PredictiveLocalExecutor`` and ``executor="predictive"`` on tasks). Tasks opt in with
``executor_config={"predictive": True}`` (or a dict), ``default_args``, or ``[predictive]
default_enabled``; every other workload runs exactly as LocalExecutor runs it.

For an opted-in task the executor serves the forecast for this try, plans (coordinator.py), keeps
the task queued while the plan does not fit the local pool, reserves it in the shared ledger, puts
the task's process tree in its own cgroup with the planned limits (local_worker.py), applies the
plan's timed steps from its heartbeat, shapes the tasks that ask for it (``"shaping": True``: one
thread grows and reclaims every such task's limits from its cgroup's usage each second, the ledger
following every applied change: local_shaping.py), and releases the reservation and the group when
the task ends. Never imports TensorFlow; nothing here blocks the scheduler loop on the network.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import socket
import uuid
from collections import deque
from typing import TYPE_CHECKING, Any

from airflow.executors.local_executor import LocalExecutor

from airflow_predictive.core.model.backend import ExitKind, ProvisionSpec
from airflow_predictive.core.model.plan import AdmissionDecision
from airflow_predictive.core.model.query import ForecastQuery
from airflow_predictive.core.model.resources import ResourceVector
from airflow_predictive.core.model.runs import RunIdentity, TaskKey
from airflow_predictive.core.profiler.run_features import run_features
from airflow_predictive.core.shadow.policy import ShadowMode
from airflow_predictive.executors.local_worker import GroupedWorkload, run_predictive_worker
from airflow_predictive.executors.opt_in import task_settings

if TYPE_CHECKING:
    from collections.abc import Sequence

    from airflow_predictive.executors.coordinator import Coordinator, Launch, Running
    from airflow_predictive.executors.local_shadow import ExecutorShadows
    from airflow_predictive.executors.local_shaping import LocalShaping

log = logging.getLogger(__name__)

_RECENT = 5  # memory readings kept per task (is the curve still rising at an OOM kill?)


def run_identity(ti: Any) -> RunIdentity:
    map_index = getattr(ti, "map_index", -1)
    return RunIdentity(
        TaskKey(ti.dag_id, ti.task_id, -1 if map_index is None else int(map_index)),
        str(ti.run_id),
        int(getattr(ti, "try_number", 1) or 1),
    )


class PredictiveLocalExecutor(LocalExecutor):
    """LocalExecutor + forecast -> plan -> admission -> reservation -> cgroup (module docstring)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._coordinator: Coordinator | None = None
        self._backend: Any = None
        self._held: dict[Any, Any] = {}  # key -> workload waiting for admission
        self._inflight: set[Any] = set()  # keys handed to workers, until their result
        self._usage: dict[Any, deque[float]] = {}
        self._default_enabled = False
        self._shaping: LocalShaping | None = None
        self._shadows: ExecutorShadows | None = None  # the shadow pre-stage (local_shadow.py)

    # -- life cycle ---------------------------------------------------------------------------------

    def start(self) -> None:
        super().start()
        try:
            from airflow_predictive.executors.wiring import local_coordinator

            self._coordinator, self._backend, self._default_enabled = local_coordinator(self._holder())
        except Exception as exc:  # never stop the scheduler: run as LocalExecutor
            log.warning("predictive: executor runs as a plain LocalExecutor (%s)", exc)
            self._coordinator = None
            return
        try:
            from airflow_predictive.executors.wiring import local_shaping

            self._shaping = local_shaping(self._backend)
        except Exception as exc:  # planning and reservations go on; tasks keep their planned limits
            log.warning("predictive: no shaping of local tasks (%s)", exc)
            self._shaping = None
        try:
            from airflow_predictive.executors.local_shadow import executor_shadows

            self._shadows = executor_shadows(self._coordinator, self._backend)
        except Exception as exc:  # tasks that ask for a shadow are planned without one
            log.warning("predictive: no shadow runs of local tasks (%s)", exc)
            self._shadows = None

    def _holder(self) -> str:
        return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"

    def _spawn_worker(self) -> None:
        p = multiprocessing.Process(
            target=run_predictive_worker,
            kwargs={
                "logger_name": self.log.name,
                "input": self.activity_queue,
                "output": self.result_queue,
                "unread_messages": self._unread_messages,
                "team_conf": self.conf,
            },
        )
        p.start()
        assert p.pid is not None
        self.workers[p.pid] = p

    def end(self) -> None:
        super().end()
        self._release_everything()

    def terminate(self) -> None:
        super().terminate()
        self._release_everything()

    def _release_everything(self) -> None:
        if self._coordinator is None:
            return
        if self._shadows is not None:
            self._shadows.close()
        if self._shaping is not None:
            self._shaping.close()  # the thread stops first: nothing resizes a group being removed
        for key, item in list(self._coordinator.running.items()):
            self._finish(key, item)

    # -- queueing ------------------------------------------------------------------------------------

    def _process_workloads(self, workload_list: Sequence[Any]) -> None:
        passthrough = []
        for workload in workload_list:
            if not self._intake(workload):
                passthrough.append(workload)
        if passthrough:
            self._inflight.update(w.key for w in passthrough if _is_task(w))
            super()._process_workloads(passthrough)
        self._admit()

    def _intake(self, workload: Any) -> bool:
        """Hold a predictive task for admission (True), or leave it to LocalExecutor (False)."""
        coordinator = self._coordinator
        if coordinator is None or not _is_task(workload):
            return False
        ti = workload.ti
        try:
            settings = task_settings(
                getattr(ti, "executor_config", None),
                default_enabled=self._default_enabled,
                default_shadow=self._shadows.default if self._shadows is not None else ShadowMode.NEVER,
            )
            if not settings.enabled:
                return False
            run = run_identity(ti)
            query = ForecastQuery(
                key=run.key,
                features=run_features(None, executor_config=ti.executor_config, try_number=run.try_number),
                declared=settings.declared,
                run_id=run.run_id,  # a shadow run's re-forecast for this DAG run, when there is one
            )
            priority = int(getattr(ti, "priority_weight", 1) or 1)
            shadows = self._shadows  # a task that asks for a shadow is planned when it ends
            if shadows is None or not shadows.take(workload.key, run, settings, query, priority):
                coordinator.submit(workload.key, run, settings, query, priority)
        except Exception as exc:  # planning must never stop the task
            log.warning("predictive: %s.%s runs unplanned (%s)", ti.dag_id, ti.task_id, exc)
            return False
        self.queued_tasks.pop(workload.key, None)
        self._held[workload.key] = workload
        return True

    def _admit(self) -> None:
        coordinator = self._coordinator
        if coordinator is None or not self._held:
            return
        if self._shadows is not None:
            try:
                self._shadows.release()  # tries whose shadow ended are planned (never blocks)
            except Exception as exc:
                log.warning("predictive: shadow pre-stage poll failed (%s)", exc)
        try:
            launches = coordinator.admit(slots=self.parallelism - len(self._inflight))
        except Exception as exc:
            log.warning("predictive: admission failed (%s); held tasks run on declared resources", exc)
            launches = coordinator._all_declared(f"admission failed: {exc}")
        for launch in launches:
            self._launch(launch)

    def _launch(self, launch: Launch) -> None:
        workload = self._held.pop(launch.key, None)
        if workload is None:
            return
        if launch.decision is AdmissionDecision.FAILED_FAST:
            self.fail(launch.key, launch.reason)
            return
        coordinator = self._coordinator
        assert coordinator is not None
        handle, procs = None, ()
        if launch.allocation is not None and self._backend is not None and hasattr(self._backend, "prepare"):
            spec = ProvisionSpec(name=_group_name(launch.run), labels=_labels(launch.run))
            try:
                handle = self._backend.prepare(spec, launch.allocation)
                procs = self._backend.procs_files(handle)
            except Exception as exc:
                log.warning("predictive: %s runs without its cgroup (%s)", launch.run.key, exc)
                handle, procs = None, ()
        item = coordinator.started(launch, handle)
        if handle is not None and self._shaping is not None and launch.settings and launch.settings.shaping:
            self._shaping.start(item, launch.settings, launch.forecast)
        self._inflight.add(launch.key)
        self.activity_queue.put(GroupedWorkload(workload, tuple(procs)))  # type: ignore[arg-type]
        with self._unread_messages:
            self._unread_messages.value += 1
        self._check_workers()

    # -- heartbeat -----------------------------------------------------------------------------------

    def sync(self) -> None:
        super().sync()
        coordinator = self._coordinator
        if coordinator is None:
            return
        now = coordinator.clock()
        try:
            self._apply_steps(now)
            self._follow_shaping()
            self._watch_usage()
            coordinator.keep_alive(now)
        except Exception as exc:  # the heartbeat must go on
            log.warning("predictive: executor tick failed (%s)", exc)
        self._admit()

    def _apply_steps(self, now: float) -> None:
        coordinator = self._coordinator
        assert coordinator is not None
        for item, target, reason in coordinator.due_steps(now):
            result = self._backend.resize(item.handle, target)
            coordinator.step_applied(
                item,
                target,
                reason,
                status=result.status.value,
                detail=result.reason,
                allocated=result.allocation if result.applied else None,
                usage=self._backend.usage(item.handle),
            )

    def _follow_shaping(self) -> None:
        """What the shaping thread applied is what the task holds (renewals extend that)."""
        shaping, coordinator = self._shaping, self._coordinator
        if shaping is None or coordinator is None:
            return
        for key, item in coordinator.running.items():
            allocation = shaping.allocation(key) if item.shaped else None
            if allocation is not None:
                item.allocation = allocation

    def _watch_usage(self) -> None:
        coordinator = self._coordinator
        assert coordinator is not None
        for key, item in coordinator.running.items():
            if item.handle is None:
                continue
            usage = self._backend.usage(item.handle)
            if usage is not None and usage.memory_bytes is not None:
                self._usage.setdefault(key, deque(maxlen=_RECENT)).append(usage.memory_bytes)

    def _read_results(self) -> None:
        while not self.result_queue.empty():
            key, state, _exc = self.result_queue.get()
            running_state = getattr(state, "value", state) == "running"
            if not running_state:
                self._inflight.discard(key)
                coordinator = self._coordinator
                item = coordinator.running.get(key) if coordinator is not None else None
                if item is not None:
                    self._finish(key, item)
            self.change_state(key, state)

    def _finish(self, key: Any, item: Running) -> None:
        coordinator = self._coordinator
        assert coordinator is not None
        oom, peak, rising = False, None, False
        if self._shaping is not None and item.shaped:
            try:
                self._shaping.stop(key)  # no tick runs past this: the group may go
            except Exception as exc:
                log.warning("predictive: shaping of %s did not stop cleanly (%s)", item.run.key, exc)
        if item.handle is not None:
            try:
                if hasattr(self._backend, "joined"):
                    self._backend.joined(item.handle)  # its worker has reported: the task ran
                state = self._backend.state(item.handle)
                oom = state.kind is ExitKind.OOM_KILLED or state.oom_events > 0
                log.info(
                    "predictive: %s ended in its cgroup: %s (%s)",
                    item.run.key,
                    state.kind.value,
                    state.reason,
                )
                if oom:
                    mem = self._backend.peak_memory(item.handle)
                    peak = ResourceVector(memory_bytes=mem) if mem is not None else None
                    recent = list(self._usage.get(key, ()))
                    rising = len(recent) >= 2 and recent[-1] > recent[0]
            except Exception as exc:
                log.warning("predictive: could not read how %s ended (%s)", item.run.key, exc)
            try:
                self._backend.release(item.handle)
            except Exception as exc:
                log.warning("predictive: cgroup of %s not removed (%s)", item.run.key, exc)
        self._usage.pop(key, None)
        coordinator.finished(key, oom_killed=oom, peak=peak, still_rising=rising)

    # -- what the scheduler asks ---------------------------------------------------------------------

    def has_task(self, task_instance: Any) -> bool:
        return super().has_task(task_instance) or task_instance.key in self._held

    @property
    def slots_available(self) -> int:
        return self.parallelism - len(self.running) - len(self.queued_tasks) - len(self._held)

    @property
    def slots_occupied(self) -> int:
        return len(self.running) + len(self.queued_tasks) + len(self._held)


def _is_task(workload: Any) -> bool:
    from airflow.executors import workloads

    return isinstance(workload, workloads.ExecuteTask)


def _group_name(run: RunIdentity) -> str:
    key = run.key
    raw = f"{key.dag_id}-{key.task_id}-{key.map_index}-{run.try_number}-{uuid.uuid4().hex[:8]}"
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in raw)[:200]


def _labels(run: RunIdentity) -> dict[str, str]:
    key = run.key
    return {
        "dag_id": key.dag_id,
        "task_id": key.task_id,
        "map_index": str(key.map_index),
        "run_id": run.run_id,
        "try_number": str(run.try_number),
    }
