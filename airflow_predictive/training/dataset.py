"""RunExamples from the RunStore: finished runs with their series (None when only peaks exist).

Only successful runs become training targets: a failed or OOM-killed try's curve is cut short
and would teach the model that the task needs less than it does. Runs whose series is empty are
kept as peak-only examples when they carry a peak (Nextflow traces), else dropped.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

from airflow_predictive.core.model.runs import Outcome
from airflow_predictive.core.profiler.estimators.base import RunExample

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    from airflow_predictive.core.model.runs import RunRecord, TaskKey
    from airflow_predictive.storage.run_store import SqlRunStore

TRAINABLE = frozenset({Outcome.SUCCESS})
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def chronological(examples: Iterable[RunExample]) -> list[RunExample]:
    return sorted(examples, key=lambda e: (e.record.start or _EPOCH, e.record.run_pk or 0))


def load_examples(
    store: SqlRunStore,
    keys: Sequence[TaskKey] | None = None,
    *,
    outcomes: frozenset[Outcome] = TRAINABLE,
) -> list[RunExample]:
    """Examples of ``keys`` (all tasks when None), oldest first."""
    records: list[RunRecord] = []
    for key in keys if keys is not None else [None]:
        records.extend(r for r in store.runs(key) if r.outcome in outcomes)
    with_samples = [r.run_pk for r in records if r.run_pk is not None and r.n_samples > 0]
    series = store.series_many(with_samples) if with_samples else {}
    out = []
    for rec in records:
        s = series.get(rec.run_pk) if rec.run_pk is not None else None
        if s is not None and len(s) == 0:
            s = None
        if s is None and rec.peak.is_empty():
            continue
        out.append(RunExample(rec, s))
    return chronological(out)


def split_chronologically(
    examples: Sequence[RunExample], train_fraction: float = 0.5
) -> tuple[list[RunExample], list[RunExample]]:
    """Per task: the first ``train_fraction`` of its runs train, the rest are held out.

    A task with a single run only trains (nothing to hold out honestly).
    """
    by_task: dict[TaskKey, list[RunExample]] = {}
    for ex in chronological(examples):
        by_task.setdefault(ex.key, []).append(ex)
    train: list[RunExample] = []
    test: list[RunExample] = []
    for runs in by_task.values():
        cut = max(1, round(len(runs) * train_fraction))
        train.extend(runs[:cut])
        test.extend(runs[cut:])
    return chronological(train), chronological(test)
