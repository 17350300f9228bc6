"""Incremental retraining (the feedback loop): retrain the tasks that have new runs since their
profile was last updated. ``retrain`` does it in one process (`airflow predictive train`); the
maintenance DAG fans the same work out as mapped tasks (``training/fanout.py``) and takes its due
tasks from ``to_retrain`` here.
Never imported by the scheduler, executor, triggerer or DAG processor.

Triggers (the LSTM and every other candidate retrain together, per task): on the maintenance
DAG's schedule (hourly), a task with at least ``min_new_runs`` new successful runs (3 in the DAG);
and, at the same hourly check, a task with fewer new runs whose forecasts drifted (the online
Page-Hinkley detector of ``core/profiler/online.py`` replayed over those runs). Between
retrainings, the serving process updates each task's calibration and history from every finished
run at once (``StoredForecastService.run_finished`` / ``observe``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Mapping

    from sqlalchemy.engine import Engine

    from airflow_predictive.core.model.runs import TaskKey
    from airflow_predictive.training.pipeline import TrainingResult

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RetrainDecision:
    """Which tasks have enough new runs to retrain, and how many each has."""

    due: frozenset[TaskKey]
    new_runs: dict[TaskKey, int]
    runs: dict[TaskKey, int] = field(default_factory=dict)  # every successful run, per task


def due_tasks(engine: Engine, min_new_runs: int = 1) -> RetrainDecision:
    """Tasks with at least ``min_new_runs`` finished runs ending after their profile's update."""
    from airflow_predictive.core.model.runs import Outcome
    from airflow_predictive.storage.profile_store import ProfileStore
    from airflow_predictive.storage.run_store import SqlRunStore

    runs = SqlRunStore(engine)
    profiles = {p.key: p.updated_at for p in ProfileStore(engine).profiles()}
    counts: dict[TaskKey, int] = {}
    totals: dict[TaskKey, int] = {}
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    for key in runs.task_keys():
        since = profiles.get(key, epoch)
        ended = [r.end for r in runs.runs(key) if r.outcome is Outcome.SUCCESS and r.end is not None]
        counts[key] = sum(1 for end in ended if end > since)
        totals[key] = len(ended)
    due = frozenset(k for k, n in counts.items() if n >= min_new_runs)
    return RetrainDecision(due, counts, totals)


def drifted_tasks(
    engine: Engine, new_runs: dict[TaskKey, int], model_dir: str | None = None
) -> frozenset[TaskKey]:
    """Tasks whose new runs drifted from what their profile forecast (the online Page-Hinkley
    detector replayed over them, ``StoredForecastService.replay``): retrained even with fewer new
    runs than the schedule asks. A task that cannot be replayed is logged and left to the schedule."""
    from airflow_predictive.storage.model_store import ModelStore
    from airflow_predictive.training.serving import StoredForecastService

    service = StoredForecastService(engine, model_store=ModelStore(model_dir) if model_dir else None)
    out = set()
    for key, n in new_runs.items():
        if n <= 0:
            continue
        try:
            metrics = service.replay(key, n)
        except Exception as exc:
            log.warning("predictive: drift check of %s failed (%s); left to the schedule", key, exc)
            continue
        if metrics:
            log.info("predictive: %s drifted on %s over its %d new runs; retraining it", key, metrics, n)
            out.add(key)
    return frozenset(out)


def to_retrain(engine: Engine, model_dir: str | None, min_new_runs: int, drift: bool) -> RetrainDecision:
    """The schedule's tasks (``due_tasks``) and, with ``drift``, those whose fewer new runs drifted."""
    decision = due_tasks(engine, min_new_runs)
    if not drift:
        return decision
    fewer = {k: n for k, n in decision.new_runs.items() if k not in decision.due and n > 0}
    due = decision.due | drifted_tasks(engine, fewer, model_dir)
    return RetrainDecision(due, decision.new_runs, decision.runs)


def retrain(
    engine: Engine,
    *,
    model_dir: str | None = None,
    keys: list[TaskKey] | None = None,
    min_new_runs: int = 1,
    candidates: tuple[str, ...] | None = None,
    progress: Any = None,
    drift: bool = True,
    options: Mapping[str, Mapping[str, Any]] | None = None,
) -> TrainingResult | None:
    """Retrain ``keys``, or the tasks with at least ``min_new_runs`` new runs (the schedule) and,
    with ``drift``, those whose fewer new runs drifted (``drifted_tasks``); None when nothing is due."""
    from airflow_predictive.core.profiler.selection import SelectionPolicy
    from airflow_predictive.storage.profile_store import ForecastCache, ProfileStore
    from airflow_predictive.storage.run_store import SqlRunStore
    from airflow_predictive.training.artefacts import ArtefactSaver
    from airflow_predictive.training.candidates import DEFAULT_CANDIDATES, factories
    from airflow_predictive.training.dataset import load_examples
    from airflow_predictive.training.evaluation import measured_metrics
    from airflow_predictive.training.pipeline import train

    only = frozenset(keys) if keys is not None else to_retrain(engine, model_dir, min_new_runs, drift).due
    if not only:
        log.info("predictive: no task has new runs; nothing to retrain")
        return None
    examples = load_examples(SqlRunStore(engine))
    if not examples:
        return None
    return train(
        examples,
        factories(candidates or DEFAULT_CANDIDATES, **dict(options or {})),
        profiles=ProfileStore(engine),
        cache=ForecastCache(engine),
        model_saver=ArtefactSaver(model_dir) if model_dir else None,
        policy=SelectionPolicy(folds=2, metrics=measured_metrics(examples)),
        only=only,
        progress=progress,
    )
