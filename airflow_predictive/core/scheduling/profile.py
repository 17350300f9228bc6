"""A pool's reserved-over-time profile and the fit questions asked of it (pure, numpy).

Every ledger (in memory, SQLite, PostgreSQL) and the admission queue answer the same three
questions with this module: does a timeline fit the pool from a given start, if not which metric
is the bottleneck (when, by how much), and what is the earliest start at which it fits. The
profile is a step function: breakpoints ``T[0] < ... < T[K]`` and the summed charge ``U[k]`` held
during ``[T[k], T[k+1])``, 16 columns = 8 metrics x (requests, limits). Before ``T[0]`` and after
``T[K]`` nothing is held. Absent metrics count as zero demand; absent capacity as unlimited.

Earliest start (conservative backfilling): for each plan piece ``[a, b)`` with charge ``c`` and
each profile interval ``k`` where ``U[k] + c`` exceeds the capacity, every start in
``(T[k] - b, T[k+1] - a)`` is infeasible; the earliest start is the first time not covered by
the union of those open intervals. O(K * pieces) vectorised, one sort.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from airflow_predictive.core.model.backend import Allocation
from airflow_predictive.core.model.plan import Bottleneck, PoolCapacity, TimelinePoint, charge_of
from airflow_predictive.core.model.resources import Metric, ResourceVector

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

METRICS: tuple[Metric, ...] = tuple(Metric)
N = len(METRICS)
WIDTH = 2 * N  # requests columns, then limits columns
_TOL = 1e-9

Piece = tuple[float, float, Allocation]  # wall-clock [from, to) and the charge held


def vector_array(vector: ResourceVector, *, absent: float = 0.0) -> np.ndarray:
    return np.array([absent if (v := vector.get(m)) is None else v for m in METRICS], dtype=float)


@functools.lru_cache(maxsize=65536)
def charge_array(charge: Allocation) -> np.ndarray:
    """[16] requests then limits; absent = 0 (memoised, read-only: the same charges recur)."""
    row = np.concatenate([vector_array(charge.requests), vector_array(charge.limits)])
    row.setflags(write=False)
    return row


def capacity_array(capacity: PoolCapacity) -> np.ndarray:
    """[16] requests then limits; absent = +inf (unconstrained)."""
    return np.concatenate(
        [vector_array(capacity.requests, absent=math.inf), vector_array(capacity.limits, absent=math.inf)]
    )


def _vector_of(row: np.ndarray) -> ResourceVector:
    return ResourceVector.from_mapping({m: float(row[i]) for i, m in enumerate(METRICS) if row[i] > 0})


@dataclass(frozen=True, slots=True)
class Fit:
    """The answer to "does it fit from ``start``": ``bottleneck`` is None when it does."""

    start: float
    bottleneck: Bottleneck | None

    @property
    def fits(self) -> bool:
        return self.bottleneck is None


class Profile:
    """What a pool holds over time (mutable while admission places tasks; copy() for what-ifs)."""

    __slots__ = ("cap", "capacity", "cols", "limit", "times", "usage")

    def __init__(self, capacity: PoolCapacity, pieces: Iterable[Piece] = ()) -> None:
        self.capacity = capacity
        self.cap = capacity_array(capacity)  # [16]
        self.cols = np.nonzero(np.isfinite(self.cap))[0]  # the constrained columns: only they are checked
        self.limit = (self.cap * (1 + _TOL) + _TOL)[self.cols]
        starts: list[float] = []
        ends: list[float] = []
        rows: list[np.ndarray] = []
        for a, b, charge in pieces:
            if b > a:
                starts.append(a)
                ends.append(b)
                rows.append(charge_array(charge))
        self._build(np.array(starts), np.array(ends), np.array(rows).reshape(len(rows), WIDTH))

    def _build(self, starts: np.ndarray, ends: np.ndarray, rows: np.ndarray) -> None:
        if not starts.size:
            self.times = np.zeros(0)  # [K+1]
            self.usage = np.zeros((0, WIDTH))  # [K, 16]
            return
        times = np.unique(np.concatenate([starts, ends]))
        delta = np.zeros((times.size, WIDTH))
        np.add.at(delta, np.searchsorted(times, starts), rows)
        np.add.at(delta, np.searchsorted(times, ends), -rows)
        usage = np.cumsum(delta, axis=0)[:-1]
        usage[np.abs(usage) < 1e-6] = 0.0
        self.times = times
        self.usage = np.maximum(usage, 0.0)

    def copy(self) -> Profile:
        out = Profile.__new__(Profile)
        out.capacity, out.cap, out.cols, out.limit = self.capacity, self.cap, self.cols, self.limit
        out.times, out.usage = self.times.copy(), self.usage.copy()
        return out

    def add(self, pieces: Iterable[Piece]) -> None:
        """Hold ``pieces`` (insert their breakpoints, add their charge)."""
        for a, b, charge in pieces:
            if b > a:
                self._add_one(a, b, charge_array(charge))

    def _add_one(self, a: float, b: float, row: np.ndarray) -> None:
        if not self.times.size:
            self.times = np.array([a, b])
            self.usage = row.reshape(1, WIDTH).copy()
            return
        for t in (a, b):
            i = int(np.searchsorted(self.times, t))
            if i < self.times.size and self.times[i] == t:
                continue
            # the new interval [t, next) holds what the interval it splits held (nothing outside)
            inside = 0 < i < self.times.size
            fill = self.usage[i - 1] if inside else np.zeros(WIDTH)
            self.times = np.insert(self.times, i, t)
            if i == 0:
                self.usage = np.insert(self.usage, 0, np.zeros(WIDTH), axis=0)
            elif i == self.times.size - 1:
                self.usage = np.insert(self.usage, i - 1, np.zeros(WIDTH), axis=0)
            else:
                self.usage = np.insert(self.usage, i, fill, axis=0)
        ia, ib = int(np.searchsorted(self.times, a)), int(np.searchsorted(self.times, b))
        self.usage[ia:ib] += row

    def held_at(self, t: float) -> np.ndarray:
        """[16] summed charge at wall-clock t."""
        if not self.times.size or t < self.times[0] or t >= self.times[-1]:
            return np.zeros(WIDTH)
        return self.usage[int(np.searchsorted(self.times, t, side="right")) - 1]

    def peak_between(self, a: float, b: float) -> np.ndarray:
        """[16] element-wise max of the charge held during [a, b)."""
        if not self.times.size or b <= self.times[0] or a >= self.times[-1]:
            return np.zeros(WIDTH)
        lo = max(0, int(np.searchsorted(self.times, a, side="right")) - 1)
        hi = int(np.searchsorted(self.times, b, side="left"))
        return np.max(self.usage[lo:hi], axis=0) if hi > lo else np.zeros(WIDTH)

    def fit(self, pieces: Sequence[tuple[float, float, Allocation]], start: float) -> Fit:
        """Does a timeline of offsets (s after start) fit when started at ``start``? First conflict."""
        rel = [(start + a, start + b, charge_array(c)) for a, b, c in pieces if b > a]
        worst: Bottleneck | None = None
        for a, b, row in rel:
            # never fits: above the capacity even when the pool is empty
            over_cap = row > self.cap * (1 + _TOL) + _TOL
            if over_cap.any():
                return Fit(start, self._bottleneck(int(np.argmax(over_cap)), a, row, np.zeros(WIDTH)))
            if not self.times.size or b <= self.times[0] or a >= self.times[-1]:
                continue
            lo = max(0, int(np.searchsorted(self.times, a, side="right")) - 1)
            hi = int(np.searchsorted(self.times, b, side="left"))
            block = self.usage[lo:hi][:, self.cols] + row[self.cols]  # [k, constrained]
            bad = block > self.limit
            rows_bad = bad.any(axis=1)
            if rows_bad.any():
                k = int(np.argmax(rows_bad))
                at = max(a, float(self.times[lo + k]))
                if worst is None or at < worst.at:
                    col = int(self.cols[int(np.argmax(bad[k]))])
                    worst = self._bottleneck(col, at, row, self.usage[lo + k])
        return Fit(start, worst)

    def _bottleneck(self, col: int, at: float, row: np.ndarray, held: np.ndarray) -> Bottleneck:
        cap = float(self.cap[col])
        return Bottleneck(
            metric=METRICS[col % N],
            side="requests" if col < N else "limits",
            at=at,
            needed=float(row[col]),
            available=max(0.0, cap - float(held[col])),
            capacity=cap,
        )

    def never_fits(self, pieces: Sequence[Piece]) -> Bottleneck | None:
        """The bottleneck when some piece exceeds the capacity of the empty pool, else None."""
        for a, _b, charge in pieces:
            row = charge_array(charge)
            over = row > self.cap * (1 + _TOL) + _TOL
            if over.any():
                return self._bottleneck(int(np.argmax(over)), a, row, np.zeros(WIDTH))
        return None

    def earliest_start(self, pieces: Sequence[Piece], not_before: float) -> float | None:
        """The first start >= ``not_before`` at which the timeline fits (None: never fits)."""
        if self.never_fits(pieces) is not None:
            return None
        if not self.times.size:
            return not_before
        los: list[np.ndarray] = []
        his: list[np.ndarray] = []
        for a, b, charge in pieces:
            if b <= a:
                continue
            row = charge_array(charge)
            bad = ((self.usage[:, self.cols] + row[self.cols]) > self.limit).any(axis=1)  # [K]
            if bad.any():
                idx = np.nonzero(bad)[0]
                los.append(self.times[idx] - b)
                his.append(self.times[idx + 1] - a)
        if not los:
            return not_before
        lo = np.concatenate(los)
        hi = np.concatenate(his)
        order = np.argsort(lo, kind="stable")
        lo, hi = lo[order], hi[order]
        # merge the open intervals into disjoint blocks (running maximum of their ends); s is
        # feasible unless strictly inside a block, and a block's end is never inside the next one
        reach = np.maximum.accumulate(hi)
        new_block = np.ones(lo.size, dtype=bool)
        new_block[1:] = lo[1:] >= reach[:-1] - _TOL
        first = np.nonzero(new_block)[0]
        starts = lo[first]
        ends = reach[np.append(first[1:] - 1, lo.size - 1)]
        s = not_before
        k = int(np.searchsorted(starts, s - _TOL, side="left")) - 1
        if k >= 0 and ends[k] > s + _TOL:
            s = float(ends[k])
        return s

    def points(self, start: float | None = None, end: float | None = None) -> tuple[TimelinePoint, ...]:
        out: list[TimelinePoint] = []
        for k in range(self.usage.shape[0]):
            a, b = float(self.times[k]), float(self.times[k + 1])
            if (end is not None and a >= end) or (start is not None and b <= start):
                continue
            row = self.usage[k]
            out.append(TimelinePoint(a, b, _vector_of(row[:N]), _vector_of(row[N:])))
        return tuple(out)

    def over_capacity(self) -> list[TimelinePoint]:
        """The intervals where the held charge exceeds the capacity (should be none)."""
        if not self.usage.size:
            return []
        bad = [bool(x) for x in np.asarray((self.usage > self.cap * (1 + _TOL) + _TOL).any(axis=1))]
        return [p for p, b in zip(self.points(), bad, strict=True) if b]


def relative_pieces(plan_segments: Iterable[tuple[float, float, Allocation]]) -> list[Piece]:
    """A plan's segments (offsets) turned into charges (requests/limits filled in)."""
    return [(a, b, charge_of(alloc)) for a, b, alloc in plan_segments]
