"""`airflow predictive upkeep [--older-than S]`: close runs a crash left RUNNING.

A try whose task process and sampler both died (a node lost, a SIGKILL of the whole session)
never gets an end: it would stay RUNNING for ever and look like a try still in flight. Upkeep
closes those whose current leg started more than ``--older-than`` seconds ago as UNKNOWN with a
note; tries waiting between legs (deferred, rescheduled) are left alone unless
``--waiting-older-than`` is given. The maintenance DAG runs it every hour.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from airflow_predictive.runtime import get_runtime


def upkeep(store: Any, older_than_s: float, waiting_older_than_s: float | None = None) -> list[int]:
    now = datetime.now(UTC)
    waiting = None if waiting_older_than_s is None else now - timedelta(seconds=waiting_older_than_s)
    closed: list[int] = store.close_stale(now - timedelta(seconds=older_than_s), waiting_before=waiting)
    return closed


def run(args: Any) -> None:
    older = float(getattr(args, "older_than", 3600.0))
    waiting = getattr(args, "waiting_older_than", None)
    if older < 0 or (waiting is not None and waiting < 0):
        raise SystemExit("--older-than / --waiting-older-than must be >= 0")
    closed = upkeep(get_runtime().run_store(), older, waiting)
    print(f"closed {len(closed)} run(s) left RUNNING: {', '.join(map(str, closed)) or '-'}")
