"""`airflow predictive plan` and `pools` on a configured SQLite database with history and a ledger."""

from __future__ import annotations

import argparse
import json
import time
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import pytest

from airflow_predictive import runtime
from airflow_predictive.cli.commands import plan as plan_cmd
from airflow_predictive.cli.commands import pools as pools_cmd
from airflow_predictive.core.model.backend import Allocation
from airflow_predictive.core.model.plan import (
    AllocationPlan,
    PlanSource,
    Pool,
    PoolCapacity,
    PoolKind,
    ReservationRequest,
)
from airflow_predictive.core.model.resources import GIB, MIB, ResourceVector
from airflow_predictive.core.model.runs import Outcome, RunIdentity, RunRecord, RunSource, TaskKey
from airflow_predictive.core.model.series import ResourceSample
from airflow_predictive.storage import migrate

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

KEY = TaskKey("etl", "load")


@pytest.fixture
def db(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[runtime.Runtime]:
    monkeypatch.setenv("AIRFLOW__PREDICTIVE__SQL_ALCHEMY_CONN", f"sqlite:///{tmp_path / 'p.db'}")
    monkeypatch.setenv("AIRFLOW__PREDICTIVE__MODEL_DIR", str(tmp_path / "models"))
    runtime.reset_runtime()
    rt = runtime.get_runtime()
    migrate.upgrade(rt.engine())
    store = rt.run_store()
    t0 = datetime(2026, 11, 1, tzinfo=UTC)
    for i in range(5):
        start = t0 + timedelta(hours=i)
        pk = store.upsert_run(
            RunRecord(
                identity=RunIdentity(KEY, f"r{i}", 1, RunSource.TRACE),
                start=start,
                end=start + timedelta(seconds=60),
                outcome=Outcome.SUCCESS,
                declared=ResourceVector(memory_bytes=4 * GIB),
                peak=ResourceVector(memory_bytes=1 * GIB),
            )
        )
        store.add_samples(
            pk,
            [
                ResourceSample(float(t), ResourceVector(memory_bytes=GIB * min(1.0, (t + 1) / 30)))
                for t in range(60)
            ],
        )
    yield rt
    runtime.reset_runtime()


def _hold(rt: runtime.Runtime, gib: float, capacity_gib: float = 2.0) -> None:
    ledger = rt.ledger()
    ledger.set_pool(
        Pool("local", PoolKind.LOCAL, PoolCapacity(limits=ResourceVector(memory_bytes=capacity_gib * GIB)))
    )
    held = AllocationPlan.flat(
        Allocation.exactly(ResourceVector(memory_bytes=gib * GIB)), 600.0, source=PlanSource.DECLARED, why="t"
    )
    assert ledger.reserve(
        ReservationRequest("local", RunIdentity(TaskKey("x", "y"), "r"), "h", held, time.time())
    ).ok


def test_plan_json_has_the_issue_keys_and_says_when_it_would_be_admitted(
    db: runtime.Runtime, capsys: pytest.CaptureFixture[str]
) -> None:
    _hold(db, 1.5)
    plan_cmd.run(
        argparse.Namespace(dag_id="etl", task_id="load", param=["input_mb=512"], pool="local", json=True)
    )
    out = json.loads(capsys.readouterr().out)
    assert out["forecast"]["source"] != "none"
    initial = out["plan"]["initial"]
    assert initial["limits"]["memory_bytes"] >= 1 * GIB - 64 * MIB and "memory_bytes" in initial["requests"]
    assert all("at_s" in s for s in out["plan"]["steps"])
    adm = out["admission"]
    assert adm["known"] and not adm["admitted_now"] and adm["earliest_start_in_s"] > 500
    assert adm["bottleneck"]["metric"] == "memory_bytes"


def test_plan_text_names_the_bottleneck(db: runtime.Runtime, capsys: pytest.CaptureFixture[str]) -> None:
    _hold(db, 1.5)
    plan_cmd.run(argparse.Namespace(dag_id="etl", task_id="load", param=[], pool="local", json=False))
    text = capsys.readouterr().out
    assert "initial: requests" in text and "would wait" in text and "memory_bytes" in text


def test_pools_json_shows_capacity_timeline_and_queued(
    db: runtime.Runtime, capsys: pytest.CaptureFixture[str]
) -> None:
    _hold(db, 1.5)
    db.decision_log().record(
        kind="admission",
        decision="queued",
        run=RunIdentity(KEY, "r9"),
        reason="waits",
        pool="local",
        payload={"earliest_start": 1.0},
    )
    db.decision_log().record(
        kind="admission", decision="queued", run=RunIdentity(KEY, "r8"), reason="waits", pool="local"
    )
    db.decision_log().record(
        kind="admission", decision="admitted", run=RunIdentity(KEY, "r8"), reason="fits", pool="local"
    )
    pools_cmd.run(argparse.Namespace(horizon=3600.0, json=True))
    out = json.loads(capsys.readouterr().out)
    [pool] = out["pools"]
    assert pool["capacity"] == {"memory_bytes": 2 * GIB}
    assert pool["timeline"][0]["reserved"]["memory_bytes"] == 1.5 * GIB
    assert [q["run_id"] for q in pool["queued"]] == ["r9"]  # r8 was admitted since


def test_pools_without_a_ledger_pool_says_so(db: runtime.Runtime, capsys: pytest.CaptureFixture[str]) -> None:
    pools_cmd.run(argparse.Namespace(horizon=60.0, json=False))
    assert "no pools yet" in capsys.readouterr().out
