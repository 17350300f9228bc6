"""Estimator benchmark: LSTM training time, batched prefix re-forecast latency, held-out accuracy.

Usage: .venv/bin/python bench/estimators_bench.py [--data ../shared/data/kseg-eager] [--json]
       [--epochs N] [--limit-runs N] [--out docs/benchmarks/estimators.md]

Reads a compact trace folder (runs.csv + samples.csv.gz) straight into RunExamples (no store),
splits each task chronologically in halves, trains the LSTM on the first halves (timed), then on
the held-out runs reports peak-memory error at start (median / p90), p99 coverage, and the error
of the rest-of-run peak with the first 20% of the run observed, for the LSTM and the
median / linear baselines. Finally times ``predict_many`` on 100 running tasks from their 20%
prefixes (one network call; median of 20 repeats after one warm-up).
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import logging
import sys
import time
from collections import defaultdict
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from airflow_predictive.core.model.resources import MIB, Metric, ResourceVector  # noqa: E402
from airflow_predictive.core.model.runs import (  # noqa: E402
    Outcome,
    RunIdentity,
    RunRecord,
    RunSource,
    TaskKey,
)
from airflow_predictive.core.model.series import UsageSeries  # noqa: E402
from airflow_predictive.core.profiler.estimators.base import ForecastQuery, RunExample  # noqa: E402
from airflow_predictive.core.profiler.estimators.baselines import (  # noqa: E402
    LinearInputSize,
    MedianPeak,
    VpaStyle,
)
from airflow_predictive.core.profiler.estimators.lstm import LstmConfig, LstmForecaster  # noqa: E402
from airflow_predictive.core.profiler.windows import chronological, truncate  # noqa: E402

MEM = Metric.MEMORY_BYTES
log = logging.getLogger("estimators_bench")


def load_compact(folder: Path, limit: int | None = None) -> list[RunExample]:
    """runs.csv + samples.csv.gz -> RunExamples (CPU percent -> cores, MB -> bytes)."""
    series: dict[str, list[tuple[float, float, float]]] = defaultdict(list)
    with gzip.open(folder / "samples.csv.gz", "rt") as fh:
        for row in csv.DictReader(fh):
            series[row["run_id"]].append((float(row["t_s"]), float(row["cpu_pct"]), float(row["mem_mb"])))
    out = []
    with (folder / "runs.csv").open() as fh:
        for row in csv.DictReader(fh):
            rows = series.get(row["run_id"])
            if not rows:
                continue
            arr = np.array(sorted(rows))
            keep = np.concatenate([[True], np.diff(arr[:, 0]) > 0])
            arr = arr[keep]
            usage = UsageSeries(arr[:, 0], {Metric.CPU_CORES: arr[:, 1] / 100.0, MEM: arr[:, 2] * MIB})
            start = datetime.fromisoformat(row["start"].replace("Z", "+00:00"))
            record = RunRecord(
                identity=RunIdentity(
                    TaskKey(row["workflow"], row["task"]), row["run_id"], 1, RunSource.TRACE
                ),
                start=start,
                end=start + timedelta(seconds=float(row["duration_s"])),
                outcome=Outcome.SUCCESS,
                declared=ResourceVector(
                    cpu_cores=float(row["declared_cpus"]) or None,
                    memory_bytes=float(row["declared_mem_bytes"]) or None,
                ),
                peak=usage.peaks(),
                operator=f"nextflow:{row['task']}",
                features={"input_bytes": float(row["input_bytes"]), "input_files": float(row["input_files"])},
            )
            out.append(RunExample(record, usage))
            if limit and len(out) >= limit:
                break
    return out


def split(examples: list[RunExample]) -> tuple[list[RunExample], list[tuple[RunExample, list[RunExample]]]]:
    """Per task, chronological halves: (training runs, [(held-out run, all its earlier runs)])."""
    train, held = [], []
    for runs in chronological(examples).values():
        half = len(runs) // 2
        train += runs[:half]
        held += [(run, runs[:i]) for i, run in enumerate(runs) if i >= max(half, 1)]
    return train, held


def _query(run: RunExample, history: list[RunExample], prefix: UsageSeries | None = None) -> ForecastQuery:
    r = run.record
    return ForecastQuery(
        key=r.key,
        features=r.features,
        declared=r.declared,
        operator=r.operator,
        history=tuple(history),
        prefix=prefix,
        start=r.start,
    )


def _rest_peak(run: RunExample, fraction: float) -> tuple[UsageSeries, float, float]:
    series = run.series
    assert series is not None
    cut = fraction * series.duration_s
    prefix = truncate(series, cut)
    t = series.times - series.times[0]
    mem = series.values[MEM]
    rest = mem[t > cut]
    return prefix, cut, float(np.nanmax(rest)) if rest.size else float(np.nanmax(mem))


def _forecast_rest_peak(forecast, after_s: float, q: float) -> float:  # type: ignore[no-untyped-def]
    curve = forecast.curve(MEM)
    values = curve.at(q)
    first = min(int(after_s // curve.step_s), values.size - 1)
    return float(values[first:].max())


def accuracy(model: LstmForecaster, held: list[tuple[RunExample, list[RunExample]]], fraction: float) -> dict:
    """Held-out peak-memory figures for the LSTM (batched) and the baselines, at start and after a prefix."""
    baselines = {"median_peak": MedianPeak(), "linear_input": LinearInputSize(), "vpa": VpaStyle()}
    actual = np.array([run.series.peak(MEM) for run, _ in held])  # type: ignore[union-attr]
    cuts_rests = [_rest_peak(run, fraction) for run, _ in held]
    at_start = [_query(run, history) for run, history in held]
    with_prefix = [
        _query(run, history, prefix) for (run, history), (prefix, _, _) in zip(held, cuts_rests, strict=True)
    ]
    forecasts = {"lstm": model.predict_many(at_start)}
    for name, est in baselines.items():
        forecasts[name] = [est.predict(q) for q in at_start]
    forecasts["lstm+prefix"] = model.predict_many(with_prefix)
    rests = np.array([rest for _, _, rest in cuts_rests])
    report = {}
    for name, fs in forecasts.items():
        p50 = np.array([f.curve(MEM).peak(0.5) for f in fs])
        p99 = np.array([f.curve(MEM).peak(0.99) for f in fs])
        rest50 = np.array(
            [_forecast_rest_peak(f, cut, 0.5) for f, (_, cut, _) in zip(fs, cuts_rests, strict=True)]
        )
        rest99 = np.array(
            [_forecast_rest_peak(f, cut, 0.99) for f, (_, cut, _) in zip(fs, cuts_rests, strict=True)]
        )
        err = np.abs(p50 - actual) / actual
        rest_err = np.abs(rest50 - rests) / rests
        report[name] = {
            "peak_error_median": float(np.median(err)),
            "peak_error_p90": float(np.quantile(err, 0.9)),
            "p99_coverage": float(np.mean(p99 >= actual)),
            "rest_peak_error_median": float(np.median(rest_err)),
            "rest_peak_error_p90": float(np.quantile(rest_err, 0.9)),
            "rest_p99_coverage": float(np.mean(rest99 >= rests)),
        }
    return report


def reforecast_latency(
    model: LstmForecaster, held: list[tuple[RunExample, list[RunExample]]], n: int = 100
) -> dict:
    picks = [held[i % len(held)] for i in range(n)]
    queries = [_query(run, history, _rest_peak(run, 0.2)[0]) for run, history in picks]
    model.predict_many(queries)  # warm-up (graph tracing)
    times = []
    for _ in range(20):
        t = time.perf_counter()
        model.predict_many(queries)
        times.append(time.perf_counter() - t)
    return {
        "tasks": n,
        "median_ms": 1000 * float(np.median(times)),
        "p90_ms": 1000 * float(np.quantile(times, 0.9)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "kseg-eager")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--limit-runs", type=int, default=None)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--out", type=Path, default=None, help="also write the Markdown report here")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    t = time.perf_counter()
    examples = load_compact(args.data, args.limit_runs)
    load_s = time.perf_counter() - t
    train, held = split(examples)
    config = LstmConfig() if args.epochs is None else LstmConfig(epochs=args.epochs)
    t = time.perf_counter()
    full = LstmForecaster(config).fit(examples)
    full_train_s = time.perf_counter() - t
    t = time.perf_counter()
    model = LstmForecaster(config).fit(train)
    half_train_s = time.perf_counter() - t
    result = {
        "runs": len(examples),
        "load_s": load_s,
        "train_full_s": full_train_s,
        "train_full_report": vars(full.report) if full.report else None,
        "train_half_s": half_train_s,
        "reforecast_100": reforecast_latency(model, held),
        "held_out_runs": len(held),
        "accuracy": accuracy(model, held, 0.2),
    }
    if args.json:
        print(json.dumps(result))
    else:
        print(markdown(result))
    if args.out is not None:
        args.out.write_text(markdown(result))


def markdown(result: dict) -> str:
    """The figures as a small Markdown report (timings were taken on a shared 2-core machine)."""
    lines = [
        "# Estimators benchmark (kseg-eager, per-task chronological halves)",
        "",
        f"- runs: {result['runs']}, held-out runs: {result['held_out_runs']}",
        f"- LSTM training on all runs: {result['train_full_s']:.0f} s; on the first halves: "
        f"{result['train_half_s']:.0f} s",
        f"- re-forecast of {result['reforecast_100']['tasks']} running tasks from 20% prefixes, one call: "
        f"median {result['reforecast_100']['median_ms']:.0f} ms, p90 {result['reforecast_100']['p90_ms']:.0f} ms",
        "",
        "| estimator | peak error median | p90 | p99 coverage | rest-of-run peak error (20% seen) median | p90 |",
        "|---|---|---|---|---|---|",
    ]
    for name, r in result["accuracy"].items():
        lines.append(
            f"| {name} | {r['peak_error_median']:.1%} | {r['peak_error_p90']:.1%} | {r['p99_coverage']:.1%} "
            f"| {r['rest_peak_error_median']:.1%} | {r['rest_peak_error_p90']:.1%} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
