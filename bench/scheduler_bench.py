"""Scheduler benchmark: per-task planning and admission latency, and ledger throughput.

Usage: .venv/bin/python bench/scheduler_bench.py [--out docs/benchmarks/scheduler.md] [--pg-url URL]

1. Decision latency with 1,000 queued and 200 running tasks (goal: p99 <= 10 ms per task): the
   pool's profile holds 200 running reservations (3-step plans); one admission round places the
   1,000 waiting tasks (1-4 step plans, random priorities) by conservative backfilling, every task
   at its earliest start (lookahead = all 1,000: the worst case; the executor uses 64). Timed per
   task: ``decide_one`` (earliest start, bottleneck, placement); ``plan_from_forecast`` of a
   3-quantile, 360-step, 2-metric forecast; and both together (what the executor spends per task).
2. Ledger throughput: ``SqlLedger`` reserve + release pairs per second with 200 active
   reservations in the pool, on SQLite (file, WAL) and PostgreSQL (one process; four processes
   racing on one pool). Each reserve locks the pool and re-checks every active reservation.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import random
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from airflow_predictive.core.model.backend import Allocation  # noqa: E402
from airflow_predictive.core.model.plan import (  # noqa: E402
    AllocationPlan,
    PlanSource,
    PlanStep,
    Pool,
    PoolCapacity,
    PoolKind,
    ReservationRequest,
)
from airflow_predictive.core.model.resources import GIB, Metric, ResourceVector  # noqa: E402
from airflow_predictive.core.model.runs import RunIdentity, TaskKey  # noqa: E402
from airflow_predictive.core.model.series import DemandCurve, Forecast  # noqa: E402
from airflow_predictive.core.scheduling.admission import (  # noqa: E402
    AdmissionSettings,
    WaitingTask,
    decide_one,
    order,
)
from airflow_predictive.core.scheduling.planner import PlanSettings, plan_from_forecast  # noqa: E402
from airflow_predictive.core.scheduling.profile import Profile, relative_pieces  # noqa: E402

OUT = ROOT / "docs" / "benchmarks" / "scheduler.md"
CAP = PoolCapacity(limits=ResourceVector(memory_bytes=512 * GIB, cpu_cores=128.0))
POOL = Pool("bench", PoolKind.LOCAL, CAP)


def pct(ms: list[float]) -> str:
    a = np.array(ms)
    return f"p50 {np.percentile(a, 50):.3f} ms, p99 {np.percentile(a, 99):.3f} ms, max {a.max():.3f} ms"


def _alloc(gib: float, cpu: float) -> Allocation:
    return Allocation(
        requests=ResourceVector(memory_bytes=gib * GIB, cpu_cores=cpu),
        limits=ResourceVector(memory_bytes=gib * GIB),
    )


def _plan(rng: random.Random, steps: int, duration: float, scale: float = 1.0) -> AllocationPlan:
    at = sorted(rng.uniform(1, duration - 1) for _ in range(steps))
    return AllocationPlan(
        initial=_alloc(scale * rng.uniform(0.5, 4), rng.uniform(0.1, 0.5)),
        steps=tuple(
            PlanStep(a, _alloc(scale * rng.uniform(0.5, 8), rng.uniform(0.1, 0.5)), "bench") for a in at
        ),
        duration_s=duration,
        source=PlanSource.FORECAST,
        why="bench",
    )


def _forecast(rng: random.Random) -> Forecast:
    n = 360
    base = np.cumsum(rng.random() * np.abs(np.random.default_rng(rng.randrange(1 << 30)).normal(0, 1, n))) + 1
    mem = base / base.max() * rng.uniform(1, 8) * GIB
    cpu = np.full(n, rng.uniform(0.5, 4))
    curves = {
        Metric.MEMORY_BYTES: DemandCurve(
            Metric.MEMORY_BYTES, 5.0, {0.5: mem * 0.8, 0.9: mem * 0.95, 0.99: mem}
        ),
        Metric.CPU_CORES: DemandCurve(Metric.CPU_CORES, 5.0, {0.5: cpu * 0.7, 0.9: cpu, 0.99: cpu * 1.3}),
    }
    return Forecast(curves, {0.5: 1500.0, 0.9: 1800.0}, "bench")


def decision_latency(seed: int = 1) -> dict[str, str]:
    rng = random.Random(seed)
    now = 1_000.0
    running = []
    for _ in range(200):  # ~2.2 GiB each on average: the running tasks hold ~85% of the 512 GiB pool
        plan = _plan(rng, 2, rng.uniform(300, 3600), scale=0.5)
        start = now - rng.uniform(0, plan.duration_s * 0.9)
        running.extend((start + a, start + b, c) for a, b, c in relative_pieces(plan.segments()))
    profile = Profile(CAP, running)
    queue = [
        WaitingTask(
            f"t{i}",
            RunIdentity(TaskKey("bench", f"t{i}"), "r"),
            _plan(rng, rng.randint(0, 3), rng.uniform(60, 3600)),
            rng.randint(1, 10),
            now - rng.uniform(0, 600),
        )
        for i in range(1000)
    ]
    settings = AdmissionSettings(lookahead=1000)
    working = profile.copy()
    per_task: list[float] = []
    decisions: dict[str, int] = {}
    t_round = time.perf_counter()
    for task in order(queue, now, settings):
        t0 = time.perf_counter()
        out = decide_one(task, working, now, settings)
        per_task.append((time.perf_counter() - t0) * 1000)
        decisions[out.decision.value] = decisions.get(out.decision.value, 0) + 1
    round_ms = (time.perf_counter() - t_round) * 1000
    planning: list[float] = []
    forecasts = [_forecast(rng) for _ in range(1000)]
    for f in forecasts:
        t0 = time.perf_counter()
        plan_from_forecast(f, declared=ResourceVector(), settings=PlanSettings())
        planning.append((time.perf_counter() - t0) * 1000)
    combined = sorted(a + b for a, b in zip(per_task, planning[: len(per_task)], strict=True))
    return {
        "admission decision per task (1,000 queued, 200 running)": pct(per_task),
        "planning per task (plan_from_forecast, 360 steps x 3 quantiles x 2 metrics)": pct(planning),
        "planning + admission per task": pct(combined),
        "one full admission round (1,000 tasks)": f"{round_ms:.0f} ms",
        "decisions": ", ".join(f"{k} {v}" for k, v in sorted(decisions.items())),
        "profile breakpoints after the round": str(working.times.size),
    }


def _seed(ledger: object, n: int) -> None:
    rng = random.Random(3)
    now = time.time()
    for i in range(n):
        plan = _plan(rng, 2, 3600.0)
        ledger.reserve(  # type: ignore[attr-defined]
            ReservationRequest(
                "bench", RunIdentity(TaskKey("seed", f"s{i}"), "r"), "seed", plan, now, lease_s=7200
            )
        )


def _pairs(url: str, seconds: float, holder: str) -> int:
    from sqlalchemy import create_engine

    from airflow_predictive.storage.ledger_store import SqlLedger

    ledger = SqlLedger(create_engine(url))
    plan = AllocationPlan.flat(_alloc(0.01, 0.01), 60.0, source=PlanSource.DECLARED, why="bench")
    done = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        r = ledger.reserve(
            ReservationRequest("bench", RunIdentity(TaskKey("b", holder), "r"), holder, plan, time.time())
        )
        if r.reservation is not None:
            ledger.release(r.reservation.id)
        done += 1
    return done


def _racer(url: str, seconds: float, holder: str, out: mp.Queue) -> None:  # type: ignore[type-arg]
    out.put(_pairs(url, seconds, holder))


def ledger_throughput(url: str, label: str, procs: int, seconds: float = 10.0) -> str:
    from sqlalchemy import create_engine

    from airflow_predictive.storage import migrate
    from airflow_predictive.storage.ledger_store import SqlLedger

    engine = create_engine(url)
    migrate.upgrade(engine)
    ledger = SqlLedger(engine)
    ledger.set_pool(POOL)
    _seed(ledger, 200)
    if procs == 1:
        n = _pairs(url, seconds, "p0")
    else:
        ctx = mp.get_context("spawn")
        q = ctx.Queue()
        ps = [ctx.Process(target=_racer, args=(url, seconds, f"p{i}", q)) for i in range(procs)]
        for p in ps:
            p.start()
        n = sum(q.get(timeout=seconds + 120) for _ in ps)
        for p in ps:
            p.join()
    engine.dispose()
    return f"{label}: {n / seconds:.0f} reserve+release pairs/s ({procs} process{'es' if procs > 1 else ''}, 200 active)"


def _pg_database(base: str) -> tuple[str, object]:
    from sqlalchemy import create_engine, text

    name = f"bench_{uuid.uuid4().hex[:10]}"
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))

    def drop() -> None:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()

    return base.rsplit("/", 1)[0] + f"/{name}", drop


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=str(OUT))
    ap.add_argument("--pg-url", default=os.environ.get("AIRFLOW_PREDICTIVE_TEST_PG_URL"))
    ap.add_argument("--seconds", type=float, default=10.0)
    args = ap.parse_args()
    lines = [
        "# Scheduler benchmark",
        "",
        f"Command: `.venv/bin/python bench/scheduler_bench.py` (run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
        f"{os.cpu_count()} cores shared with other jobs).",
        "",
        "## Decision latency (goal: p99 <= 10 ms per task)",
        "",
    ]
    for k, v in decision_latency().items():
        lines.append(f"- {k}: {v}")
        print(f"{k}: {v}", flush=True)
    lines += ["", "## Ledger throughput", ""]
    with tempfile.TemporaryDirectory() as tmp:
        text = ledger_throughput(f"sqlite:///{tmp}/ledger.db", "SQLite", 1, args.seconds)
        lines.append(f"- {text}")
        print(text, flush=True)
    if args.pg_url:
        for procs in (1, 4):
            url, drop = _pg_database(args.pg_url)
            try:
                text = ledger_throughput(url, "PostgreSQL", procs, args.seconds)
            finally:
                drop()  # type: ignore[operator]
            lines.append(f"- {text}")
            print(text, flush=True)
    else:
        lines.append("- PostgreSQL: skipped (no --pg-url / AIRFLOW_PREDICTIVE_TEST_PG_URL)")
    rev = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT
    ).stdout.strip()
    lines += [
        "",
        f"Commit {rev}. Reproduce: `.venv/bin/python bench/scheduler_bench.py --pg-url $(bash scripts/pg.sh url)`.",
        "",
    ]
    Path(args.out).write_text("\n".join(lines))


if __name__ == "__main__":
    main()
