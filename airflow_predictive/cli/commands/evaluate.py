"""`airflow predictive evaluate --traces DIR [--json]`: the profiler on held-out runs of a trace.

DIR is imported into a throw-away SQLite store (never the provider's database), split per task
chronologically (first half trains, second half is forecast), and scored against the declared,
VPA-style and Autopilot-style references. With ``--json`` the last line of output is one JSON
object keyed overall / per task, then by dimension, statistic and quantile.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from typing import Any


def evaluate_traces(
    traces: Path,
    *,
    candidates: tuple[str, ...] | None = None,
    train_fraction: float = 0.5,
    folds: int = 2,
    progress: Any = None,
) -> tuple[Any, Any]:
    """Import ``traces`` into a temporary store and evaluate; returns (ImportSummary, Evaluation).
    ``progress``: a ``training.progress.Progress`` (the CLI's bar with an ETA on stderr)."""
    from sqlalchemy import create_engine

    from airflow_predictive.core.profiler.selection import SelectionPolicy
    from airflow_predictive.storage import migrate
    from airflow_predictive.storage.run_store import SqlRunStore
    from airflow_predictive.traces import import_traces
    from airflow_predictive.training.candidates import DEFAULT_CANDIDATES, REFERENCES, factories
    from airflow_predictive.training.dataset import load_examples
    from airflow_predictive.training.evaluation import evaluate, measured_metrics

    with tempfile.TemporaryDirectory(prefix="predictive-evaluate-") as tmp:
        engine = create_engine(f"sqlite:///{Path(tmp) / 'traces.db'}")
        try:
            migrate.upgrade(engine)
            store = SqlRunStore(engine)
            if progress is not None:
                progress.add(2)  # import and load (about 30 s for 5,000 runs): the bar starts at once
                progress.step(f"importing {traces.name}", items=0)
            summary = import_traces(traces, store)
            if progress is not None:
                progress.step("imported")
            examples = load_examples(store)
            if progress is not None:
                progress.step("loaded")
        finally:
            engine.dispose()
    if not examples:
        raise SystemExit(f"{traces}: no usable runs ({summary.describe()})")
    policy = SelectionPolicy(folds=folds, metrics=measured_metrics(examples))
    result = evaluate(
        examples,
        factories(candidates or DEFAULT_CANDIDATES),
        factories(REFERENCES),
        train_fraction=train_fraction,
        policy=policy,
        progress=progress,
    )
    if progress is not None:
        progress.close()
    return summary, result


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.1f}%"


def run(args: Any) -> None:
    from airflow_predictive.traces import TraceFormatError
    from airflow_predictive.training.progress import Progress

    names = tuple(args.candidates.split(",")) if getattr(args, "candidates", None) else None
    try:
        summary, result = evaluate_traces(Path(args.traces), candidates=names, progress=Progress("evaluate"))
    except TraceFormatError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    print(f"imported {summary.describe()}")
    print(
        f"held out {result.test_runs} runs (trained on {result.train_runs}); champions {result.champion_counts()}"
    )
    print(
        f"{'estimator':<14}{'dimension':<11}{'peak err med':>13}{'p90':>8}{'cov p99':>9}{'pinball':>9}{'unused p99':>11}"
    )
    for name, rep in result.reports.items():
        for metric, s in rep.overall.items():
            print(
                f"{name:<14}{metric.dimension.value:<11}{_pct(s.peak_error_median):>13}{_pct(s.peak_error_p90):>8}"
                f"{_pct(s.coverage.get(0.99)):>9}{(s.pinball or 0):>9.4f}{_pct(s.unused_fraction.get(0.99)):>11}"
            )
    if getattr(args, "json", False):
        sys.stdout.flush()
        print(json.dumps(result.as_dict(), sort_keys=True, default=str))
