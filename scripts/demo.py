"""`make demo`: the whole story on the embedded default (SQLite + PredictiveLocalExecutor + cgroups).

Airflow 3.3 in ./.demo/airflow-home, tasks run by the PredictiveLocalExecutor through the API
server's execution API, as in a deployment:

1. history: three input sizes of `predictive_shapes` and one `predictive_etl` run, recorded by
   the provider's listener and sampler sidecars (planned from what the authors declared: no
   history yet);
2. training: `airflow predictive train` backtests the forecasters and keeps a champion per task;
3. prediction: `airflow predictive plan` shows the plan of the next try, then `predictive_shapes`
   runs on a new input size with every task sized from its forecast;
4. a cold start: `predictive_story`, whose author declared 128Mi for a 256 MiB load, gets a 3 s
   shadow run (a setup task: its re-forecast raises the plan only when the shadow's prefix already
   exceeds the declaration, which a slow ramp's first 3 s do not) and is shaped while it runs;
5. predicted against actual against declared, per task, and the shaping events;
6. the API server with the UI plugin, its URL and login, until Ctrl-C (``DEMO_SERVE_SECONDS``
   bounds it; 0 stops at once).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.integration.airflow_runs.airflow_env import AirflowEnv  # noqa: E402

EXECUTOR = "airflow_predictive.executors.local_executor.PredictiveLocalExecutor"
HISTORY: list[tuple[str, dict[str, object]]] = [
    ("predictive_shapes", {"input_mb": 128, "cpu_seconds": 3}),
    ("predictive_shapes", {"input_mb": 384, "cpu_seconds": 5}),
    ("predictive_shapes", {"input_mb": 768, "cpu_seconds": 4}),
    ("predictive_etl", {"input_mb": 512, "cpu_seconds": 4}),
]
PREDICTED: tuple[str, dict[str, object]] = ("predictive_shapes", {"input_mb": 512, "cpu_seconds": 4})
STORY: tuple[str, dict[str, object]] = ("predictive_story", {"input_mb": 256})
SHOWN = [
    ("predictive_shapes", "memory_ramp"),
    ("predictive_shapes", "cpu_phases"),
    ("predictive_etl", "transform"),
]
MIB = 1024 * 1024


def _mib(value: float | None) -> str:
    return "-" if value is None else f"{value / MIB:,.0f} MiB"


def _run(env: AirflowEnv, dag_id: str, conf: dict[str, object]) -> bool:
    t0 = time.monotonic()
    out = env.dags_test(dag_id, conf)
    ok = out.returncode == 0 and "state=success" in out.stdout + out.stderr
    print(f"   {dag_id} {json.dumps(conf)}: {'ok' if ok else 'FAILED'} in {time.monotonic() - t0:.0f} s")
    if not ok:
        print((out.stdout + out.stderr)[-3000:])
    return ok


def _cli(env: AirflowEnv, *args: str) -> None:
    out = env.airflow("predictive", *args)
    print("\n".join("   " + line for line in (out.stdout.rstrip() or out.stderr[-2000:]).splitlines()))


def _report(env: AirflowEnv) -> None:
    """Declared, planned and actual memory of the latest try of each task, from the stores."""
    from airflow_predictive.core.model.runs import RunSource, TaskKey
    from airflow_predictive.storage.engine import engine_for
    from airflow_predictive.storage.ledger_store import DecisionLog
    from airflow_predictive.storage.run_store import SqlRunStore

    engine = engine_for(env.predictive_url)
    store, log = SqlRunStore(engine), DecisionLog(engine)
    rows = [("task", "declared", "planned", "actual peak", "planned from", "outcome")]
    for dag_id, task_id in [*SHOWN, ("predictive_story", "load")]:
        key = TaskKey(dag_id, task_id)
        runs = [r for r in store.runs(key) if r.identity.source is RunSource.LISTENER]
        if not runs:
            rows.append((f"{dag_id}.{task_id}", "-", "-", "-", "not recorded", "-"))
            continue
        last = max(runs, key=lambda r: (r.start or r.end, r.identity.try_number))  # type: ignore[arg-type, return-value]
        plan = next(
            (
                d["payload"]["plan"]
                for d in log.recent(key, limit=50)
                if d["kind"] == "plan"
                and d["run_id"] == last.identity.run_id
                and d["try_number"] == last.identity.try_number
                and d["payload"]
                and "plan" in d["payload"]
            ),
            None,
        )
        planned = plan["initial"]["limits"].get("memory_bytes") if plan else None
        rows.append(
            (
                f"{dag_id}.{task_id} (try {last.identity.try_number})",
                _mib(last.declared.memory_bytes),
                _mib(planned),
                _mib(last.peak.memory_bytes),
                (plan or {}).get("source", "-"),
                last.outcome.value,
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("   " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)))
    from sqlalchemy import text

    with engine.connect() as conn:
        events = conn.execute(
            text(
                "SELECT metric || ' ' || action || ' ' || verdict, COUNT(*) FROM predictive_shaping_event "
                "WHERE run_key LIKE :k GROUP BY metric, action, verdict"
            ),
            {"k": "%predictive_story%"},
        ).fetchall()
    print(f"   shaping events of predictive_story: {dict(events) if events else 'none'}")
    engine.dispose()


def _serve(env: AirflowEnv) -> None:
    seconds = float(os.environ.get("DEMO_SERVE_SECONDS", "86400"))
    password_file = env.home / "simple_auth_manager_passwords.json.generated"
    try:
        password = json.loads(password_file.read_text()).get("admin", "?")
    except (OSError, ValueError):
        password = f"(see {password_file})"
    print(
        f"\n== 6. the UI: http://127.0.0.1:{env.port}/predictive/  (in Airflow: Browse > Predictive resources)"
    )
    print(f"   login: admin / {password}")
    if seconds <= 0:
        return
    print("   serving until Ctrl-C" + (f" or {seconds:.0f} s" if seconds < 86400 else ""))
    try:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and env.api is not None and env.api.poll() is None:
            time.sleep(1.0)
    except KeyboardInterrupt:
        print()


def main() -> int:
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]  # progress shows under a pipe too
    home = REPO / ".demo" / "airflow-home"
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    env = AirflowEnv.create(
        home,
        {
            "AIRFLOW__CORE__EXECUTOR": EXECUTOR,
            "AIRFLOW__CORE__AUTH_MANAGER": (
                "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
            ),
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
        },
    )
    print(f"== Airflow home: {home}  (executor: PredictiveLocalExecutor, store: {env.predictive_url})")
    env.migrate()
    env.start_api_server()
    try:
        print("\n== 1. history: the tasks run as declared, the listener records every try's curve")
        for dag_id, conf in HISTORY:
            if not _run(env, dag_id, conf):
                return 1
        print("\n== 2. airflow predictive train (backtest per task, keep the champion, precompute forecasts)")
        _cli(env, "train", "--candidates", "last_run,median_peak,linear_input")
        print("\n== 3. airflow predictive plan predictive_shapes memory_ramp --param input_mb=512")
        _cli(env, "plan", "predictive_shapes", "memory_ramp", "--param", "input_mb=512")
        print("   ... and the run, every task sized from its forecast:")
        if not _run(env, *PREDICTED):
            return 1
        print("\n== 4. a cold start: predictive_story declares 128Mi for a 256 MiB load; a 3 s shadow run")
        print("   checks it first (its prefix stays under 128Mi: the plan stays declared), and the shaper")
        print("   grows it while it runs")
        story_ok = _run(env, *STORY)
        print("\n== 5. declared, planned and actual memory (latest try of each task)")
        _report(env)
        for dag_id, task_id in [("predictive_shapes", "memory_ramp"), ("predictive_story", "load")]:
            print(f"\n== airflow predictive history {dag_id} {task_id}")
            _cli(env, "history", dag_id, task_id, "--limit", "3")
        _serve(env)
        return 0 if story_ok else 1
    finally:
        env.stop()


if __name__ == "__main__":
    sys.exit(main())
