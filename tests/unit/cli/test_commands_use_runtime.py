from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

import pytest

from airflow_predictive import runtime
from airflow_predictive.cli.commands import history, migrate
from airflow_predictive.storage import migrate as schema

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path


@pytest.fixture
def configured_db(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[str]:
    url = f"sqlite:///{tmp_path / 'configured.db'}"
    monkeypatch.setenv("AIRFLOW__PREDICTIVE__SQL_ALCHEMY_CONN", url)
    runtime.reset_runtime()
    yield url
    runtime.reset_runtime()


def test_migrate_upgrades_the_configured_database(
    configured_db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    migrate.run(argparse.Namespace())
    assert schema.current_revision(runtime.get_runtime().engine()) == schema.head_revision()
    assert "configured.db" in capsys.readouterr().out


def test_history_reads_the_configured_database(
    configured_db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    migrate.run(argparse.Namespace())
    capsys.readouterr()
    history.run(argparse.Namespace(dag_id="d", task_id="t", limit=5, json=False))
    out = capsys.readouterr().out
    assert out.startswith("no recorded runs for")


def test_history_on_a_database_without_tables_exits_with_a_clear_error(
    configured_db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as stop:
        history.run(argparse.Namespace(dag_id="d", task_id="t", limit=5, json=False))
    assert stop.value.code == 2
    assert "predictive database error" in capsys.readouterr().err
