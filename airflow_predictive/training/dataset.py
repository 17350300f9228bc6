"""RunExamples from the RunStore: finished runs with their series (None when only peaks exist).

Only successful runs become training targets: a failed or OOM-killed try's curve is cut short
and would teach the model that the task needs less than it does. Runs whose series is empty are
kept as peak-only examples when they carry a peak (Nextflow traces), else dropped.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

import numpy as np

from airflow_predictive.core.model.resources import Metric
from airflow_predictive.core.model.runs import Outcome
from airflow_predictive.core.model.series import UsageSeries
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
    series = series_bulk(store, with_samples) if with_samples else {}
    out = []
    for rec in records:
        s = series.get(rec.run_pk) if rec.run_pk is not None else None
        if s is not None and len(s) == 0:
            s = None
        if s is None and rec.peak.is_empty():
            continue
        out.append(RunExample(rec, s))
    return chronological(out)


def series_bulk(store: SqlRunStore, run_pks: Sequence[int]) -> dict[int, UsageSeries]:
    """Series of many runs, read column-wise into numpy (what ``SqlRunStore.series_many`` returns,
    without building one object per sample: ~1M samples load in seconds instead of a minute).

    Same cleaning rules: NaN / negative / infinite readings are absent, duplicate times keep the
    last reading, metrics never measured have no array.
    """
    from sqlalchemy import select

    from airflow_predictive.storage.tables import METRIC_COLUMNS, resource_sample

    c = resource_sample.c
    cols = [c.run_pk, c.t_s, *(c[name] for name in METRIC_COLUMNS)]
    out: dict[int, UsageSeries] = {}
    with store.engine.connect() as conn:
        for i in range(0, len(run_pks), 500):
            chunk = list(run_pks[i : i + 500])
            rows = conn.execute(
                select(*cols).where(c.run_pk.in_(chunk)).order_by(c.run_pk, c.t_s, c.id)
            ).all()
            if not rows:
                continue
            # plain tuples: numpy probing SQLAlchemy Rows for array attributes cost ~20 us a row
            data = np.array([tuple(r) for r in rows], dtype=float)  # None (absent) becomes NaN
            values = data[:, 2:]
            values[~np.isfinite(values) | (values < 0)] = np.nan
            bounds = np.flatnonzero(np.diff(data[:, 0])) + 1
            for part in np.split(np.arange(len(rows)), bounds):
                block = data[part]
                t = block[:, 1]
                keep = np.isfinite(t)
                t, vals = t[keep], values[part][keep]
                if t.size == 0:
                    continue
                # duplicate times: keep the last reading (rows are ordered by time, then insertion)
                last = np.append(t[1:] != t[:-1], True)
                t, vals = t[last], vals[last]
                metrics = {m: vals[:, j] for j, m in enumerate(Metric) if np.any(np.isfinite(vals[:, j]))}
                out[int(block[0, 0])] = UsageSeries(t, metrics)
    return out


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
