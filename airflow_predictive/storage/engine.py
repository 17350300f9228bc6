"""Engines for the provider's database: one per URL per process, safe for SQLite and PostgreSQL."""

from __future__ import annotations

import functools
import math
from typing import TYPE_CHECKING, Any

from sqlalchemy import create_engine, event
from sqlalchemy.exc import OperationalError, ProgrammingError
from sqlalchemy.pool import NullPool

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection, Engine


class StorageUnavailable(RuntimeError):
    """The provider's database cannot be reached or used; callers log and fall back."""


@functools.cache
def engine_for(url: str) -> Engine:
    """A pooled engine for ``url`` (cached: one per URL per process)."""
    kwargs: dict[str, Any] = {"pool_pre_ping": True, "future": True}
    if url.startswith("sqlite"):
        # concurrent writers (sampler, listener, scheduler): wait for the lock instead of failing
        kwargs["connect_args"] = {"timeout": 10, "check_same_thread": False}
    else:
        kwargs["connect_args"] = (
            {"connect_timeout": 5} if "psycopg" in url or url.startswith("postgresql") else {}
        )
    engine = create_engine(url, **kwargs)
    if url.startswith("sqlite"):
        event.listen(engine, "connect", _sqlite_pragmas)
    return engine


@functools.cache
def recording_engine(url: str, timeout_s: float) -> Engine:
    """An engine for recording writes: no pool (no connection held between two flushes, so one
    running task holds at most one connection, and only while it writes) and every wait bounded.

    PostgreSQL: ``connect_timeout`` (libpq counts at least 2 s), ``statement_timeout`` and
    ``lock_timeout`` of ``timeout_s``, so a hung or locked server fails fast. SQLite: a busy
    timeout of ``timeout_s`` on a write lock held by another process.
    """
    ms = max(1, int(timeout_s * 1000))
    kwargs: dict[str, Any] = {"poolclass": NullPool, "future": True}
    if url.startswith("sqlite"):
        kwargs["connect_args"] = {"timeout": timeout_s, "check_same_thread": False}
        engine = create_engine(url, **kwargs)
        event.listen(engine, "connect", functools.partial(_sqlite_pragmas, busy_ms=ms))
        return engine
    if url.startswith("postgresql") or "psycopg" in url:
        kwargs["connect_args"] = {
            "connect_timeout": max(2, math.ceil(timeout_s)),
            "options": f"-c statement_timeout={ms} -c lock_timeout={ms}",
        }
    return create_engine(url, **kwargs)


def _sqlite_pragmas(dbapi_conn: Any, _record: Any, busy_ms: int = 10000) -> None:
    # WAL: readers (scheduler, UI) never block the samplers' writes; the provider's SQLite file is
    # its own (see config.storage_url), so changing its journal mode touches nothing of Airflow's.
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute(f"PRAGMA busy_timeout={int(busy_ms)}")
    try:
        cur.execute("PRAGMA journal_mode=WAL")
    except Exception:  # read-only media: keep the default journal
        pass
    cur.close()


class guarded:
    """Connection context that turns 'database down / schema missing' into StorageUnavailable."""

    def __init__(self, engine: Engine, *, begin: bool) -> None:
        self._engine = engine
        self._begin = begin
        self._cm: Any = None

    def __enter__(self) -> Connection:
        try:
            self._cm = self._engine.begin() if self._begin else self._engine.connect()
            conn: Connection = self._cm.__enter__()
        except OperationalError as exc:
            raise StorageUnavailable(f"predictive database unreachable: {exc.orig}") from exc
        return conn

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self._cm.__exit__(exc_type, exc, tb)
        if isinstance(exc, OperationalError | ProgrammingError):
            text = str(exc.orig)
            hint = (
                " (run `airflow db migrate` or `airflow predictive migrate`)"
                if "no such table" in text or "does not exist" in text
                else ""
            )
            raise StorageUnavailable(f"predictive database error{hint}: {text}") from exc
