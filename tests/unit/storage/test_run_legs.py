"""One try = one run across its legs: a resumed leg keeps earlier samples, a stale sidecar can
never finish or overwrite a newer leg, deferred time is known, and upkeep closes what a crash left."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from airflow_predictive.core.model.resources import ResourceVector
from airflow_predictive.core.model.runs import LegEnd, Outcome, RunIdentity, RunRecord, TaskKey
from airflow_predictive.core.model.series import ResourceSample

if TYPE_CHECKING:
    from airflow_predictive.storage.run_store import SqlRunStore

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


def _record(run_id: str = "r") -> RunRecord:
    return RunRecord(RunIdentity(TaskKey("d", "t"), run_id), start=T0)


def _samples(*ts: float) -> list[ResourceSample]:
    return [ResourceSample(t, ResourceVector(memory_bytes=100.0 + t)) for t in ts]


def test_a_resumed_leg_continues_the_same_run_and_keeps_its_samples(run_store: SqlRunStore) -> None:
    first = run_store.begin_leg(_record(), at=T0 + timedelta(seconds=1))
    run_store.add_samples(first.run_pk, _samples(1, 2, 3))
    assert run_store.end_leg(first.run_pk, 1, LegEnd.DEFERRED, T0 + timedelta(seconds=3.5))
    second = run_store.begin_leg(_record(), at=T0 + timedelta(seconds=60))
    assert (second.run_pk, second.leg, second.resumed) == (first.run_pk, 2, True)
    assert second.t_start_s == 60.0
    run_store.add_samples(second.run_pk, _samples(60, 61))
    assert run_store.finish_run(second.run_pk, outcome=Outcome.SUCCESS, end=T0 + timedelta(seconds=62), leg=2)
    run = run_store.get_run_by_pk(first.run_pk)
    assert run is not None and run.outcome is Outcome.SUCCESS and run.n_samples == 5
    assert [s.t_s for s in run_store.samples(first.run_pk)] == [1, 2, 3, 60, 61]
    [waited] = run_store.wait_intervals(first.run_pk)
    assert (waited.t_start_s, waited.t_end_s, waited.reason) == (3.5, 60.0, LegEnd.DEFERRED)
    assert [leg.end for leg in run_store.legs(first.run_pk)] == [LegEnd.DEFERRED, LegEnd.FINISHED]


def test_a_stale_sidecar_cannot_finish_or_end_a_newer_leg(run_store: SqlRunStore) -> None:
    first = run_store.begin_leg(_record(), at=T0)
    second = run_store.begin_leg(_record(), at=T0 + timedelta(seconds=30))  # leg 1 never said DEFERRED
    assert [leg.end for leg in run_store.legs(first.run_pk)] == [LegEnd.SUPERSEDED, None]
    assert not run_store.finish_run(
        first.run_pk, outcome=Outcome.UNKNOWN, end=T0 + timedelta(seconds=31), leg=1
    )
    assert not run_store.end_leg(first.run_pk, 1, LegEnd.VANISHED)
    run = run_store.get_run_by_pk(second.run_pk)
    assert run is not None and run.outcome is Outcome.RUNNING


def test_a_finished_try_started_again_is_recorded_afresh(run_store: SqlRunStore) -> None:
    first = run_store.begin_leg(_record(), at=T0)
    run_store.add_samples(first.run_pk, _samples(1, 2))
    run_store.finish_run(first.run_pk, outcome=Outcome.FAILED, end=T0 + timedelta(seconds=3), leg=1)
    again = run_store.begin_leg(_record(), at=T0 + timedelta(hours=1))
    assert (again.run_pk, again.leg, again.resumed) == (first.run_pk, 1, False)
    assert run_store.samples(first.run_pk) == [] and len(run_store.legs(first.run_pk)) == 1


def test_upkeep_closes_lost_runs_and_leaves_waiting_ones(run_store: SqlRunStore) -> None:
    lost = run_store.begin_leg(_record("lost"), at=T0)
    waiting = run_store.begin_leg(_record("waiting"), at=T0)
    run_store.end_leg(waiting.run_pk, 1, LegEnd.DEFERRED, T0 + timedelta(seconds=5))
    fresh = run_store.begin_leg(_record("fresh"), at=datetime.now(UTC))
    assert run_store.close_stale(T0 + timedelta(hours=1)) == [lost.run_pk]
    closed = run_store.get_run_by_pk(lost.run_pk)
    assert closed is not None and closed.outcome is Outcome.UNKNOWN and "upkeep" in (closed.note or "")
    for pk in (waiting.run_pk, fresh.run_pk):
        run = run_store.get_run_by_pk(pk)
        assert run is not None and run.outcome is Outcome.RUNNING
    assert run_store.close_stale(T0 + timedelta(hours=1), waiting_before=T0 + timedelta(hours=1)) == [
        waiting.run_pk
    ]
