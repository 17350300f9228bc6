"""The ledger's rules, shared by every store: reserve, adjust, release, expire (pure).

A store (in memory here, SQLite / PostgreSQL in storage/ledger_store.py) loads a pool's active
reservations under its lock, asks these functions what the new state is, and writes it back in
the same transaction. Keeping the rules here means every store over-commits never, or in the same
way (an applied resize recorded with ``force``), and tests of the rules need no database.
"""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import replace
from typing import TYPE_CHECKING

from airflow_predictive.core.model.plan import (
    LedgerResult,
    LedgerStatus,
    Pool,
    PoolTimeline,
    Reservation,
    ReservationRequest,
    ReservationState,
    TimedAllocation,
    resized_charge,
)
from airflow_predictive.core.scheduling.coming import pending, phantom_pieces, with_coming
from airflow_predictive.core.scheduling.profile import Profile

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Sequence

    from airflow_predictive.core.model.backend import Allocation
    from airflow_predictive.core.model.resources import ResourceVector
    from airflow_predictive.core.model.runs import RunIdentity
    from airflow_predictive.core.scheduling.coming import ComingCapacity

MIN_PIECE_S = 1e-3


def new_reservation_id() -> str:
    return uuid.uuid4().hex


def profile_of(
    pool: Pool,
    active: Iterable[Reservation],
    *,
    excluding: str | None = None,
    coming: Sequence[ComingCapacity] = (),
    now: float | None = None,
) -> Profile:
    """The pool's profile; with ``coming`` (and ``now``), its capacity over time is present +
    coming amounts ready by t (core/scheduling/coming.py)."""
    pieces = [p for r in active if r.id != excluding for p in r.pieces()]
    ahead = pending(coming, pool.name, now) if coming and now is not None else []
    if not ahead:
        return Profile(pool.capacity, pieces)
    assert now is not None
    return Profile(with_coming(pool.capacity, ahead), [*pieces, *phantom_pieces(pool.capacity, ahead, now)])


def decide_reserve(
    request: ReservationRequest,
    pool: Pool,
    active: Iterable[Reservation],
    *,
    rid: str,
    now: float,
    coming: Sequence[ComingCapacity] = (),
) -> LedgerResult:
    """RESERVED with the new reservation, or REFUSED with the first bottleneck."""
    timeline = Reservation.timeline_of(request.plan, request.start)
    end = request.start + request.plan.duration_s
    candidate = Reservation(
        id=rid,
        pool=pool.name,
        run=request.run,
        holder=request.holder,
        start=request.start,
        end=end,
        timeline=timeline,
        expires_at=now + request.lease_s,
        plan=request.plan,
        priority=request.priority,
    )
    fit = profile_of(pool, active, coming=coming, now=now).fit(
        [(a - request.start, b - request.start, c) for a, b, c in candidate.pieces()], request.start
    )
    if fit.bottleneck is not None:
        return LedgerResult(
            LedgerStatus.REFUSED,
            f"does not fit pool {pool.name}: {fit.bottleneck.describe(request.start)}",
            bottleneck=fit.bottleneck,
        )
    return LedgerResult(LedgerStatus.RESERVED, f"reserved in pool {pool.name}", reservation=candidate)


def adjusted_timeline(
    res: Reservation, at: float, charge: Allocation, until: float | None
) -> tuple[TimedAllocation, ...]:
    """The reservation's timeline with ``charge`` held during [at, until) (until: its end)."""
    at = min(max(at, res.start), res.end - MIN_PIECE_S)
    stop = res.end if until is None else min(max(until, at + MIN_PIECE_S), res.end)
    before = [p for p in res.timeline if p.at < at]
    resume = res.charge_at(stop) if stop < res.end else None
    after = [p for p in res.timeline if p.at >= stop] if stop < res.end else []
    out = [*before, TimedAllocation(at, charge)]
    if resume is not None and not any(p.at == stop for p in after):
        out.append(TimedAllocation(stop, resume))
    out.extend(after)
    if out[0].at != res.start:  # at == start: the new charge replaces the first piece
        out.insert(0, res.timeline[0])
    return tuple(out)


def decide_adjust(
    res: Reservation,
    pool: Pool,
    active: Iterable[Reservation],
    *,
    at: float,
    allocated: Allocation,
    desired: Allocation | None,
    actual: ResourceVector | None,
    until: float | None,
    force: bool,
    coming: Sequence[ComingCapacity] = (),
    now: float | None = None,
) -> LedgerResult:
    charge = resized_charge(allocated, desired, actual)
    if until is not None and until > res.end:  # a task running past its predicted end keeps its charge
        res = replace(res, end=until)
    updated = replace(res, timeline=adjusted_timeline(res, at, charge, until))
    profile = profile_of(pool, active, excluding=res.id, coming=coming, now=at if now is None else now)
    ahead = [(max(a, at), b, c) for a, b, c in updated.pieces() if b > at]  # the past is past
    fit = profile.fit(ahead, 0.0)
    if fit.bottleneck is None:
        return LedgerResult(LedgerStatus.ADJUSTED, "adjusted", reservation=updated)
    text = fit.bottleneck.describe(updated.start)
    if force:
        return LedgerResult(
            LedgerStatus.OVERCOMMITTED,
            f"recorded an applied change that over-commits pool {pool.name}: {text}",
            reservation=updated,
            bottleneck=fit.bottleneck,
        )
    return LedgerResult(
        LedgerStatus.REFUSED, f"change does not fit pool {pool.name}: {text}", bottleneck=fit.bottleneck
    )


def released(res: Reservation, at: float) -> Reservation:
    """The reservation ended at ``at`` (early when before its predicted end): its rest is freed."""
    end = min(res.end, max(at, res.start + MIN_PIECE_S))
    timeline = tuple(p for p in res.timeline if p.at < end) or res.timeline[:1]
    return replace(res, end=end, timeline=timeline, state=ReservationState.RELEASED)


def taken_over(res: Reservation, holder: str, until: float) -> Reservation:
    """``res`` held by ``holder`` from now on, its lease at least until ``until`` (a restarted
    scheduler adopting the try's pod: the timeline, plan and start are the try's, unchanged)."""
    return replace(res, holder=holder, expires_at=max(res.expires_at, until))


def expired(res: Reservation, now: float) -> Reservation:
    end = min(res.end, max(res.expires_at, res.start + MIN_PIECE_S))
    timeline = tuple(p for p in res.timeline if p.at < end) or res.timeline[:1]
    return replace(res, end=end, timeline=timeline, state=ReservationState.EXPIRED)


class InMemoryLedger:
    """The ledger in one process (tests, the simulator, a single scheduler without a database)."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._pools: dict[str, Pool] = {}
        self._active: dict[str, Reservation] = {}
        self._coming: dict[str, tuple[ComingCapacity, ...]] = {}
        self.history: list[Reservation] = []

    def set_pool(self, pool: Pool) -> None:
        with self._lock:
            self._pools[pool.name] = pool

    def pools(self) -> list[Pool]:
        with self._lock:
            return list(self._pools.values())

    def set_coming(self, pool: str, coming: Sequence[ComingCapacity]) -> None:
        """Replace the pool's coming capacity (its owner, the node-pool backend, says what is on its way)."""
        with self._lock:
            self._coming[pool] = tuple(c for c in coming if c.pool == pool)

    def coming(self, pool: str) -> tuple[ComingCapacity, ...]:
        with self._lock:
            return self._coming.get(pool, ())

    def profile(self, pool: str) -> Profile:
        """The pool's current profile with its coming capacity (for admission rounds)."""
        with self._lock:
            p = self._pools[pool]
            return profile_of(
                p, self._pool_active(pool), coming=self._coming.get(pool, ()), now=self._clock()
            )

    def _pool_active(self, pool: str) -> list[Reservation]:
        return [r for r in self._active.values() if r.pool == pool]

    def reserve(self, request: ReservationRequest) -> LedgerResult:
        with self._lock:
            pool = self._pools.get(request.pool)
            if pool is None:
                return LedgerResult(LedgerStatus.UNKNOWN, f"no pool named {request.pool!r}")
            result = decide_reserve(
                request,
                pool,
                self._pool_active(pool.name),
                rid=new_reservation_id(),
                now=self._clock(),
                coming=self._coming.get(pool.name, ()),
            )
            if result.reservation is not None:
                self._active[result.reservation.id] = result.reservation
            return result

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
        with self._lock:
            res = self._active.get(reservation_id)
            if res is None:
                return LedgerResult(LedgerStatus.UNKNOWN, f"no active reservation {reservation_id}")
            result = decide_adjust(
                res,
                self._pools[res.pool],
                self._pool_active(res.pool),
                at=at,
                allocated=allocated,
                desired=desired,
                actual=actual,
                until=until,
                force=force,
                coming=self._coming.get(res.pool, ()),
                now=self._clock(),
            )
            if result.reservation is not None:
                self._active[res.id] = result.reservation
            return result

    def release(self, reservation_id: str, at: float | None = None) -> LedgerResult:
        with self._lock:
            res = self._active.pop(reservation_id, None)
            if res is None:
                return LedgerResult(LedgerStatus.UNKNOWN, f"no active reservation {reservation_id}")
            done = released(res, self._clock() if at is None else at)
            self.history.append(done)
            return LedgerResult(LedgerStatus.RELEASED, "released", reservation=done)

    def renew(self, holder: str, until: float) -> int:
        with self._lock:
            mine = [r for r in self._active.values() if r.holder == holder]
            for r in mine:
                self._active[r.id] = replace(r, expires_at=max(r.expires_at, until))
            return len(mine)

    def take_over(self, run: RunIdentity, holder: str, until: float) -> LedgerResult:
        with self._lock:
            now = self._clock()
            res = next((r for r in self._active.values() if r.run == run and r.expires_at >= now), None)
            if res is None:
                return LedgerResult(
                    LedgerStatus.UNKNOWN, f"no active reservation of {run.key} try {run.try_number}"
                )
            mine = taken_over(res, holder, until)
            self._active[res.id] = mine
            return LedgerResult(LedgerStatus.ADJUSTED, f"taken over from {res.holder}", reservation=mine)

    def expire(self, now: float) -> list[Reservation]:
        with self._lock:
            lapsed = [r for r in self._active.values() if r.expires_at < now]
            out = []
            for r in lapsed:
                del self._active[r.id]
                out.append(expired(r, now))
            self.history.extend(out)
            return out

    def get(self, reservation_id: str) -> Reservation | None:
        with self._lock:
            return self._active.get(reservation_id)

    def reservations(self, pool: str | None = None) -> list[Reservation]:
        with self._lock:
            return [r for r in self._active.values() if pool is None or r.pool == pool]

    def timeline(self, pool: str, start: float, end: float) -> PoolTimeline:
        with self._lock:
            p = self._pools[pool]
            return PoolTimeline(p, profile_of(p, self._pool_active(pool)).points(start, end))
