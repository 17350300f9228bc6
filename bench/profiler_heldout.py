"""Selection on trace families no tuning has seen: each Nextflow workflow evaluated on its own.

Usage: .venv/bin/python bench/profiler_heldout.py [--data DIR] [--out docs/benchmarks/profiler_heldout.md]

The four Nextflow workflows of ``nextflow-traces`` (chipseq, eager, methylseq, rnaseq) are
evaluated one at a time with the shipped defaults (nothing in the selection policy, the prefix
policy or the scaled curve was tuned on Nextflow traces; the cross-task parts are fitted on the
evaluated workflow's own first half only). Per workflow: the profiler as served against its best
single candidate (median memory peak error), its p90, and the tasks where the profiler's median
is worse than the best simple baseline (last run, median of peaks, linear in input size).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from airflow_predictive.core.model.resources import Metric  # noqa: E402
from airflow_predictive.core.profiler.selection import SelectionPolicy  # noqa: E402
from airflow_predictive.training.candidates import DEFAULT_CANDIDATES, REFERENCES, factories  # noqa: E402
from airflow_predictive.training.evaluation import PROFILER, evaluate, measured_metrics  # noqa: E402

OUT = ROOT / "docs" / "benchmarks" / "profiler_heldout.md"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    parser.add_argument("--out", default=str(OUT))
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    from profiler_bench import _best_single, _tasks_worse_than_simple, load, pct  # type: ignore[import-not-found]

    began = time.monotonic()
    _, examples, _ = load(Path(args.data) / "nextflow-traces")
    names = tuple(n for n in DEFAULT_CANDIDATES if n != "lstm")  # no series in Nextflow traces
    lines = [
        "# Held-out trace families (Nextflow workflows, memory peaks)",
        "",
        "Reproduce: `.venv/bin/python bench/profiler_heldout.py` (part of `make bench`). Candidates: "
        f"{', '.join(names)} (the LSTM needs series, which Nextflow traces lack).",
        "",
        "| workflow | held-out runs | profiler median | best single candidate | profiler p90 | "
        "tasks worse than the best simple baseline |",
        "|---|---|---|---|---|---|",
    ]
    mem = Metric.MEMORY_BYTES
    for wf in sorted({e.key.dag_id for e in examples}):
        mine = [e for e in examples if e.key.dag_id == wf]
        ev = evaluate(
            mine,
            factories(names),
            factories(REFERENCES),
            policy=SelectionPolicy(folds=2, metrics=measured_metrics(mine)),
        )
        _, _, reached, _ok = _best_single(ev, wf)
        worse, total = _tasks_worse_than_simple(ev)
        m = ev.reports[PROFILER].overall[mem]
        lines.append(
            f"| {wf} | {ev.test_runs} | {pct(m.peak_error_median)} | {reached.split(' vs ')[1]} | "
            f"{pct(m.peak_error_p90)} | {worse} of {total} |"
        )
        print(lines[-1], flush=True)
    lines += ["", f"Took {time.monotonic() - began:.0f} s on this shared 2-core machine.", ""]
    Path(args.out).write_text("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
