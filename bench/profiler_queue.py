"""Do job-queue features help the memory forecast? Measured on the Nextflow traces.

Usage: .venv/bin/python bench/profiler_queue.py [--data DIR] [--out docs/benchmarks/profiler_queue.md]

Of the seed's queue metadata (queue wait, pool, queue, priority weight, concurrent load on the
worker), the public traces hold two: Nextflow's ``submit`` and ``start`` give each run's queue wait,
and the overlap of runs gives the workflow's concurrent load when a run starts (its ``queue``
column is empty in all four files; pools and priority weights are Airflow's and no trace has them).
Both are known before the run starts. The test: the profiler as served (shipped defaults) forecasts
the held-out half; per task, walking its held-out runs in order, the log residual
``log(actual / p50)`` of each run is predicted from the task's earlier held-out runs by least
squares (at least 8 earlier runs), once with an intercept only (a bias correction, the control) and
once with the intercept plus the feature (``log1p``); the corrected p50 is scored. A feature helps
when it lowers the error below the intercept-only control.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import io
import logging
import math
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from airflow_predictive.core.model.resources import Metric  # noqa: E402
from airflow_predictive.core.profiler.selection import SelectionPolicy  # noqa: E402
from airflow_predictive.training.candidates import DEFAULT_CANDIDATES, REFERENCES, factories  # noqa: E402
from airflow_predictive.training.dataset import chronological, split_chronologically  # noqa: E402
from airflow_predictive.training.evaluation import PROFILER, evaluate, measured_metrics  # noqa: E402

OUT = ROOT / "docs" / "benchmarks" / "profiler_queue.md"
MIN_EARLIER = 8
FEATURES = ("queue_wait_s", "concurrent_runs")


def queue_features(folder: Path) -> dict[tuple[str, str], dict[str, float]]:
    """(workflow, run_id as the importer names it) -> queue wait and concurrent runs at its start."""
    out: dict[tuple[str, str], dict[str, float]] = {}
    for path in sorted(folder.glob("trace_*")):
        workflow = path.name.removeprefix("trace_").split(".")[0]
        with gzip.open(path, "rt") if path.suffix == ".gz" else path.open() as fh:
            text = fh.read()
        rows = list(csv.DictReader(io.StringIO(text), delimiter="\t" if "\t" in text[:500] else ","))
        spans = []
        for row in rows:
            try:
                submit, start, done = float(row["submit"]), float(row["start"]), float(row["complete"])
            except (KeyError, ValueError):
                continue
            spans.append((row, submit, start, done))
        starts = np.array([s for _, _, s, _ in spans])
        ends = np.array([d for _, _, _, d in spans])
        order_s, order_e = np.sort(starts), np.sort(ends)
        for row, submit, start, _ in spans:
            running = int(np.searchsorted(order_s, start, "right") - np.searchsorted(order_e, start, "right"))
            name = (row.get("name") or row["process"]).strip()
            digest = (row.get("hash") or row.get("task_id") or "").strip()
            run_id = (f"{name} [{digest}]" if digest and digest != "-" else name)[:250]
            out[(workflow[:250], run_id)] = {
                "queue_wait_s": max(0.0, (start - submit) / 1000.0),
                "concurrent_runs": float(max(0, running - 1)),
            }
    return out


def corrected_errors(rows: list[tuple[float, float, dict[str, float]]], feature: str | None) -> list[float]:
    """Rolling per-task correction of the p50 from the earlier runs' residuals (see module doc)."""
    errs = []
    for j in range(MIN_EARLIER, len(rows)):
        actual, p50, feats = rows[j]
        past = rows[:j]
        y = np.array([math.log(a / p) for a, p, _ in past])
        if feature is None:
            shift = float(np.mean(y))
        else:
            x = np.array([math.log1p(f[feature]) for _, _, f in past])
            design = np.column_stack([np.ones_like(x), x])
            coef, *_ = np.linalg.lstsq(design, y, rcond=None)
            shift = float(coef[0] + coef[1] * math.log1p(feats[feature]))
        errs.append(abs(p50 * math.exp(shift) - actual) / actual)
    return errs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    parser.add_argument("--out", default=str(OUT))
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    from profiler_bench import load  # type: ignore[import-not-found]

    began = time.monotonic()
    folder = Path(args.data) / "nextflow-traces"
    feats = queue_features(folder)
    _, examples, _ = load(folder)
    names = tuple(n for n in DEFAULT_CANDIDATES if n != "lstm")
    policy = SelectionPolicy(folds=2, metrics=measured_metrics(examples))
    ev = evaluate(examples, factories(names), factories(REFERENCES), policy=policy, prefix_fraction=None)
    _, test = split_chronologically(chronological(examples), 0.5)
    by_task: dict[object, list[tuple[float, float, dict[str, float]]]] = {}
    for i, ex in enumerate(test):
        f = ev.forecasts[PROFILER].get(i)
        actual = ex.record.peak.get(Metric.MEMORY_BYTES)
        known = feats.get((ex.key.dag_id, ex.record.identity.run_id))
        curve = f.curve(Metric.MEMORY_BYTES) if f is not None else None
        if curve is None or known is None or not actual or actual <= 0 or not curve.peak(0.5) > 0:
            continue
        by_task.setdefault(ex.key, []).append((float(actual), float(curve.peak(0.5)), known))
    results: dict[str, list[float]] = {"as served": [], "intercept only": []}
    results.update({f"intercept + {n}": [] for n in FEATURES})
    for rows in by_task.values():
        if len(rows) <= MIN_EARLIER:
            continue
        results["as served"] += [abs(p - a) / a for a, p, _ in rows[MIN_EARLIER:]]
        results["intercept only"] += corrected_errors(rows, None)
        for n in FEATURES:
            results[f"intercept + {n}"] += corrected_errors(rows, n)
    pooled = [r for rows in by_task.values() for r in rows]
    resid = np.array([math.log(a / p) for a, p, _ in pooled])
    lines = [
        "# Job-queue features on the Nextflow traces (memory peaks)",
        "",
        "Reproduce: `.venv/bin/python bench/profiler_queue.py` (part of `make bench`). "
        + " ".join(__doc__.split("\n\n")[2].split()),
        "",
        f"Held-out runs with both features: {len(pooled)}; scored (after {MIN_EARLIER} earlier runs of "
        f"their task): {len(results['as served'])}.",
        "",
        "| p50 memory peak | median error | p90 error |",
        "|---|---|---|",
    ]
    for name, errs in results.items():
        lines.append(f"| {name} | {100 * np.median(errs):.2f}% | {100 * np.quantile(errs, 0.9):.1f}% |")
    lines += ["", "Rank correlation of each feature with the served forecast's log residual, pooled:", ""]
    for n in FEATURES:
        x = np.array([f[n] for _, _, f in pooled])
        rho = float(np.corrcoef(np.argsort(np.argsort(x)), np.argsort(np.argsort(resid)))[0, 1])
        lines.append(f"- {n}: Spearman {rho:+.3f} (median {np.median(x):.1f}, p90 {np.quantile(x, 0.9):.1f})")
    control = float(np.median(results["intercept only"]))
    helps = [n for n in FEATURES if float(np.median(results[f"intercept + {n}"])) < control * 0.98]
    lines += [
        "",
        "Verdict: "
        + (
            f"{', '.join(helps)} lower the median error by more than 2% below the control."
            if helps
            else "no feature lowers the median error below the intercept-only control (by 2% or more): "
            "neither is used as a feature (and a per-task correction of the served p50 itself hurts)."
        ),
    ]
    lines += ["", f"Took {time.monotonic() - began:.0f} s on this shared 2-core machine.", ""]
    Path(args.out).write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
