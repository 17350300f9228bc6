"""`airflow predictive bench --traces DIR [--json]`: every sizing policy on the same held-out runs.

``--from-store`` replays the runs the provider recorded itself instead (the example DAGs' runs
after `make demo`, or any recorded history on ``[predictive] sql_alchemy_conn``). DIR is any folder the profiler imports (k-Segments compact runs.csv + samples.csv.gz, ...) and is
imported into a throw-away SQLite store (never the provider's database). Per task, the first half
of the runs trains the profiler; the second half is replayed on a simulated pool under each policy
(declared, vpa, autopilot, reactive, oracle, predictive, predictive_shadow). A table is printed;
with ``--json`` the last line is one object ``{"policies": {name: {...}}, "runs": N}`` with slacks
and shares as fractions.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

ARGS: tuple[tuple[tuple[str, ...], dict[str, Any]], ...] = (
    (("--traces",), {"help": "trace folder (runs.csv + samples.csv.gz, ...)"}),
    (
        ("--from-store",),
        {"action": "store_true", "help": "replay the runs the provider recorded (e.g. the example DAGs')"},
    ),
    (("--json",), {"action": "store_true", "help": "print one JSON object as the last line"}),
    (
        ("--policies",),
        {"help": "comma-separated policies (default: all but predictive_plan, the plan without shaping)"},
    ),
    (("--candidates",), {"help": "comma-separated profiler estimators (default: the benchmark's set)"}),
    (("--nodes",), {"type": int, "default": None, "help": "nodes in the pool (default 1)"}),
    (("--node-cpus",), {"type": float, "default": None, "help": "cores per node (default 64)"}),
    (("--node-memory-gib",), {"type": float, "default": None, "help": "GiB per node (default 64)"}),
    (("--max-runs",), {"type": int, "default": None, "help": "replay only the first N held-out runs"}),
)

COLUMNS = (
    ("memory_slack", "mem slack", "pct"),
    ("cpu_slack", "cpu slack", "pct"),
    ("memory_waste_gib_s", "mem waste GiB*s", "num"),
    ("oom_per_1000", "OOM/1000", "num1"),
    ("throttled_share", "throttled", "pct"),
    ("queue_wait_s_p95", "wait p95 s", "num1"),
    ("makespan_s", "makespan s", "num"),
    ("resizes_per_run", "resizes/run", "num1"),
)


def _cell(value: float, kind: str) -> str:
    if kind == "pct":
        return f"{100 * value:.1f}%"
    if kind == "num1":
        return f"{value:,.1f}"
    return f"{value:,.0f}"


def options_from(args: Any) -> Any:
    from dataclasses import replace

    from airflow_predictive.core.model.resources import GIB
    from airflow_predictive.simulation.bench import DEFAULT_POLICIES, DEFAULT_POOL, BenchOptions

    pool = DEFAULT_POOL
    if args.nodes is not None:
        pool = replace(pool, nodes=args.nodes)
    if args.node_cpus is not None:
        pool = replace(pool, cpu_cores=args.node_cpus)
    if args.node_memory_gib is not None:
        pool = replace(pool, memory_bytes=args.node_memory_gib * GIB)
    policies = (
        tuple(p.strip() for p in args.policies.split(",") if p.strip()) if args.policies else DEFAULT_POLICIES
    )
    options = BenchOptions(policies=policies, pool=pool, max_runs=args.max_runs)
    if args.candidates:
        options = replace(
            options, candidates=tuple(c.strip() for c in args.candidates.split(",") if c.strip())
        )
    return options


def run(args: Any) -> None:
    from airflow_predictive.simulation.bench import run_bench, run_from_store
    from airflow_predictive.traces import TraceFormatError

    if bool(args.traces) == bool(getattr(args, "from_store", False)):
        print("error: give either --traces DIR or --from-store", file=sys.stderr)
        raise SystemExit(2)
    try:
        options = options_from(args)
        if args.traces:
            result = run_bench(Path(args.traces), options, progress=True, log=print)
        else:
            from airflow_predictive.runtime import get_runtime

            result = run_from_store(get_runtime().run_store(), options, progress=True, log=print)
    except (TraceFormatError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    print(f"{'policy':<19}" + "".join(f"{title:>17}" for _, title, _ in COLUMNS))
    for name, m in result.metrics.items():
        figures = m.as_dict()
        print(f"{name:<19}" + "".join(f"{_cell(figures[key], kind):>17}" for key, _, kind in COLUMNS))
    for name, note in result.notes.items():
        print(f"{name}: {note}")
    if getattr(args, "json", False):
        sys.stdout.flush()
        print(json.dumps(result.as_json(), sort_keys=True))
