"""Serving "what will this run need": lookup latency, per-query numpy cost, online update cost.

Usage: .venv/bin/python bench/serving_bench.py [--data DIR] [--out docs/benchmarks/serving.md]

kseg-eager is imported into a throw-away SQLite store and trained with the baselines and the
scaled curve (the champions are saved through the model store, as `airflow predictive train`
does); an LSTM is trained briefly (5 epochs: its cost per query does not depend on its accuracy)
and loaded with the numpy forward pass. Figures, on this shared 2-core machine:
- cached: the same query again (profile, history and models in memory, result memoised);
- per query: a new input size each time (the champion is evaluated in numpy for it), per
  champion type, and the LSTM's numpy forward pass alone, for one query and a batch of 100;
- first query of a task: its profile, 50 records and 5 series read from SQLite;
- online update: ``observe`` of one finished run (history append + calibration + drift).
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from airflow_predictive.core.model.query import ForecastQuery  # noqa: E402
from airflow_predictive.core.profiler.run_features import run_features  # noqa: E402

OUT = ROOT / "docs" / "benchmarks" / "serving.md"


def pcts(ms: list[float]) -> str:
    a = np.array(ms)
    return f"p50 {np.percentile(a, 50):.3f} ms, p99 {np.percentile(a, 99):.3f} ms ({a.size} calls)"


def timed(fn, n: int) -> list[float]:  # type: ignore[no-untyped-def]
    out = []
    for i in range(n):
        t0 = time.perf_counter()
        fn(i)
        out.append((time.perf_counter() - t0) * 1000)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    parser.add_argument("--out", default=str(OUT))
    parser.add_argument("--no-lstm", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    from profiler_bench import load  # type: ignore[import-not-found]

    from airflow_predictive.core.profiler.selection import SelectionPolicy
    from airflow_predictive.core.profiler.serving import ServingProfile, serve
    from airflow_predictive.storage.profile_store import ForecastCache, ProfileStore
    from airflow_predictive.training.artefacts import ArtefactSaver
    from airflow_predictive.training.candidates import cold_start_chain, factories
    from airflow_predictive.training.evaluation import measured_metrics
    from airflow_predictive.training.pipeline import train
    from airflow_predictive.training.serving import StoredForecastService

    _, examples, engine = load(Path(args.data) / "kseg-eager")
    tmp = Path(tempfile.mkdtemp(prefix="serving-bench-"))
    saver = ArtefactSaver(tmp / "models")
    names = ("scaled_curve", "last_run", "median_peak", "linear_input", "vpa", "autopilot")
    t0 = time.monotonic()
    result = train(
        examples,
        factories(names),
        profiles=ProfileStore(engine),  # type: ignore[arg-type]
        cache=ForecastCache(engine),  # type: ignore[arg-type]
        model_saver=saver,
        policy=SelectionPolicy(folds=2, metrics=measured_metrics(examples)),
    )
    train_s = time.monotonic() - t0
    champions = {t.key: t.champion for t in result.tasks}
    keys = sorted(champions, key=str)
    service = StoredForecastService(engine, model_store=saver.store)  # type: ignore[arg-type]
    sizes = {
        k: float(next(e.record.features.get("input_bytes") or 1e9 for e in examples if e.key == k))
        for k in keys
    }

    def q(k, size):  # type: ignore[no-untyped-def]
        return ForecastQuery(k, {**run_features({}), "input_bytes": size})

    first = timed(
        lambda i: service.forecast_for(q(keys[i % len(keys)], sizes[keys[i % len(keys)]])), len(keys)
    )
    cached = timed(lambda i: service.forecast_for(q(keys[i % len(keys)], sizes[keys[i % len(keys)]])), 2000)
    per_query: dict[str, list[float]] = {}
    for k in keys:
        champ = champions[k] or "cold_start"
        per_query.setdefault(champ, []).extend(
            timed(lambda i, k=k: service.forecast_for(q(k, sizes[k] * (1.001 + i / 1000))), 100)
        )
    lines = [
        "# Serving forecasts for this run (ForecastService)",
        "",
        "Reproduce: `.venv/bin/python bench/serving_bench.py` (part of `make bench`). kseg-eager in a throw-away "
        f"SQLite store, {len(examples)} runs, {len(keys)} tasks; training of the baselines and the scaled curve "
        f"took {train_s:.0f} s here. Shared 2-core machine (other agents were running): figures vary 2-4x with load.",
        "",
        "| what | latency |",
        "|---|---|",
        f"| cached task, same query again (goal p99 <= 5 ms) | {pcts(cached)} |",
        f"| first query of a task (profile + 50 records + 5 series from SQLite) | {pcts(first)} |",
    ]
    for champ, ms in sorted(per_query.items()):
        lines.append(
            f"| per-query numpy evaluation, champion `{champ}` (new input size each call) | {pcts(ms)} |"
        )
    if not args.no_lstm:
        from dataclasses import replace

        from airflow_predictive.core.profiler.estimators.lstm import LstmConfig, LstmForecaster

        lstm = LstmForecaster(replace(LstmConfig(), epochs=5, fine_tune_epochs=2)).fit(examples)
        lstm.save(tmp / "lstm")
        served = LstmForecaster.load_numpy(tmp / "lstm")
        by_task: dict = {}
        for e in examples:
            by_task.setdefault(e.key, []).append(e)
        profile = ServingProfile(champion="lstm", estimator=served)
        chain = cold_start_chain()
        one = timed(
            lambda i: serve(
                q(keys[i % len(keys)], sizes[keys[i % len(keys)]] * 1.01),
                by_task[keys[i % len(keys)]][-50:],
                profile,
                chain,
            ),
            200,
        )
        from airflow_predictive.core.profiler.estimators.base import ForecastQuery as EQ

        batch = [EQ(k, features={"input_bytes": sizes[k]}, history=tuple(by_task[k][-50:])) for k in keys] * 9
        many = timed(lambda i: served.predict_many(batch[:100]), 20)
        lines.append(f"| per-query numpy LSTM forward pass + encoding (serve, one query) | {pcts(one)} |")
        lines.append(f"| numpy LSTM, batch of 100 queries (one call) | {pcts(many)} |")
    # online update: observe the task's own runs again as if they just finished
    k = keys[0]
    runs = [e for e in examples if e.key == k][-60:]
    service.forecast_for(q(k, sizes[k]))
    obs = timed(lambda i: service.observe(runs[i % len(runs)]), 200)
    lines.append(f"| online update per finished run (`observe`: history, calibration, drift) | {pcts(obs)} |")
    lines.append("")
    text = "\n".join(lines)
    Path(args.out).write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
