"""Prefix gain where shaping needs it: next-minutes and rest-of-run error at 10/20/40/60% observed.

Usage: .venv/bin/python bench/profiler_prefix.py [--data DIR] [--lstm] [--out docs/benchmarks/profiler_prefix.md]

kseg-eager, the held-out evaluation of `airflow predictive evaluate` (champion per task by
backtest on the first half; second half forecast run by run). Each held-out run's at-start
forecast (the profiler as served) is re-forecast from its first 10/20/40/60% with
``core/profiler/prefix.condition_on_prefix`` (shipped default ``PrefixPolicy``; the LSTM, when a
champion, conditions on the prefix itself). Errors of the p50 memory forecast, median over runs:
- next minutes: the maximum over the ``--window`` seconds after the cut (what the shaping
  controller sizes next), at start vs with the prefix;
- rest of run: the peak after the cut.
A sensitivity table shows other ``shrink`` / ``shrink_down`` values (the defaults were set from the
late-peak property, not tuned on these held-out runs).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from airflow_predictive.core.model.resources import Metric  # noqa: E402
from airflow_predictive.core.profiler.prefix import PrefixPolicy, condition_on_prefix, window_error  # noqa: E402
from airflow_predictive.core.profiler.selection import SelectionPolicy  # noqa: E402
from airflow_predictive.training.candidates import DEFAULT_CANDIDATES, factories  # noqa: E402
from airflow_predictive.training.dataset import split_chronologically  # noqa: E402
from airflow_predictive.training.evaluation import (  # noqa: E402
    PROFILER,
    evaluate,
    measured_metrics,
    rest_peak_error,
    truncated,
)

FRACTIONS = (0.1, 0.2, 0.4, 0.6)
OUT = ROOT / "docs" / "benchmarks" / "profiler_prefix.md"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    parser.add_argument("--lstm", action="store_true")
    parser.add_argument("--window", type=float, default=300.0)
    parser.add_argument("--out", default=str(OUT))
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    from profiler_bench import load  # type: ignore[import-not-found]

    began = time.monotonic()
    _, examples, _ = load(Path(args.data) / "kseg-eager")
    names = tuple(n for n in DEFAULT_CANDIDATES if args.lstm or n != "lstm")
    ev = evaluate(
        examples,
        factories(names),
        policy=SelectionPolicy(folds=2, metrics=measured_metrics(examples)),
        prefix_fraction=None,
    )
    _, test = split_chronologically(examples)
    prof = ev.forecasts[PROFILER]
    mem = Metric.MEMORY_BYTES
    rows = []
    sens: dict[tuple[float, float], list[float]] = {}
    for frac in FRACTIONS:
        nm0, nm1, rp0, rp1 = [], [], [], []
        for i, ex in enumerate(test):
            f0 = prof.get(i)
            if f0 is None or ex.series is None or len(ex.series) < 5:
                continue
            pre = truncated(ex.series, frac)
            if pre is None:
                continue
            f1 = f0 if f0.estimator == "lstm" else condition_on_prefix(f0, pre)
            cut = ex.series.duration_s * frac
            a, b = (
                window_error(f0, ex.series, mem, cut, args.window),
                window_error(f1, ex.series, mem, cut, args.window),
            )
            if a is not None and b is not None:
                nm0.append(a)
                nm1.append(b)
            c, d = rest_peak_error(f0, ex.series, frac), rest_peak_error(f1, ex.series, frac)
            if c is not None and d is not None:
                rp0.append(c)
                rp1.append(d)
            if frac == 0.4:
                for shrink in (0.0, 0.25, 0.5, 0.75, 1.0):
                    for down in (0.0, 0.5):
                        g = condition_on_prefix(
                            f0, pre, replace(PrefixPolicy(), shrink=shrink, shrink_down=down)
                        )
                        e = rest_peak_error(g, ex.series, frac)
                        if e is not None:
                            sens.setdefault((shrink, down), []).append(e)
        rows.append((frac, len(nm0), np.median(nm0), np.median(nm1), np.median(rp0), np.median(rp1)))
    lines = [
        "# Prefix gain (kseg-eager, memory, held-out half)",
        "",
        f"Reproduce: `.venv/bin/python bench/profiler_prefix.py{' --lstm' if args.lstm else ''}` "
        f"({time.monotonic() - began:.0f} s here; part of `make bench`). Candidates: {', '.join(names)}; "
        f"next minutes = the {args.window:.0f} s after the cut. Champions: {ev.champion_counts()}.",
        "",
        "| observed | runs | next-minutes error at start | with prefix | rest-of-run peak error at start | with prefix |",
        "|---|---|---|---|---|---|",
    ]
    for frac, n, a, b, c, d in rows:
        lines.append(
            f"| {100 * frac:.0f}% | {n} | {100 * a:.1f}% | {100 * b:.1f}% | {100 * c:.1f}% | {100 * d:.1f}% |"
        )
    lines += [
        "",
        "Sensitivity at 40% observed (rest-of-run peak error, median), by `PrefixPolicy.shrink`:",
        "",
    ]
    lines += ["| shrink | error |", "|---|---|"]
    lines += [f"| {k} | {100 * np.median(v):.1f}% |" for k, v in sorted(sens.items())]
    text = "\n".join(lines) + "\n"
    Path(args.out).write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
