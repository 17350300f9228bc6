"""SqlRunStore: the RunStore port on SQLAlchemy Core (runs and their resource samples).

Bad values never reach the tables: NaN / negative / infinite readings are stored as absent
(NULL), non-JSON features are dropped with a log line, and unreadable rows come back with the
unreadable part absent rather than failing the whole query.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import numpy as np
from sqlalchemy import and_, case, delete, func, insert, select, update

from airflow_predictive.core.model.resources import Metric, ResourceVector
from airflow_predictive.core.model.runs import (
    FeatureValue,
    LegEnd,
    Outcome,
    RunIdentity,
    RunLeg,
    RunRecord,
    RunSource,
    TaskKey,
    WaitInterval,
)
from airflow_predictive.core.model.series import ResourceSample, UsageSeries
from airflow_predictive.storage.engine import guarded
from airflow_predictive.storage.tables import METRIC_COLUMNS, resource_sample, run_leg, task_run

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from sqlalchemy.engine import Connection, Engine, RowMapping

log = logging.getLogger(__name__)


def _clean(value: Any) -> float | None:
    if value is None:
        return None
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) and v >= 0 else None


def _vector_columns(prefix: str, vector: ResourceVector) -> dict[str, float | None]:
    return {f"{prefix}{m.value}": _clean(v) for m, v in vector.items()}


def _vector_from_row(prefix: str, row: RowMapping) -> ResourceVector:
    return ResourceVector.lenient({m: row[f"{prefix}{m.value}"] for m in Metric})


def _features_json(features: Mapping[str, FeatureValue]) -> str | None:
    clean: dict[str, FeatureValue] = {}
    for k, v in features.items():
        if isinstance(v, float) and not math.isfinite(v):
            v = None
        if v is None or isinstance(v, str | int | float | bool):
            clean[str(k)] = v
        else:
            log.warning("predictive: feature %r of type %s is not stored", k, type(v).__name__)
    return json.dumps(clean, sort_keys=True) if clean else None


def _features_from_json(text: str | None, run_pk: int) -> dict[str, FeatureValue]:
    if not text:
        return {}
    try:
        data = json.loads(text)
    except ValueError:
        log.warning("predictive: run %s has unreadable features; ignoring them", run_pk)
        return {}
    if not isinstance(data, dict):
        log.warning("predictive: run %s has features that are not an object; ignoring them", run_pk)
        return {}
    return {str(k): v for k, v in data.items() if v is None or isinstance(v, str | int | float | bool)}


def _aware(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _outcome(raw: str | None) -> Outcome:
    try:
        return Outcome(raw or "unknown")
    except ValueError:
        return Outcome.UNKNOWN


@dataclass(frozen=True, slots=True)
class LegStart:
    """Where a leg's samples go: the run, the leg number, and the leg's start on the run's clock."""

    run_pk: int
    leg: int
    t_start_s: float  # seconds since the run's start when this leg began
    resumed: bool  # True: an earlier leg of the same try exists and its samples were kept


@dataclass(frozen=True, slots=True)
class NewestSample:
    """One run's newest sample: when it was taken (epoch seconds) and what it read."""

    at: float
    usage: ResourceVector


@dataclass(frozen=True, slots=True)
class TaskRunStats:
    """Aggregates of one task's tries (``SqlRunStore.task_stats``); absent values are None."""

    key: TaskKey
    runs: int
    oom_killed: int
    last_start: datetime | None
    declared_memory_bytes: float | None
    declared_cpu_cores: float | None
    peak_memory_max: float | None
    peak_memory_avg: float | None
    peak_cpu_max: float | None
    peak_cpu_avg: float | None


@dataclass(frozen=True, slots=True)
class DailyRunStats:
    """Tries started on one day (UTC, ``YYYY-MM-DD``) and their declared-minus-peak headroom."""

    day: str
    runs: int
    oom_killed: int
    memory_headroom_bytes: float
    cpu_headroom_cores: float


class SqlRunStore:
    """RunStore over an SQLAlchemy engine whose schema was migrated (see ``migrations``)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    # -- writes ---------------------------------------------------------------------------------

    def row_values(self, record: RunRecord) -> dict[str, Any]:
        ident = record.identity
        return {
            "source": ident.source.value,
            "dag_id": ident.key.dag_id,
            "task_id": ident.key.task_id,
            "map_index": ident.key.map_index,
            "run_id": ident.run_id,
            "try_number": ident.try_number,
            "start_date": _aware(record.start),
            "end_date": _aware(record.end),
            "duration_s": record.duration_s,
            "outcome": record.outcome.value,
            "exit_code": record.exit_code,
            "operator": record.operator,
            "pool": record.pool,
            "queue": record.queue,
            "hostname": record.hostname,
            "executor_config": record.executor_config,
            "features": _features_json(record.features),
            "sample_interval_s": record.sample_interval_s,
            "n_samples": record.n_samples,
            "note": record.note,
            **_vector_columns("declared_", record.declared),
            **_vector_columns("peak_", record.peak),
        }

    def _find(self, conn: Connection, ident: RunIdentity) -> int | None:
        t = task_run.c
        pk = conn.execute(
            select(t.id).where(
                and_(
                    t.source == ident.source.value,
                    t.dag_id == ident.key.dag_id,
                    t.task_id == ident.key.task_id,
                    t.map_index == ident.key.map_index,
                    t.run_id == ident.run_id,
                    t.try_number == ident.try_number,
                )
            )
        ).scalar()
        return int(pk) if pk is not None else None

    def start_run(self, record: RunRecord) -> int:
        row = self.row_values(record)
        with self._begin() as conn:
            pk = self._find(conn, record.identity)
            if pk is None:
                return int(conn.execute(insert(task_run).values(**row)).inserted_primary_key[0])
            # the same try recorded again as a whole (a re-run): start afresh. A try that resumes
            # after a deferral goes through begin_leg, which keeps its samples.
            conn.execute(delete(resource_sample).where(resource_sample.c.run_pk == pk))
            conn.execute(delete(run_leg).where(run_leg.c.run_pk == pk))
            conn.execute(
                update(task_run).where(task_run.c.id == pk).values({**row, "n_samples": 0, "leg": 1})
            )
            return pk

    def upsert_run(self, record: RunRecord) -> int:
        row = self.row_values(record)
        with self._begin() as conn:
            pk = self._find(conn, record.identity)
            if pk is None:
                return int(conn.execute(insert(task_run).values(**row)).inserted_primary_key[0])
            row.pop("n_samples")
            conn.execute(update(task_run).where(task_run.c.id == pk).values(**row))
            return pk

    def begin_leg(self, record: RunRecord, at: datetime | None = None) -> LegStart:
        """Start (or resume) a try: one try is one run across the task processes it takes.

        New try: a row and its leg 1. A try already RUNNING (it deferred, or was rescheduled, and
        resumes here): the same row, its samples kept, leg + 1; an earlier leg still open is closed
        as SUPERSEDED. A try already finished and started again (a re-run of the same try): reset,
        as ``start_run``. ``at``: when this leg began (default now).
        """
        at = _aware(at) or datetime.now(UTC)
        row = self.row_values(record)
        with self._begin() as conn:
            pk = self._find(conn, record.identity)
            if pk is not None:
                cur = conn.execute(
                    select(task_run.c.outcome, task_run.c.leg, task_run.c.start_date).where(
                        task_run.c.id == pk
                    )
                ).one()
                if cur.outcome == Outcome.RUNNING.value:
                    leg = int(cur.leg or 1) + 1
                    start = _aware(cur.start_date) or _aware(record.start) or at
                    t_start = max(0.0, (at - start).total_seconds())
                    conn.execute(
                        update(run_leg)
                        .where(run_leg.c.run_pk == pk, run_leg.c.ended_at.is_(None))
                        .values(ended_at=at, end_reason=LegEnd.SUPERSEDED.value, t_end_s=t_start)
                    )
                    conn.execute(update(task_run).where(task_run.c.id == pk).values(leg=leg))
                    conn.execute(insert(run_leg).values(run_pk=pk, leg=leg, started_at=at, t_start_s=t_start))
                    return LegStart(run_pk=pk, leg=leg, t_start_s=t_start, resumed=True)
                conn.execute(delete(resource_sample).where(resource_sample.c.run_pk == pk))
                conn.execute(delete(run_leg).where(run_leg.c.run_pk == pk))
                conn.execute(
                    update(task_run).where(task_run.c.id == pk).values({**row, "n_samples": 0, "leg": 1})
                )
            else:
                pk = int(conn.execute(insert(task_run).values(**row, leg=1)).inserted_primary_key[0])
            start = _aware(record.start) or at
            t_start = max(0.0, (at - start).total_seconds())
            conn.execute(insert(run_leg).values(run_pk=pk, leg=1, started_at=at, t_start_s=t_start))
            return LegStart(run_pk=pk, leg=1, t_start_s=t_start, resumed=False)

    def end_leg(
        self,
        run_pk: int,
        leg: int,
        reason: LegEnd,
        at: datetime | None = None,
        *,
        last_sample_t_s: float | None = None,
    ) -> bool:
        """Record why leg ``leg`` ended (deferred, rescheduled, vanished). False when it was no longer
        open or is not the run's current leg (a stale sidecar: a newer leg already runs). The leg
        ends at ``at`` or at its last sample (``last_sample_t_s``), whichever is later."""
        at = _aware(at) or datetime.now(UTC)
        with self._begin() as conn:
            cur = conn.execute(
                select(task_run.c.leg, task_run.c.start_date).where(task_run.c.id == run_pk)
            ).one_or_none()
            if cur is None or int(cur.leg or 1) != leg:
                return False
            start = _aware(cur.start_date)
            t_end = max(0.0, (at - start).total_seconds()) if start else None
            if last_sample_t_s is not None and math.isfinite(last_sample_t_s):
                t_end = max(t_end or 0.0, last_sample_t_s)
            done = conn.execute(
                update(run_leg)
                .where(run_leg.c.run_pk == run_pk, run_leg.c.leg == leg, run_leg.c.ended_at.is_(None))
                .values(ended_at=at, end_reason=reason.value, t_end_s=t_end)
            ).rowcount
            return bool(done)

    def legs(self, run_pk: int) -> list[RunLeg]:
        """The legs of a run, in order (empty for runs recorded before legs existed, or ingested)."""
        c = run_leg.c
        q = select(c.leg, c.t_start_s, c.t_end_s, c.end_reason).where(c.run_pk == run_pk).order_by(c.leg)
        with self._connect() as conn:
            rows = list(conn.execute(q))
        out = []
        for leg, t0, t1, reason in rows:
            try:
                end = LegEnd(reason) if reason else None
            except ValueError:
                end = LegEnd.CLOSED
            out.append(RunLeg(leg=int(leg), t_start_s=_clean(t0), t_end_s=_clean(t1), end=end))
        return out

    def wait_intervals(self, run_pk: int) -> list[WaitInterval]:
        """When the try waited between legs (deferred / rescheduled): no sample there is missing,
        the task simply was not running."""
        legs = self.legs(run_pk)
        out = []
        for before, after in itertools.pairwise(legs):
            if before.end is not None and before.end.resumes and before.t_end_s is not None:
                t1 = after.t_start_s if after.t_start_s is not None else before.t_end_s
                out.append(WaitInterval(before.t_end_s, max(before.t_end_s, t1), before.end))
        last = legs[-1] if legs else None
        if last is not None and last.end is not None and last.end.resumes and last.t_end_s is not None:
            out.append(WaitInterval(last.t_end_s, last.t_end_s, last.end))  # still waiting
        return out

    def close_stale(self, before: datetime, *, waiting_before: datetime | None = None) -> list[int]:
        """Upkeep: close runs left RUNNING whose current leg started before ``before`` and has no
        sampler left (a crash of the task process and its sidecar). A try waiting between legs
        (deferred / rescheduled) is closed only when it waits since before ``waiting_before``
        (default: never). Returns the keys closed, recorded UNKNOWN with a note."""
        before = _aware(before) or datetime.now(UTC)
        waiting_before = _aware(waiting_before)
        t, lg = task_run.c, run_leg.c
        q = (
            select(t.id, t.start_date, lg.started_at, lg.ended_at, lg.end_reason)
            .select_from(task_run.outerjoin(run_leg, and_(lg.run_pk == t.id, lg.leg == t.leg)))
            .where(t.outcome == Outcome.RUNNING.value)
        )
        closed: list[int] = []
        now = datetime.now(UTC)
        with self._connect() as conn:
            rows = list(conn.execute(q))
        for pk, start, leg_start, leg_end, reason in rows:
            waiting = reason in (LegEnd.DEFERRED.value, LegEnd.RESCHEDULED.value)
            if waiting:
                since = _aware(leg_end)
                if waiting_before is None or since is None or since >= waiting_before:
                    continue
                note = "closed by upkeep: waited (deferred) longer than the upkeep horizon"
            else:
                began = _aware(leg_start) or _aware(start)
                if began is None or began >= before:
                    continue
                note = "closed by upkeep: no end was recorded (task process and sampler lost)"
            with self._begin() as conn:
                done = conn.execute(
                    update(task_run)
                    .where(t.id == pk, t.outcome == Outcome.RUNNING.value)
                    .values(outcome=Outcome.UNKNOWN.value, note=note, end_date=now)
                ).rowcount
                conn.execute(
                    update(run_leg)
                    .where(lg.run_pk == pk, lg.ended_at.is_(None))
                    .values(ended_at=now, end_reason=LegEnd.CLOSED.value)
                )
            if done:
                closed.append(int(pk))
        return closed

    def finish_run(
        self,
        run_pk: int,
        *,
        outcome: Outcome,
        end: datetime,
        peak: ResourceVector | None = None,
        exit_code: int | None = None,
        note: str | None = None,
        only_if_running: bool = False,
        leg: int | None = None,
    ) -> bool:
        """Record a try's end. ``only_if_running``: leave a try whose end is already recorded alone.
        ``leg``: only when that leg is still the run's current one (a stale sidecar of an earlier
        leg can never finish a newer leg). Returns whether the row was updated."""
        end = _aware(end) or datetime.now(UTC)
        with self._begin() as conn:
            start = conn.execute(select(task_run.c.start_date).where(task_run.c.id == run_pk)).scalar()
            if (
                start is None
                and not conn.execute(
                    select(func.count()).select_from(task_run).where(task_run.c.id == run_pk)
                ).scalar()
            ):
                raise KeyError(f"no run with key {run_pk}")
            start = _aware(start)
            values: dict[str, Any] = {
                "outcome": outcome.value,
                "end_date": end,
                "duration_s": max(0.0, (end - start).total_seconds()) if start else None,
                "exit_code": exit_code,
            }
            if note:
                values["note"] = note
            if peak is not None:
                values.update(_vector_columns("peak_", peak))
            stmt = update(task_run).where(task_run.c.id == run_pk)
            if only_if_running:
                stmt = stmt.where(task_run.c.outcome == Outcome.RUNNING.value)
            if leg is not None:
                stmt = stmt.where(task_run.c.leg == leg)
            done = bool(conn.execute(stmt.values(**values)).rowcount)
            if done:
                conn.execute(
                    update(run_leg)
                    .where(run_leg.c.run_pk == run_pk, run_leg.c.ended_at.is_(None))
                    .values(
                        ended_at=end,
                        end_reason=LegEnd.FINISHED.value,
                        t_end_s=values["duration_s"],
                    )
                )
            return done

    def add_samples(self, run_pk: int, samples: Sequence[ResourceSample]) -> int:
        rows = []
        for s in samples:
            if not math.isfinite(s.t_s):
                continue
            rows.append(
                {"run_pk": run_pk, "t_s": float(s.t_s), **{m.value: _clean(v) for m, v in s.usage.items()}}
            )
        if not rows:
            return 0
        with self._begin() as conn:
            conn.execute(insert(resource_sample), rows)
            conn.execute(
                update(task_run)
                .where(task_run.c.id == run_pk)
                .values(n_samples=task_run.c.n_samples + len(rows))
            )
        return len(rows)

    # -- reads ----------------------------------------------------------------------------------

    def _record(self, row: RowMapping) -> RunRecord:
        try:
            source = RunSource(row["source"])
        except ValueError:
            source = RunSource.INGEST
        return RunRecord(
            identity=RunIdentity(
                key=TaskKey(row["dag_id"], row["task_id"], int(row["map_index"])),
                run_id=row["run_id"],
                try_number=int(row["try_number"]),
                source=source,
            ),
            start=_aware(row["start_date"]),
            end=_aware(row["end_date"]),
            outcome=_outcome(row["outcome"]),
            declared=_vector_from_row("declared_", row),
            peak=_vector_from_row("peak_", row),
            operator=row["operator"],
            pool=row["pool"],
            queue=row["queue"],
            hostname=row["hostname"],
            exit_code=row["exit_code"],
            features=_features_from_json(row["features"], row["id"]),
            executor_config=row["executor_config"],
            sample_interval_s=_clean(row["sample_interval_s"]),
            n_samples=int(row["n_samples"] or 0),
            note=row["note"],
            run_pk=int(row["id"]),
        )

    def get_run(self, identity: RunIdentity) -> RunRecord | None:
        with self._connect() as conn:
            pk = self._find(conn, identity)
            if pk is None:
                return None
            row = conn.execute(select(task_run).where(task_run.c.id == pk)).mappings().one()
            return self._record(row)

    def get_run_by_pk(self, run_pk: int) -> RunRecord | None:
        with self._connect() as conn:
            row = conn.execute(select(task_run).where(task_run.c.id == run_pk)).mappings().one_or_none()
            return self._record(row) if row is not None else None

    def runs(
        self,
        key: TaskKey | None = None,
        *,
        limit: int | None = None,
        source: RunSource | None = None,
    ) -> list[RunRecord]:
        t = task_run.c
        q = select(task_run)
        if key is not None:
            q = q.where(t.dag_id == key.dag_id, t.task_id == key.task_id, t.map_index == key.map_index)
        if source is not None:
            q = q.where(t.source == source.value)
        else:  # shadow runs (calibration) and pod sampler runs (shaping input) are never history:
            # asked for only by their source
            q = q.where(t.source.not_in((RunSource.SHADOW.value, RunSource.POD.value)))
        if limit is not None:
            # the newest `limit` runs, returned oldest first
            q = q.order_by(t.start_date.desc(), t.id.desc()).limit(limit)
            with self._connect() as conn:
                rows = list(conn.execute(q).mappings())
            return [self._record(r) for r in reversed(rows)]
        q = q.order_by(t.start_date, t.id)
        with self._connect() as conn:
            return [self._record(r) for r in conn.execute(q).mappings()]

    def newest_samples(
        self, hostnames: Sequence[str], *, source: RunSource = RunSource.POD
    ) -> dict[str, NewestSample]:
        """The newest sample of each running run of ``source`` recorded on each of ``hostnames``
        (the in-pod sampler's pods, ``namespace/pod``), in one query: what the shaper reads every
        round. A hostname with several running runs answers with its newest sample."""
        if not hostnames:
            return {}
        t, s = task_run.c, resource_sample.c
        newest = select(func.max(s.t_s)).where(s.run_pk == t.id).correlate(task_run).scalar_subquery()
        q = (
            select(t.hostname, t.start_date, s.t_s, *(s[name] for name in METRIC_COLUMNS))
            .select_from(task_run.join(resource_sample, s.run_pk == t.id))
            .where(
                t.source == source.value,
                t.outcome == Outcome.RUNNING.value,
                t.hostname.in_(list(hostnames)),
                s.t_s == newest,
            )
        )
        out: dict[str, NewestSample] = {}
        with self._connect() as conn:
            for row in conn.execute(q):
                start = _aware(row[1])
                if start is None or row[2] is None or not math.isfinite(row[2]):
                    continue
                at = start.timestamp() + float(row[2])
                known = out.get(row[0])
                if known is None or at > known.at:
                    usage = ResourceVector.lenient(dict(zip(Metric, row[3:], strict=True)))
                    out[row[0]] = NewestSample(at, usage)
        return out

    def samples(self, run_pk: int) -> list[ResourceSample]:
        s = resource_sample.c
        q = select(resource_sample).where(s.run_pk == run_pk).order_by(s.t_s, s.id)
        with self._connect() as conn:
            rows = list(conn.execute(q).mappings())
        return [
            ResourceSample(
                t_s=float(r["t_s"]),
                usage=ResourceVector.lenient({m: r[m.value] for m in Metric}),
            )
            for r in rows
            if r["t_s"] is not None and math.isfinite(r["t_s"])
        ]

    def series(self, run_pk: int) -> UsageSeries:
        return UsageSeries.from_samples(self.samples(run_pk))

    def series_fast(self, run_pk: int) -> UsageSeries:
        """``series(run_pk)`` read column-wise into numpy (the UI's long tries: no per-sample
        objects). Same result: times sorted, a duplicate time keeps its last reading, stored
        NULLs become NaN, metrics never measured are absent."""
        s = resource_sample.c
        q = (
            select(s.t_s, *(s[name] for name in METRIC_COLUMNS))
            .where(s.run_pk == run_pk)
            .order_by(s.t_s, s.id)
        )
        with self._connect() as conn:
            rows = conn.execute(q).all()
        if not rows:
            return UsageSeries(np.zeros(0), {})
        data = np.array([[np.nan if v is None else v for v in r] for r in rows], dtype=float)
        data = data[np.isfinite(data[:, 0])]
        if data.shape[0] > 1:
            last = np.append(data[1:, 0] != data[:-1, 0], True)  # the last row of each time
            data = data[last]
        values = {
            metric: data[:, i + 1]
            for i, metric in enumerate(Metric)
            if data.shape[0] and np.any(np.isfinite(data[:, i + 1]))
        }
        return UsageSeries(data[:, 0], values)

    def series_many(self, run_pks: Sequence[int]) -> dict[int, UsageSeries]:
        """Series of many runs in one query per chunk (the profiler's dataset builder uses this)."""
        out: dict[int, list[ResourceSample]] = {pk: [] for pk in run_pks}
        s = resource_sample.c
        cols = [s.run_pk, s.t_s, *(s[name] for name in METRIC_COLUMNS)]
        with self._connect() as conn:
            for i in range(0, len(run_pks), 500):
                chunk = list(run_pks[i : i + 500])
                q = select(*cols).where(s.run_pk.in_(chunk)).order_by(s.run_pk, s.t_s)
                for r in conn.execute(q):
                    if r[1] is None or not math.isfinite(r[1]):
                        continue
                    usage = ResourceVector.lenient(dict(zip(Metric, r[2:], strict=True)))
                    out[int(r[0])].append(ResourceSample(float(r[1]), usage))
        return {pk: UsageSeries.from_samples(v) for pk, v in out.items()}

    def task_keys(self) -> list[TaskKey]:
        t = task_run.c
        q = select(t.dag_id, t.task_id, t.map_index).distinct().order_by(t.dag_id, t.task_id, t.map_index)
        with self._connect() as conn:
            return [TaskKey(r[0], r[1], int(r[2])) for r in conn.execute(q)]

    # -- reads for the UI (issue 14): one page of a task's tries, aggregates per task and day ------

    def runs_page(self, key: TaskKey, *, offset: int = 0, limit: int = 50) -> tuple[list[RunRecord], int]:
        """One page of a task's tries, newest first, and how many tries the task has in all."""
        t = task_run.c
        where = and_(t.dag_id == key.dag_id, t.task_id == key.task_id, t.map_index == key.map_index)
        q = (
            select(task_run)
            .where(where)
            .order_by(t.start_date.desc().nulls_last(), t.id.desc())
            .offset(max(0, offset))
            .limit(max(0, limit))
        )
        with self._connect() as conn:
            total = int(conn.execute(select(func.count()).select_from(task_run).where(where)).scalar_one())
            rows = list(conn.execute(q).mappings())
        return [self._record(r) for r in rows], total

    def task_stats(self) -> list[TaskRunStats]:
        """Per task: tries, OOM kills, last start, declared and peak memory / CPU (one query)."""
        t = task_run.c
        oom = func.sum(case((t.outcome == Outcome.OOM_KILLED.value, 1), else_=0))
        q = (
            select(
                t.dag_id,
                t.task_id,
                t.map_index,
                func.count(),
                oom,
                func.max(t.start_date),
                func.max(t.declared_memory_bytes),
                func.max(t.declared_cpu_cores),
                func.max(t.peak_memory_bytes),
                func.avg(t.peak_memory_bytes),
                func.max(t.peak_cpu_cores),
                func.avg(t.peak_cpu_cores),
            )
            .group_by(t.dag_id, t.task_id, t.map_index)
            .order_by(t.dag_id, t.task_id, t.map_index)
        )
        with self._connect() as conn:
            rows = list(conn.execute(q))
        return [
            TaskRunStats(
                key=TaskKey(r[0], r[1], int(r[2])),
                runs=int(r[3]),
                oom_killed=int(r[4] or 0),
                last_start=_aware(r[5]) if isinstance(r[5], datetime) else None,
                declared_memory_bytes=_clean(r[6]),
                declared_cpu_cores=_clean(r[7]),
                peak_memory_max=_clean(r[8]),
                peak_memory_avg=_clean(r[9]),
                peak_cpu_max=_clean(r[10]),
                peak_cpu_avg=_clean(r[11]),
            )
            for r in rows
        ]

    def daily_stats(self, dag_ids: Sequence[str] | None = None) -> list[DailyRunStats]:
        """Per day of start: tries, OOM kills, and declared minus peak memory / CPU summed over the
        tries that have both (the headroom a prediction can reclaim). ``dag_ids``: only these."""
        t = task_run.c
        both_mem = and_(t.declared_memory_bytes.is_not(None), t.peak_memory_bytes.is_not(None))
        both_cpu = and_(t.declared_cpu_cores.is_not(None), t.peak_cpu_cores.is_not(None))
        day = func.date(t.start_date)
        q = (
            select(
                day,
                func.count(),
                func.sum(case((t.outcome == Outcome.OOM_KILLED.value, 1), else_=0)),
                func.sum(case((both_mem, t.declared_memory_bytes - t.peak_memory_bytes), else_=0.0)),
                func.sum(case((both_cpu, t.declared_cpu_cores - t.peak_cpu_cores), else_=0.0)),
            )
            .where(t.start_date.is_not(None))
            .group_by(day)
            .order_by(day)
        )
        if dag_ids is not None:
            q = q.where(t.dag_id.in_(list(dag_ids)))
        with self._connect() as conn:
            rows = list(conn.execute(q))
        return [
            DailyRunStats(
                day=str(r[0])[:10],
                runs=int(r[1]),
                oom_killed=int(r[2] or 0),
                memory_headroom_bytes=float(r[3] or 0.0),
                cpu_headroom_cores=float(r[4] or 0.0),
            )
            for r in rows
        ]

    def stale_running(self, before: datetime) -> list[RunRecord]:
        """Runs still marked RUNNING that started before ``before`` (their end was never recorded)."""
        t = task_run.c
        q = (
            select(task_run)
            .where(t.outcome == Outcome.RUNNING.value, t.start_date < _aware(before))
            .order_by(t.start_date)
        )
        with self._connect() as conn:
            return [self._record(r) for r in conn.execute(q).mappings()]

    # -- plumbing -------------------------------------------------------------------------------

    def _begin(self) -> Any:
        return guarded(self.engine, begin=True)

    def _connect(self) -> Any:
        return guarded(self.engine, begin=False)
