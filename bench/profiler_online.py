"""Cost of one online update per finished run (no TensorFlow), on real kseg-eager runs.

Usage: .venv/bin/python bench/profiler_online.py [--data DIR] [--out docs/benchmarks/profiler_online.md]

Why: issue 13 asks that a finished run updates its task's statistical profile in milliseconds so
the very next run is planned with it. The traces are imported into a throw-away SQLite store, the
first half of each task's runs trains the default baselines (no LSTM: the update path is the same
numpy serving for every champion), then the second half is folded in one run at a time:
- ``observe``: the run handed over in memory (serve the forecast it would have had, update the
  calibration window and the drift detector, append it to the cached history);
- ``catch-up``: the executor's ``run_finished`` notice then the next query, which reads the task's
  recent history from storage and folds in the unseen run (what the executor hook costs in all).
Both are timed per run (p50 / p99 / max); the drift alarms raised are counted.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

OUT = ROOT / "docs" / "benchmarks" / "profiler_online.md"


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def _write(store: Any, run: Any) -> None:
    """``run`` written as the recorder does (its series thinned to every 5th sample)."""
    from dataclasses import replace

    from airflow_predictive.core.model.resources import ResourceVector
    from airflow_predictive.core.model.series import ResourceSample

    pk = store.upsert_run(replace(run.record, run_pk=None))
    series = run.series
    if series is not None:
        samples = [
            ResourceSample(
                float(t), ResourceVector.from_mapping({m: float(v[i]) for m, v in series.values.items()})
            )
            for i, t in enumerate(series.times)
            if i % 5 == 0
        ]
        store.add_samples(pk, samples)


def _store_with(runs: list) -> Any:
    """A throw-away SQLite store holding ``runs``."""
    import tempfile

    from sqlalchemy import create_engine

    from airflow_predictive.storage import migrate
    from airflow_predictive.storage.run_store import SqlRunStore

    tmp = tempfile.mkdtemp(prefix="profiler-online-")
    engine = create_engine(f"sqlite:///{tmp}/live.db")
    migrate.upgrade(engine)
    store = SqlRunStore(engine)
    for run in runs:
        _write(store, run)
    return engine


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    parser.add_argument("--out", default=str(OUT))
    parser.add_argument("--tasks", type=int, default=6, help="tasks folded in (each: its held-out half)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    import tempfile

    from profiler_bench import load  # type: ignore[import-not-found]

    from airflow_predictive.core.model.query import ForecastQuery
    from airflow_predictive.core.profiler.selection import SelectionPolicy
    from airflow_predictive.storage.model_store import ModelStore
    from airflow_predictive.storage.profile_store import ForecastCache, ProfileStore
    from airflow_predictive.storage.run_store import SqlRunStore
    from airflow_predictive.training.artefacts import ArtefactSaver
    from airflow_predictive.training.candidates import factories
    from airflow_predictive.training.dataset import chronological, load_examples, split_chronologically
    from airflow_predictive.training.evaluation import measured_metrics
    from airflow_predictive.training.pipeline import train
    from airflow_predictive.training.serving import StoredForecastService

    _, examples, _ = load(Path(args.data) / "kseg-eager")
    by_task: dict[Any, list] = {}
    for e in chronological(examples):
        by_task.setdefault(e.key, []).append(e)
    keys = sorted(by_task, key=lambda k: -len(by_task[k]))[: args.tasks]
    trained: list = []
    held: list = []
    for k in keys:
        a, b = split_chronologically(by_task[k])
        trained += a
        held += b
    engine = _store_with(trained)
    trained = load_examples(SqlRunStore(engine))  # as the store holds them (run_pk set)
    models = Path(tempfile.mkdtemp(prefix="profiler-online-"))
    names = ("scaled_curve", "last_run", "median_peak", "linear_input", "vpa", "autopilot")
    train(
        trained,
        factories(names),
        profiles=ProfileStore(engine),
        cache=ForecastCache(engine),
        model_saver=ArtefactSaver(models),
        policy=SelectionPolicy(folds=2, metrics=measured_metrics(trained)),
    )
    # observe: the service holds the training half; each held-out run is handed over in memory.
    # catch-up: a second store receives the held-out runs one at a time, as the recorder writes
    # them (untimed), then the executor's notice and the next query are timed.
    observe_ms: list[float] = []
    catch_ms: list[float] = []
    drifts = 0
    service = StoredForecastService(engine, model_store=ModelStore(models))
    for k in keys:
        service.forecast_for(ForecastQuery(k))
        for run in [e for e in held if e.key == k]:
            began = time.perf_counter()
            update = service.observe(run)
            observe_ms.append(1000 * (time.perf_counter() - began))
            drifts += bool(update is not None and update.drifted)
    live = StoredForecastService(engine, model_store=ModelStore(models))
    store = SqlRunStore(engine)
    for k in keys:
        live.forecast_for(ForecastQuery(k))
        for run in [e for e in held if e.key == k]:
            _write(store, run)
            began = time.perf_counter()
            live.run_finished(k)
            live.forecast_for(ForecastQuery(k, run.record.features, run.record.declared))
            catch_ms.append(1000 * (time.perf_counter() - began))
    lines = [
        "# Online profile update per finished run",
        "",
        "Reproduce: `.venv/bin/python bench/profiler_online.py` (part of `make bench`; this script rewrites "
        "this page).",
        "",
        f"kseg-eager, the {len(keys)} tasks with most runs; trained on the first half of each task's runs "
        f"(baselines + scaled curve), then the held-out {len(held)} runs folded in one at a time. No "
        "TensorFlow is imported on this path. 2 shared cores (other agents running).",
        "",
        "| path | runs | p50 ms | p99 ms | max ms |",
        "|---|---|---|---|---|",
    ]
    for name, xs in (
        ("observe (run in memory)", observe_ms),
        ("run_finished + next query (reads storage)", catch_ms),
    ):
        lines.append(
            f"| {name} | {len(xs)} | {statistics.median(xs):.2f} | {_pct(xs, 0.99):.2f} | {max(xs):.2f} |"
        )
    lines += ["", f"Drift alarms raised while folding in (observe path): {drifts}.", ""]
    Path(args.out).write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
