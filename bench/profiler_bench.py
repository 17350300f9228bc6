"""Profiler benchmark on real traces: held-out accuracy, memory waste, serving latency, training time.

Usage: .venv/bin/python bench/profiler_bench.py [--data DIR] [DIR]   (default ../shared/data)

For each trace folder under DIR (kseg-eager: 2 s CPU/memory series; nextflow-traces: peaks and
totals only), runs are imported into a throw-away SQLite store and split per task
chronologically (first half trains and picks each task's champion by backtest, second half is
forecast run by run with all earlier runs as history). Every estimator and the references
(declared, VPA-style, Autopilot-style) are scored on the same held-out runs. Serving figures:
cached forecast lookups and a batched re-forecast of 100 running tasks from 20% prefixes. Writes
docs/benchmarks/profiler.md and PNG plots in docs/benchmarks/img/.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from airflow_predictive.core.model.resources import GIB, Metric  # noqa: E402
from airflow_predictive.core.profiler.selection import SelectionPolicy, query_for  # noqa: E402
from airflow_predictive.training.candidates import (  # noqa: E402
    DEFAULT_CANDIDATES,
    REFERENCES,
    cold_start_chain,
    factories,
)
from airflow_predictive.training.dataset import chronological, load_examples, split_chronologically  # noqa: E402
from airflow_predictive.training.evaluation import (  # noqa: E402
    DIMENSION_KEYS,
    PROFILER,
    Evaluation,
    evaluate,
    measured_metrics,
    truncated,
)

if TYPE_CHECKING:
    from collections.abc import Callable

log = logging.getLogger("profiler_bench")
DATASETS = ("kseg-eager", "nextflow-traces")
NOTES_MARKER = "<!-- notes: kept when the benchmark rewrites this file -->"
OUT = ROOT / "docs" / "benchmarks" / "profiler.md"
IMG = ROOT / "docs" / "benchmarks" / "img"


def pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.1f}%"


def load(folder: Path) -> tuple[object, list, object]:
    from sqlalchemy import create_engine

    from airflow_predictive.storage import migrate
    from airflow_predictive.storage.run_store import SqlRunStore
    from airflow_predictive.traces import import_traces

    tmp = tempfile.mkdtemp(prefix="profiler-bench-")
    engine = create_engine(f"sqlite:///{tmp}/traces.db")
    migrate.upgrade(engine)
    store = SqlRunStore(engine)
    summary = import_traces(folder, store)
    began = time.monotonic()
    examples = load_examples(store)
    log.info(
        "%s: %s; %d examples loaded in %.1f s",
        folder.name,
        summary.describe(),
        len(examples),
        time.monotonic() - began,
    )
    return summary, examples, engine


def serving_figures(engine: object, ev: Evaluation, examples: list, names: dict) -> dict[str, float]:
    """Cached lookup latency (memo off: every lookup reads and parses the row) and batched re-forecast."""
    from airflow_predictive.storage.profile_store import ForecastCache
    from airflow_predictive.training.reforecast import Reforecaster

    out: dict[str, float] = {}
    train, test = split_chronologically(chronological(examples))
    cache = ForecastCache(engine, ttl_s=0.0)  # type: ignore[arg-type]
    prof = ev.forecasts[PROFILER]
    keys = []
    for i, f in list(prof.items())[:200]:
        key = test[i].key
        if key not in keys:
            cache.put(key, f)
            keys.append(key)
    lat = []
    for _ in range(50):
        for k in keys:
            t0 = time.perf_counter()
            assert cache.get(k) is not None
            lat.append((time.perf_counter() - t0) * 1000)
    out["lookup_p50_ms"] = float(np.percentile(lat, 50))
    out["lookup_p99_ms"] = float(np.percentile(lat, 99))
    warm = ForecastCache(engine, ttl_s=60.0)  # type: ignore[arg-type]
    lat2 = []
    for _ in range(50):
        for k in keys:
            t0 = time.perf_counter()
            warm.get(k)
            lat2.append((time.perf_counter() - t0) * 1000)
    out["lookup_memo_p99_ms"] = float(np.percentile(lat2, 99))
    # re-forecast: 100 running tasks (held-out runs with 20% observed), each with its champion
    by_task: dict = {}
    for ex in chronological(examples):
        by_task.setdefault(ex.key, []).append(ex)
    pos = {id(ex): i for runs in by_task.values() for i, ex in enumerate(runs)}
    running = [ex for ex in test if ex.series is not None and len(ex.series) >= 5][:100]
    if len(running) < 100:
        return out
    metrics = measured_metrics(examples)
    queries = []
    for ex in running:
        q = query_for(ex, by_task[ex.key][: pos[id(ex)]], metrics)
        queries.append(replace(q, prefix=truncated(ex.series, 0.2)))
    fitted = {
        n: names[n]().fit(train) for n in {r.champion for r in ev.selections if r.champion} if n in names
    }
    trained_lstm = fitted.get("lstm")
    if trained_lstm is not None:  # served as the shaping loop serves it: numpy weights, no TensorFlow
        fitted["lstm"] = _numpy_served(trained_lstm)
    champions = {r.key: r.champion for r in ev.selections}
    ref = Reforecaster(fitted, champions, cold_start_chain().fit(train))
    # first call: runs never seen before (as if just read from the store: each run once, shared by
    # the queries of its task as the forecast service's per-task history is), nothing memoised
    fresh: dict[int, Any] = {}
    cold = [
        replace(q, history=tuple(fresh.setdefault(id(e), replace(e)) for e in q.history)) for q in queries
    ]
    out["reforecast_100_first_ms"] = _timed(ref, cold, repeats=1)
    out["reforecast_100_ms"], out["reforecast_100_cpu_ms"] = (
        _timed(ref, queries),
        _timed(ref, queries, cpu=True),
    )
    if trained_lstm is not None:
        all_lstm = {k: "lstm" for k in champions}
        served = Reforecaster({"lstm": fitted["lstm"]}, all_lstm, ref.fallback)
        out["reforecast_100_all_lstm_numpy_ms"] = _timed(served, queries)
        with_tf = Reforecaster({"lstm": trained_lstm}, all_lstm, ref.fallback)
        with_tf.reforecast(queries[:5])  # warm-up (graph tracing)
        out["reforecast_100_all_lstm_ms"] = _timed(with_tf, queries)
    return out


def _numpy_served(lstm: Any) -> Any:
    from airflow_predictive.core.profiler.estimators.lstm import LstmForecaster

    directory = Path(tempfile.mkdtemp(prefix="profiler-bench-lstm-"))
    lstm.save(directory)
    return LstmForecaster.load_numpy(directory)


def _timed(ref: Any, queries: list, *, repeats: int = 7, cpu: bool = False) -> float:
    """Median milliseconds of ``ref.reforecast(queries)`` (wall, or this process's CPU time)."""
    clock = time.process_time if cpu else time.perf_counter
    times = []
    for _ in range(repeats):
        t0 = clock()
        ref.reforecast(queries)
        times.append((clock() - t0) * 1000)
    return float(np.median(times))


def plots(name: str, ev: Evaluation, examples: list) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    IMG.mkdir(parents=True, exist_ok=True)
    files = []
    _, test = split_chronologically(chronological(examples))
    # error distributions of the memory peak (p50) per estimator
    fig, ax = plt.subplots(figsize=(6, 3.2), dpi=90)
    shown = [
        n for n in (PROFILER, "lstm", "linear_input", "median_peak", "vpa", "autopilot") if n in ev.scores
    ]
    data = [[100 * s.peak_error for _, s in ev.scores[n] if s.metric is Metric.MEMORY_BYTES] for n in shown]
    ax.boxplot(data, showfliers=False)
    ax.set_xticks(range(1, len(shown) + 1), shown, fontsize=8)
    ax.set_ylabel("memory peak error, %")
    ax.set_title(f"{name}: held-out memory peak error (p50 forecast)", fontsize=9)
    fig.tight_layout()
    path = IMG / f"profiler_{name}_peak_error.png"
    fig.savefig(path)
    plt.close(fig)
    files.append(path.name)
    # predicted band vs actual for a few held-out runs (series only)
    prof = ev.forecasts[PROFILER]
    picks, seen = [], set()
    for i, ex in enumerate(test):
        if ex.series is None or i not in prof or ex.key in seen or len(ex.series) < 30:
            continue
        seen.add(ex.key)
        picks.append(i)
        if len(picks) == 4:
            break
    if picks:
        fig, axes = plt.subplots(len(picks), 1, figsize=(6, 1.9 * len(picks)), dpi=80)
        axes = np.atleast_1d(axes)
        for ax, i in zip(axes, picks, strict=True):
            ex, f = test[i], prof[i]
            s = ex.series
            mem = s.get(Metric.MEMORY_BYTES)
            ax.plot(s.times - s.times[0], mem / GIB, color="black", lw=1, label="actual")
            c = f.curve(Metric.MEMORY_BYTES)
            if c is not None:
                t = np.arange(c.steps) * c.step_s
                ax.fill_between(t, c.at(0.5) / GIB, c.at(0.99) / GIB, step="post", alpha=0.3, label="p50-p99")
                ax.step(t, c.at(0.9) / GIB, where="post", lw=0.8, label="p90")
            ax.set_title(f"{ex.key.task_id} ({f.estimator})", fontsize=8)
            ax.set_ylabel("GiB", fontsize=7)
            ax.tick_params(labelsize=7)
        axes[0].legend(fontsize=6, loc="lower right")
        axes[-1].set_xlabel("seconds since start", fontsize=7)
        fig.tight_layout()
        path = IMG / f"profiler_{name}_bands.png"
        fig.savefig(path)
        plt.close(fig)
        files.append(path.name)
    return files


def figures_table(ev: Evaluation) -> list[str]:
    rows = [
        "| estimator | dimension | runs | peak err median | peak err p90 | under p90 | under p99 | coverage p99 "
        "| pinball | segment err | unused p99 | waste p99 GiB*s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    order = [PROFILER, *sorted(n for n in ev.reports if n != PROFILER)]
    for name in order:
        rep = ev.reports[name]
        for metric, s in rep.overall.items():
            waste = s.waste_gib_s.get(0.99)
            rows.append(
                f"| {name} | {DIMENSION_KEYS[metric]} | {s.runs} | {pct(s.peak_error_median)} | {pct(s.peak_error_p90)} "
                f"| {pct(s.under_rate.get(0.9))} | {pct(s.under_rate.get(0.99))} | {pct(s.coverage.get(0.99))} "
                f"| {s.pinball:.4f} | {pct(s.segment_error)} | {pct(s.unused_fraction.get(0.99))} "
                f"| {'-' if waste is None else f'{waste:,.0f}'} |"
            )
    return rows


def per_task_table(ev: Evaluation) -> list[str]:
    champions = {r.key: r.champion or "cold start" for r in ev.selections}
    prof, vpa = ev.reports[PROFILER], ev.reports.get("vpa")
    rows = [
        "| task | champion | held-out runs | mem peak err median | p90 | coverage p99 | VPA coverage p99 | unused p99 | VPA unused |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for key, per in sorted(prof.tasks.items(), key=lambda kv: str(kv[0])):
        s = per.get(Metric.MEMORY_BYTES)
        if s is None:
            continue
        v = vpa.tasks.get(key, {}).get(Metric.MEMORY_BYTES) if vpa else None
        rows.append(
            f"| {key.task_id[-48:]} | {champions.get(key)} | {s.runs} | {pct(s.peak_error_median)} | {pct(s.peak_error_p90)} "
            f"| {pct(s.coverage.get(0.99))} | {pct(v.coverage.get(0.99) if v else None)} "
            f"| {pct(s.unused_fraction.get(0.99))} | {pct(v.unused_fraction.get(0.99) if v else None)} |"
        )
    return rows


def allocation_rows(add: Callable[[str, str, str, bool | None], None], label: str, m: Any, v: Any) -> None:
    """The stepped p99 allocation against VPA's flat one; coverage both as the peak within the
    p99 peak and as never exceeded at any time (an allocation below the curve mid-run is an OOM)."""
    w_p, w_v = m.waste_gib_s.get(0.99), v.waste_gib_s.get(0.99)
    if w_p is None or not w_v:
        return
    cut = 1 - w_p / w_v
    never_p, never_v = 1 - m.oom_rate.get(0.99, 1.0), 1 - v.oom_rate.get(0.99, 1.0)
    equal_cov = m.coverage.get(0.99, 0) >= v.coverage.get(0.99, 0) and never_p >= never_v
    add(
        f"p99 stepped curve vs VPA flat: less unused GiB*s{label}",
        ">= 35% at equal or better coverage",
        f"{pct(cut)} less ({w_p / 1e6:.2f} M vs {w_v / 1e6:.2f} M GiB*s; peak coverage "
        f"{pct(m.coverage.get(0.99))} vs {pct(v.coverage.get(0.99))}; never exceeded "
        f"{pct(never_p)} vs {pct(never_v)})",
        cut >= 0.35 and equal_cov,
    )


SIMPLE = ("last_run", "median_peak", "linear_input")


def _best_single(ev: Evaluation, label: str) -> tuple[str, str, str, bool]:
    """The profiler as served against its best single candidate, by median memory peak error."""
    mem = Metric.MEMORY_BYTES
    prof = ev.reports[PROFILER].overall[mem].peak_error_median or 1.0
    singles = {
        n: r.overall[mem].peak_error_median
        for n, r in ev.reports.items()
        if n != PROFILER and mem in r.overall and r.overall[mem].peak_error_median is not None
    }
    best = min(singles, key=lambda n: singles[n])
    return (
        f"{label}: profiler vs its best single candidate (median memory peak error)",
        "no worse",
        f"{pct(prof)} vs {best} {pct(singles[best])}",
        prof <= singles[best] + 1e-9,
    )


def _tasks_worse_than_simple(ev: Evaluation) -> tuple[int, int]:
    mem = Metric.MEMORY_BYTES
    worse = total = 0
    for key, figs in ev.reports[PROFILER].tasks.items():
        if mem not in figs or figs[mem].peak_error_median is None:
            continue
        simple = [
            ev.reports[n].tasks[key][mem].peak_error_median
            for n in SIMPLE
            if n in ev.reports and key in ev.reports[n].tasks and mem in ev.reports[n].tasks[key]
        ]
        simple = [v for v in simple if v is not None]
        if not simple:
            continue
        total += 1
        worse += int(figs[mem].peak_error_median > min(simple) + 1e-9)
    return worse, total


def targets(results: dict) -> list[str]:
    rows = ["| target | goal | reached | met |", "|---|---|---|---|"]

    def add(label: str, goal: str, value: str, ok: bool | None) -> None:
        rows.append(f"| {label} | {goal} | {value} | {'yes' if ok else 'no' if ok is not None else '-'} |")

    k = results.get("kseg-eager")
    if k:
        m = k["ev"].reports[PROFILER].overall[Metric.MEMORY_BYTES]
        add(
            "kseg-eager memory peak error, median",
            "<= 4%",
            pct(m.peak_error_median),
            (m.peak_error_median or 1) <= 0.04,
        )
        add(
            "kseg-eager memory peak error, p90",
            "<= 12%",
            pct(m.peak_error_p90),
            (m.peak_error_p90 or 1) <= 0.12,
        )
        add("kseg-eager p99 coverage", ">= 99%", pct(m.coverage.get(0.99)), m.coverage.get(0.99, 0) >= 0.99)
        c = k["ev"].reports[PROFILER].overall.get(Metric.CPU_CORES)
        if c is not None:
            add(
                "kseg-eager CPU p99 coverage",
                ">= 99%",
                pct(c.coverage.get(0.99)),
                c.coverage.get(0.99, 0) >= 0.99,
            )
        add(*_best_single(k["ev"], "kseg-eager"))
        p = k["ev"].reports[PROFILER].prefix
        if p and p.median_error_at_start and p.median_error_with_prefix is not None:
            ratio = p.median_error_with_prefix / p.median_error_at_start
            add(
                "20% observed: rest-of-run peak error (median)",
                "halves",
                f"{pct(p.median_error_at_start)} -> {pct(p.median_error_with_prefix)}",
                ratio <= 0.5,
            )
        lp = k["ev"].reports.get("lstm")
        if (
            lp
            and lp.prefix
            and lp.prefix.median_error_at_start
            and lp.prefix.median_error_with_prefix is not None
        ):
            add(
                "20% observed, LSTM alone",
                "halves",
                f"{pct(lp.prefix.median_error_at_start)} -> {pct(lp.prefix.median_error_with_prefix)}",
                lp.prefix.median_error_with_prefix <= 0.5 * lp.prefix.median_error_at_start,
            )
        v = k["ev"].reports["vpa"].overall[Metric.MEMORY_BYTES]
        allocation_rows(add, "", m, v)
        if "ev_curve" in k:
            mc = k["ev_curve"].reports[PROFILER].overall[Metric.MEMORY_BYTES]
            add(
                "kseg-eager p99 coverage, curve calibration",
                ">= 99%",
                pct(mc.coverage.get(0.99)),
                mc.coverage.get(0.99, 0) >= 0.99,
            )
            allocation_rows(add, ", curve calibration", mc, v)
        if "ev_combined" in k:
            ec = k["ev_combined"]
            mb = ec.reports[PROFILER].overall[Metric.MEMORY_BYTES]
            tag = "kseg-eager with the opt-in `combined` candidate"
            add(
                f"{tag}: memory peak error, median",
                "<= 4%",
                pct(mb.peak_error_median),
                (mb.peak_error_median or 1) <= 0.04,
            )
            add(
                f"{tag}: memory peak error, p90",
                "<= 12%",
                pct(mb.peak_error_p90),
                (mb.peak_error_p90 or 1) <= 0.12,
            )
            add(
                f"{tag}: p99 coverage", ">= 99%", pct(mb.coverage.get(0.99)), mb.coverage.get(0.99, 0) >= 0.99
            )
            cb = ec.reports[PROFILER].overall.get(Metric.CPU_CORES)
            if cb is not None:
                add(
                    f"{tag}: CPU p99 coverage",
                    ">= 99%",
                    pct(cb.coverage.get(0.99)),
                    cb.coverage.get(0.99, 0) >= 0.99,
                )
            add(*_best_single(ec, f"{tag}"))
            allocation_rows(add, ", with `combined`", mb, ec.reports["vpa"].overall[Metric.MEMORY_BYTES])
        s = k.get("serving", {})
        if "lookup_p99_ms" in s:
            add(
                "cached forecast lookup p99 (DB read + parse)",
                "<= 5 ms",
                f"{s['lookup_p99_ms']:.2f} ms",
                s["lookup_p99_ms"] <= 5,
            )
        if "reforecast_100_ms" in s:
            add(
                "re-forecast 100 running tasks (champions)",
                "<= 200 ms",
                f"{s['reforecast_100_ms']:.0f} ms",
                s["reforecast_100_ms"] <= 200,
            )
        if "reforecast_100_first_ms" in s:
            v_ = s["reforecast_100_first_ms"]
            add(
                "re-forecast 100 running tasks (champions), first call",
                "<= 200 ms",
                f"{v_:.0f} ms",
                v_ <= 200,
            )
        if "reforecast_100_all_lstm_numpy_ms" in s:
            v_ = s["reforecast_100_all_lstm_numpy_ms"]
            add(
                "re-forecast 100 running tasks (all LSTM as served: numpy, one batch)",
                "<= 200 ms",
                f"{v_:.0f} ms",
                v_ <= 200,
            )
        if "reforecast_100_all_lstm_ms" in s:
            v_ = s["reforecast_100_all_lstm_ms"]
            add(
                "re-forecast 100 running tasks (all LSTM through TensorFlow, one batch)",
                "<= 200 ms",
                f"{v_:.0f} ms",
                v_ <= 200,
            )
        add(
            "training on kseg-eager (whole evaluation: 2-fold backtest, all fits, scoring)",
            "<= 10 min",
            f"{k['train_s'] / 60:.1f} min",
            k["train_s"] <= 600,
        )
    n = results.get("nextflow-traces")
    if n:
        m = n["ev"].reports[PROFILER].overall[Metric.MEMORY_BYTES]
        base = n["ev"].reports.get("median_peak")
        bm = base.overall[Metric.MEMORY_BYTES] if base else None
        add(
            "Nextflow memory peak error, p90",
            "<= 25%",
            pct(m.peak_error_p90),
            (m.peak_error_p90 or 1) <= 0.25,
        )
        add(*_best_single(n["ev"], "Nextflow"))
        worse, total = _tasks_worse_than_simple(n["ev"])
        add(
            "Nextflow tasks where the profiler's median is worse than the best simple baseline",
            "none",
            f"{worse} of {total}",
            worse == 0,
        )
        if bm:
            add(
                "Nextflow median vs median-of-earlier-peaks",
                "no worse",
                f"{100 * (m.peak_error_median or 0):.2f}% vs {100 * (bm.peak_error_median or 0):.2f}%",
                (m.peak_error_median or 1) <= (bm.peak_error_median or 0) + 1e-9,
            )
        add("Nextflow p99 coverage", ">= 99%", pct(m.coverage.get(0.99)), m.coverage.get(0.99, 0) >= 0.99)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data_pos", nargs="?", help="trace folder root (default ../shared/data)")
    parser.add_argument("--data", default=None)
    # statsmodels candidates refit at every forecast (ARIMA ~0.25 s, ETS ~3 s per query on a loaded
    # 2-core machine): thousands of held-out forecasts would take an hour, so they are opt-in here
    fast = [n for n in DEFAULT_CANDIDATES if n not in ("ets", "arima")]
    parser.add_argument("--candidates", default=",".join(fast), help="add ,arima,ets to include statsmodels")
    parser.add_argument("--datasets", default=",".join(DATASETS))
    parser.add_argument("--folds", type=int, default=2)
    parser.add_argument("--out", default=str(OUT))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    for noisy in ("airflow_predictive", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    data = Path(args.data or args.data_pos or ROOT.parent / "shared" / "data")
    names = factories(tuple(args.candidates.split(",")))
    refs = factories(REFERENCES)
    results: dict[str, dict] = {}
    for ds in args.datasets.split(","):
        folder = data / ds
        if not folder.exists():
            log.warning("skipping %s: %s not found", ds, folder)
            continue
        t0 = time.monotonic()
        summary, examples, engine = load(folder)
        import_s = time.monotonic() - t0
        policy = SelectionPolicy(folds=args.folds, metrics=measured_metrics(examples))
        t1 = time.monotonic()
        ev = evaluate(examples, names, refs, policy=policy)
        eval_s = time.monotonic() - t1
        train_s = sum(ev.fit_seconds.values())  # final fits; backtest time is inside eval_s
        log.info(
            "%s: evaluated in %.0f s; fits %s",
            ds,
            eval_s,
            {k: round(v, 1) for k, v in ev.fit_seconds.items()},
        )
        entry = {"summary": summary, "ev": ev, "import_s": import_s, "eval_s": eval_s, "train_s": eval_s}
        entry["train_fit_s"] = train_s
        if ds == "kseg-eager":
            t2 = time.monotonic()
            curve_policy = replace(policy, calibration_mode="curve")
            entry["ev_curve"] = evaluate(examples, names, refs, policy=curve_policy, prefix_fraction=None)
            log.info("%s: curve-calibrated evaluation in %.0f s", ds, time.monotonic() - t2)
            if "combined" not in names and "lstm" in names:  # the opt-in forecast combination
                t3 = time.monotonic()
                with_combined = {**names, **factories(("combined",))}
                entry["ev_combined"] = evaluate(
                    examples, with_combined, refs, policy=policy, prefix_fraction=None
                )
                log.info("%s: evaluation with the combination in %.0f s", ds, time.monotonic() - t3)
            entry["serving"] = serving_figures(engine, ev, examples, names)
            log.info("serving: %s", entry["serving"])
        entry["plots"] = plots(ds, ev, examples)
        results[ds] = entry
        print(json.dumps({"dataset": ds, **ev.as_dict()["overall"]}, default=str)[:2000])
    write_report(Path(args.out), results, names)
    print(f"wrote {args.out}")
    return 0


def write_report(path: Path, results: dict, names: dict) -> None:
    lines = [
        "# Profiler benchmark",
        "",
        "Generated by `bench/profiler_bench.py` (part of `make bench`) on the real traces in",
        "`../shared/data` (never committed). Per task, runs are split chronologically: the first half",
        "trains and picks each task's champion by rolling-origin backtest (the p75 of each candidate's",
        "memory peak errors, shrunk towards the candidate best across tasks; the penalised pinball loss",
        "where a task has no memory peaks), the second half is forecast one run at a time with all earlier",
        "runs of the task as history (forecast at start unless stated). `profiler` = each task's",
        "champion (cold-start chain where a task has too few runs). Peak error uses the p50 forecast;",
        "coverage / under-prediction compare the run's actual peak with the forecast's peak at that",
        "quantile; *unused p99* is the share of allocated memory*time left idle when the p99 curve is",
        "used as an allocation with steps of at least 30 s (flat estimators: one number for the run);",
        "pinball loss is per unit of the run's actual peak. Features use only what is known before",
        "a run starts (input sizes, declared resources, sample, history), never its outputs.",
        "",
        f"Candidates: {', '.join(names)}. Machine: {os.cpu_count()} CPUs.",
        "",
        "## Targets",
        "",
        *targets(results),
        "",
    ]
    for ds, r in results.items():
        ev: Evaluation = r["ev"]
        lines += [
            f"## {ds}",
            "",
            f"Import: {r['summary'].describe()}; import + load {r['import_s']:.1f} s.",
            f"Held out {ev.test_runs} runs (trained on {ev.train_runs}); evaluation incl. backtest and fits "
            f"{r['eval_s']:.0f} s; final fits: "
            + ", ".join(f"{k} {v:.1f} s" for k, v in sorted(ev.fit_seconds.items()))
            + ".",
            f"Champions per task: {ev.champion_counts()}.",
            "",
            *figures_table(ev),
            "",
        ]
        prefix_rows = [
            f"| {n} | {p.runs} | {pct(p.median_error_at_start)} | {pct(p.median_error_with_prefix)} |"
            for n, rep in ev.reports.items()
            if (p := rep.prefix) is not None and p.runs
        ]
        if prefix_rows:
            lines += [
                "Re-forecast with the first 20% of each run observed (error of the rest of the run's memory peak, median):",
                "",
                "| estimator | runs | at start | with 20% prefix |",
                "|---|---|---|---|",
                *prefix_rows,
                "",
            ]
        lines += ["Per task (memory):", "", *per_task_table(ev), ""]
        if r.get("serving"):
            lines += ["Serving:", "", *[f"- {k}: {v:.2f}" for k, v in r["serving"].items()], ""]
        lines += [f"![{p}](img/{p})" for p in r["plots"]] + [""]
    path.parent.mkdir(parents=True, exist_ok=True)
    notes = ""
    if path.exists() and NOTES_MARKER in path.read_text():
        notes = path.read_text().split(NOTES_MARKER, 1)[1]  # hand-written notes survive a re-run
    path.write_text("\n".join(lines) + "\n" + NOTES_MARKER + (notes or "\n"))


if __name__ == "__main__":
    sys.exit(main())
