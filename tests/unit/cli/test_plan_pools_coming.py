"""`airflow predictive pools` shows capacity present and coming (nodes booting, warm capacity)."""

from __future__ import annotations

import argparse
import json
import time
from typing import TYPE_CHECKING

import pytest

from airflow_predictive import runtime
from airflow_predictive.cli.commands import pools as pools_cmd
from airflow_predictive.core.model.plan import Pool, PoolCapacity, PoolKind
from airflow_predictive.core.model.resources import GIB, ResourceVector
from airflow_predictive.core.scheduling.coming import ComingCapacity
from airflow_predictive.storage import migrate

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path


@pytest.fixture
def db(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[runtime.Runtime]:
    monkeypatch.setenv("AIRFLOW__PREDICTIVE__SQL_ALCHEMY_CONN", f"sqlite:///{tmp_path / 'p.db'}")
    monkeypatch.setenv("AIRFLOW__PREDICTIVE__MODEL_DIR", str(tmp_path / "models"))
    runtime.reset_runtime()
    rt = runtime.get_runtime()
    migrate.upgrade(rt.engine())
    rt.ledger().set_pool(
        Pool("k8s:ns", PoolKind.KUBERNETES, PoolCapacity(requests=ResourceVector(memory_bytes=8 * GIB)))
    )
    yield rt
    runtime.reset_runtime()


def _node(name: str, in_s: float, gib: float = 16.0) -> ComingCapacity:
    return ComingCapacity(
        "k8s:ns",
        PoolCapacity(requests=ResourceVector(memory_bytes=gib * GIB)),
        time.time() + in_s,
        f"node {name} (n2-standard-8) provisioning",
        name,
    )


def test_pools_json_shows_present_and_coming_capacity(
    db: runtime.Runtime, capsys: pytest.CaptureFixture[str]
) -> None:
    db.ledger().set_coming("k8s:ns", [_node("n2", 200.0), _node("n1", 90.0), _node("n0", -30.0)])
    pools_cmd.run(argparse.Namespace(horizon=3600.0, json=True))
    [pool] = json.loads(capsys.readouterr().out)["pools"]
    assert pool["capacity"] == {"memory_bytes": 8 * GIB}
    assert [c["ref"] for c in pool["coming"]] == ["n0", "n1", "n2"]  # by ready time
    assert [c["overdue"] for c in pool["coming"]] == [True, False, False]
    assert 80 < pool["coming"][1]["in_s"] <= 90
    assert pool["overdue"] == 1
    # the overdue node counts as ready in 30 s, never now
    assert [s["capacity"]["memory_bytes"] for s in pool["capacity_over_time"]] == [
        8 * GIB,
        24 * GIB,
        40 * GIB,
        56 * GIB,
    ]


def test_pools_text_lists_coming_nodes(db: runtime.Runtime, capsys: pytest.CaptureFixture[str]) -> None:
    db.ledger().set_coming("k8s:ns", [_node("n1", 90.0)])
    pools_cmd.run(argparse.Namespace(horizon=3600.0, json=False))
    text = capsys.readouterr().out
    assert "coming in" in text and "node n1" in text and "present + coming" in text
