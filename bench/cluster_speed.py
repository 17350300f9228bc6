"""Ours' replay speed on the held-out kseg runs, and a golden check that a speed change changed nothing.

Usage: .venv/bin/python bench/cluster_speed.py [--data DIR] [--runs N] [--golden-out F | --golden F]

Trains the profiler on the training half as the cluster benchmark does (~100 s), then replays the
first N held-out runs (all by default) under ours with and without the mid-run re-forecast and under
reactive, timed in CPU seconds of this process (the machine is shared: wall time is noisy), with the
controller's ticks counted. ``--golden-out`` writes every try (decisions, integrals) and the
per-policy metrics to a JSON file outside the repo; ``--golden`` compares a replay with such a file:
decisions (steps, kills, resizes, every change's value) must be equal, and integrals / change times
may differ only by float reordering (the same sums over other segments; the worst relative
difference is printed). Not part of ``make bench``: a tool for work on the simulator's speed.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from airflow_predictive.simulation.bench import BENCH_CANDIDATES, DEFAULT_POOL, make_policies  # noqa: E402
from airflow_predictive.simulation.cluster import replay  # noqa: E402
from airflow_predictive.simulation.execution import SimSettings  # noqa: E402
from airflow_predictive.simulation.forecasting import held_out_forecasts  # noqa: E402
from airflow_predictive.simulation.loading import load_trace_folder  # noqa: E402
from airflow_predictive.simulation.metrics import summarise  # noqa: E402
from airflow_predictive.simulation.policies import predictive as ours  # noqa: E402
from airflow_predictive.simulation.workload import build_workload  # noqa: E402

EXACT = (0, 1, 2, 3, 4, 5, 12, 14, 15, 16)  # run, attempt, queued, started, steps, oom, resizes, values, peak
CLOSE = (6, 7, 8, 9, 10, 11, 13)  # wall, integrals, throttled, change times


def _tries(r: Any) -> list[list[Any]]:
    return [
        [
            t.run,
            t.attempt,
            t.queued_s,
            t.started_s,
            t.result.steps,
            t.result.oom,
            t.result.wall_s,
            t.result.memory_alloc,
            t.result.memory_used,
            t.result.cpu_alloc,
            t.result.cpu_used,
            t.result.throttled_s,
            t.result.resizes,
            list(t.result.change_at),
            list(t.result.change_memory),
            list(t.result.change_cpu),
            t.result.peak_seen,
        ]
        for t in r.tries
    ]


def compare(gold: dict[str, Any], now: dict[str, Any]) -> bool:
    same = True
    for name, cur in now.items():
        if name not in gold:
            continue
        g = gold[name]
        metrics = [k for k in g["metrics"] if g["metrics"][k] != cur["metrics"].get(k)]
        decided = worst = 0.0
        for a, b in zip(g["tries"], cur["tries"], strict=False):
            decided += any(a[i] != b[i] for i in EXACT)
            for i in CLOSE:
                xs, ys = (a[i], b[i]) if isinstance(a[i], list) else ([a[i]], [b[i]])
                for x, y in zip(xs, ys, strict=False):
                    worst = max(worst, abs(x - y) / max(abs(x), abs(y), 1e-300))
        decided += abs(len(g["tries"]) - len(cur["tries"]))
        print(
            f"golden {name}: {int(decided)} tries decided differently; metrics differing: "
            f"{ {k: (g['metrics'][k], cur['metrics'].get(k)) for k in metrics} }; worst relative "
            f"difference of a sum {worst:.1e}"
        )
        same &= decided == 0
    return same


def main() -> int:
    logging.basicConfig(level=logging.WARNING)
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--runs", type=int, default=0, help="the first N held-out runs (0: all)")
    ap.add_argument("--golden-out", default=None)
    ap.add_argument("--golden", default=None)
    args = ap.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    _, examples = load_trace_folder(Path(args.data) / "kseg-eager")
    workload = build_workload(examples, grid_s=1.0)
    forecasts = held_out_forecasts(workload, BENCH_CANDIDATES)
    if args.runs:
        workload = replace(workload, runs=workload.runs[: args.runs])
    ticks = [0]
    decide = ours.ShapedDriver.decide

    def counted(self: Any, *a: Any) -> Any:
        ticks[0] += 1
        return decide(self, *a)

    ours.ShapedDriver.decide = counted  # type: ignore[method-assign]
    policies = [
        ours.PredictivePolicy(forecasts, ours.PredictiveSettings()),
        ours.PredictivePolicy(
            forecasts, ours.PredictiveSettings(reforecast=None), name="predictive_no_reforecast"
        ),
        *make_policies(["reactive"], None),
    ]
    out: dict[str, Any] = {}
    for policy in policies:
        ticks[0] = 0
        began = time.process_time()
        r = replay(workload, policy, DEFAULT_POOL, SimSettings())
        cpu = time.process_time() - began
        m = {k: v for k, v in summarise(r).as_dict().items() if "ms" not in k and "seconds" not in k}
        out[policy.name] = {"metrics": m, "tries": _tries(r)}
        print(
            f"{policy.name}: {r.runs} runs, {len(r.tries)} tries, {cpu:.1f} s CPU = "
            f"{1000 * cpu / r.runs:.1f} ms per run (~{cpu / r.runs * 100_000:,.0f} s per 100,000), "
            f"{ticks[0]} controller ticks"
        )
    out = json.loads(json.dumps(out))
    if args.golden_out:
        Path(args.golden_out).write_text(json.dumps(out, sort_keys=True))
    if args.golden:
        return 0 if compare(json.loads(Path(args.golden).read_text()), out) else 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
