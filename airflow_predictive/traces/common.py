"""Shared plumbing of the trace importers: value parsing, the import summary and a bulk writer.

The writer goes around ``SqlRunStore.add_samples`` for speed (a million samples in batches of
executemany inserts) but keeps the store's rules: one record per identity (re-import replaces
the run's samples, so importing twice gives the same database), and no NaN / negative values.
It must never be used on runs recorded live (it only writes ``RunSource.TRACE`` identities).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import bindparam, delete, insert, select, update

from airflow_predictive.core.model.runs import RunRecord, RunSource, TaskKey
from airflow_predictive.storage.tables import resource_sample, task_run

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from sqlalchemy.engine import Connection

    from airflow_predictive.storage.run_store import SqlRunStore

# Values beyond these are not resource readings but corruption (a 2**63 counter, a unit mix-up).
MAX_CORES = 4096.0
MAX_BYTES = 64.0 * 1024**4  # 64 TiB
MAX_DURATION_S = 90.0 * 86400
MIB = 1024.0**2


class TraceFormatError(ValueError):
    """A path that holds no trace layout this package understands (a clear error, not a crash)."""


@dataclass(frozen=True)
class ImportSummary:
    """What an import did: counts per outcome, and why rows were skipped.

    skipped: reason -> number of rows (runs or samples) left out.
    cleaned: reason -> number of single values stored as absent while the row was kept.
    """

    format: str
    runs: int
    samples: int
    tasks: int
    skipped: Mapping[str, int] = field(default_factory=dict)
    cleaned: Mapping[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def skipped_total(self) -> int:
        return sum(self.skipped.values())

    def describe(self) -> str:
        text = f"{self.format}: {self.runs} runs of {self.tasks} tasks, {self.samples} samples"
        if self.skipped:
            text += "; skipped " + ", ".join(f"{n} {why}" for why, n in sorted(self.skipped.items()))
        if self.cleaned:
            text += "; absent values " + ", ".join(f"{n} {why}" for why, n in sorted(self.cleaned.items()))
        return text + f" ({self.seconds:.1f} s)"


def number(raw: Any) -> float | None:
    """A finite float from a CSV cell, or None ('-', '', 'NaN', garbage)."""
    if raw is None:
        return None
    text = str(raw).strip().rstrip("%")
    if not text or text == "-":
        return None
    try:
        v = float(text)
    except ValueError:
        return None
    return v if math.isfinite(v) else None


def non_negative(raw: Any, limit: float) -> float | None:
    v = number(raw)
    return v if v is not None and 0 <= v <= limit else None


def _fast_number(raw: Any) -> float | None:
    """``number`` with a fast path for the plain numbers that make up nearly every sample cell."""
    if isinstance(raw, float):
        return raw if math.isfinite(raw) else None
    if isinstance(raw, str):
        try:
            v = float(raw)
        except ValueError:
            return number(raw)
        return v if math.isfinite(v) else None
    return number(raw)


_SIZE = re.compile(r"^\s*([0-9.]+)\s*([KMGTP]?)(i?)B?\s*$", re.IGNORECASE)
_SIZE_POWER = {"": 0, "K": 1, "M": 2, "G": 3, "T": 4, "P": 5}


def size_bytes(raw: Any) -> float | None:
    """Bytes from '4294967296', '4 GB' or '1.5 GiB' (Nextflow writes both); None when unreadable."""
    v = number(raw)
    if v is None and raw is not None:
        m = _SIZE.match(str(raw))
        if m:
            try:
                v = float(m.group(1)) * 1024.0 ** _SIZE_POWER[m.group(2).upper()]
            except ValueError:
                v = None
    return v if v is not None and 0 <= v <= MAX_BYTES else None


def parse_time(raw: str) -> datetime | None:
    """RFC 3339 with up to nanoseconds ('2023-06-02T00:18:27.090129951Z') -> aware datetime."""
    text = raw.strip()
    if not text:
        return None
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    m = re.match(r"^(.*T\d\d:\d\d:\d\d)(\.\d+)?(.*)$", text)
    if m and m.group(2):
        text = m.group(1) + m.group(2)[:7] + m.group(3)  # Python keeps microseconds
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def epoch_ms(raw: Any) -> datetime | None:
    v = number(raw)
    if v is None or v <= 0:
        return None
    try:
        return datetime.fromtimestamp(v / 1000.0, tz=UTC)
    except (OverflowError, OSError, ValueError):
        return None


def _ident(record: RunRecord) -> tuple[str, str, int, str, int]:
    i = record.identity
    return (i.key.dag_id, i.key.task_id, i.key.map_index, i.run_id, i.try_number)


@dataclass
class _RunStats:
    count: int = 0
    max_t: float = 0.0
    peak_cpu: float | None = None
    peak_mem: float | None = None


class TraceWriter:
    """Writes trace runs and their samples in bulk; ``close()`` sets peaks, counts and ends."""

    BATCH = 20_000

    def __init__(self, store: SqlRunStore) -> None:
        self.store = store
        self.skipped: Counter[str] = Counter()
        self.cleaned: Counter[str] = Counter()
        self._buffer: list[tuple[int, float, float | None, float | None]] = []
        self._stats: dict[int, _RunStats] = {}
        self._starts: dict[int, datetime | None] = {}
        self._ends_known: set[int] = set()
        self._tasks: set[tuple[str, str, int]] = set()
        self.samples = 0

    def add_runs(self, records: Sequence[RunRecord]) -> list[int]:
        """Store runs in one transaction, replacing (samples included) any stored under the same
        identity; returns their keys in order. Re-importing a trace thus never duplicates."""
        if any(r.identity.source is not RunSource.TRACE for r in records):
            raise ValueError("the trace writer only writes RunSource.TRACE runs")
        if not records:
            return []
        t = task_run.c
        dags = sorted({r.key.dag_id for r in records})
        rows = [self.store.row_values(r) for r in records]  # the store's own column mapping
        with self.store.engine.begin() as conn:
            old = self._keys(conn, dags)
            stale = [old[i] for i in (_ident(r) for r in records) if i in old]
            for i in range(0, len(stale), 500):
                chunk = stale[i : i + 500]
                conn.execute(delete(resource_sample).where(resource_sample.c.run_pk.in_(chunk)))
                conn.execute(delete(task_run).where(t.id.in_(chunk)))
            conn.execute(insert(task_run), rows)
            new = self._keys(conn, dags)
        pks = [new[_ident(r)] for r in records]
        for r, pk in zip(records, pks, strict=True):
            self._stats[pk] = _RunStats()
            self._starts[pk] = r.start
            if r.end is not None:
                self._ends_known.add(pk)
            self.note_task(r.key)
        return pks

    @staticmethod
    def _keys(conn: Connection, dags: list[str]) -> dict[tuple[str, str, int, str, int], int]:
        t = task_run.c
        q = select(t.id, t.dag_id, t.task_id, t.map_index, t.run_id, t.try_number).where(
            t.source == RunSource.TRACE.value, t.dag_id.in_(dags)
        )
        return {(r[1], r[2], int(r[3]), r[4], int(r[5])): int(r[0]) for r in conn.execute(q)}

    def add_sample(self, run_pk: int, t_s: Any, cpu_cores: Any, memory_bytes: Any) -> bool:
        """Buffer one reading; a row without a usable time or any usable value is skipped."""
        t = _fast_number(t_s)
        if t is None or t < 0 or t > MAX_DURATION_S:
            self.skipped["samples with a bad time"] += 1
            return False
        cpu = _fast_number(cpu_cores)
        if cpu is not None and not 0 <= cpu <= MAX_CORES:
            cpu = None
        mem = _fast_number(memory_bytes)
        if mem is not None and not 0 <= mem <= MAX_BYTES:
            mem = None
        if cpu is None and cpu_cores is not None and str(cpu_cores).strip() not in ("", "-"):
            self.cleaned["bad cpu values"] += 1
        if mem is None and memory_bytes is not None and str(memory_bytes).strip() not in ("", "-"):
            self.cleaned["bad memory values"] += 1
        if cpu is None and mem is None:
            self.skipped["samples without a valid value"] += 1
            return False
        stats = self._stats[run_pk]
        stats.count += 1
        stats.max_t = max(stats.max_t, t)
        if cpu is not None:
            stats.peak_cpu = cpu if stats.peak_cpu is None else max(stats.peak_cpu, cpu)
        if mem is not None:
            stats.peak_mem = mem if stats.peak_mem is None else max(stats.peak_mem, mem)
        self._buffer.append((run_pk, t, cpu, mem))
        if len(self._buffer) >= self.BATCH:
            self.flush()
        return True

    def flush(self) -> None:
        """Write the buffered samples with one DBAPI executemany of plain tuples (building a dict
        and compiling parameters per row through the ORM layer cost most of an import's time)."""
        if not self._buffer:
            return
        with self.store.engine.begin() as conn:
            mark = "?" if conn.dialect.paramstyle == "qmark" else "%s"
            sql = (
                f"INSERT INTO {resource_sample.name} (run_pk, t_s, cpu_cores, memory_bytes) "
                f"VALUES ({', '.join([mark] * 4)})"
            )
            conn.exec_driver_sql(sql, self._buffer)
        self.samples += len(self._buffer)
        self._buffer = []

    def close(self, *, sample_interval_s: float | None = None) -> int:
        """Flush, then write per-run sample counts, peaks and missing ends; returns runs written."""
        self.flush()
        rows = []
        for pk, st in self._stats.items():
            if st.count == 0:
                continue
            start = self._starts.get(pk)
            end = None
            if pk not in self._ends_known and start is not None:
                end = start + timedelta(seconds=st.max_t)
            rows.append(
                {
                    "pk": pk,
                    "n": st.count,
                    "pc": st.peak_cpu,
                    "pm": st.peak_mem,
                    "si": sample_interval_s
                    if sample_interval_s is not None
                    else (st.max_t / (st.count - 1) if st.count > 1 else None),
                }
            )
            if end is not None:
                with self.store.engine.begin() as conn:
                    conn.execute(
                        update(task_run).where(task_run.c.id == pk).values(end_date=end, duration_s=st.max_t)
                    )
        if rows:
            stmt = (
                update(task_run)
                .where(task_run.c.id == bindparam("pk"))
                .values(
                    n_samples=bindparam("n"),
                    peak_cpu_cores=bindparam("pc"),
                    peak_memory_bytes=bindparam("pm"),
                    sample_interval_s=bindparam("si"),
                )
            )
            with self.store.engine.begin() as conn:
                conn.execute(stmt, rows)
        return len(self._stats)

    def note_task(self, key: TaskKey) -> None:
        self._tasks.add((key.dag_id, key.task_id, key.map_index))

    @property
    def tasks(self) -> int:
        return len(self._tasks)
