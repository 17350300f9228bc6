"""Rolling-origin backtest per task and the choice of each task's champion estimator.

Why: the LSTM (or any model) is used only where it beats simpler forecasters on that task's own
past. For each task, runs are ordered by start; origins cut them into folds; every candidate is
fitted on the runs before an origin (all tasks, so global models see everything that was known
then) and forecasts the runs after it, each with the task's earlier runs as history. The score is
the pinball loss plus a penalty for memory under-prediction (an OOM costs more than slack). Every
choice is returned as a frozen ``SelectionRecord`` with all candidates' scores.

It must never let one broken candidate stop the selection: a candidate that fails to fit or to
forecast is recorded with its error and cannot win.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from airflow_predictive.core.model.resources import Metric
from airflow_predictive.core.model.series import DemandCurve
from airflow_predictive.core.profiler.estimators.base import Estimator, ForecastQuery, NotFitted, RunExample
from airflow_predictive.core.profiler.metrics import ActualCurves, RunScore, score_run

if TYPE_CHECKING:
    from airflow_predictive.core.model.runs import TaskKey
    from airflow_predictive.core.model.series import Forecast

log = logging.getLogger(__name__)

EstimatorFactory = Callable[[], Estimator]

NO_HISTORY = "too few runs to backtest"
NO_CANDIDATE = "no candidate forecast every backtest run"


@dataclass(frozen=True)
class SelectionPolicy:
    """How the backtest runs and how candidates are compared.

    folds: number of rolling origins per task.
    min_train_runs: runs a task needs before its first origin (fewer: no backtest, cold start).
    min_calibration_runs: backtest forecasts the champion needs before its upper quantiles are
        recalibrated from its own residuals (see ``calibrated``).
    calibration_mode: "widen" (upper quantiles only ever grow to p50 x factor), "conformal"
        (they become p50 x factor: too-wide bands shrink too, keeping the p50 curve's shape) or
        "curve" (conformal, but each point of the band takes the p50 curve's maximum over the next
        ``curve_lookahead`` share of the run, so a run faster than forecast is still covered when
        its peak comes early: the band follows the curve over time instead of holding the peak).
    curve_lookahead: the share of the forecast's timeline the "curve" mode looks ahead.
    default / min_gain / short_history: shrinkage of the choice (see ``_choose``): the robust
        default stays champion unless another candidate's score is ``min_gain`` lower (twice that
        with fewer than ``short_history`` runs). ``"auto"``: the candidate best across all
        tasks' backtests (``pooled_default``); ``"simple"``: per task, the simple baseline
        (``simple``: last run, median of peaks, linear in input size) its own backtest ranks first,
        the pooled default where none is eligible (``task_default``); or an estimator name.
    fold_majority: a challenger must also have the lower error in most backtest folds
        (``fold_wins``). Measured in ``bench/profiler_heldout.py``; off by default.
    rank_last_fold: rank by the last fold's peak errors alone (``ranking``). Measured; off.
    tail_quantile / tail_slack: heavy-tail guard (``tail_ok``): a challenger whose backtest error
        at ``tail_quantile`` exceeds the default's by ``tail_slack`` cannot replace it. Measured; off.
    combination_gain: a champion that is a member of a combination candidate (``"combined"``)
        must beat the combination by this much, else the combination is champion
        (``prefer_combination``).
    pinball_cap: heavy-tail guard: one run's relative pinball loss counts at most this much (a
        single run 30x its usual size must not decide the champion alone).
    max_history: earlier runs of the task a forecast sees (the newest ones): bounds the cost of
        one forecast, so backtest and evaluation grow linearly with a task's runs (older runs
        add nothing the newest hundred do not say).
    memory_under_penalty: added to the score per unit of the mean relative shortfall of the p99
        memory peak below the actual peak, plus this much times the share of runs under it.
    metrics: what is forecast and scored.
    criterion: what ranks candidates. ``"peak_error"`` (default): the ``peak_quantile`` (0.75) of
        each candidate's relative p50 memory peak errors over the backtest runs, the figure users
        judge a forecast by, robust to the heavy tails a mean or the pinball loss lets one run
        decide; tasks without memory peaks (or a candidate without errors) fall back to
        ``"score"``: the penalised pinball loss. Chosen by leave-one-workflow-out on the Nextflow
        traces (``bench/profiler_heldout.py``); the upper quantiles are recalibrated per champion
        anyway (``calibrated``), so ranking by the p50 peak loses no coverage.
    coverage_target: "widen" mode: the share of held-out peaks the p99 band should cover. Per
        metric, the factors calibrated on the earlier folds are checked against the last fold's
        runs pooled over tasks, and every task's p99 factor is widened by the ratio that brings
        that pooled coverage to the target (nested split-conformal; 0 = off).
    """

    folds: int = 3
    min_train_runs: int = 3
    memory_under_penalty: float = 2.0
    metrics: tuple[Metric, ...] = (Metric.CPU_CORES, Metric.MEMORY_BYTES)
    min_calibration_runs: int = 5
    calibration_mode: str = "widen"
    curve_lookahead: float = 0.3
    max_history: int = 100
    default: str = "auto"
    min_gain: float = 0.05
    short_history: int = 20
    pinball_cap: float = 1.0
    criterion: str = "peak_error"
    peak_quantile: float = 0.75
    coverage_target: float = 0.99
    fold_majority: bool = False
    rank_last_fold: bool = False
    simple: tuple[str, ...] = ("last_run", "median_peak", "linear_input")
    tail_quantile: float = 0.0
    tail_slack: float = 0.1
    combination_gain: float = 0.2


@dataclass(frozen=True)
class CandidateScore:
    """One candidate's backtest on one task (lower ``score`` is better; ``error`` = disqualified)."""

    estimator: str
    forecasts: int
    pinball: float
    memory_under_rate: float
    memory_shortfall: float
    score: float
    error: str | None = None
    peak_errors: tuple[float, ...] = ()
    peak_folds: tuple[int, ...] = ()  # the backtest fold of each of ``peak_errors``

    def fold_errors(self) -> dict[int, list[float]]:
        """``peak_errors`` per backtest fold (empty when the folds were not recorded)."""
        out: dict[int, list[float]] = {}
        if len(self.peak_folds) == len(self.peak_errors):
            for fold, err in zip(self.peak_folds, self.peak_errors, strict=True):
                out.setdefault(fold, []).append(err)
        return out

    @property
    def peak_error_median(self) -> float | None:
        """Median relative error of the p50 memory peak over the backtest runs (None: none)."""
        return float(np.median(self.peak_errors)) if self.peak_errors else None

    @property
    def eligible(self) -> bool:
        return self.error is None and self.forecasts > 0 and math.isfinite(self.score)


@dataclass(frozen=True)
class SelectionRecord:
    """The champion of one task and why: every candidate's scores, the folds, when."""

    key: TaskKey
    champion: str | None
    scores: tuple[CandidateScore, ...]
    runs: int
    folds: int
    reason: str
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    calibration: Mapping[Metric, Mapping[float, float]] = field(default_factory=dict)

    def score_of(self, estimator: str) -> CandidateScore | None:
        return next((s for s in self.scores if s.estimator == estimator), None)


def origins(n_runs: int, policy: SelectionPolicy) -> list[int]:
    """Indices where folds start (each origin's test runs reach the next origin or the end)."""
    if n_runs <= policy.min_train_runs:
        return []
    span = n_runs - policy.min_train_runs
    k = max(1, min(policy.folds, span))
    cuts = sorted({policy.min_train_runs + (span * i) // k for i in range(k)})
    return [c for c in cuts if c < n_runs]


def query_for(
    example: RunExample, history: Sequence[RunExample], metrics: tuple[Metric, ...]
) -> ForecastQuery:
    """The question asked before ``example`` started: its known features and earlier runs."""
    rec = example.record
    return ForecastQuery(
        key=rec.key,
        features=rec.features,
        declared=rec.declared,
        operator=rec.operator,
        history=tuple(history),
        metrics=metrics,
        start=rec.start,
        try_number=rec.identity.try_number,
    )


def score_example(
    forecast_curves: Mapping[Metric, DemandCurve],
    example: RunExample,
    *,
    with_waste: bool = True,
    actuals: ActualCurves | None = None,
) -> list[RunScore]:
    """Scores of every forecast metric the run measured (metrics it never measured are skipped)."""
    out = []
    for metric, curve in forecast_curves.items():
        s = score_run(
            curve,
            series=example.series,
            actual_peak=example.record.peak.get(metric),
            with_waste=with_waste,
            actuals=actuals,
        )
        if s is not None:
            out.append(s)
    return out


def _measured(example: RunExample, metric: Metric) -> bool:
    if example.series is not None and example.series.peak(metric) is not None:
        return True
    return example.record.peak.get(metric) is not None


@dataclass
class _Tally:
    pinball: list[float] = field(default_factory=list)
    under: list[bool] = field(default_factory=list)
    shortfall: list[float] = field(default_factory=list)
    forecasts: int = 0
    error: str | None = None
    ratios: dict[Metric, list[float]] = field(default_factory=dict)
    last_fold_ratios: dict[Metric, list[float]] = field(default_factory=dict)
    last_fold: int = -1
    peak_errors: list[float] = field(default_factory=list)
    peak_folds: list[int] = field(default_factory=list)


def _combine(name: str, t: _Tally, policy: SelectionPolicy) -> CandidateScore:
    if t.error is not None or not t.pinball:
        return CandidateScore(name, t.forecasts, math.inf, 1.0, 1.0, math.inf, t.error or "no forecast")
    pin = float(np.mean(t.pinball))
    under = float(np.mean(t.under)) if t.under else 0.0
    short = float(np.mean(t.shortfall)) if t.shortfall else 0.0
    score = pin + policy.memory_under_penalty * (short + 0.1 * under)
    return CandidateScore(
        name,
        t.forecasts,
        pin,
        under,
        short,
        score,
        peak_errors=tuple(t.peak_errors),
        peak_folds=tuple(t.peak_folds),
    )


def backtest(
    candidates: Mapping[str, EstimatorFactory],
    examples: Sequence[RunExample],
    policy: SelectionPolicy | None = None,
    only: frozenset[TaskKey] | None = None,
    on_step: Callable[[str], None] | None = None,
) -> list[SelectionRecord]:
    """Backtest every candidate on every task in ``examples`` (or only the tasks in ``only``, while
    still training on all of them) and pick each task's champion.

    Cost: one fit per candidate and fold; every test run is forecast once, with at most
    ``policy.max_history`` earlier runs, in one batch per candidate and fold where the candidate
    offers ``predict_many`` (the LSTM). ``on_step(label)`` is called after each candidate and fold
    (``policy.folds * len(candidates)`` calls in all), for progress reporting."""
    policy = policy or SelectionPolicy()
    return select(
        list(candidates), backtest_tallies(candidates, examples, policy, only, on_step), policy, only
    )


@dataclass
class Backtested:
    """What the fold loop of ``backtest`` measured: each task's number of runs and origins, and
    every candidate's tally per task. ``select`` turns it into records. Split so that groups of
    candidates and tasks can be backtested on separate workers and merged before the choice, which
    pools over every task (``training/fanout.py``, the maintenance DAG's fan-out)."""

    runs: dict[TaskKey, int]
    origins: dict[TaskKey, list[int]]
    tallies: dict[TaskKey, dict[str, _Tally]]
    composites: dict[str, tuple[str, ...]] = field(default_factory=dict)  # ``composite_members``


def backtest_tallies(
    candidates: Mapping[str, EstimatorFactory],
    examples: Sequence[RunExample],
    policy: SelectionPolicy,
    only: frozenset[TaskKey] | None = None,
    on_step: Callable[[str], None] | None = None,
) -> Backtested:
    """The fold loop of ``backtest``: fit, forecast and score, no choice yet."""
    by_task: dict[TaskKey, list[RunExample]] = {}
    for ex in examples:
        by_task.setdefault(ex.key, []).append(ex)
    for runs in by_task.values():
        runs.sort(key=lambda e: (e.record.start or datetime.min.replace(tzinfo=UTC), e.record.run_pk or 0))
    task_origins = {
        k: origins(len(v), policy) if only is None or k in only else [] for k, v in by_task.items()
    }
    tallies: dict[TaskKey, dict[str, _Tally]] = {k: {n: _Tally() for n in candidates} for k in by_task}
    composites = composite_members(candidates)
    kept_of = {m for members in composites.values() for m in members}
    order = sorted(candidates, key=lambda n: n in composites)  # members before their combinations
    for fold in range(policy.folds):
        train: list[RunExample] = []
        tests: list[tuple[TaskKey, int, int]] = []
        actuals = ActualCurves()  # the fold's held-out curves, shared by every candidate's scores
        for key, runs in by_task.items():
            cuts = task_origins[key]
            if fold < len(cuts):
                start = cuts[fold]
                end = cuts[fold + 1] if fold + 1 < len(cuts) else len(runs)
                train.extend(runs[:start])
                tests.append((key, start, end))
            else:
                train.extend(runs)  # tasks without this fold still teach global models
        if not tests:
            for name in candidates:
                if on_step is not None:
                    on_step(f"backtest fold {fold + 1} {name}")
            continue
        kept: dict[str, dict[tuple[TaskKey, int], Forecast]] = {m: {} for m in kept_of}
        for name in order:
            factory = candidates[name]
            members = composites.get(name)
            try:  # a combination of other candidates is not fitted: it combines their forecasts
                model = factory()
                if members is None and getattr(model, "member_names", None):
                    raise NotFitted(  # never fit its members (an LSTM) a second time in a fold
                        f"{name} combines {', '.join(model.member_names)}: they must be candidates too"  # type: ignore[attr-defined]
                    )
                model = model if members is not None else model.fit(train)
            except Exception as exc:
                log.warning("predictive: candidate %s failed to fit (fold %d): %s", name, fold, exc)
                for key, _, _ in tests:
                    tallies[key][name].error = f"fit: {type(exc).__name__}: {exc}"
                if on_step is not None:
                    on_step(f"backtest fold {fold + 1} {name}")
                continue
            batched = _batch_forecasts(model, by_task, tests, policy) if members is None else {}
            for key, start, end in tests:
                tally = tallies[key][name]
                if tally.error is not None:
                    continue
                runs = by_task[key]
                for i in range(start, end):
                    forecast = batched.get((key, i))
                    if forecast is None:
                        try:
                            if members is not None:
                                got = [f for m in members if (f := kept[m].get((key, i))) is not None]
                                forecast = cast("Any", model).combine(got, key)  # a combination
                            else:
                                history = runs[max(0, i - policy.max_history) : i]
                                forecast = model.predict(query_for(runs[i], history, policy.metrics))
                        except Exception as exc:
                            tally.error = f"predict: {type(exc).__name__}: {exc}"
                            break
                    if name in kept:
                        kept[name][(key, i)] = forecast
                    missing = [
                        m.value for m in policy.metrics if m not in forecast.curves and _measured(runs[i], m)
                    ]
                    if missing:  # e.g. a model trained on other dimensions: it cannot win here
                        tally.error = f"predict: no forecast of {', '.join(missing)}"
                        break
                    run_scores = score_example(forecast.curves, runs[i], with_waste=False, actuals=actuals)
                    if not run_scores:
                        continue
                    tally.forecasts += 1
                    tally.pinball.append(
                        min(policy.pinball_cap, float(np.mean([s.pinball for s in run_scores])))
                    )
                    if fold != tally.last_fold:
                        tally.last_fold, tally.last_fold_ratios = fold, {}
                    for s in run_scores:
                        if s.predicted_peak > 0:
                            tally.ratios.setdefault(s.metric, []).append(s.actual_peak / s.predicted_peak)
                            tally.last_fold_ratios.setdefault(s.metric, []).append(
                                s.actual_peak / s.predicted_peak
                            )
                        if s.metric is Metric.MEMORY_BYTES and math.isfinite(s.peak_error):
                            tally.peak_errors.append(s.peak_error)
                            tally.peak_folds.append(fold)
                        if s.metric is Metric.MEMORY_BYTES and s.under:
                            top = max(s.under)
                            tally.under.append(s.under[top])
                            p99 = max(forecast.curves[Metric.MEMORY_BYTES].peak(top), 0.0)
                            tally.shortfall.append(max(0.0, s.actual_peak - p99) / max(s.actual_peak, 1e-9))
            if on_step is not None:
                on_step(f"backtest fold {fold + 1} {name}")
    return Backtested({k: len(v) for k, v in by_task.items()}, task_origins, tallies, composites)


def composite_members(candidates: Mapping[str, EstimatorFactory]) -> dict[str, tuple[str, ...]]:
    """Candidates that combine other candidates' forecasts (``estimators/combination.py``), by
    name -> their members' names: those whose every member is itself a candidate here (the
    backtest then combines the members' forecasts instead of fitting the members a second time).
    A combination with a member that is not a candidate cannot win the backtest (its tally records
    why): fitting its members again per fold would double the cost of the LSTM."""
    out: dict[str, tuple[str, ...]] = {}
    for name, factory in candidates.items():
        try:
            members = getattr(factory(), "member_names", None)
        except Exception:
            continue
        if members and all(m in candidates and m != name for m in members):
            out[name] = tuple(members)
    return out


def select(
    names: Sequence[str],
    measured: Backtested,
    policy: SelectionPolicy,
    only: frozenset[TaskKey] | None = None,
) -> list[SelectionRecord]:
    """Each task's champion from the tallies of the candidates ``names`` (in this order)."""
    task_origins, tallies = measured.origins, measured.tallies
    records = []
    won: list[tuple[TaskKey, CandidateScore, int, int, str]] = []
    scores_of: dict[TaskKey, tuple[CandidateScore, ...]] = {}
    for key, n_runs in measured.runs.items():
        if only is not None and key not in only:
            continue
        cuts = task_origins[key]
        if not cuts:
            records.append(SelectionRecord(key, None, (), n_runs, 0, NO_HISTORY))
            continue
        scores = tuple(_combine(n, tallies[key][n], policy) for n in names)
        scores_of[key] = scores
        if not any(s.eligible for s in scores):
            records.append(SelectionRecord(key, None, scores, n_runs, len(cuts), NO_CANDIDATE))
    pooled_name = pooled_default(scores_of.values(), policy) if policy.default in (AUTO, SIMPLE) else None
    for key, scores in scores_of.items():
        ok = [s for s in scores if s.eligible]
        if ok:
            default = task_default(ok, policy, pooled_name)
            best, reason = _choose(ok, replace(policy, default=default or ""), measured.runs[key])
            best, reason = prefer_combination(best, reason, ok, policy, measured.composites)
            won.append((key, best, measured.runs[key], len(task_origins[key]), reason))
    pooled = _pooled_spread([tallies[k][b.estimator] for k, b, *_ in won], policy)
    widen = coverage_widening([tallies[k][b.estimator] for k, b, *_ in won], policy)
    for key, best, n_runs, n_cuts, reason in won:
        cal = _calibration(tallies[key][best.estimator], policy, pooled)
        cal = {m: {**f, WIDEN: widen[m]} if m in widen else f for m, f in cal.items()}
        records.append(
            SelectionRecord(key, best.estimator, scores_of[key], n_runs, n_cuts, reason, calibration=cal)
        )
    return records


AUTO = "auto"
SIMPLE = "simple"


def task_default(ok: Sequence[CandidateScore], policy: SelectionPolicy, pooled: str | None) -> str | None:
    """The robust choice a task's champion must clearly beat (``_choose``). ``"auto"``: the
    ``pooled`` default. ``"simple"``: the simple baseline this task's own backtest ranks first
    (a champion then never is a model that did not clearly beat the simple choice on this task's
    past), unless the tail guard is on and its backtest tail is heavier than the pooled
    default's (``tail_ok``); the pooled default where no simple baseline is eligible. Otherwise
    the named estimator."""
    if policy.default != SIMPLE:
        return pooled if policy.default == AUTO else policy.default
    simple = [s for s in ok if s.estimator in policy.simple]
    if not simple:
        return pooled
    rank = ranking(simple, policy)
    best = min(simple, key=lambda s: (rank[s.estimator], s.estimator))
    theirs = next((s for s in ok if s.estimator == pooled), None)
    if theirs is not None and theirs is not best and not tail_ok(best, theirs, policy):
        return pooled
    return best.estimator


def prefer_combination(
    best: CandidateScore,
    reason: str,
    ok: Sequence[CandidateScore],
    policy: SelectionPolicy,
    composites: Mapping[str, tuple[str, ...]],
) -> tuple[CandidateScore, str]:
    """A champion that is a member of an eligible combination (``composites``: name -> members)
    stays champion only if its ranking figure is ``combination_gain`` below the combination's;
    else the combination is: it errs less than its members out of sample (the members err on
    different runs) even where the backtest, whose early folds fit the LSTM on a few runs only,
    cannot tell them apart."""
    rank = ranking(ok, policy)
    for name, members in composites.items():
        combo = next((s for s in ok if s.estimator == name), None)
        if combo is None or best.estimator not in members or best is combo:
            continue
        if not rank[best.estimator] < rank[name] * (1 - policy.combination_gain):
            return combo, (
                f"{name} (combination of {', '.join(members)}) preferred: {best.estimator} "
                f"({rank[best.estimator]:.4f}) was not {100 * policy.combination_gain:.0f}% below it "
                f"({rank[name]:.4f})"
            )
    return best, reason


def tail_ok(challenger: CandidateScore, default: CandidateScore, policy: SelectionPolicy) -> bool:
    """Heavy-tail guard: False when ``tail_quantile`` is on and the challenger's backtest memory
    peak error at that quantile exceeds the default's by more than ``tail_slack`` (a candidate
    better on most runs but far off on a few must not replace a steadier one: the few decide
    the p90 and the OOMs)."""
    if policy.tail_quantile <= 0 or not challenger.peak_errors or not default.peak_errors:
        return True
    mine = float(np.quantile(challenger.peak_errors, policy.tail_quantile))
    theirs = float(np.quantile(default.peak_errors, policy.tail_quantile))
    return mine <= theirs * (1 + policy.tail_slack)


def ranking(ok: Sequence[CandidateScore], policy: SelectionPolicy) -> dict[str, float]:
    """What ``_choose`` compares per eligible candidate (lower is better): the ``peak_quantile``
    of its backtest memory peak errors under ``criterion="peak_error"`` when every candidate has
    them, else the penalised pinball score."""
    if policy.criterion == "peak_error" and ok and all(s.peak_errors for s in ok):
        return {s.estimator: float(np.quantile(_ranked_errors(s, policy), policy.peak_quantile)) for s in ok}
    return {s.estimator: s.score for s in ok}


def _ranked_errors(s: CandidateScore, policy: SelectionPolicy) -> Sequence[float]:
    """The peak errors ``ranking`` compares: with ``rank_last_fold``, the last fold's alone when
    it has ``min_calibration_runs`` of them (the models fitted on the most runs); else all."""
    if policy.rank_last_fold:
        folds = s.fold_errors()
        if folds and len(last := folds[max(folds)]) >= policy.min_calibration_runs:
            return last
    return s.peak_errors


def pooled_default(
    per_task: Iterable[Sequence[CandidateScore]], policy: SelectionPolicy | None = None
) -> str | None:
    """The candidate that is best across tasks: lowest median of its score relative to each
    task's best score, among candidates eligible on at least half of the tasks (None: no task).

    The robust choice a task's own few folds must clearly beat (``_choose``): it is learned from
    every task's backtest, so it moves to whatever generalises on this deployment's tasks (the
    LSTM where curves are rich, a history baseline where only peaks are known)."""
    policy = policy or SelectionPolicy(criterion="score")
    ratios: dict[str, list[float]] = {}
    tasks = 0
    for scores in per_task:
        ok = [s for s in scores if s.eligible]
        if not ok:
            continue
        tasks += 1
        rank = ranking(ok, policy)
        top = min(rank.values())
        for name, value in rank.items():
            ratios.setdefault(name, []).append(value / top if top > 0 else 1.0)
    eligible = {n: float(np.median(r)) for n, r in ratios.items() if len(r) * 2 >= tasks}
    return min(eligible, key=lambda n: (eligible[n], n)) if eligible else None


def _choose(ok: Sequence[CandidateScore], policy: SelectionPolicy, n_runs: int) -> tuple[CandidateScore, str]:
    """The champion among eligible scores, shrunk towards the robust default: another candidate
    must beat ``policy.default`` by ``policy.min_gain`` (relative), and by twice that with fewer
    than ``policy.short_history`` runs, where a backtest of a few runs cannot tell candidates
    apart (a lucky fold must not make a fragile model the champion)."""
    rank = ranking(ok, policy)
    what = (
        f"p{100 * policy.peak_quantile:.0f} memory peak error"
        if policy.criterion == "peak_error" and all(s.peak_errors for s in ok)
        else "penalised pinball loss"
    )
    best = min(ok, key=lambda s: (rank[s.estimator], s.estimator))
    default = next((s for s in ok if s.estimator == policy.default), None)
    mine = rank[best.estimator]
    if default is None or best is default:
        return best, f"lowest {what} ({mine:.4f}) over {best.forecasts} backtest runs"
    theirs = rank[default.estimator]
    gain = policy.min_gain * (2 if n_runs < policy.short_history else 1)
    won, compared = fold_wins(best, default, policy)
    folds_ok = not policy.fold_majority or 2 * won > compared or not compared
    if mine < theirs * (1 - gain) and folds_ok and not tail_ok(best, default, policy):
        return default, (
            f"{default.estimator} kept ({what} {theirs:.4f}): {best.estimator} ({mine:.4f}) has a heavier "
            f"tail (p{100 * policy.tail_quantile:.0f} of its backtest errors)"
        )
    if mine < theirs * (1 - gain) and folds_ok:
        return best, (
            f"lowest {what} ({mine:.4f}) over {best.forecasts} backtest runs, "
            f"{100 * (1 - mine / theirs) if theirs > 0 else 100:.0f}% below {default.estimator}"
        )
    if mine < theirs * (1 - gain):
        return default, (
            f"{default.estimator} kept ({what} {theirs:.4f}): {best.estimator} ({mine:.4f}) was lower "
            f"in only {won} of {compared} backtest folds"
        )
    return default, (
        f"{default.estimator} kept ({what} {theirs:.4f}): {best.estimator} ({mine:.4f}) was not "
        f"{100 * gain:.0f}% better over {best.forecasts} backtest runs"
    )


def fold_wins(
    challenger: CandidateScore, default: CandidateScore, policy: SelectionPolicy
) -> tuple[int, int]:
    """In how many backtest folds the challenger's ``peak_quantile`` of memory peak errors was
    lower than the default's, of the folds where both were scored: ``fold_majority`` requires a
    majority, so that one lucky fold (a burst of runs one model happened to fit) cannot make a
    candidate champion over the robust default. (0, 0) when the folds are unknown."""
    mine, theirs = challenger.fold_errors(), default.fold_errors()
    common = [f for f in mine if mine[f] and theirs.get(f)]
    q = policy.peak_quantile
    won = sum(1 for f in common if np.quantile(mine[f], q) < np.quantile(theirs[f], q))
    return won, len(common)


def _batch_forecasts(
    model: Estimator,
    by_task: Mapping[TaskKey, Sequence[RunExample]],
    tests: Sequence[tuple[TaskKey, int, int]],
    policy: SelectionPolicy,
) -> dict[tuple[TaskKey, int], Forecast]:
    """Every test run's forecast in one ``predict_many`` call ({} when the model has none or the
    batch fails: the caller then forecasts run by run and records the first error)."""
    many = getattr(model, "predict_many", None)
    if many is None:
        return {}
    index, queries = [], []
    for key, start, end in tests:
        runs = by_task[key]
        for i in range(start, end):
            index.append((key, i))
            queries.append(query_for(runs[i], runs[max(0, i - policy.max_history) : i], policy.metrics))
    try:
        return dict(zip(index, many(queries), strict=True))
    except Exception as exc:
        log.info("predictive: batched backtest forecast failed (%s); run by run", exc)
        return {}


def _recent(t: _Tally, policy: SelectionPolicy) -> dict[Metric, list[float]]:
    """The ratios the "curve" mode calibrates on: the last fold's when it has enough runs (the first
    folds' models saw only a few runs of the task, so their errors overstate the final model's)."""
    if t.last_fold_ratios and all(len(v) >= policy.min_calibration_runs for v in t.last_fold_ratios.values()):
        return {**t.ratios, **t.last_fold_ratios}
    return dict(t.ratios)


def _pooled_spread(tallies: Sequence[_Tally], policy: SelectionPolicy) -> dict[Metric, dict[float, float]]:
    """ "curve" mode: per metric and quantile, the quantile of every task's ratios divided by that
    task's median ratio, pooled over tasks: a task's few recent runs cannot show its 1-in-100 error,
    hundreds of runs of all tasks can (a normalised split-conformal quantile)."""
    if policy.calibration_mode != "curve":
        return {}
    spread: dict[Metric, list[float]] = {}
    for t in tallies:
        for metric, values in _recent(t, policy).items():
            arr = np.array([v for v in values if math.isfinite(v) and v > 0])
            if arr.size >= policy.min_calibration_runs:
                spread.setdefault(metric, []).extend(arr / float(np.median(arr)))
    return {m: {q: float(np.quantile(v, q)) for q in (0.9, 0.99)} for m, v in spread.items()}


def coverage_widening(tallies: Sequence[_Tally], policy: SelectionPolicy) -> dict[Metric, float]:
    """Per metric, the factor (> 1) the p99 calibration needs so that the factors learnt on the
    earlier folds, widened by it, cover ``policy.coverage_target`` of the last fold's peaks pooled
    over every task (a nested split-conformal check on the training half only: the earlier folds
    calibrate, the last fold tests). Metrics already covered get none. Only the "widen" and
    "conformal" modes (the "curve" mode has its own pooled spread)."""
    if policy.coverage_target <= 0 or policy.calibration_mode == "curve":
        return {}
    pooled: dict[Metric, list[float]] = {}
    for t in tallies:
        for metric, last in t.last_fold_ratios.items():
            every = t.ratios.get(metric, [])
            earlier = calibration_from({metric: every[: len(every) - len(last)]}, policy.min_calibration_runs)
            if metric not in earlier or not last:
                continue
            factor = earlier[metric][0.99]
            pooled.setdefault(metric, []).extend(r / factor for r in last if math.isfinite(r) and r > 0)
    out = {}
    for metric, excess in pooled.items():
        if len(excess) >= 2 * policy.min_calibration_runs:
            # the split-conformal order statistic: the ceil((n + 1) * target)-th smallest excess
            ordered = np.sort(np.asarray(excess))
            rank = min(len(ordered), math.ceil((len(ordered) + 1) * policy.coverage_target))
            need = float(ordered[rank - 1])
            if need > 1.0:
                out[metric] = need
    return out


def _calibration(
    t: _Tally, policy: SelectionPolicy, pooled: Mapping[Metric, Mapping[float, float]]
) -> dict[Metric, dict[float, float]]:
    if policy.calibration_mode != "curve":
        cal = calibration_from(t.ratios, policy.min_calibration_runs)
        if cal and policy.calibration_mode == "conformal":
            cal = {m: {**f, CONFORMAL: 1.0} for m, f in cal.items()}
        return cal
    recent = _recent(t, policy)
    cal = calibration_from(recent, policy.min_calibration_runs)
    out: dict[Metric, dict[float, float]] = {}
    for metric, factors in cal.items():
        median = float(np.median([v for v in recent[metric] if math.isfinite(v) and v > 0]))
        wide = {q: max(f, median * pooled.get(metric, {}).get(q, 0.0)) for q, f in factors.items()}
        out[metric] = {**wide, CONFORMAL: 1.0, LOOKAHEAD: policy.curve_lookahead}
    return out


def calibration_from(
    ratios: Mapping[Metric, Sequence[float]], min_runs: int
) -> dict[Metric, dict[float, float]]:
    """Per metric, how far above the p50 peak the actual peak went in the backtest, per quantile:
    p90 -> the 90th percentile of actual/p50, p99 -> the largest ratio seen (with few runs the
    99th percentile is the maximum). Metrics with fewer than ``min_runs`` ratios get none."""
    out: dict[Metric, dict[float, float]] = {}
    for metric, values in ratios.items():
        arr = np.array([v for v in values if math.isfinite(v) and v > 0])
        if arr.size < min_runs:
            continue
        out[metric] = {0.9: float(np.quantile(arr, 0.9)), 0.99: float(max(np.quantile(arr, 0.99), arr.max()))}
    return out


CONFORMAL = -1.0  # marker key in a calibration: replace the upper quantiles instead of widening
LOOKAHEAD = -2.0  # marker key: with CONFORMAL, the share of the timeline the band looks ahead
WIDEN = -3.0  # marker key: the top quantile's factor times this (``coverage_widening``); a marker, so
# online recalibration (which replaces the quantile factors) keeps it


def _factor(factors: Mapping[float, float], q: float) -> float:
    f = factors.get(q, 0.0)
    return f * factors.get(WIDEN, 1.0) if q >= 0.99 and f > 0 else f


def forward_max(values: np.ndarray, ahead: int) -> np.ndarray:
    """``out[i] = max(values[i : i + ahead + 1])`` (the last values see only what is left)."""
    if ahead <= 0 or values.size < 2:
        return values
    padded = np.concatenate([values, np.full(ahead, -np.inf)])
    return np.lib.stride_tricks.sliding_window_view(padded, ahead + 1).max(axis=1)


def calibrated(forecast: Forecast, calibration: Mapping[Metric, Mapping[float, float]]) -> Forecast:
    """Upper quantiles from the p50 curve and the backtest factors (a split conformal correction).

    Default: widen only (at least p50 x factor), so an estimator whose bands were too narrow on
    this task's past gets wider ones and one whose bands were wide enough is unchanged. With the
    ``CONFORMAL`` marker the upper quantiles become p50 x factor (never below p50), so bands that
    were wider than the task's past errors shrink as well; with ``LOOKAHEAD`` too, they are built
    from the p50 curve's forward maximum over that share of the timeline (see ``forward_max``)."""
    if not calibration:
        return forecast
    curves: dict[Metric, DemandCurve] = {}
    for metric, curve in forecast.curves.items():
        factors = calibration.get(metric)
        if not factors:
            curves[metric] = curve
            continue
        base = curve.at(0.5)
        if CONFORMAL in factors:
            share = factors.get(LOOKAHEAD, 0.0)
            shaped = forward_max(base, math.ceil(share * base.size)) if share > 0 else base
            levels = {
                q: (arr if q <= 0.5 or q not in factors else shaped * max(1.0, _factor(factors, q)))
                for q, arr in curve.quantiles.items()
            }
        else:
            levels = {q: np.maximum(arr, base * _factor(factors, q)) for q, arr in curve.quantiles.items()}
        curves[metric] = DemandCurve(metric, curve.step_s, levels)
    return replace(forecast, curves=curves)
