"""Retraining in one process vs fanned out as mapped Airflow tasks (the maintenance DAG).

Usage: .venv/bin/python bench/training_fanout.py [--tasks 200] [--runs 12] [--shard-size 50]
           [--parallelism 2] [--lstm] [--out docs/benchmarks/training_fanout.md]

A synthetic history (``tests/unit/training/fanout_history.py``: four kinds of tasks, ``--runs``
runs each) is imported three times into throw-away SQLite stores and retrained:
1. in one process (``maintenance.retrain``, what `airflow predictive train` and the old DAG ran);
2. the fan-out's steps one after the other in one process (their cost, and what is serial);
3. through a real Airflow: `airflow dags test predictive_maintenance --use-executor`
   (LocalExecutor, API server, ``[core] parallelism`` = ``--parallelism``), timed as a whole and
   per task instance (from Airflow's own task_instance rows).
Champions must be the same in all three (the run fails otherwise). ``--lstm`` adds the LSTM
(default settings) to the candidates: the global model's cost shows in ``train_global``.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import sqlite3
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from airflow_predictive.storage.engine import engine_for  # noqa: E402
from airflow_predictive.storage.migrate import upgrade  # noqa: E402
from airflow_predictive.storage.run_store import SqlRunStore  # noqa: E402
from airflow_predictive.traces import import_traces  # noqa: E402
from airflow_predictive.training import fanout  # noqa: E402
from airflow_predictive.training.maintenance import retrain  # noqa: E402
from tests.integration.airflow_runs.airflow_env import AirflowEnv  # noqa: E402
from tests.unit.training.fanout_history import write_history  # noqa: E402

OUT = ROOT / "docs" / "benchmarks" / "training_fanout.md"
STATISTICAL = ("scaled_curve", "last_run", "median_peak", "linear_input", "vpa", "autopilot")
log = logging.getLogger("training_fanout")


def _store(path: Path, trace: Path):  # type: ignore[no-untyped-def]
    engine = engine_for(f"sqlite:///{path}")
    upgrade(engine)
    import_traces(trace, SqlRunStore(engine))
    return engine


def _champions(engine) -> dict[str, str | None]:  # type: ignore[no-untyped-def]
    from airflow_predictive.storage.profile_store import ProfileStore

    return {str(p.key): p.champion for p in ProfileStore(engine).profiles()}


def one_process(work: Path, trace: Path, candidates: tuple[str, ...]) -> tuple[float, dict[str, str | None]]:
    engine = _store(work / "one.db", trace)
    began = time.monotonic()
    result = retrain(engine, model_dir=str(work / "models-one"), candidates=candidates, min_new_runs=3)
    assert result is not None
    return time.monotonic() - began, _champions(engine)


def steps_in_process(
    work: Path, trace: Path, candidates: tuple[str, ...], shard_size: int
) -> tuple[dict[str, float], list[float], dict[str, str | None]]:
    engine = _store(work / "steps.db", trace)
    times: dict[str, float] = {}
    began = time.monotonic()
    plan = fanout.make_plan(
        engine, work / "models-steps", "bench", candidates=candidates, shard_size=shard_size
    )
    assert plan is not None
    times["plan_retraining"] = time.monotonic() - began
    began = time.monotonic()
    versions = fanout.train_global(engine, plan)
    times["train_global_models"] = time.monotonic() - began
    shards = []
    for i in range(len(plan.shards)):
        began = time.monotonic()
        fanout.backtest_shard(engine, plan, i, versions)
        shards.append(time.monotonic() - began)
    began = time.monotonic()
    fanout.select_and_store(engine, plan, versions)
    times["select_and_store"] = time.monotonic() - began
    fanout.clean_up(plan)
    return times, shards, _champions(engine)


def airflow_run(
    work: Path, trace: Path, candidates: tuple[str, ...], shard_size: int, parallelism: int
) -> tuple[float, list[tuple[str, int, float, float]], dict[str, str | None]]:
    home = work / "airflow-home"
    env = AirflowEnv.create(
        home,
        {
            "AIRFLOW__CORE__PARALLELISM": str(parallelism),
            "AIRFLOW__PREDICTIVE__MODEL_DIR": str(home / "models"),
            "AIRFLOW__PREDICTIVE__TRAINING_SHARD_SIZE": str(shard_size),
            "AIRFLOW__PREDICTIVE__TRAINING_CANDIDATES": ",".join(candidates),
            "AIRFLOW__PREDICTIVE__RECORD_ALL_TASKS": "False",
        },
    )
    env.migrate()
    engine = engine_for(env.predictive_url)
    import_traces(trace, SqlRunStore(engine))
    env.start_api_server()
    try:
        began = time.monotonic()
        out = env.dags_test("predictive_maintenance", {}, timeout=3600)
        wall = time.monotonic() - began
        if out.returncode != 0:
            raise SystemExit(f"dags test failed:\n{(out.stdout + out.stderr)[-4000:]}")
    finally:
        env.stop()
    with sqlite3.connect(home / "airflow.db") as conn:
        rows = conn.execute(
            "SELECT DISTINCT task_id, map_index, start_date, end_date FROM task_instance"
            " WHERE dag_id = 'predictive_maintenance' AND start_date IS NOT NULL ORDER BY start_date"
        ).fetchall()
    first = min(datetime.fromisoformat(r[2]) for r in rows)
    spans = [
        (
            t,
            m,
            (datetime.fromisoformat(s) - first).total_seconds(),
            (datetime.fromisoformat(e) - first).total_seconds(),
        )
        for t, m, s, e in rows
    ]
    return wall, spans, _champions(engine)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tasks", type=int, default=200)
    parser.add_argument("--runs", type=int, default=12)
    parser.add_argument("--shard-size", type=int, default=50)
    parser.add_argument("--parallelism", type=int, default=2)
    parser.add_argument("--lstm", action="store_true")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    candidates = (*STATISTICAL, "lstm") if args.lstm else STATISTICAL
    with tempfile.TemporaryDirectory(prefix="training-fanout-") as tmp:
        work = Path(tmp)
        trace = write_history(work / "trace", tasks=args.tasks, runs_per_task=args.runs)
        (work / "warm").mkdir()  # imports and first calls paid before anything is timed
        one_process(
            work / "warm", write_history(work / "warm" / "trace", tasks=4, runs_per_task=6), candidates
        )
        one_s, one_champions = one_process(work, trace, candidates)
        print(f"one process: {one_s:.1f} s", flush=True)
        steps, shards, step_champions = steps_in_process(work, trace, candidates, args.shard_size)
        print(f"steps: {steps} shards: {[round(s, 1) for s in shards]}", flush=True)
        wall, spans, af_champions = airflow_run(work, trace, candidates, args.shard_size, args.parallelism)
        print(f"airflow: {wall:.1f} s", flush=True)
    same = one_champions == step_champions == af_champions
    if not same:
        raise SystemExit("champions differ between one process and the fan-out")
    dag_span = max(e for *_, e in spans) - min(s for _, _, s, _ in spans)
    retrain_spans = [x for x in spans if x[0] != "close_stale_runs"]
    retrain_span = max(e for *_, e in retrain_spans) - min(s for _, _, s, _ in retrain_spans)
    work_s = sum(e - s for _, _, s, e in retrain_spans)
    serial = steps["plan_retraining"] + steps["train_global_models"] + steps["select_and_store"]
    lines = [
        "# Retraining: one process vs the maintenance DAG's fan-out",
        "",
        f"Reproduce: `.venv/bin/python bench/training_fanout.py --tasks {args.tasks} --runs {args.runs} "
        f"--shard-size {args.shard_size} --parallelism {args.parallelism}{' --lstm' if args.lstm else ''}`",
        "",
        f"Machine: {os.cpu_count()} cores ({platform.machine()}), load average at the end "
        f"{os.getloadavg()[0]:.1f} (shared with other work). History: synthetic "
        f"(`tests/unit/training/fanout_history.py`), {args.tasks} tasks x {args.runs} runs, every task due. "
        f"Candidates: {', '.join(candidates)}. SQLite stores.",
        "",
        "| how | wall time |",
        "|---|---|",
        f"| one process (`maintenance.retrain`) | {one_s:.1f} s |",
        f"| fan-out steps one after the other, one process | {sum(steps.values()) + sum(shards):.1f} s |",
        f"| fan-out through Airflow, LocalExecutor, parallelism {args.parallelism}: retraining tasks, "
        f"first start to last end | {retrain_span:.1f} s |",
        f"| same, whole DAG run (with close_stale_runs) | {dag_span:.1f} s |",
        f"| same, `airflow dags test` wall (parsing, start-up, the run) | {wall:.1f} s |",
        "",
        "Steps in one process (what is serial and what fans out):",
        "",
        "| step | runs | seconds |",
        "|---|---|---|",
        f"| plan_retraining | once | {steps['plan_retraining']:.1f} |",
        f"| train_global_models (cross-task fits: folds, final, cold start) | once | "
        f"{steps['train_global_models']:.1f} |",
        f"| backtest_shard | {len(shards)} shards, mapped | {' / '.join(f'{s:.1f}' for s in shards)} |",
        f"| select_and_store | once | {steps['select_and_store']:.1f} |",
        f"| serial part (plan + global + select) | | {serial:.1f} ({100 * serial / (serial + sum(shards)):.0f}%) |",
        "",
        f"Task instances in the Airflow run (seconds from the first start; {work_s:.1f} s of task time "
        f"in all, start-up of each task process included):",
        "",
        "| task | map index | start | end |",
        "|---|---|---|---|",
        *[f"| {t} | {m} | {s:.1f} | {e:.1f} |" for t, m, s, e in spans],
        "",
        f"Champions identical in the three ({len(one_champions)} tasks): {same}.",
        "",
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
