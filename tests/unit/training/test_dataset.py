from __future__ import annotations

from typing import TYPE_CHECKING

from airflow_predictive.core.model.runs import Outcome, TaskKey
from airflow_predictive.training.dataset import load_examples, split_chronologically

if TYPE_CHECKING:
    from airflow_predictive.storage.run_store import SqlRunStore


def test_examples_carry_series_and_are_chronological(filled_store: SqlRunStore) -> None:
    examples = load_examples(filled_store)
    assert len(examples) == 25
    starts = [e.record.start for e in examples]
    assert starts == sorted(starts)  # type: ignore[type-var]
    assert all(e.series is not None and len(e.series) > 0 for e in examples)


def test_only_successful_runs_are_targets(filled_store: SqlRunStore) -> None:
    first = filled_store.runs(TaskKey("wf", "align"))[0]
    filled_store.finish_run(first.run_pk or 0, outcome=Outcome.OOM_KILLED, end=first.end)  # type: ignore[arg-type]
    keys = [TaskKey("wf", "align")]
    assert len(load_examples(filled_store, keys)) == 11
    assert len(load_examples(filled_store, keys, outcomes=frozenset(Outcome))) == 12


def test_unknown_task_has_no_examples(filled_store: SqlRunStore) -> None:
    assert load_examples(filled_store, [TaskKey("wf", "never")]) == []


def test_split_holds_out_the_later_half_of_each_task(filled_store: SqlRunStore) -> None:
    train, test = split_chronologically(load_examples(filled_store))
    for task in ("align", "sort"):
        tr = [e for e in train if e.key.task_id == task]
        te = [e for e in test if e.key.task_id == task]
        assert len(tr) == len(te) == 6
        assert max(e.record.start for e in tr) < min(e.record.start for e in te)  # type: ignore[type-var]
    assert [e.key.task_id for e in train].count("once") == 1  # a one-run task only trains
    assert not [e for e in test if e.key.task_id == "once"]


def test_bulk_series_equal_the_stores_own(filled_store: SqlRunStore) -> None:
    import numpy as np

    from airflow_predictive.core.model.resources import Metric, ResourceVector
    from airflow_predictive.core.model.series import ResourceSample
    from airflow_predictive.training.dataset import series_bulk

    pks = [r.run_pk or 0 for r in filled_store.runs()]
    ours, theirs = series_bulk(filled_store, pks), filled_store.series_many(pks)
    assert set(ours) == set(theirs)
    for pk in pks:
        a, b = ours[pk], theirs[pk]
        assert np.array_equal(a.times, b.times)
        assert set(a.values) == set(b.values)
        for m in a.values:
            assert np.allclose(a.values[m], b.values[m], equal_nan=True)
    # a time recorded twice: the reading stored last wins
    filled_store.add_samples(pks[0], [ResourceSample(0.0, ResourceVector(cpu_cores=9.0))])
    again = series_bulk(filled_store, [pks[0]])[pks[0]]
    assert again.times.size == ours[pks[0]].times.size
    assert again.values[Metric.CPU_CORES][0] == 9.0
