"""Read side of the UI: turns what the provider's stores hold into the API's response models.

Why: the routes stay thin (auth, paging parameters, errors) and this module is testable on a
real SQLite database without a web server. It only reads, through the stores' own query methods
(run store, profile store, forecast cache, ledger, decision log, shaping events); it never writes,
never trains and never imports TensorFlow. Permission filtering happens here, on DAG ids, with
the ``DagAccess`` the route got from Airflow's auth manager.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from airflow_predictive.core.model.resources import Metric
from airflow_predictive.core.model.runs import Outcome, RunIdentity, TaskKey
from airflow_predictive.core.model.series import QUANTILES
from airflow_predictive.core.shaping.events import Verdict
from airflow_predictive.ui import models as m
from airflow_predictive.ui.downsample import min_max_buckets

if TYPE_CHECKING:
    from collections.abc import Sequence

    from airflow_predictive.core.model.backend import Allocation
    from airflow_predictive.core.model.plan import AllocationPlan, Reservation
    from airflow_predictive.core.model.resources import ResourceVector
    from airflow_predictive.core.model.runs import RunRecord
    from airflow_predictive.core.model.series import UsageSeries
    from airflow_predictive.core.shaping.events import ShapingEvent
    from airflow_predictive.runtime import Runtime
    from airflow_predictive.storage.ledger_store import DecisionLog, SqlLedger
    from airflow_predictive.storage.profile_store import ForecastCache, ProfileStore, TaskProfile
    from airflow_predictive.storage.run_store import SqlRunStore, TaskRunStats
    from airflow_predictive.storage.shaping_store import SqlShapingEventStore
    from airflow_predictive.ui.access import DagAccess

SHAPED = (Metric.MEMORY_BYTES, Metric.CPU_CORES)  # the metrics plans and shaping act on
MAX_PAGE = 500
LIVE_COVERAGE_RUNS = 20


class NotFound(LookupError):
    """The asked-for object does not exist (the route answers 404)."""


class Forbidden(PermissionError):
    """The user may not read the DAG (the route answers 403)."""


@dataclass(frozen=True)
class UiStores:
    """The stores the UI reads (built by the runtime; tests pass their own on a real database)."""

    runs: SqlRunStore
    profiles: ProfileStore
    forecasts: ForecastCache
    ledger: SqlLedger
    decisions: DecisionLog
    shaping: SqlShapingEventStore

    @classmethod
    def from_runtime(cls, runtime: Runtime) -> UiStores:
        return cls(
            runs=runtime.run_store(),
            profiles=runtime.profile_store(),
            forecasts=runtime.forecast_cache(),
            ledger=runtime.ledger(),
            decisions=runtime.decision_log(),
            shaping=runtime.shaping_events(),
        )


def _unit(metric: Metric) -> str:
    return metric.unit.value


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def _vector(vector: ResourceVector) -> dict[str, float]:
    return {metric.value: float(v) for metric, v in vector.present().items()}


def _allocation(allocation: Allocation) -> m.AllocationView:
    return m.AllocationView(requests=_vector(allocation.requests), limits=_vector(allocation.limits))


def run_summary(record: RunRecord) -> m.RunSummary:
    ident = record.identity
    return m.RunSummary(
        run_pk=record.run_pk or 0,
        dag_id=ident.key.dag_id,
        task_id=ident.key.task_id,
        map_index=ident.key.map_index,
        run_id=ident.run_id,
        try_number=ident.try_number,
        start=record.start,
        end=record.end,
        duration_s=record.duration_s,
        outcome=record.outcome.value,
        declared=_vector(record.declared),
        peak=_vector(record.peak),
        n_samples=record.n_samples,
    )


def in_force_series(
    plan: AllocationPlan | None,
    declared: ResourceVector,
    events: Sequence[ShapingEvent],
    end_s: float | None = None,
) -> list[m.StepSeries]:
    """Limits in force over the try: the plan's steps (else the declared value from 0), with every
    APPLIED shaping event's ``after`` value from its time on (events are what really changed),
    held until ``end_s`` (the try's duration) when that is later than the last change."""
    out: list[m.StepSeries] = []
    for metric in SHAPED:
        changes: list[tuple[float, float | None]] = []
        if plan is not None:
            changes.extend((start, seg.limits.get(metric)) for start, _end, seg in plan.segments())
        elif declared.get(metric) is not None:
            changes.append((0.0, declared.get(metric)))
        for e in events:
            if e.metric is metric and e.verdict is Verdict.APPLIED and e.after is not None:
                changes.append((max(0.0, e.t_s), e.after))
        if not changes:
            continue
        changes.sort(key=lambda c: c[0])  # stable: at equal times the event (appended later) wins
        if end_s is not None and end_s > changes[-1][0]:
            changes.append((end_s, changes[-1][1]))
        out.append(
            m.StepSeries(
                metric=metric.value, unit=_unit(metric), t=[c[0] for c in changes], v=[c[1] for c in changes]
            )
        )
    return out


def planned_series(plan: AllocationPlan) -> list[m.StepSeries]:
    out = []
    for metric in SHAPED:
        pts = [(start, seg.limits.get(metric)) for start, _end, seg in plan.segments()]
        if all(v is None for _, v in pts):
            continue
        pts.append((plan.duration_s, pts[-1][1]))
        out.append(
            m.StepSeries(
                metric=metric.value, unit=_unit(metric), t=[p[0] for p in pts], v=[p[1] for p in pts]
            )
        )
    return out


class UiQueries:
    """The API's answers over one set of stores, filtered by what the user may read."""

    def __init__(self, stores: UiStores, *, max_points: int = 600) -> None:
        self.stores = stores
        self.max_points = max_points

    # -- overview ---------------------------------------------------------------------------

    def overview(self, access: DagAccess) -> m.Overview:
        stats = self.stores.runs.task_stats()
        allowed = access.allowed({s.key.dag_id for s in stats})
        profiles = {p.key: p for p in self.stores.profiles.profiles() if p.key.dag_id in allowed}
        tasks = [self._task_summary(s, profiles.get(s.key)) for s in stats if s.key.dag_id in allowed]
        daily = self.stores.runs.daily_stats(sorted(allowed)) if allowed else []
        return m.Overview(
            tasks=tasks,
            daily=[
                m.DailyPoint(
                    day=d.day,
                    runs=d.runs,
                    oom_killed=d.oom_killed,
                    memory_headroom_bytes=d.memory_headroom_bytes,
                    cpu_headroom_cores=d.cpu_headroom_cores,
                )
                for d in daily
            ],
        )

    def _task_summary(self, stats: TaskRunStats, profile: TaskProfile | None) -> m.TaskSummary:
        cached = self.stores.forecasts.get(stats.key)
        mem_p99 = cpu_p90 = None
        if cached is not None:
            curve = cached.forecast.curve(Metric.MEMORY_BYTES)
            mem_p99 = curve.peak(0.99) if curve is not None else None
            curve = cached.forecast.curve(Metric.CPU_CORES)
            cpu_p90 = curve.peak(0.9) if curve is not None else None
        under = pinball = None
        if profile is not None and profile.champion:
            best = next((s for s in profile.scores if s.estimator == profile.champion), None)
            if best is not None:
                under, pinball = _finite(best.memory_under_rate), _finite(best.pinball)
        coverage = None
        if mem_p99 is not None:
            recent = [
                r.peak.get(Metric.MEMORY_BYTES)
                for r in self.stores.runs.runs(stats.key, limit=LIVE_COVERAGE_RUNS)
                if r.outcome is not Outcome.RUNNING
            ]
            peaks = [p for p in recent if p is not None]
            coverage = sum(p <= mem_p99 for p in peaks) / len(peaks) if peaks else None
        declared_mem, declared_cpu = stats.declared_memory_bytes, stats.declared_cpu_cores
        return m.TaskSummary(
            dag_id=stats.key.dag_id,
            task_id=stats.key.task_id,
            map_index=stats.key.map_index,
            runs=stats.runs,
            oom_killed=stats.oom_killed,
            last_start=stats.last_start,
            champion=profile.champion if profile is not None else None,
            model_version=profile.model_version if profile is not None else None,
            declared_memory_bytes=declared_mem,
            declared_cpu_cores=declared_cpu,
            peak_memory_max_bytes=stats.peak_memory_max,
            peak_cpu_max_cores=stats.peak_cpu_max,
            predicted_memory_p99_bytes=mem_p99,
            predicted_cpu_p90_cores=cpu_p90,
            memory_saved_bytes=None if declared_mem is None or mem_p99 is None else declared_mem - mem_p99,
            cpu_saved_cores=None if declared_cpu is None or cpu_p90 is None else declared_cpu - cpu_p90,
            backtest_memory_under_rate=under,
            backtest_pinball=pinball,
            live_coverage=coverage,
        )

    # -- a task's runs ------------------------------------------------------------------------

    def runs(self, access: DagAccess, key: TaskKey, *, offset: int, limit: int) -> m.RunPage:
        if not access.can_read(key.dag_id):
            raise Forbidden(key.dag_id)
        limit = max(1, min(int(limit), MAX_PAGE))
        offset = max(0, int(offset))
        records, total = self.stores.runs.runs_page(key, offset=offset, limit=limit)
        return m.RunPage(items=[run_summary(r) for r in records], total=total, offset=offset, limit=limit)

    # -- one try ------------------------------------------------------------------------------

    def find_try(self, access: DagAccess, key: TaskKey, run_id: str, try_number: int | None) -> m.TryDetail:
        """The try of a task instance (the latest recorded one when ``try_number`` is None)."""
        if not access.can_read(key.dag_id):
            raise Forbidden(key.dag_id)
        tries = self._tries(key, run_id)
        if not tries:
            raise NotFound(f"{key}/{run_id}")
        chosen = (
            tries[-1]
            if try_number is None
            else next((r for r in tries if r.identity.try_number == try_number), None)
        )
        if chosen is None:
            raise NotFound(f"{key}/{run_id}/{try_number}")
        return self._detail(chosen, [r.identity.try_number for r in tries])

    def try_detail(self, access: DagAccess, run_pk: int) -> m.TryDetail:
        record = self.stores.runs.get_run_by_pk(run_pk)
        if record is None:
            raise NotFound(str(run_pk))
        if not access.can_read(record.key.dag_id):
            raise Forbidden(record.key.dag_id)
        tries = self._tries(record.key, record.identity.run_id)
        return self._detail(record, [r.identity.try_number for r in tries] or [record.identity.try_number])

    def _tries(self, key: TaskKey, run_id: str, most: int = 50) -> list[RunRecord]:
        found: list[RunRecord] = []
        for n in range(1, most + 1):
            record = self.stores.runs.get_run(RunIdentity(key, run_id, n))
            if record is None:
                if found and n > found[-1].identity.try_number + 2:
                    break
                if not found and n > 3:
                    break
                continue
            found.append(record)
        return found

    def _detail(self, record: RunRecord, tries: list[int]) -> m.TryDetail:
        series = self.stores.runs.series_fast(record.run_pk or 0)
        curves = []
        for metric in series.metrics:
            arr = series.get(metric)
            if arr is None:
                continue
            d = min_max_buckets(series.times, arr, self.max_points)
            curves.append(
                m.Curve(
                    metric=metric.value,
                    unit=_unit(metric),
                    t=list(d.t),
                    v=list(d.v),
                    source_points=d.source_points,
                )
            )
        reservations = self.stores.ledger.of_run(record.identity)
        plan_res = next((r for r in reversed(reservations) if r.plan is not None), None)
        plan = plan_res.plan if plan_res is not None else None
        events = self._events(record)
        profile = self.stores.profiles.profile(record.key)
        return m.TryDetail(
            run=run_summary(record),
            tries=tries,
            curves=curves,
            forecast=self._forecast(record.key),
            plan=_plan_view(plan_res) if plan_res is not None else None,
            planned=planned_series(plan) if plan is not None else [],
            in_force=in_force_series(plan, record.declared, events, _end_s(record, series)),
            shaping=[_event_view(e) for e in events],
            champion=_champion(profile),
        )

    def _events(self, record: RunRecord) -> list[ShapingEvent]:
        """Shaping events of this try: exact run keys, plus task-level keys inside the try's time."""
        ident, key = record.identity, record.key
        exact = [
            f"{key.dag_id}/{key.task_id}/{key.map_index}/{ident.run_id}/{ident.try_number}",
            f"{key.dag_id}/{key.task_id}/{ident.run_id}/{ident.try_number}",
        ]
        loose = [f"{key.dag_id}/{key.task_id}", f"sensor/{key.dag_id}/{key.task_id}", str(key)]
        found: list[ShapingEvent] = []
        for run_key in exact:
            found.extend(self.stores.shaping.events(run_key=run_key))
        if record.start is not None:
            end = record.end
            for run_key in loose:
                for e in self.stores.shaping.events(run_key=run_key):
                    if e.at >= record.start and (end is None or e.at <= end):
                        found.append(e)
        found.sort(key=lambda e: (e.at, e.t_s))
        return found

    def _forecast(self, key: TaskKey) -> m.ForecastView | None:
        cached = self.stores.forecasts.get(key)
        if cached is None:
            return None
        bands = []
        for metric, curve in cached.forecast.curves.items():
            t = (np.arange(curve.steps) * curve.step_s).tolist()
            q = {f"p{round(x * 100)}": curve.at(x).tolist() for x in QUANTILES}
            stride = max(1, math.ceil(curve.steps / self.max_points))
            bands.append(
                m.Band(
                    metric=metric.value,
                    unit=_unit(metric),
                    t=t[::stride],
                    p50=_stride_max(q["p50"], stride),
                    p90=_stride_max(q["p90"], stride),
                    p99=_stride_max(q["p99"], stride),
                )
            )
        return m.ForecastView(
            estimator=cached.forecast.estimator,
            model_version=cached.model_version,
            created_at=cached.created_at,
            explanation=cached.explanation,
            duration_s={str(k): float(v) for k, v in cached.forecast.duration_s.items()},
            bands=bands,
        )

    # -- pools --------------------------------------------------------------------------------

    def pools(self) -> m.PoolList:
        out = []
        for pool in self.stores.ledger.pools():
            out.append(_pool_summary(pool, len(self.stores.ledger.reservations(pool.name))))
        return m.PoolList(pools=out)

    def pool_detail(
        self, access: DagAccess, name: str, *, window_s: float, points: int = 120
    ) -> m.PoolDetail:
        pool = next((p for p in self.stores.ledger.pools() if p.name == name), None)
        if pool is None:
            raise NotFound(name)
        end = time.time()
        start = end - max(60.0, float(window_s))
        held = self.stores.ledger.history(name, start, end)
        grid = np.linspace(start, end, max(2, points))
        reserved_mem = np.zeros(grid.size)
        reserved_cpu = np.zeros(grid.size)
        used_mem = np.zeros(grid.size)
        used_cpu = np.zeros(grid.size)
        seen = np.zeros(grid.size, dtype=bool)
        for res in held:
            for a, b, charge in res.pieces():
                inside = (grid >= a) & (grid < b)
                reserved_mem[inside] += charge.requests.get(Metric.MEMORY_BYTES) or 0.0
                reserved_cpu[inside] += charge.requests.get(Metric.CPU_CORES) or 0.0
            self._add_usage(res, grid, used_mem, used_cpu, seen)
        decisions = self._held_back(name)
        readable = access.allowed({d["dag_id"] for d in decisions})
        return m.PoolDetail(
            pool=_pool_summary(pool, sum(1 for r in held if r.state.value == "active")),
            start=start,
            end=end,
            t=grid.tolist(),
            reserved_memory_bytes=reserved_mem.tolist(),
            reserved_cpu_cores=reserved_cpu.tolist(),
            used_memory_bytes=[float(v) if s else None for v, s in zip(used_mem, seen, strict=True)],
            used_cpu_cores=[float(v) if s else None for v, s in zip(used_cpu, seen, strict=True)],
            held_back=[
                m.HeldBack(
                    at=d["at"],
                    dag_id=d["dag_id"],
                    task_id=d["task_id"],
                    run_id=d["run_id"],
                    try_number=int(d["try_number"]),
                    decision=d["decision"],
                    reason=d["reason"] or "",
                )
                for d in decisions
                if d["dag_id"] in readable
            ],
        )

    def _held_back(self, pool: str) -> list[dict[str, Any]]:
        return [
            d
            for d in self.stores.decisions.recent(limit=500)
            if d["kind"] == "admission" and d["decision"] != "admitted" and d.get("pool") in (pool, None)
        ]

    def _add_usage(
        self, res: Reservation, grid: np.ndarray, mem: np.ndarray, cpu: np.ndarray, seen: np.ndarray
    ) -> None:
        """Add the try's measured usage (its samples, on the wall clock) to the pool's used curves."""
        record = self.stores.runs.get_run(res.run)
        if record is None or record.start is None or record.run_pk is None:
            return
        series = self.stores.runs.series_fast(record.run_pk)
        if not len(series):
            return
        wall = record.start.timestamp() + series.times
        for metric, target in ((Metric.MEMORY_BYTES, mem), (Metric.CPU_CORES, cpu)):
            arr = series.get(metric)
            if arr is None:
                continue
            inside = (grid >= wall[0]) & (grid <= wall[-1])
            if not inside.any():
                continue
            idx = np.clip(np.searchsorted(wall, grid[inside], side="right") - 1, 0, wall.size - 1)
            values = np.nan_to_num(arr[idx], nan=0.0)
            target[inside] += values
            seen[inside] = True


def _end_s(record: RunRecord, series: UsageSeries) -> float | None:
    """How long the try lasted on the samples' clock (its duration, else its last sample)."""
    if record.duration_s is not None:
        return record.duration_s
    return float(series.times[-1]) if len(series) else None


def _stride_max(values: list[float], stride: int) -> list[float]:
    if stride <= 1:
        return values
    return [max(values[i : i + stride]) for i in range(0, len(values), stride)]


def _plan_view(res: Reservation) -> m.PlanView:
    plan = res.plan
    assert plan is not None
    return m.PlanView(
        reservation_id=res.id,
        pool=res.pool,
        state=res.state.value,
        source=plan.source.value,
        why=plan.why,
        duration_s=plan.duration_s,
        initial=_allocation(plan.initial),
        steps=[
            m.PlanStepView(at_s=s.at_s, allocation=_allocation(s.allocation), reason=s.reason)
            for s in plan.steps
        ],
    )


def _event_view(e: ShapingEvent) -> m.ShapingEventView:
    return m.ShapingEventView(
        at=e.at,
        t_s=e.t_s,
        metric=e.metric.value,
        action=e.action.value,
        cause=e.cause.value,
        verdict=e.verdict.value,
        reason=e.reason,
        before=e.before,
        target=e.target,
        after=e.after,
        usage=e.usage,
        predicted=e.predicted,
    )


def _champion(profile: TaskProfile | None) -> m.ChampionView | None:
    if profile is None:
        return None
    return m.ChampionView(
        champion=profile.champion,
        model_version=profile.model_version,
        reason=profile.reason,
        runs=profile.runs,
        updated_at=profile.updated_at,
        scores=[
            m.ScoreView(
                estimator=s.estimator,
                forecasts=s.forecasts,
                pinball=_finite(s.pinball),
                memory_under_rate=_finite(s.memory_under_rate),
                memory_shortfall=_finite(s.memory_shortfall),
                score=_finite(s.score),
                error=s.error,
            )
            for s in profile.scores
        ],
    )


def _pool_summary(pool: Any, active: int) -> m.PoolSummary:
    return m.PoolSummary(
        name=pool.name,
        kind=pool.kind.value,
        note=pool.note,
        capacity_requests=_vector(pool.capacity.requests),
        capacity_limits=_vector(pool.capacity.limits),
        active_reservations=active,
    )
