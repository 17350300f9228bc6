"""Train: backtest candidates per task, fit the champions, save them, precompute forecasts.

One call, ``train(...)``, used by `airflow predictive train`, the maintenance DAG and the
benchmark. Each task ends with a recorded selection (champion or none, with every candidate's
scores) and, when anything can forecast it, a cached forecast with its plain sentence. Tasks
without a champion (too little history) get the cold-start chain's forecast.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from airflow_predictive.core.profiler.estimators.base import ForecastQuery, RunExample
from airflow_predictive.core.profiler.explain import explain
from airflow_predictive.core.profiler.selection import (
    SelectionPolicy,
    SelectionRecord,
    backtest,
    calibrated,
    composite_members,
)
from airflow_predictive.training.artefacts import COLD_START
from airflow_predictive.training.candidates import cold_start_chain

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence
    from datetime import datetime

    from airflow_predictive.core.model.runs import TaskKey
    from airflow_predictive.core.model.series import Forecast
    from airflow_predictive.core.profiler.estimators.base import Estimator
    from airflow_predictive.core.profiler.selection import EstimatorFactory
    from airflow_predictive.storage.profile_store import ForecastCache, ProfileStore
    from airflow_predictive.training.progress import Progress

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TaskOutcome:
    """What training decided for one task."""

    key: TaskKey
    champion: str | None
    answered_by: str | None  # the estimator whose forecast was cached (None: nothing could)
    explanation: str | None
    selection: SelectionRecord


@dataclass(frozen=True)
class TrainingResult:
    tasks: tuple[TaskOutcome, ...]
    examples: int
    model_versions: Mapping[str, str]
    seconds: float
    fit_seconds: Mapping[str, float] = field(default_factory=dict)


def next_query(history: Sequence[RunExample]) -> ForecastQuery:
    """The question for a task's next run: its last run's known features and all its history."""
    last = history[-1].record
    return ForecastQuery(
        key=last.key,
        features=last.features,
        declared=last.declared,
        operator=last.operator,
        history=tuple(history),
        try_number=1,
    )


def fit_all(
    names: set[str],
    candidates: Mapping[str, EstimatorFactory],
    examples: Sequence[RunExample],
    on_step: Callable[[str], None] | None = None,
) -> tuple[dict[str, Estimator], dict[str, float]]:
    """Fit each named candidate once on ``examples``; a failing one is logged and left out.

    A combination of other candidates (``selection.composite_members``) is assembled from its
    members, each fitted once (members not named themselves are fitted for it, not returned)."""
    fitted: dict[str, Estimator] = {}
    seconds: dict[str, float] = {}
    composites = composite_members({n: candidates[n] for n in candidates})
    wanted = set(names) | {m for n in names for m in composites.get(n, ())}
    helpers: dict[str, Estimator] = {}
    for name in sorted(wanted, key=lambda n: (n in composites, n)):  # members first
        began = time.monotonic()
        try:
            if name in composites:
                combination: Any = candidates[name]()
                fitted[name] = combination.assembled({**helpers, **fitted})
            else:
                (fitted if name in names else helpers)[name] = candidates[name]().fit(examples)
        except Exception as exc:
            log.warning("predictive: %s could not be fitted on all runs: %s", name, exc)
        seconds[name] = time.monotonic() - began
        if on_step is not None and name in names:
            on_step(f"fit {name}")
    return fitted, seconds


def train(
    examples: Sequence[RunExample],
    candidates: Mapping[str, EstimatorFactory],
    *,
    profiles: ProfileStore | None = None,
    cache: ForecastCache | None = None,
    model_saver: Any = None,
    policy: SelectionPolicy | None = None,
    now: datetime | None = None,
    only: frozenset[TaskKey] | None = None,
    progress: Progress | None = None,
) -> TrainingResult:
    """Select, fit, save and precompute. ``model_saver(fitted) -> {name: version label}``.

    ``only``: re-select and re-forecast just these tasks (models still learn from all examples).
    ``progress``: one item per candidate and backtest fold, per champion fit, and the caching.
    """
    began = time.monotonic()
    policy = policy or SelectionPolicy()
    step = progress.step if progress is not None else None
    if progress is not None:
        progress.add(policy.folds * len(candidates))
    records = backtest(candidates, examples, policy, only, on_step=step)
    return store_selections(
        records,
        candidates,
        examples,
        profiles=profiles,
        cache=cache,
        model_saver=model_saver,
        now=now,
        progress=progress,
        began=began,
    )


def store_selections(
    records: Sequence[SelectionRecord],
    candidates: Mapping[str, EstimatorFactory],
    examples: Sequence[RunExample],
    *,
    profiles: ProfileStore | None = None,
    cache: ForecastCache | None = None,
    model_saver: Any = None,
    now: datetime | None = None,
    progress: Progress | None = None,
    began: float | None = None,
    prefitted: Mapping[str, Estimator | None] | None = None,
    cold_start: Estimator | None = None,
) -> TrainingResult:
    """The second half of ``train``: fit every champion once on ``examples``, save it, record each
    task's selection and cache its next forecast. ``prefitted``: candidates another process
    already fitted on the same examples (None where that fit failed), saved here when they are
    champions instead of fitted again (the fan-out's global models, ``training/fanout.py``);
    ``cold_start``: the cold-start chain already fitted on ``examples`` the same way."""
    began = time.monotonic() if began is None else began
    step = progress.step if progress is not None else None
    ready = dict(prefitted or {})
    champions = {r.champion for r in records if r.champion is not None}
    if progress is not None:
        progress.add(len(champions) + 1)
    fitted, fit_seconds = fit_all(champions - set(ready), candidates, examples, on_step=step)
    fitted.update({n: e for n, e in ready.items() if n in champions and e is not None})
    versions: dict[str, str] = {}
    if model_saver is not None and fitted:
        try:
            versions = dict(model_saver(fitted))
        except Exception as exc:  # a full disk must not lose the selection itself
            log.warning("predictive: saving the models failed (%s); forecasts are still cached", exc)
    chain = cold_start if cold_start is not None else cold_start_chain().fit(examples)
    if model_saver is not None:
        try:  # the serving side's cold start (operator priors) without refitting on the hot path
            model_saver({COLD_START: chain})
        except Exception as exc:
            log.warning("predictive: saving the cold-start chain failed (%s)", exc)
    digests = dict(getattr(model_saver, "digests", {}) or {})
    by_task: dict[TaskKey, list[RunExample]] = {}
    for ex in examples:
        by_task.setdefault(ex.key, []).append(ex)
    outcomes = []
    for record in records:
        history = by_task[record.key]
        forecast = _forecast(record, fitted, chain, next_query(history))
        sentence = explain(forecast, history[-1].record.declared) if forecast is not None else None
        version = versions.get(record.champion or "")
        if profiles is not None:
            profiles.record_selection(record, version, digests.get(version or ""))
        if cache is not None and forecast is not None:
            cache.put(record.key, forecast, model_version=version, explanation=sentence, created_at=now)
        outcomes.append(
            TaskOutcome(
                key=record.key,
                champion=record.champion,
                answered_by=forecast.estimator if forecast is not None else None,
                explanation=sentence,
                selection=record,
            )
        )
    if step is not None:
        step("forecasts cached")
    return TrainingResult(
        tasks=tuple(outcomes),
        examples=len(examples),
        model_versions=versions,
        seconds=time.monotonic() - began,
        fit_seconds=fit_seconds,
    )


def _forecast(
    record: SelectionRecord, fitted: Mapping[str, Estimator], chain: Estimator, query: ForecastQuery
) -> Forecast | None:
    if record.champion is not None and record.champion in fitted:
        try:
            return calibrated(fitted[record.champion].predict(query), record.calibration)
        except Exception as exc:
            log.warning(
                "predictive: %s could not forecast %s (%s); cold-start chain",
                record.champion,
                record.key,
                exc,
            )
    try:
        return chain.predict(query)
    except Exception as exc:
        log.warning("predictive: nothing can forecast %s yet (%s)", record.key, exc)
        return None
