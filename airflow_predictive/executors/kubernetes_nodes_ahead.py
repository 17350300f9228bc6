"""Tasks coming next: the downstream tasks of the tasks this executor runs, and when they start.

Why: a node takes minutes to boot (GKE documents 80-120 s), and an executor hears of a task only
when the scheduler queues it, by which time the wait is on the task's critical path. The
executor does know earlier: a task whose upstream tasks are running (under this executor) or
done is queued the moment the last of them ends, and that end is predicted (the running task's
plan). So the node-pool wiring can make warm capacity for it ahead, timed from the plans.

``upcoming(...)`` is the pure rule; ``read_upcoming(...)`` reads the Airflow metadata the rule needs
(task instance states of the DAG runs with running tasks, the serialized DAGs' upstream ids and
executor_config; never the pickled ``executor_config`` column). It runs in the scheduler process,
where the ORM is allowed, at most once per wiring interval; any failure answers no upcoming task
(one log line per distinct cause): the task then warms the reactive way, once it is held back.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from airflow_predictive.core.model.runs import RunIdentity, TaskKey
from airflow_predictive.executors.kubernetes_nodes import plan_key

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    from airflow_predictive.core.model.nodes import WarmCapacity
    from airflow_predictive.core.model.plan import AllocationPlan
    from airflow_predictive.executors.coordinator import Coordinator
    from airflow_predictive.executors.kubernetes_nodes import NodeWiring

log = logging.getLogger(__name__)

NOT_QUEUED = (None, "scheduled")  # a task instance the scheduler has not handed to an executor yet
DONE_OK = ("success", "skipped")
MAX_UPCOMING = 32  # bounded work per round (the heartbeat plans each of them once)


@dataclass(frozen=True, slots=True)
class TaskRow:
    """One task instance's row: what the rule needs of it."""

    dag_id: str
    run_id: str
    task_id: str
    map_index: int
    state: str | None
    try_number: int
    priority_weight: int = 1


@dataclass(frozen=True, slots=True)
class Upcoming:
    """A task instance that will be queued when its running upstream tasks end.

    run: its identity at the try it will run (a not-yet-scheduled row's try_number + 1). start_at:
    predicted queue time (epoch s): the latest predicted end of its running upstream tasks.
    """

    run: RunIdentity
    start_at: float
    priority: int = 1


def _next_try(row: TaskRow) -> int:
    # Airflow increments try_number when it schedules a task instance (state None -> scheduled)
    return row.try_number + 1 if row.state is None else max(1, row.try_number)


def upcoming(
    rows: Iterable[TaskRow],
    upstream: Mapping[tuple[str, str], Iterable[str]],
    running_ends: Mapping[tuple[str, str, str], float],
    now: float,
) -> list[Upcoming]:
    """The not-yet-queued task instances all of whose upstream tasks are running under this
    executor or ended well (success / skipped), at least one of them running; soonest first.

    upstream: (dag_id, task_id) -> its upstream task ids. running_ends: (dag_id, run_id, task_id)
    -> predicted end (epoch s; ``now`` or earlier when unknown or overdue).
    """
    by_run: dict[tuple[str, str], list[TaskRow]] = {}
    for row in rows:
        by_run.setdefault((row.dag_id, row.run_id), []).append(row)
    out: list[Upcoming] = []
    for (dag_id, run_id), members in by_run.items():
        states: dict[str, set[str | None]] = {}
        for r in members:
            states.setdefault(r.task_id, set()).add(r.state)
        for r in members:
            if r.state not in NOT_QUEUED:
                continue
            ups = tuple(upstream.get((dag_id, r.task_id), ()))
            ends = [running_ends[(dag_id, run_id, u)] for u in ups if (dag_id, run_id, u) in running_ends]
            if not ends:
                continue
            done = all(
                (dag_id, run_id, u) in running_ends or (states.get(u) and states[u] <= set(DONE_OK))
                for u in ups
            )
            if done:
                run = RunIdentity(TaskKey(dag_id, r.task_id, r.map_index), run_id, _next_try(r))
                out.append(Upcoming(run, max(now, max(ends)), r.priority_weight))
    out.sort(key=lambda u: (u.start_at, -u.priority))
    return out[:MAX_UPCOMING]


class DagReader:
    """The Airflow side: task rows of the DAG runs with running tasks, the serialized DAGs'
    upstream ids and executor_config (cached per DAG for ``ttl_s``)."""

    def __init__(self, ttl_s: float = 60.0) -> None:
        self.ttl_s = ttl_s
        self._dags: dict[str, tuple[float, Any]] = {}
        self._down = ""

    def _dag(self, dag_id: str, session: Any) -> Any:
        hit = self._dags.get(dag_id)
        if hit is not None and time.monotonic() - hit[0] < self.ttl_s:
            return hit[1]
        from airflow.models.serialized_dag import SerializedDagModel

        dag = SerializedDagModel.get_dag(dag_id, session=session)
        self._dags[dag_id] = (time.monotonic(), dag)
        return dag

    def read(
        self, runs: Iterable[tuple[str, str]]
    ) -> tuple[list[TaskRow], dict[tuple[str, str], tuple[str, ...]], dict[tuple[str, str], dict[str, Any]]]:
        """(rows, upstream ids, executor_config) for the DAG runs ``runs``; empty on any failure."""
        wanted = sorted(set(runs))
        if not wanted:
            return [], {}, {}
        try:
            from airflow.models.taskinstance import TaskInstance as TI
            from airflow.utils.session import create_session
            from sqlalchemy import select, tuple_

            rows: list[TaskRow] = []
            upstream: dict[tuple[str, str], tuple[str, ...]] = {}
            configs: dict[tuple[str, str], dict[str, Any]] = {}
            with create_session() as session:
                query = select(
                    TI.dag_id,
                    TI.run_id,
                    TI.task_id,
                    TI.map_index,
                    TI.state,
                    TI.try_number,
                    TI.priority_weight,
                ).where(tuple_(TI.dag_id, TI.run_id).in_(wanted))
                for d, r, t, m, s, n, w in session.execute(query):
                    state = getattr(s, "value", s)
                    rows.append(TaskRow(d, r, t, int(m), state, int(n or 0), int(w or 1)))
                for dag_id in {d for d, _ in wanted}:
                    dag = self._dag(dag_id, session)
                    if dag is None:
                        continue
                    for task in dag.tasks:
                        upstream[(dag_id, task.task_id)] = tuple(sorted(task.upstream_task_ids))
                        configs[(dag_id, task.task_id)] = dict(task.executor_config or {})
            self._note("")
            return rows, upstream, configs
        except Exception as exc:
            self._note(f"{type(exc).__name__}: {exc}")
            return [], {}, {}

    def _note(self, cause: str) -> None:
        if cause != self._down:
            if cause:
                log.warning(
                    "predictive: downstream tasks unreadable (%s): warm capacity only for tasks held back",
                    cause,
                )
            self._down = cause


class AheadWarms:
    """Warm capacity for the upcoming tasks whose predicted peak no Ready node holds now: sized
    from the task's own plan (the coordinator's forecast -> plan, made once per try), in the pool
    steering will choose, ready at the predicted end of its upstream tasks; ``provision_due`` makes
    the placeholder one provisioning delay (plus margin) before that. A decision to warm sticks
    until the task is queued (its pod preempts the placeholder) or stops being upcoming."""

    def __init__(
        self, wiring: NodeWiring, reader: DagReader | None = None, every_s: float | None = None
    ) -> None:
        self.wiring = wiring
        self.reader = reader or DagReader()
        self.every_s = wiring.settings.interval_s if every_s is None else every_s
        self._at = float("-inf")
        self._plans: dict[str, AllocationPlan] = {}
        self._warm: dict[str, WarmCapacity] = {}
        self.last: list[Upcoming] = []

    def warms(
        self, coordinator: Coordinator, running: Iterable[Any], default_enabled: bool, now: float
    ) -> list[WarmCapacity]:
        """The warm capacity wanted for upcoming tasks (recomputed at most every ``every_s`` of
        ``now``, the coordinator's clock)."""
        if now - self._at < self.every_s:
            return list(self._warm.values())
        self._at = now
        if not self.wiring.pools():  # no pool known: no node to make, no metadata to read
            self._warm = {}
            return []
        ends: dict[tuple[str, str, str], float] = {}
        for key in running:  # every task this executor runs; the planned ones know their end
            dag_id, task_id, run_id = (getattr(key, a, None) for a in ("dag_id", "task_id", "run_id"))
            if dag_id and task_id and run_id:
                ends[(str(dag_id), str(run_id), str(task_id))] = now
        for item in coordinator.running.values():  # the plan's end (not the reservation's, extended)
            k = item.run.key
            end = item.started + item.plan.duration_s if item.plan is not None else item.end
            ends[(k.dag_id, item.run.run_id, k.task_id)] = max(now, end)
        rows, upstream, configs = self.reader.read({(d, r) for d, r, _ in ends})
        self.last = upcoming(rows, upstream, ends, now)
        wanted: dict[str, WarmCapacity] = {}
        for up in self.last:
            key = plan_key(up.run)
            warm = self._warm_for(
                coordinator, up, key, configs.get((up.run.key.dag_id, up.run.key.task_id)), default_enabled
            )
            if warm is not None:
                if key not in self._warm:
                    log.info(
                        "predictive: %s is coming (its upstream ends in %.0f s): warm capacity of %s in pool "
                        "%s, ready by then",
                        key,
                        up.start_at - now,
                        warm.size,
                        warm.pool,
                    )
                wanted[key] = warm
        self._warm = wanted
        self._plans = {k: p for k, p in self._plans.items() if k in {plan_key(u.run) for u in self.last}}
        return list(wanted.values())

    def _warm_for(
        self,
        coordinator: Coordinator,
        up: Upcoming,
        key: str,
        config: Mapping[str, Any] | None,
        default_enabled: bool,
    ) -> WarmCapacity | None:
        from airflow_predictive.core.model.query import ForecastQuery
        from airflow_predictive.core.profiler.run_features import run_features
        from airflow_predictive.executors.opt_in import task_settings

        try:
            plan = self._plans.get(key)
            if plan is None:
                settings = task_settings(config, default_enabled=default_enabled)
                if not settings.enabled:
                    return None
                query = ForecastQuery(
                    up.run.key,
                    features=run_features(None, executor_config=config, try_number=up.run.try_number),
                    declared=settings.declared,
                    run_id=up.run.run_id,
                )
                plan = self._plans[key] = coordinator.plan_for(up.run, settings, query).plan
            if key not in self._warm and self.wiring.fits_a_node(plan.peak().requests):
                return None  # a Ready node holds it: no node to make
            return self.wiring.warm_for(plan, key, up.start_at)
        except Exception as exc:
            log.warning("predictive: no warm capacity ahead for %s (%s)", key, exc)
            return None
