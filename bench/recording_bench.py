"""Recording's cost and capacity (issue 8, items 2 and 3): `python bench/recording_bench.py`.

1. Added latency of the listener's start and end hooks, as the task sees them (real hooks, a
   real sidecar spawned per call), with a healthy database (SQLite, PostgreSQL) and with one that
   is down (refused port), hung (accepts TCP, never answers) or locked (another session holds
   ACCESS EXCLUSIVE on predictive_task_run). Also the server-side hook (ORM TaskInstance, as in
   the scheduler) with a hung database.
2. PostgreSQL connections: a throw-away cluster with max_connections = 100 (default), N
   concurrent sampled tasks whose sidecars flush every 5 s through the recorder's engine (no
   pool: one connection per flush, closed after it). Run as threads of this process, with the
   sidecar's own SqlRunStore calls (begin_leg once, add_samples per flush), plus a check with real
   sidecar processes; a "scheduler" probe connects every 0.25 s meanwhile and counts refusals.

Writes docs/benchmarks/recording.md. Needs PostgreSQL binaries (scripts/pg.sh).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from sqlalchemy import create_engine, text  # noqa: E402

from airflow_predictive import config  # noqa: E402
from airflow_predictive.core.model.resources import ResourceVector  # noqa: E402
from airflow_predictive.core.model.runs import RunIdentity, RunRecord, TaskKey  # noqa: E402
from airflow_predictive.core.model.series import ResourceSample  # noqa: E402
from airflow_predictive.listeners import run_recorder  # noqa: E402
from airflow_predictive.storage import migrate  # noqa: E402
from airflow_predictive.storage.engine import engine_for, recording_engine  # noqa: E402
from airflow_predictive.storage.run_store import SqlRunStore  # noqa: E402
from tests.faulty_db import HungServer, refused_url, table_lock  # noqa: E402

REPORT = REPO / "docs" / "benchmarks" / "recording.md"
PG_PORT = 55497
PG_DIR = f"/tmp/recording-bench-pg-{PG_PORT}"


class RuntimeTaskInstance(SimpleNamespace):
    """Class name the listener recognises as a task process's instance."""


class TaskInstance(SimpleNamespace):
    """Class name of the ORM model (scheduler / API server side)."""


def _ti(run_id: str) -> RuntimeTaskInstance:
    task = SimpleNamespace(
        executor_config={}, resources=None, pool="default_pool", queue="default", params={}
    )
    return RuntimeTaskInstance(
        dag_id="bench", task_id="t", run_id=run_id, map_index=-1, try_number=1, task=task,
        start_date=None, get_template_context=lambda: {"params": {}}, state=None,
    )  # fmt: skip


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


@dataclass
class HookTimes:
    scenario: str
    start_ms: list[float] = field(default_factory=list)
    end_ms: list[float] = field(default_factory=list)
    breaker_tripped: bool = False


def measure_hooks(scenario: str, url: str, n: int) -> HookTimes:
    os.environ["AIRFLOW__PREDICTIVE__SQL_ALCHEMY_CONN"] = url
    os.environ["AIRFLOW__PREDICTIVE__GPU_METRICS"] = "off"
    config.reset_cache()
    run_recorder.breaker.reset()
    out = HookTimes(scenario)
    sidecars = []
    for i in range(n):
        ti = _ti(f"{scenario}-{i}-{time.time_ns()}")
        t0 = time.perf_counter()
        run_recorder.on_task_instance_running(None, ti)
        t1 = time.perf_counter()
        active = run_recorder._active.get(run_recorder._ti_key(ti))
        if active is not None and active.recorder is not None:
            sidecars.append(active.recorder.process)
        time.sleep(0.05)
        t2 = time.perf_counter()
        run_recorder.on_task_instance_success(None, ti)
        t3 = time.perf_counter()
        out.start_ms.append((t1 - t0) * 1000)
        out.end_ms.append((t3 - t2) * 1000)
        time.sleep(0.15)  # let the machine breathe: a real task runs longer than this
    out.breaker_tripped = run_recorder.breaker.open
    for proc in sidecars:  # healthy: they finish alone; faulty: they would retry for minutes
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(20 if "healthy" in scenario else 0.01)
        if proc.poll() is None:
            proc.terminate()
    for proc in sidecars:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(30)
    return out


def measure_server_hook(url: str, n: int) -> list[float]:
    os.environ["AIRFLOW__PREDICTIVE__SQL_ALCHEMY_CONN"] = url
    config.reset_cache()
    times = []
    for i in range(n):
        ti = TaskInstance(dag_id="bench", task_id="t", run_id=f"srv-{i}", map_index=-1, try_number=1)
        t0 = time.perf_counter()
        run_recorder.on_task_instance_failed(None, ti, RuntimeError("zombie"))
        times.append((time.perf_counter() - t0) * 1000)
    return times


# -- PostgreSQL capacity ---------------------------------------------------------------------------


def pg_cluster(action: str) -> None:
    env = {
        **os.environ,
        "AIRFLOW_PREDICTIVE_TEST_PG_PORT": str(PG_PORT),
        "AIRFLOW_PREDICTIVE_TEST_PG_DIR": PG_DIR,
    }
    subprocess.run(
        ["bash", str(REPO / "scripts" / "pg.sh"), action], env=env, check=True, capture_output=True
    )


@dataclass
class Capacity:
    tasks: int
    mode: str
    flushes: int = 0
    failures: int = 0
    refused: int = 0
    max_connections_seen: int = 0
    probe_ok: int = 0
    probe_failed: int = 0
    errors: set[str] = field(default_factory=set)


def _watch(url: str, stop: threading.Event, cap: Capacity) -> None:
    engine = create_engine(url, pool_size=1, max_overflow=0)
    with engine.connect() as conn:  # holds one connection for the whole run (like a monitor)
        while not stop.is_set():
            n = conn.execute(
                text("SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'")
            ).scalar()
            cap.max_connections_seen = max(cap.max_connections_seen, int(n or 0))
            conn.commit()
            stop.wait(0.05)
    engine.dispose()


def _probe(url: str, stop: threading.Event, cap: Capacity) -> None:
    """The scheduler: a fresh connection every 0.25 s must always succeed."""
    engine = create_engine(url, poolclass=__import__("sqlalchemy.pool", fromlist=["NullPool"]).NullPool)
    while not stop.is_set():
        try:
            with engine.connect() as conn:
                conn.execute(text("SELECT 1"))
            cap.probe_ok += 1
        except Exception as exc:
            cap.probe_failed += 1
            cap.errors.add(str(exc).splitlines()[0][:120])
        stop.wait(0.25)


def capacity_threads(url: str, tasks: int, duration: float, flush_s: float = 5.0) -> Capacity:
    cap = Capacity(tasks, "threads (sidecar write pattern)")
    store = SqlRunStore(recording_engine(url, 1.0))
    stop = threading.Event()
    lock = threading.Lock()
    helpers = [threading.Thread(target=f, args=(url, stop, cap), daemon=True) for f in (_watch, _probe)]
    for h in helpers:
        h.start()

    def sidecar(i: int) -> None:
        record = RunRecord(RunIdentity(TaskKey("capacity", f"t{i}"), f"r{tasks}"), start=datetime.now(UTC))
        run_pk = None
        stop.wait((i % 50) / 50 * flush_s)  # tasks start spread over one flush period
        t = 0.0
        while not stop.is_set():
            try:
                if run_pk is None:
                    run_pk = store.begin_leg(record).run_pk
                batch = [
                    ResourceSample(t + k, ResourceVector(memory_bytes=1e8, cpu_cores=0.5)) for k in range(5)
                ]
                store.add_samples(run_pk, batch)
                t += 5
                with lock:
                    cap.flushes += 1
            except Exception as exc:
                with lock:
                    cap.failures += 1
                    msg = str(exc)
                    if "too many clients" in msg or "remaining connection slots" in msg:
                        cap.refused += 1
                    cap.errors.add(msg.splitlines()[0][:120])
            stop.wait(flush_s)

    threads = [threading.Thread(target=sidecar, args=(i,), daemon=True) for i in range(tasks)]
    for th in threads:
        th.start()
    time.sleep(duration)
    stop.set()
    for th in [*threads, *helpers]:
        th.join(30)
    return cap


def capacity_processes(url: str, tasks: int, duration: float) -> Capacity:
    """Real sidecars (the listener's launch_recorder) sampling sleeper processes."""
    from airflow_predictive.core.model.runs import Outcome
    from airflow_predictive.sampling.launcher import launch_recorder

    cap = Capacity(tasks, "real sidecar processes")
    stop = threading.Event()
    helpers = [threading.Thread(target=f, args=(url, stop, cap), daemon=True) for f in (_watch, _probe)]
    for h in helpers:
        h.start()
    sleepers = [
        subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"]) for _ in range(tasks)
    ]
    handles = []
    for i, s in enumerate(sleepers):
        record = RunRecord(RunIdentity(TaskKey("capacity-proc", f"t{i}"), "r"), start=datetime.now(UTC))
        handles.append(launch_recorder(record, s.pid, url, interval=1.0, flush=5.0, gpu="off", catch_up=60))
    time.sleep(duration)
    for h in handles:
        if h is not None:
            h.end(Outcome.SUCCESS, datetime.now(UTC), 0, None)
    for h in handles:
        if h is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                h.process.wait(120)
    stop.set()
    for s in sleepers:
        s.kill()
        s.wait()
    for h in helpers:
        h.join(30)
    store = SqlRunStore(engine_for(url))
    runs = store.runs()
    cap.flushes = sum(r.n_samples for r in runs if r.identity.key.dag_id == "capacity-proc")
    cap.failures = sum(
        1 for r in runs if r.identity.key.dag_id == "capacity-proc" and r.outcome.value != "success"
    )
    logs = [h.log_path.read_text(errors="replace") for h in handles if h is not None]
    cap.refused = sum(text_.count("too many clients") for text_ in logs)
    return cap


# -- report ------------------------------------------------------------------------------------------


def _row(h: HookTimes) -> str:
    return (
        f"| {h.scenario} | {len(h.start_ms)} | {pct(h.start_ms, 0.5):.1f} | {pct(h.start_ms, 0.99):.1f} | "
        f"{pct(h.end_ms, 0.5):.2f} | {pct(h.end_ms, 0.99):.2f} | {'yes' if h.breaker_tripped else 'no'} |"
    )


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=40, help="hook calls per scenario")
    ap.add_argument("--duration", type=float, default=30.0, help="seconds per capacity step")
    ap.add_argument("--tasks", default="50,100,200,400,800", help="concurrent sampled tasks (threads)")
    ap.add_argument("--processes", type=int, default=40, help="real sidecars in the process check")
    args = ap.parse_args()
    pg_admin = (
        os.environ.get("AIRFLOW_PREDICTIVE_TEST_PG_URL")
        or subprocess.run(
            ["bash", str(REPO / "scripts" / "pg.sh"), "url"], capture_output=True, text=True, check=True
        ).stdout.strip()
    )
    tmp = Path("/tmp/recording-bench")
    tmp.mkdir(exist_ok=True)
    sqlite_url = f"sqlite:///{tmp}/predictive-{os.getpid()}.db"
    migrate.upgrade(engine_for(sqlite_url))
    admin = create_engine(pg_admin, isolation_level="AUTOCOMMIT")
    name = f"recording_bench_{os.getpid()}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    pg_url = pg_admin.rsplit("/", 1)[0] + f"/{name}"
    migrate.upgrade(engine_for(pg_url))
    hung = HungServer()
    results: list[HookTimes] = []
    try:
        results.append(measure_hooks("healthy SQLite", sqlite_url, args.n))
        results.append(measure_hooks("healthy PostgreSQL", pg_url, args.n))
        results.append(measure_hooks("down (refused port)", refused_url(), args.n))
        results.append(measure_hooks("hung (accepts, never answers)", hung.url, args.n))
        with table_lock(pg_url):
            results.append(measure_hooks("locked (ACCESS EXCLUSIVE on predictive_task_run)", pg_url, args.n))
        server = measure_server_hook(hung.url, 200)
        for r in results:
            print(_row(r), flush=True)
        print(f"server-side hook, hung DB: p50 {pct(server, 0.5):.3f} ms p99 {pct(server, 0.99):.3f} ms")
    finally:
        hung.close()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    # capacity on a throw-away cluster with the default max_connections = 100
    pg_cluster("start")
    caps: list[Capacity] = []
    try:
        cap_url = f"postgresql+psycopg2://postgres@127.0.0.1:{PG_PORT}/predictive_test"
        with create_engine(cap_url).connect() as conn:
            max_conn = conn.execute(text("SHOW max_connections")).scalar()
        migrate.upgrade(engine_for(cap_url))
        for n in [int(x) for x in args.tasks.split(",") if x]:
            cap = capacity_threads(cap_url, n, args.duration)
            caps.append(cap)
            print(cap, flush=True)
        if args.processes:
            cap = capacity_processes(cap_url, args.processes, args.duration)
            caps.append(cap)
            print(cap, flush=True)
    finally:
        engine_for.cache_clear()
        pg_cluster("stop")
    write_report(results, server, caps, str(max_conn), args)
    return 0


def write_report(
    results: list[HookTimes], server: list[float], caps: list[Capacity], max_conn: str, args: Any
) -> None:
    lines = [
        "# Recording: added latency and PostgreSQL connections",
        "",
        "Reproduce: `python bench/recording_bench.py` (part of `make bench`; "
        f"this run: `--n {args.n} --duration {args.duration:g} --tasks {args.tasks} --processes {args.processes}`). "
        f"Machine: {os.cpu_count()} cores shared with other jobs; written {datetime.now(UTC):%Y-%m-%d %H:%M} UTC.",
        "",
        "## Listener hooks as the task sees them (ms)",
        "",
        "Each call is the real hook with a task-process TaskInstance: the start hook builds the record, "
        "spawns the sampler sidecar and writes the START line; the end hook writes the END line. "
        "Neither touches the database (the sidecar does, outside the task path), so the figures do not "
        "depend on the database's health. `record_budget` = 1 s.",
        "",
        "| database | calls | start p50 | start p99 | end p50 | end p99 | breaker tripped |",
        "|---|---|---|---|---|---|---|",
        *(_row(r) for r in results),
        "",
        f"Server-side hook (`on_task_instance_failed` with an ORM TaskInstance, as in the scheduler), hung "
        f"database, {len(server)} calls: p50 {pct(server, 0.5):.3f} ms, p99 {pct(server, 0.99):.3f} ms, "
        f"max {max(server):.3f} ms (the write goes to the bounded background queue).",
        "",
        f"## PostgreSQL connections (max_connections = {max_conn})",
        "",
        "Sampled tasks flush every 5 s through the recorder's engine (NullPool: one connection per flush, "
        f"closed after it), for {args.duration:g} s per step, starts spread over one flush period. A "
        "scheduler probe opens a fresh connection every 0.25 s throughout.",
        "",
        "| concurrent tasks | how | flushes | failed | refused (too many clients) | max client connections seen | scheduler probe ok / failed |",
        "|---|---|---|---|---|---|---|",
        *(
            f"| {c.tasks} | {c.mode} | {c.flushes} | {c.failures} | {c.refused} | {c.max_connections_seen} | "
            f"{c.probe_ok} / {c.probe_failed} |"
            for c in caps
        ),
        "",
        "(process check: 'flushes' is the number of samples written, 'failed' the runs not recorded as success.)",
        "",
    ]
    errors = sorted({e for c in caps for e in c.errors})
    if errors:
        lines += ["Errors seen:", "", *(f"- `{e}`" for e in errors[:10]), ""]
    notes = ""
    if REPORT.exists() and "\n## Notes" in REPORT.read_text():  # hand-written: kept across runs
        notes = REPORT.read_text()[REPORT.read_text().index("\n## Notes") :]
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    REPORT.write_text("\n".join(lines) + notes)
    print(f"wrote {REPORT}")


if __name__ == "__main__":
    sys.exit(main())
