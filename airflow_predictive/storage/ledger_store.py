"""The reservation ledger on the provider's database (SQLite or PostgreSQL), and the decision log.

Why: several executors or schedulers (Airflow HA) share one pool; the only shared state between
them is this ledger, so each change is one transaction that first locks the pool: ``SELECT ...
FOR UPDATE`` on the pool's row in PostgreSQL, ``BEGIN IMMEDIATE`` (one writer at a time) in
SQLite. Under the lock it loads the pool's active reservations, lapses those whose lease ended
(a crashed executor), asks the pure rules in ``core/scheduling/ledger.py`` and writes the result.
Errors never escape: they come back as ``LedgerStatus.UNAVAILABLE`` (one log line), and the
caller runs the task on its declared resources.
"""

from __future__ import annotations

import json
import logging
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import and_, delete, insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import SQLAlchemyError

from airflow_predictive.core.model.plan import (
    LedgerResult,
    LedgerStatus,
    Pool,
    PoolKind,
    PoolTimeline,
    Reservation,
    ReservationState,
    TimedAllocation,
)
from airflow_predictive.core.model.runs import RunIdentity, TaskKey
from airflow_predictive.core.scheduling import codec
from airflow_predictive.core.scheduling.ledger import (
    decide_adjust,
    decide_reserve,
    expired,
    new_reservation_id,
    profile_of,
    released,
    taken_over,
)
from airflow_predictive.storage.engine import StorageUnavailable
from airflow_predictive.storage.tables import decision_record, ledger_pool, reservation

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping, Sequence

    from sqlalchemy.engine import Connection, Engine, RowMapping

    from airflow_predictive.core.model.backend import Allocation
    from airflow_predictive.core.model.plan import ReservationRequest
    from airflow_predictive.core.model.resources import ResourceVector
    from airflow_predictive.core.scheduling.coming import ComingCapacity
    from airflow_predictive.core.scheduling.profile import Profile

log = logging.getLogger(__name__)

_ACTIVE = ReservationState.ACTIVE.value


class SqlLedger:
    """ReservationLedger (core/ports.py) on SQLAlchemy; safe across processes on one database."""

    def __init__(self, engine: Engine, clock: Callable[[], float] = time.time) -> None:
        self._engine = engine
        self._clock = clock
        self._sqlite = engine.dialect.name == "sqlite"
        # parsed timelines by reservation id, valid while the stored text is the same (a timeline
        # only changes on adjust / release / expiry): every reserve re-reads the pool's active set
        self._parsed: dict[str, tuple[str, tuple[TimedAllocation, ...]]] = {}

    # -- transactions ---------------------------------------------------------------------------

    def _locked(self, what: str | None) -> _Tx:
        """A transaction; with ``what`` (a pool or reservation it will change) SQLite takes the
        write lock at once (PostgreSQL locks the pool row inside, ``_pool_under_lock``)."""
        return _Tx(self._engine, what, sqlite=self._sqlite)

    def _fail(self, what: str, exc: BaseException) -> LedgerResult:
        text = str(getattr(exc, "orig", None) or exc).splitlines()[0][:300]
        log.warning("predictive ledger unavailable (%s): %s", what, text)
        return LedgerResult(LedgerStatus.UNAVAILABLE, f"ledger unavailable ({what}): {text}")

    # -- pools ----------------------------------------------------------------------------------

    def set_pool(self, pool: Pool) -> None:
        now = datetime.now(UTC)
        values = {
            "kind": pool.kind.value,
            "capacity": json.dumps(codec.capacity_to_dict(pool.capacity)),
            "note": pool.note,
            "updated_at": now,
        }
        dialect_insert = sqlite_insert if self._sqlite else pg_insert
        stmt = dialect_insert(ledger_pool).values(name=pool.name, **values)
        with self._locked(None) as conn:
            conn.execute(stmt.on_conflict_do_update(index_elements=["name"], set_=values))

    def pools(self) -> list[Pool]:
        with self._locked(None) as conn:
            return [
                _pool(r) for r in conn.execute(select(ledger_pool).order_by(ledger_pool.c.name)).mappings()
            ]

    def _pool_under_lock(self, conn: Connection, name: str) -> Pool | None:
        return self._pool_and_coming_under_lock(conn, name)[0]

    def _pool_and_coming_under_lock(
        self, conn: Connection, name: str
    ) -> tuple[Pool | None, tuple[ComingCapacity, ...]]:
        q = select(ledger_pool).where(ledger_pool.c.name == name)
        if not self._sqlite:
            q = q.with_for_update()
        row = conn.execute(q).mappings().first()
        return (None, ()) if row is None else (_pool(row), _coming(row))

    def set_coming(self, pool: str, coming: Sequence[ComingCapacity]) -> bool:
        """Replace the pool's coming capacity (nodes booting, warm capacity being made); False when
        the pool does not exist or the database is unavailable (logged)."""
        text = json.dumps(codec.coming_to_list([c for c in coming if c.pool == pool]))
        try:
            with self._locked(pool) as conn:
                if self._pool_under_lock(conn, pool) is None:
                    return False
                conn.execute(update(ledger_pool).where(ledger_pool.c.name == pool).values(coming=text))
                return True
        except (SQLAlchemyError, StorageUnavailable) as exc:
            self._fail("set_coming", exc)
            return False

    def coming(self, pool: str) -> tuple[ComingCapacity, ...]:
        with self._locked(None) as conn:
            row = conn.execute(select(ledger_pool).where(ledger_pool.c.name == pool)).mappings().first()
            return () if row is None else _coming(row)

    def _active(self, conn: Connection, pool: str, now: float) -> list[Reservation]:
        """The pool's active reservations; those whose lease ended are lapsed here and now."""
        # the plan column is not needed to check a fit (the timeline is what is held): not parsed
        columns = [c for c in reservation.c if c.name != "plan"]
        rows = conn.execute(
            select(*columns).where(and_(reservation.c.pool == pool, reservation.c.state == _ACTIVE))
        ).mappings()
        live: list[Reservation] = []
        if len(self._parsed) > 20_000:
            self._parsed.clear()
        for row in rows:
            text = row["timeline"]
            hit = self._parsed.get(row["id"])
            if hit is None or hit[0] != text:
                hit = (text, codec.timeline_from_list(json.loads(text)))
                self._parsed[row["id"]] = hit
            res = _reservation(row, timeline=hit[1])
            if res.expires_at < now:
                self._write(conn, expired(res, now))
                log.info(
                    "predictive ledger: reservation %s of %s lapsed (holder %s)",
                    res.id,
                    res.run.key,
                    res.holder,
                )
            else:
                live.append(res)
        return live

    def _write(self, conn: Connection, res: Reservation) -> None:
        conn.execute(
            update(reservation)
            .where(reservation.c.id == res.id)
            .values(
                state=res.state.value,
                end_at=res.end,
                expires_at=res.expires_at,
                timeline=json.dumps(codec.timeline_to_list(res.timeline)),
            )
        )

    # -- the port -------------------------------------------------------------------------------

    def reserve(self, request: ReservationRequest) -> LedgerResult:
        try:
            with self._locked(request.pool) as conn:
                pool, coming = self._pool_and_coming_under_lock(conn, request.pool)
                if pool is None:
                    return LedgerResult(LedgerStatus.UNKNOWN, f"no pool named {request.pool!r}")
                now = self._clock()
                result = decide_reserve(
                    request,
                    pool,
                    self._active(conn, pool.name, now),
                    rid=new_reservation_id(),
                    now=now,
                    coming=coming,
                )
                if result.reservation is not None:
                    conn.execute(insert(reservation).values(**_row(result.reservation)))
                return result
        except (SQLAlchemyError, StorageUnavailable) as exc:
            return self._fail("reserve", exc)

    def adjust(
        self,
        reservation_id: str,
        at: float,
        allocated: Allocation,
        *,
        desired: Allocation | None = None,
        actual: ResourceVector | None = None,
        until: float | None = None,
        force: bool = True,
    ) -> LedgerResult:
        try:
            with self._locked(reservation_id) as conn:
                pool_name = self._pool_of(conn, reservation_id)
                if pool_name is None:
                    return LedgerResult(LedgerStatus.UNKNOWN, f"no active reservation {reservation_id}")
                pool, coming = self._pool_and_coming_under_lock(conn, pool_name)
                now = self._clock()
                active = self._active(conn, pool_name, now) if pool is not None else []
                res = next((r for r in active if r.id == reservation_id), None)
                if pool is None or res is None:
                    return LedgerResult(LedgerStatus.UNKNOWN, f"no active reservation {reservation_id}")
                result = decide_adjust(
                    res,
                    pool,
                    active,
                    at=at,
                    allocated=allocated,
                    desired=desired,
                    actual=actual,
                    until=until,
                    force=force,
                    coming=coming,
                    now=now,
                )
                if result.reservation is not None:
                    self._write(conn, result.reservation)
                return result
        except (SQLAlchemyError, StorageUnavailable) as exc:
            return self._fail("adjust", exc)

    def _pool_of(self, conn: Connection, reservation_id: str) -> str | None:
        """The pool of an active reservation (the caller then locks that pool and re-reads)."""
        row = conn.execute(
            select(reservation.c.pool).where(
                and_(reservation.c.id == reservation_id, reservation.c.state == _ACTIVE)
            )
        ).first()
        return None if row is None else str(row[0])

    def release(self, reservation_id: str, at: float | None = None) -> LedgerResult:
        try:
            with self._locked(reservation_id) as conn:
                pool_name = self._pool_of(conn, reservation_id)
                if pool_name is None:
                    return LedgerResult(LedgerStatus.UNKNOWN, f"no active reservation {reservation_id}")
                self._pool_under_lock(conn, pool_name)
                row = (
                    conn.execute(select(reservation).where(reservation.c.id == reservation_id))
                    .mappings()
                    .first()
                )
                if row is None or row["state"] != _ACTIVE:
                    return LedgerResult(LedgerStatus.UNKNOWN, f"no active reservation {reservation_id}")
                done = released(_reservation(row), self._clock() if at is None else at)
                self._write(conn, done)
                return LedgerResult(LedgerStatus.RELEASED, "released", reservation=done)
        except (SQLAlchemyError, StorageUnavailable) as exc:
            return self._fail("release", exc)

    def renew(self, holder: str, until: float) -> int:
        try:
            with self._locked(None) as conn:
                result = conn.execute(
                    update(reservation)
                    .where(
                        and_(
                            reservation.c.holder == holder,
                            reservation.c.state == _ACTIVE,
                            reservation.c.expires_at < until,
                        )
                    )
                    .values(expires_at=until)
                )
                return int(result.rowcount or 0)
        except (SQLAlchemyError, StorageUnavailable) as exc:
            self._fail("renew", exc)
            return 0

    def take_over(self, run: RunIdentity, holder: str, until: float) -> LedgerResult:
        none = LedgerResult(LedgerStatus.UNKNOWN, f"no active reservation of {run.key} try {run.try_number}")
        try:
            with self._locked(f"take_over {run.key}") as conn:
                c = reservation.c
                row = conn.execute(select(c.pool).where(_of_run(run), c.state == _ACTIVE)).first()
                if row is None:
                    return none
                self._pool_under_lock(conn, str(row[0]))
                # under the pool's lock: lapse what ended, then the try's live one, if any
                live = [r for r in self._active(conn, str(row[0]), self._clock()) if r.run == run]
                if not live:
                    return none
                newest = max(live, key=lambda r: r.start)
                full = conn.execute(select(reservation).where(c.id == newest.id)).mappings().first()
                res = taken_over(
                    _reservation(full) if full is not None else newest, holder, until
                )  # with its plan
                conn.execute(
                    update(reservation).where(c.id == res.id).values(holder=holder, expires_at=res.expires_at)
                )
                return LedgerResult(
                    LedgerStatus.ADJUSTED, f"taken over from {newest.holder}", reservation=res
                )
        except (SQLAlchemyError, StorageUnavailable) as exc:
            return self._fail("take_over", exc)

    def expire(self, now: float) -> list[Reservation]:
        out: list[Reservation] = []
        try:
            with self._locked(None) as conn:
                rows = conn.execute(
                    select(reservation).where(
                        and_(reservation.c.state == _ACTIVE, reservation.c.expires_at < now)
                    )
                ).mappings()
                for row in list(rows):
                    lapsed = expired(_reservation(row), now)
                    self._write(conn, lapsed)
                    out.append(lapsed)
        except (SQLAlchemyError, StorageUnavailable) as exc:
            self._fail("expire", exc)
        return out

    def get(self, reservation_id: str) -> Reservation | None:
        with self._locked(None) as conn:
            row = (
                conn.execute(select(reservation).where(reservation.c.id == reservation_id)).mappings().first()
            )
            return None if row is None else _reservation(row)

    def reservations(self, pool: str | None = None) -> list[Reservation]:
        with self._locked(None) as conn:
            q = select(reservation).where(reservation.c.state == _ACTIVE)
            if pool is not None:
                q = q.where(reservation.c.pool == pool)
            return [_reservation(r) for r in conn.execute(q.order_by(reservation.c.start_at)).mappings()]

    def history(self, pool: str, start: float, end: float, *, limit: int = 2000) -> list[Reservation]:
        """Reservations of ``pool`` in any state overlapping [start, end), oldest first (the UI)."""
        with self._locked(None) as conn:
            q = (
                select(reservation)
                .where(
                    and_(
                        reservation.c.pool == pool, reservation.c.end_at > start, reservation.c.start_at < end
                    )
                )
                .order_by(reservation.c.start_at)
                .limit(limit)
            )
            return [_reservation(r) for r in conn.execute(q).mappings()]

    def of_run(self, run: RunIdentity) -> list[Reservation]:
        """Every reservation made for one try, in any state, oldest first (the UI's plan view)."""
        with self._locked(None) as conn:
            q = select(reservation).where(_of_run(run)).order_by(reservation.c.start_at)
            return [_reservation(r) for r in conn.execute(q).mappings()]

    def timeline(self, pool: str, start: float, end: float, *, include_ended: bool = False) -> PoolTimeline:
        """Summed holdings over [start, end); ``include_ended`` adds released / expired ones (history)."""
        with self._locked(None) as conn:
            row = conn.execute(select(ledger_pool).where(ledger_pool.c.name == pool)).mappings().first()
            if row is None:
                raise KeyError(pool)
            p = _pool(row)
            q = select(reservation).where(
                and_(reservation.c.pool == pool, reservation.c.end_at > start, reservation.c.start_at < end)
            )
            if not include_ended:
                q = q.where(reservation.c.state == _ACTIVE)
            held = [_reservation(r) for r in conn.execute(q).mappings()]
        return PoolTimeline(p, profile_of(p, held).points(start, end))

    def profile(self, pool: str, *, with_coming: bool = True) -> Profile:
        """The pool's current profile (active reservations; with its coming capacity unless
        ``with_coming`` is False), for admission rounds."""
        with self._locked(None) as conn:
            row = conn.execute(select(ledger_pool).where(ledger_pool.c.name == pool)).mappings().first()
            if row is None:
                raise KeyError(pool)
            p = _pool(row)
            now = self._clock()
            q = select(reservation).where(
                and_(
                    reservation.c.pool == pool,
                    reservation.c.state == _ACTIVE,
                    reservation.c.expires_at >= now,
                )
            )
            held = [_reservation(r) for r in conn.execute(q).mappings()]
            coming = _coming(row) if with_coming else ()
        return profile_of(p, held, coming=coming, now=now)

    def delete_pool(self, name: str) -> None:
        with self._locked(None) as conn:
            conn.execute(delete(ledger_pool).where(ledger_pool.c.name == name))


class _Tx:
    """One transaction holding the pool's lock (SQLite: the database's single writer lock)."""

    def __init__(self, engine: Engine, pool: str | None, *, sqlite: bool) -> None:
        self._engine = engine
        self._pool = pool
        self._sqlite = sqlite
        self._conn: Connection | None = None

    def __enter__(self) -> Connection:
        try:
            conn = self._engine.connect()
        except SQLAlchemyError as exc:
            raise StorageUnavailable(f"predictive database unreachable: {getattr(exc, 'orig', exc)}") from exc
        if self._sqlite and self._pool is not None:
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        self._conn = conn
        return conn

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        assert self._conn is not None
        try:
            if exc_type is None:
                self._conn.commit()
            else:
                self._conn.rollback()
        finally:
            self._conn.close()


def _pool(row: RowMapping) -> Pool:
    return Pool(
        name=row["name"],
        kind=PoolKind(row["kind"]),
        capacity=codec.capacity_from_dict(json.loads(row["capacity"])),
        note=row["note"] or "",
    )


def _coming(row: RowMapping) -> tuple[ComingCapacity, ...]:
    """The pool row's coming capacity; unreadable text counts as nothing coming (logged): coming
    capacity only ever adds room, so losing it can delay a task, never over-commit the pool."""
    text = row.get("coming")
    if not text:
        return ()
    try:
        return codec.coming_from_list(json.loads(text))
    except ValueError as exc:
        log.warning("predictive ledger: unreadable coming capacity of pool %s: %s", row["name"], exc)
        return ()


def _of_run(run: RunIdentity) -> Any:
    """The WHERE clause of one try's reservations (any state)."""
    key, c = run.key, reservation.c
    return and_(
        c.dag_id == key.dag_id,
        c.task_id == key.task_id,
        c.map_index == key.map_index,
        c.run_id == run.run_id,
        c.try_number == run.try_number,
    )


def _row(res: Reservation) -> dict[str, Any]:
    key = res.run.key
    return {
        "id": res.id,
        "pool": res.pool,
        "dag_id": key.dag_id,
        "task_id": key.task_id,
        "map_index": key.map_index,
        "run_id": res.run.run_id,
        "try_number": res.run.try_number,
        "holder": res.holder,
        "state": res.state.value,
        "start_at": res.start,
        "end_at": res.end,
        "expires_at": res.expires_at,
        "priority": res.priority,
        "timeline": json.dumps(codec.timeline_to_list(res.timeline)),
        "plan": None if res.plan is None else json.dumps(codec.plan_to_dict(res.plan)),
        "created_at": datetime.now(UTC),
    }


def _reservation(row: RowMapping, timeline: tuple[TimedAllocation, ...] | None = None) -> Reservation:
    plan = None
    if row.get("plan"):
        try:
            plan = codec.plan_from_dict(json.loads(row["plan"]))
        except ValueError:
            plan = None  # the timeline is what counts; an unreadable plan is only lost detail
    return Reservation(
        id=row["id"],
        pool=row["pool"],
        run=RunIdentity(
            TaskKey(row["dag_id"], row["task_id"], row["map_index"]), row["run_id"], row["try_number"]
        ),
        holder=row["holder"],
        start=float(row["start_at"]),
        end=float(row["end_at"]),
        timeline=timeline if timeline is not None else codec.timeline_from_list(json.loads(row["timeline"])),
        expires_at=float(row["expires_at"]),
        state=ReservationState(row["state"]),
        plan=plan,
        priority=int(row["priority"] or 0),
    )


class DecisionLog:
    """Every plan and admission decision, stored for the UI and the CLI (never raises)."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def record(
        self,
        *,
        kind: str,
        decision: str,
        run: RunIdentity,
        reason: str,
        pool: str | None = None,
        payload: Mapping[str, Any] | None = None,
    ) -> bool:
        key = run.key
        try:
            with self._engine.begin() as conn:
                conn.execute(
                    insert(decision_record).values(
                        at=datetime.now(UTC),
                        kind=kind,
                        decision=decision,
                        dag_id=key.dag_id,
                        task_id=key.task_id,
                        map_index=key.map_index,
                        run_id=run.run_id,
                        try_number=run.try_number,
                        pool=pool,
                        reason=reason[:4000],
                        payload=None if payload is None else json.dumps(payload, default=str),
                    )
                )
            return True
        except SQLAlchemyError as exc:
            log.warning("predictive: could not store a %s decision: %s", kind, str(exc).splitlines()[0][:200])
            return False

    def latest(self, run: RunIdentity, *, kind: str, before_try: int | None = None) -> dict[str, Any] | None:
        """The newest decision of ``kind`` for ``run``'s task instance (its DAG run), from a try
        before ``before_try`` when given; None when there is none. Raises on a storage error (the
        caller decides what to do without it)."""
        key, c = run.key, decision_record.c
        where = [
            c.kind == kind,
            c.dag_id == key.dag_id,
            c.task_id == key.task_id,
            c.map_index == key.map_index,
            c.run_id == run.run_id,
        ]
        if before_try is not None:
            where.append(c.try_number < before_try)
        q = select(decision_record).where(and_(*where)).order_by(c.id.desc()).limit(1)
        with self._engine.connect() as conn:
            row = conn.execute(q).mappings().first()
        if row is None:
            return None
        out = dict(row)
        out["payload"] = json.loads(row["payload"]) if row["payload"] else None
        return out

    def recent(self, key: TaskKey | None = None, *, limit: int = 100) -> Iterator[dict[str, Any]]:
        q = select(decision_record).order_by(decision_record.c.id.desc()).limit(limit)
        if key is not None:
            q = q.where(
                and_(decision_record.c.dag_id == key.dag_id, decision_record.c.task_id == key.task_id)
            )
        with self._engine.connect() as conn:
            rows = list(conn.execute(q).mappings())
        for r in rows:
            out = dict(r)
            out["payload"] = json.loads(r["payload"]) if r["payload"] else None
            yield out
