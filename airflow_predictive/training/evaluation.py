"""Held-out evaluation of the profiler against reference forecasters (CLI evaluate, benchmark).

Per task, runs are split chronologically: the first half trains (and is backtested to pick the
champion), the second half is forecast one run at a time, each with all of the task's earlier
runs as history, exactly as in production. "profiler" is the champion per task (or the cold-start
chain where no champion exists); every candidate and reference (declared, VPA-style,
Autopilot-style) is scored on the same runs. With ``prefix_fraction``, each held-out run is
forecast again from its first part, and the error on the rest of the run's peak is compared.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from airflow_predictive.core.model.resources import FORECAST_METRICS, Metric
from airflow_predictive.core.model.series import UsageSeries
from airflow_predictive.core.profiler.metrics import ActualCurves, RunScore, Summary, summarise
from airflow_predictive.core.profiler.prefix import condition_on_prefix, needs_conditioning
from airflow_predictive.core.profiler.selection import (
    SelectionPolicy,
    SelectionRecord,
    backtest,
    calibrated,
    composite_members,
    query_for,
    score_example,
)
from airflow_predictive.training.candidates import cold_start_chain
from airflow_predictive.training.dataset import chronological, split_chronologically
from airflow_predictive.training.pipeline import fit_all

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping, Sequence

    from airflow_predictive.core.model.resources import ResourceVector
    from airflow_predictive.core.model.runs import TaskKey
    from airflow_predictive.core.model.series import Forecast
    from airflow_predictive.core.profiler.estimators.base import Estimator, ForecastQuery, RunExample
    from airflow_predictive.core.profiler.selection import EstimatorFactory
    from airflow_predictive.training.progress import Progress

log = logging.getLogger(__name__)

PROFILER = "profiler"
DIMENSION_KEYS = {
    Metric.CPU_CORES: "cpu",
    Metric.MEMORY_BYTES: "memory",
    Metric.DISK_READ_BPS: "disk_read",
    Metric.DISK_WRITE_BPS: "disk_write",
    Metric.NET_RX_BPS: "net_rx",
    Metric.NET_TX_BPS: "net_tx",
    Metric.GPU_UTIL: "gpu",
    Metric.GPU_MEMORY_BYTES: "gpu_memory",
}


@dataclass(frozen=True)
class PrefixFigures:
    """Error on the rest of the run's peak, forecast at start vs with the first part observed."""

    fraction: float
    runs: int
    median_error_at_start: float | None
    median_error_with_prefix: float | None


@dataclass(frozen=True)
class EstimatorReport:
    name: str
    overall: Mapping[Metric, Summary]
    tasks: Mapping[TaskKey, Mapping[Metric, Summary]]
    failures: int = 0
    prefix: PrefixFigures | None = None


@dataclass(frozen=True)
class Evaluation:
    reports: Mapping[str, EstimatorReport]
    selections: tuple[SelectionRecord, ...]
    train_runs: int
    test_runs: int
    metrics: tuple[Metric, ...]
    seconds: float
    fit_seconds: Mapping[str, float] = field(default_factory=dict)
    scores: Mapping[str, Sequence[tuple[TaskKey, RunScore]]] = field(default_factory=dict)
    forecasts: Mapping[str, Mapping[int, Forecast]] = field(default_factory=dict)

    def champion_counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for r in self.selections:
            name = r.champion or "cold_start"
            out[name] = out.get(name, 0) + 1
        return out

    def beaten_by(self, key: TaskKey, metric: Metric = Metric.MEMORY_BYTES) -> dict[str, float]:
        """Candidates whose held-out median peak error on ``key`` was lower than the profiler's as
        served (name -> their median): where the champion lost to something simpler."""
        mine = self.reports[PROFILER].tasks.get(key, {}).get(metric)
        if mine is None or mine.peak_error_median is None:
            return {}
        out = {}
        for name, rep in self.reports.items():
            theirs = rep.tasks.get(key, {}).get(metric)
            if (
                name != PROFILER
                and theirs is not None
                and theirs.peak_error_median is not None
                and theirs.peak_error_median < mine.peak_error_median - 1e-12
            ):
                out[name] = round(theirs.peak_error_median, 6)
        return out

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON: figures overall and per task, keyed by dimension, statistic and quantile."""
        prof = self.reports[PROFILER]
        champions = {str(r.key): r.champion for r in self.selections}
        return {
            "train_runs": self.train_runs,
            "test_runs": self.test_runs,
            "champions": self.champion_counts(),
            "overall": _by_dimension(prof.overall),
            "tasks": {
                str(k): {
                    "champion": champions.get(str(k)),
                    "beaten_by": self.beaten_by(k),
                    **_by_dimension(v),
                }
                for k, v in prof.tasks.items()
            },
            "estimators": {
                name: {
                    "overall": _by_dimension(rep.overall),
                    "failures": rep.failures,
                    **({"prefix": _prefix_dict(rep.prefix)} if rep.prefix else {}),
                }
                for name, rep in self.reports.items()
            },
            "prefix": _prefix_dict(prof.prefix) if prof.prefix else None,
        }


def _by_dimension(summaries: Mapping[Metric, Summary]) -> dict[str, Any]:
    return {DIMENSION_KEYS[m]: s.as_dict() for m, s in summaries.items()}


def _prefix_dict(p: PrefixFigures) -> dict[str, Any]:
    return {
        "fraction": p.fraction,
        "runs": p.runs,
        "median_error_at_start": p.median_error_at_start,
        "median_error_with_prefix": p.median_error_with_prefix,
    }


def measured_metrics(examples: Sequence[RunExample]) -> tuple[Metric, ...]:
    """CPU and memory, plus any other metric the examples measured (disk I/O of Nextflow traces)."""
    return forecast_dimensions(ex.record.peak for ex in examples)


def forecast_dimensions(peaks: Iterable[ResourceVector]) -> tuple[Metric, ...]:
    """The metrics the profiler forecasts for runs with these peaks: CPU and memory, plus every
    other forecastable metric one of them measured (never the composition of memory)."""
    found = {Metric.CPU_CORES, Metric.MEMORY_BYTES}
    for peak in peaks:
        found.update(peak.present())
    return tuple(m for m in FORECAST_METRICS if m in found)


def truncated(series: UsageSeries, fraction: float) -> UsageSeries | None:
    """The first ``fraction`` of a run's timeline (None when that is less than two samples)."""
    cut = series.times[0] + series.duration_s * fraction
    keep = series.times <= cut
    if int(np.sum(keep)) < 2:
        return None
    return UsageSeries(series.times[keep], {m: a[keep] for m, a in series.values.items()})


def rest_peak_error(forecast: Forecast, series: UsageSeries, fraction: float) -> float | None:
    """Relative error of the p50 forecast of the memory peak after the first ``fraction``."""
    curve = forecast.curve(Metric.MEMORY_BYTES)
    arr = series.get(Metric.MEMORY_BYTES)
    if curve is None or arr is None:
        return None
    t = series.times - series.times[0]
    cut = series.duration_s * fraction
    rest = arr[(t > cut) & np.isfinite(arr)]
    if rest.size == 0 or float(np.max(rest)) <= 0:
        return None
    actual = float(np.max(rest))
    p50 = curve.at(0.5)
    start = min(int(cut // curve.step_s), p50.size - 1)
    predicted = float(np.max(p50[start:]))
    return abs(predicted - actual) / actual


def _predict_all(est: Estimator, queries: Sequence[ForecastQuery]) -> list[Forecast | None]:
    many = getattr(est, "predict_many", None)
    if many is not None:
        try:
            return list(many(queries))
        except Exception as exc:
            log.info("predictive: %s batch forecast failed (%s); one by one", est.name, exc)
    out: list[Forecast | None] = []
    for q in queries:
        try:
            out.append(est.predict(q))
        except Exception:
            out.append(None)
    return out


def evaluate(
    examples: Sequence[RunExample],
    candidates: Mapping[str, EstimatorFactory],
    references: Mapping[str, EstimatorFactory] | None = None,
    *,
    train_fraction: float = 0.5,
    policy: SelectionPolicy | None = None,
    prefix_fraction: float | None = 0.2,
    progress: Progress | None = None,
) -> Evaluation:
    """``progress``: counts one item per candidate and backtest fold, per fit, per estimator's
    forecasts and per estimator scored (the CLI draws it with an ETA on stderr)."""
    began = time.monotonic()
    examples = chronological(examples)
    metrics = measured_metrics(examples)
    policy = policy or SelectionPolicy(metrics=metrics)
    train, test = split_chronologically(examples, train_fraction)
    everything = {**dict(references or {}), **candidates}
    if progress is not None:
        count = len(everything)
        progress.add(policy.folds * len(candidates) + 1 + 3 * count + (count if prefix_fraction else 0))
    step = progress.step if progress is not None else None
    selections = tuple(backtest(candidates, train, policy, on_step=step))
    champion = {r.key: r.champion for r in selections}
    calibration = {r.key: r.calibration for r in selections}
    fitted, fit_seconds = fit_all(set(everything), everything, train, on_step=step)
    chain = cold_start_chain().fit(train)
    if step is not None:
        step("cold-start chain")
    by_task: dict[TaskKey, list[RunExample]] = {}
    for ex in examples:
        by_task.setdefault(ex.key, []).append(ex)
    position = {id(ex): i for runs in by_task.values() for i, ex in enumerate(runs)}
    h = policy.max_history
    queries = [
        query_for(ex, by_task[ex.key][max(0, position[id(ex)] - h) : position[id(ex)]], metrics)
        for ex in test
    ]
    composites = composite_members(everything)
    forecasts: dict[str, list[Forecast | None]] = {}
    for n in sorted(fitted, key=lambda n: n in composites):  # members before their combinations
        e = fitted[n]
        if n in composites:  # combined from the members' forecasts, none asked again
            forecasts[n] = _combined(e, [forecasts.get(m) for m in composites[n]], queries)
        else:
            forecasts[n] = _predict_all(e, queries)
        if step is not None:
            step(f"forecast {n}")
    forecasts = {n: forecasts[n] for n in fitted}
    prof: list[Forecast | None] = []
    for i, ex in enumerate(test):
        name = champion.get(ex.key)
        f = forecasts[name][i] if name in forecasts else None
        if f is not None:
            f = calibrated(f, calibration.get(ex.key, {}))
        if f is None:
            try:
                f = chain.predict(queries[i])
            except Exception:
                f = None
        prof.append(f)
    forecasts[PROFILER] = prof
    reports: dict[str, EstimatorReport] = {}
    all_scores: dict[str, list[tuple[TaskKey, RunScore]]] = {n: [] for n in forecasts}
    failures = dict.fromkeys(forecasts, 0)
    scoring = [n for n in forecasts if n != PROFILER]  # one progress item each, spread over the runs
    done = 0
    for i, ex in enumerate(test):  # run by run: every estimator's scores share the run's actual curves
        actuals = ActualCurves()
        for name, fcs in forecasts.items():
            f = fcs[i]
            if f is None:
                failures[name] += 1
                continue
            all_scores[name].extend((ex.key, s) for s in score_example(f.curves, ex, actuals=actuals))
        while step is not None and done < (i + 1) * len(scoring) // len(test):
            done += 1
            step(f"scoring ({done}/{len(scoring)})")
    for name, scored in all_scores.items():
        reports[name] = EstimatorReport(name, *_summaries(scored, metrics), failures=failures[name])
    while step is not None and done < len(scoring):
        done += 1
        step(f"scoring ({done}/{len(scoring)})")
    if prefix_fraction:
        reports = _with_prefix(
            reports, fitted, champion, calibration, chain, test, queries, forecasts, prefix_fraction, step
        )
    return Evaluation(
        reports=reports,
        selections=selections,
        train_runs=len(train),
        test_runs=len(test),
        metrics=metrics,
        seconds=time.monotonic() - began,
        fit_seconds=fit_seconds,
        scores=all_scores,
        forecasts={n: {i: f for i, f in enumerate(fcs) if f is not None} for n, fcs in forecasts.items()},
    )


def _combined(
    combination: Estimator,
    members: Sequence[Sequence[Forecast | None] | None],
    queries: Sequence[ForecastQuery],
) -> list[Forecast | None]:
    """Per query, ``combination.combine`` of its members' forecasts (None where it cannot)."""
    combine = getattr(combination, "combine")  # noqa: B009 (a combination, see composite_members)
    out: list[Forecast | None] = []
    for i, q in enumerate(queries):
        got = [f for fcs in members if fcs is not None and (f := fcs[i]) is not None]
        try:
            out.append(combine(got, q.key))
        except Exception:
            out.append(None)
    return out


def _summaries(
    scored: Sequence[tuple[TaskKey, RunScore]], metrics: tuple[Metric, ...]
) -> tuple[dict[Metric, Summary], dict[TaskKey, dict[Metric, Summary]]]:
    overall = {m: summarise(m, [s for _, s in scored]) for m in metrics}
    overall = {m: s for m, s in overall.items() if s.runs}
    grouped: dict[TaskKey, list[RunScore]] = {}
    for k, s in scored:
        grouped.setdefault(k, []).append(s)
    tasks: dict[TaskKey, dict[Metric, Summary]] = {}
    for k in sorted(grouped):
        mine = grouped[k]
        tasks[k] = {m: summarise(m, mine) for m in metrics if any(s.metric is m for s in mine)}
    return overall, tasks


def _with_prefix(
    reports: dict[str, EstimatorReport],
    fitted: Mapping[str, Estimator],
    champion: Mapping[TaskKey, str | None],
    calibration: Mapping[TaskKey, Mapping[Metric, Mapping[float, float]]],
    chain: Estimator,
    test: Sequence[RunExample],
    queries: Sequence[ForecastQuery],
    forecasts: Mapping[str, Sequence[Forecast | None]],
    fraction: float,
    step: Callable[[str], None] | None = None,
) -> dict[str, EstimatorReport]:
    from dataclasses import replace

    idx, prefixed = [], []
    for i, ex in enumerate(test):
        if ex.series is None or len(ex.series) < 5:
            continue
        pre = truncated(ex.series, fraction)
        if pre is not None:
            idx.append(i)
            prefixed.append(replace(queries[i], prefix=pre))
    if not idx:
        if step is not None:
            for n in fitted:
                step(f"prefix {n}")
        return reports
    with_prefix: dict[str, list[Forecast | None]] = {}
    for n in sorted(fitted, key=lambda n: hasattr(fitted[n], "member_names")):
        e = fitted[n]
        members = getattr(e, "member_names", None)
        if members is not None and all(m in with_prefix for m in members):
            with_prefix[n] = _combined(e, [with_prefix[m] for m in members], prefixed)
            if step is not None:
                step(f"prefix {n}")
            continue
        raw = _predict_all(e, prefixed)
        if needs_conditioning(e):  # an at-start estimator: re-forecast the rest from the prefix
            raw = [
                condition_on_prefix(f, prefixed[j].prefix) if f is not None else None
                for j, f in enumerate(raw)
            ]
        with_prefix[n] = raw
        if step is not None:
            step(f"prefix {n}")
    out = dict(reports)
    for name in [*fitted, PROFILER]:
        at_start, after = [], []
        for j, i in enumerate(idx):
            ex = test[i]
            assert ex.series is not None
            if name == PROFILER:
                champ = champion.get(ex.key)
                f0 = forecasts[PROFILER][i]
                f1 = with_prefix[champ][j] if champ in with_prefix else None
                if f1 is not None:
                    f1 = calibrated(f1, calibration.get(ex.key, {}))
                if f1 is None:
                    try:
                        f1 = condition_on_prefix(chain.predict(prefixed[j]), prefixed[j].prefix)
                    except Exception:
                        f1 = None
            else:
                f0, f1 = forecasts[name][i], with_prefix[name][j]
            if f0 is None or f1 is None:
                continue
            e0, e1 = rest_peak_error(f0, ex.series, fraction), rest_peak_error(f1, ex.series, fraction)
            if e0 is not None and e1 is not None and math.isfinite(e0) and math.isfinite(e1):
                at_start.append(e0)
                after.append(e1)
        figures = PrefixFigures(
            fraction=fraction,
            runs=len(after),
            median_error_at_start=float(np.median(at_start)) if at_start else None,
            median_error_with_prefix=float(np.median(after)) if after else None,
        )
        out[name] = replace(out[name], prefix=figures)
    return out
