"""Accuracy from the first recorded runs on: forecasts with 1, 2, 3, 5 and 10 runs of history.

Usage: .venv/bin/python bench/profiler_first_runs.py [--data DIR] [--out docs/benchmarks/profiler_first_runs.md]

kseg-eager (2 s series). Per task, runs are ordered by start; the estimators that learn across
tasks (the scaled curve's elasticity and spread) are fitted on the first half of every task's
runs; each run of the second half is then forecast as if the task had only its ``n`` newest
earlier runs. Reported per ``n``: memory peak error (median, p90), p99 coverage of the memory
peak, and the k-segment error of the p50 curve (mean relative error of the 4 segments' peaks,
the curve's shape; a flat number scores its error against every segment).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from airflow_predictive.core.model.resources import Metric  # noqa: E402
from airflow_predictive.core.profiler.selection import query_for, score_example  # noqa: E402
from airflow_predictive.training.candidates import factories  # noqa: E402
from airflow_predictive.training.dataset import chronological, split_chronologically  # noqa: E402

HISTORY = (1, 2, 3, 5, 10)
NAMES = ("scaled_curve", "autopilot", "last_run", "median_peak", "linear_input")
OUT = ROOT / "docs" / "benchmarks" / "profiler_first_runs.md"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    parser.add_argument("--out", default=str(OUT))
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    from profiler_bench import load  # type: ignore[import-not-found]

    began = time.monotonic()
    _, examples, _ = load(Path(args.data) / "kseg-eager")
    examples = chronological(examples)
    train, test = split_chronologically(examples)
    fitted = {n: f().fit(train) for n, f in factories(NAMES).items()}
    by_task: dict = {}
    for ex in examples:
        by_task.setdefault(ex.key, []).append(ex)
    pos = {id(ex): i for runs in by_task.values() for i, ex in enumerate(runs)}
    mem = Metric.MEMORY_BYTES
    table: dict[tuple[str, int], dict[str, list[float]]] = {}
    for ex in test:
        i = pos[id(ex)]
        for n in HISTORY:
            if i < n:
                continue
            q = query_for(ex, by_task[ex.key][i - n : i], (Metric.CPU_CORES, mem))
            for name, est in fitted.items():
                try:
                    f = est.predict(q)
                except Exception:
                    continue
                scores = [s for s in score_example(f.curves, ex, with_waste=False) if s.metric is mem]
                if not scores:
                    continue
                s = scores[0]
                cell = table.setdefault((name, n), {"err": [], "cov": [], "seg": []})
                cell["err"].append(s.peak_error)
                cell["cov"].append(0.0 if s.under.get(0.99, True) else 1.0)
                if s.segment_error is not None:
                    cell["seg"].append(s.segment_error)
    lines = [
        "# Accuracy from the first runs of a task (kseg-eager, memory)",
        "",
        f"Reproduce: `.venv/bin/python bench/profiler_first_runs.py` ({time.monotonic() - began:.0f} s here; "
        "part of `make bench`).",
        "",
        "Held-out second half of each task's runs, each forecast with only its n newest earlier runs as "
        "history; cross-task parts fitted on the first halves. `scaled_curve` is the cold-start level "
        "(the recorded curve scaled to this run's input size, widened by the cross-task spread); "
        "`autopilot` was the cold start before (one flat number).",
        "",
        "| history runs | estimator | runs | peak error median | peak error p90 | p99 covers peak | "
        "curve (4-segment) error median |",
        "|---|---|---|---|---|---|---|",
    ]
    for n in HISTORY:
        for name in NAMES:
            cell = table.get((name, n))
            if not cell:
                continue
            lines.append(
                f"| {n} | {name} | {len(cell['err'])} | {100 * np.median(cell['err']):.1f}% | "
                f"{100 * np.quantile(cell['err'], 0.9):.1f}% | {100 * np.mean(cell['cov']):.1f}% | "
                f"{100 * np.median(cell['seg']):.1f}% |"
            )
    text = "\n".join(lines) + "\n"
    Path(args.out).write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
