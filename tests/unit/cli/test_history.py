from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from airflow_predictive.cli.commands.history import render
from airflow_predictive.core.model.resources import MIB, ResourceVector
from airflow_predictive.core.model.runs import Outcome, RunIdentity, RunRecord, RunSource, TaskKey
from airflow_predictive.core.model.series import ResourceSample

if TYPE_CHECKING:
    from airflow_predictive.storage.run_store import SqlRunStore

KEY = TaskKey("d", "t")
T0 = datetime(2026, 11, 1, tzinfo=UTC)


def _store_with_runs(run_store: SqlRunStore) -> None:
    for source in (RunSource.LISTENER, RunSource.INGEST):
        pk = run_store.upsert_run(
            RunRecord(
                RunIdentity(KEY, "r1", 1, source),
                start=T0,
                end=T0 + timedelta(seconds=9),
                outcome=Outcome.SUCCESS,
            )
        )
    listener = run_store.get_run(RunIdentity(KEY, "r1", 1))
    assert listener is not None and listener.run_pk is not None
    run_store.add_samples(
        listener.run_pk,
        [
            ResourceSample(
                float(t), ResourceVector(memory_bytes=100 * MIB * t, cpu_cores=1.0, net_rx_bps=MIB)
            )
            for t in range(6)
        ],
    )
    run_store.upsert_run(
        RunRecord(
            RunIdentity(KEY, "old", 1, RunSource.INGEST), start=T0 - timedelta(days=1), outcome=Outcome.FAILED
        )
    )
    assert pk


def test_history_shows_curves_and_hides_ingested_copies_of_recorded_tries(run_store: SqlRunStore) -> None:
    _store_with_runs(run_store)
    text = render(run_store, KEY, limit=10, as_json=False)
    assert text.startswith("2 run(s) of d.t")
    assert "sampled max 0.49 GiB" in text and "net" in text and "failed" in text


def test_history_labels_the_recorded_peak_apart_from_the_sampled_maximum(run_store: SqlRunStore) -> None:
    pk = run_store.upsert_run(
        RunRecord(RunIdentity(KEY, "hwm", 1, RunSource.LISTENER), start=T0, outcome=Outcome.SUCCESS)
    )
    run_store.add_samples(pk, [ResourceSample(0.0, ResourceVector(memory_bytes=100 * MIB))])
    run_store.finish_run(pk, outcome=Outcome.SUCCESS, end=T0, peak=ResourceVector(memory_bytes=512 * MIB))
    lines = render(run_store, KEY, limit=10, as_json=False).splitlines()
    assert "high-water mark" in lines[1]
    row = next(i for i, line in enumerate(lines) if line.endswith(" hwm"))
    assert "0.50" in lines[row].split()  # the recorded peak, high-water mark included
    assert "sampled max 0.10 GiB" in lines[row + 1]


def test_history_json_carries_the_curve(run_store: SqlRunStore) -> None:
    _store_with_runs(run_store)
    data = json.loads(render(run_store, KEY, limit=10, as_json=True))
    recorded = [r for r in data["runs"] if r["source"] == "listener"]
    assert recorded[0]["curve"]["memory_bytes"][-1] == 500 * MIB
    assert len(data["runs"]) == 2


def test_unknown_task_says_so(run_store: SqlRunStore) -> None:
    assert render(run_store, TaskKey("x", "y"), limit=5, as_json=False) == "no recorded runs for x.y"


def test_history_shows_what_the_memory_peak_was_made_of_when_recorded(run_store: SqlRunStore) -> None:
    pk = run_store.upsert_run(
        RunRecord(RunIdentity(KEY, "pat", 1, RunSource.LISTENER), start=T0, outcome=Outcome.SUCCESS)
    )
    peak = ResourceVector(memory_bytes=1024 * MIB, memory_anon_bytes=256 * MIB, memory_file_bytes=768 * MIB)
    run_store.finish_run(pk, outcome=Outcome.SUCCESS, end=T0, peak=peak)
    text = render(run_store, KEY, limit=10, as_json=False)
    assert "memory peaks: anon 0.25 GiB, file (page cache) 0.75 GiB" in text
    assert json.loads(render(run_store, KEY, limit=10, as_json=True))["runs"][0]["peak"][
        "memory_anon_bytes"
    ] == (256 * MIB)
