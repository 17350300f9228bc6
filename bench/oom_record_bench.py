"""How long a retry's planning waits for the stored OOM kill of its earlier try.

Usage: .venv/bin/python bench/oom_record_bench.py [sqlite] [postgresql]
(PostgreSQL: the server of `bash scripts/pg.sh url`, through AIRFLOW_PREDICTIVE_TEST_PG_URL.)

A coordinator with no memory of a task instance's kill (restarted, or the other executor of an HA
pair) reads it with ``DecisionLog.latest(run, kind="oom", before_try=n)`` when it plans try n > 1.
Measured: 300 such reads among 20,000 stored decisions (50 tasks, every tenth an OOM record).
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import insert

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from airflow_predictive.core.model.runs import RunIdentity, TaskKey  # noqa: E402
from airflow_predictive.storage.ledger_store import DecisionLog  # noqa: E402
from airflow_predictive.storage.tables import decision_record  # noqa: E402
from tests._databases import migrated_engine  # noqa: E402

ROWS, READS = 20_000, 300


def main(kinds: list[str]) -> None:
    if "postgresql" in kinds and not os.environ.get("AIRFLOW_PREDICTIVE_TEST_PG_URL"):
        raise SystemExit("set AIRFLOW_PREDICTIVE_TEST_PG_URL=$(bash scripts/pg.sh url)")
    for kind in kinds:
        with migrated_engine(kind, Path(tempfile.mkdtemp(prefix="oom-bench-"))) as engine:
            now = datetime.now(UTC)
            rows = [
                {
                    "at": now, "kind": "oom" if i % 10 == 0 else "plan", "decision": "x", "dag_id": "d",
                    "task_id": f"t{i % 50}", "map_index": -1, "run_id": f"r{i // 50}", "try_number": 1,
                    "pool": "p", "reason": "r", "payload": '{"peak": {}}',
                }
                for i in range(ROWS)
            ]  # fmt: skip
            with engine.begin() as conn:
                conn.execute(insert(decision_record), rows)
            log = DecisionLog(engine)
            took = []
            for i in range(READS):
                run = RunIdentity(TaskKey("d", f"t{i % 50}"), f"r{(i * 7) % (ROWS // 50)}", 2)
                t = time.perf_counter()
                log.latest(run, kind="oom", before_try=2)
                took.append((time.perf_counter() - t) * 1000)
            took.sort()
            p50, p99 = took[READS // 2], took[int(READS * 0.99) - 1]
            print(f"{kind}: DecisionLog.latest p50 {p50:.2f} ms, p99 {p99:.2f} ms ({ROWS:,} decisions)")


if __name__ == "__main__":
    main(sys.argv[1:] or ["sqlite", "postgresql"])
