"""Profiler cost against the number of runs of one task (1x / 4x / 16x), and a 5,000-run folder.

Usage: .venv/bin/python bench/profiler_scaling.py [--data DIR] [--task markduplicates]
           [--scales 1,4,16] [--lstm] [--folder-runs 5000] [--out docs/benchmarks/profiler_scaling.md]

Synthetic scale-up of real data, said so in the report: the runs of one kseg-eager task are
repeated k times, each copy later in time and with its memory, CPU and input size multiplied by a
random factor in [0.85, 1.15] (seeded), so the task has k times the runs with the same structure.
For each k the held-out evaluation (backtest on the first half, fits, forecasts of the second
half, scoring) is timed as a whole and per run. The folder figure times `airflow predictive
evaluate`'s code path (import into a throw-away SQLite store, load, evaluate) on a folder of about
``--folder-runs`` runs built the same way from all kseg-eager tasks (written to a temporary
directory, never into the repository).
"""

from __future__ import annotations

import argparse
import csv
import gzip
import logging
import sys
import tempfile
import time
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from airflow_predictive.core.model.series import UsageSeries  # noqa: E402
from airflow_predictive.core.profiler.estimators.base import RunExample  # noqa: E402
from airflow_predictive.core.profiler.selection import SelectionPolicy  # noqa: E402
from airflow_predictive.training.candidates import DEFAULT_CANDIDATES, REFERENCES, factories  # noqa: E402
from airflow_predictive.training.dataset import chronological  # noqa: E402
from airflow_predictive.training.evaluation import evaluate, measured_metrics  # noqa: E402

log = logging.getLogger("profiler_scaling")
OUT = ROOT / "docs" / "benchmarks" / "profiler_scaling.md"


def scaled(runs: list[RunExample], k: int, seed: int = 0) -> list[RunExample]:
    """``runs`` repeated ``k`` times, each copy later and scaled by a factor in [0.85, 1.15]."""
    rng = np.random.default_rng(seed)
    runs = chronological(runs)
    starts = [r.record.start for r in runs if r.record.start is not None]
    span = (max(starts) - min(starts)) + timedelta(hours=1) if starts else timedelta(days=1)
    out: list[RunExample] = []
    for copy in range(k):
        for r in runs:
            f = 1.0 if copy == 0 else float(rng.uniform(0.85, 1.15))
            rec = r.record
            features = dict(rec.features)
            if isinstance(features.get("input_bytes"), int | float):
                features["input_bytes"] = float(features["input_bytes"]) * f  # type: ignore[arg-type]
            ident = replace(rec.identity, run_id=f"{rec.identity.run_id}#{copy}")
            peak = type(rec.peak).from_mapping(
                {m: (v * f if v is not None else None) for m, v in rec.peak.items()}
            )
            new = replace(
                rec,
                identity=ident,
                start=rec.start + span * copy if rec.start is not None else None,
                end=rec.end + span * copy if rec.end is not None else None,
                features=features,
                peak=peak,
                run_pk=None,
            )
            series = (
                UsageSeries(r.series.times, {m: v * f for m, v in r.series.values.items()})
                if r.series is not None
                else None
            )
            out.append(RunExample(new, series))
    return out


def time_evaluation(examples: list[RunExample], names: tuple[str, ...]) -> dict[str, float]:
    policy = SelectionPolicy(folds=2, metrics=measured_metrics(examples))
    began = time.monotonic()
    ev = evaluate(examples, factories(names), factories(REFERENCES), policy=policy)
    seconds = time.monotonic() - began
    mem = ev.reports["profiler"].overall
    from airflow_predictive.core.model.resources import Metric

    return {
        "runs": float(len(examples)),
        "seconds": seconds,
        "ms_per_run": 1000 * seconds / len(examples),
        "memory_median": float(mem[Metric.MEMORY_BYTES].peak_error_median or float("nan")),
    }


def write_folder(source: Path, target: Path, runs: int) -> int:
    """A compact-form trace folder of about ``runs`` runs: kseg-eager repeated (scaled copies)."""
    with (source / "runs.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    k = max(1, round(runs / len(rows)))
    rng = np.random.default_rng(1)
    factor = {
        (r["run_id"], c): (1.0 if c == 0 else float(rng.uniform(0.85, 1.15))) for r in rows for c in range(k)
    }
    target.mkdir(parents=True, exist_ok=True)
    with (target / "runs.csv").open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        for c in range(k):
            for r in rows:
                f = factor[(r["run_id"], c)]
                start = r["start"].replace("2023", str(2023 + c), 1)  # each copy a year later
                w.writerow(
                    {
                        **r,
                        "run_id": f"{r['run_id']}#{c}",
                        "start": start,
                        "input_bytes": f"{float(r['input_bytes'] or 0) * f:.0f}" if r["input_bytes"] else "",
                    }
                )
    with gzip.open(source / "samples.csv.gz", "rt") as src, gzip.open(target / "samples.csv.gz", "wt") as dst:
        reader = csv.reader(src)
        header = next(reader)
        dst.write(",".join(header) + "\n")
        lines = list(reader)
        for c in range(k):
            for run_id, t_s, cpu, mem in lines:
                f = factor.get((run_id, c), 1.0)
                cpu_v = f"{float(cpu) * f:.3f}" if cpu else ""
                mem_v = f"{float(mem) * f:.3f}" if mem else ""
                dst.write(f"{run_id}#{c},{t_s},{cpu_v},{mem_v}\n")
    return k * len(rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    parser.add_argument("--task", default="markduplicates")
    parser.add_argument("--scales", default="1,4,16")
    parser.add_argument("--lstm", action="store_true", help="include the LSTM candidate in the scaling curve")
    parser.add_argument("--folder-runs", type=int, default=5000, help="0: skip the folder figure")
    parser.add_argument("--out", default=str(OUT))
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    sys.path.insert(0, str(ROOT / "bench"))
    from profiler_bench import load  # type: ignore[import-not-found]

    kseg = Path(args.data) / "kseg-eager"
    _, examples, _ = load(kseg)
    one = [e for e in examples if e.key.task_id == args.task]
    names = tuple(n for n in DEFAULT_CANDIDATES if args.lstm or n != "lstm")
    rows = []
    for k in (int(s) for s in args.scales.split(",") if s):
        fig = time_evaluation(scaled(one, k), names)
        rows.append((k, fig))
        print(
            f"{k:>3}x: {int(fig['runs'])} runs, {fig['seconds']:.1f} s, {fig['ms_per_run']:.1f} ms/run",
            flush=True,
        )
    folder_line = "not run (--folder-runs 0)"
    if args.folder_runs:
        from airflow_predictive.training.progress import Progress

        with tempfile.TemporaryDirectory(prefix="profiler-scaling-") as tmp:
            n = write_folder(kseg, Path(tmp) / "folder", args.folder_runs)
            began = time.monotonic()
            cpu0 = time.process_time()
            _, big, _ = load(Path(tmp) / "folder")  # the CLI's import into a throw-away SQLite store
            import_s = time.monotonic() - began
            policy = SelectionPolicy(folds=2, metrics=measured_metrics(big))
            t1 = time.monotonic()
            evaluate(
                big,
                factories(DEFAULT_CANDIDATES),
                factories(REFERENCES),
                policy=policy,
                progress=Progress("folder"),
            )
            eval_s = time.monotonic() - t1
            cpu_s = time.process_time() - cpu0
        seconds = import_s + eval_s
        folder_line = (
            f"{n} runs (kseg-eager x{n // 1630}, scaled copies), default candidates "
            f"({', '.join(DEFAULT_CANDIDATES)}): {seconds / 60:.1f} min wall (import + load {import_s / 60:.1f} min, "
            f"evaluation {eval_s / 60:.1f} min), {cpu_s / 60:.1f} min of this process's CPU "
            f"(goal < 5 min on 2 cores: {'met' if seconds < 300 else 'missed'})"
        )
        print(folder_line, flush=True)
    base = rows[0][1]["ms_per_run"] if rows else float("nan")
    lines = [
        "# Profiler cost against runs per task",
        "",
        f"Reproduce: `.venv/bin/python bench/profiler_scaling.py{' --lstm' if args.lstm else ''}` "
        f"(task `{args.task}` of kseg-eager; part of `make bench`).",
        "",
        "Synthetic scale-up of real data: the task's runs are repeated k times, each copy later in time and "
        "scaled by a seeded random factor in [0.85, 1.15] (memory, CPU, input size). Whole held-out "
        "evaluation (2-fold backtest on the first half, fits, forecasts of the second half, scoring), "
        f"candidates: {', '.join(names)} + references; 2 shared cores.",
        "",
        "| scale | runs | seconds | ms per run | per-run cost vs 1x | memory peak error (median) |",
        "|---|---|---|---|---|---|",
    ]
    for k, fig in rows:
        lines.append(
            f"| {k}x | {int(fig['runs'])} | {fig['seconds']:.1f} | {fig['ms_per_run']:.1f} | "
            f"{fig['ms_per_run'] / base:.2f} | {100 * fig['memory_median']:.1f}% |"
        )
    lines += ["", f"5,000-run folder (`airflow predictive evaluate` code path): {folder_line}.", ""]
    out = Path(args.out)
    marker = "<!-- notes: kept when the benchmark rewrites this file -->"
    notes = out.read_text().split(marker, 1)[1] if out.exists() and marker in out.read_text() else "\n"
    out.write_text("\n".join(lines) + "\n" + marker + notes)  # hand-written notes survive a re-run
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
