"""ShadowRunOperator: a real shadow process, recorded as a shadow run, its re-forecast stored for
the real try of the same DAG run; every failure leaves the real try un-shadowed and never fails."""

from __future__ import annotations

import os
import shutil
import sys
import time
from typing import TYPE_CHECKING, Any

import pytest

from airflow_predictive import runtime
from airflow_predictive.core.model.query import ForecastQuery, ForecastSource
from airflow_predictive.core.model.resources import MIB, Metric, ResourceVector
from airflow_predictive.core.model.runs import Outcome, RunSource, TaskKey
from airflow_predictive.operators.shadow_run import SHADOW_ENV, ShadowRunOperator
from airflow_predictive.storage import migrate

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

KEY = TaskKey("dag", "work")
# holds 120 MiB (above the 64 MiB declared) for 30 s, and says whether it saw the shadow flag
HOLD = (
    f'{sys.executable} -c "import os, time; b = bytearray(120 * 2**20); '
    f"open(os.environ['OUT'], 'w').write(os.environ.get('{SHADOW_ENV}', '')); time.sleep(30)\""
)


@pytest.fixture(scope="module")
def migrated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from sqlalchemy import create_engine

    path = tmp_path_factory.mktemp("shadow-store") / "template.db"
    engine = create_engine(f"sqlite:///{path}")
    migrate.upgrade(engine)
    engine.dispose()
    return path


@pytest.fixture(autouse=True)
def _store(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, migrated: Path) -> Iterator[None]:
    shutil.copy(migrated, tmp_path / "p.db")
    monkeypatch.setenv("AIRFLOW__PREDICTIVE__SQL_ALCHEMY_CONN", f"sqlite:///{tmp_path / 'p.db'}")
    monkeypatch.setenv("AIRFLOW__PREDICTIVE__MODEL_DIR", str(tmp_path / "models"))
    monkeypatch.setenv("AIRFLOW__PREDICTIVE__BACKEND", "none")  # observe-only: the process tree
    runtime.reset_runtime()
    yield
    runtime.reset_runtime()


class _TI:
    try_number = 1


def _context(run_id: str = "manual__1") -> dict[str, Any]:
    return {"run_id": run_id, "ti": _TI(), "dag": None}


def _op(**kwargs: Any) -> ShadowRunOperator:
    from airflow.sdk import DAG

    kwargs.setdefault("declared", {"memory": 64 * MIB, "cpu": 1.0})
    kwargs.setdefault("deadline_s", 2.0)
    with DAG("dag", schedule=None):
        return ShadowRunOperator(task_id="shadow", target="work", **kwargs)


def _shadow_runs() -> list[Any]:
    return runtime.get_runtime().run_store().runs(KEY, source=RunSource.SHADOW)


def test_a_cold_start_shadow_is_recorded_as_a_shadow_run_and_raises_the_real_trys_forecast(
    tmp_path: Path,
) -> None:
    out = tmp_path / "flag"
    op = _op(bash_command=HOLD, env={"OUT": str(out)})
    began = time.monotonic()
    summary = op.execute(_context())
    assert time.monotonic() - began < 15  # the 30 s command was stopped at its 2 s deadline
    assert summary["shadowed"] and summary["reason"] == "cold_start" and summary["end"] == "budget"
    assert summary["reforecast_stored"], summary
    assert out.read_text() == "1"  # the command saw AIRFLOW_PREDICTIVE_SHADOW=1
    rt = runtime.get_runtime()
    [shadow] = _shadow_runs()
    assert shadow.outcome is Outcome.TIMED_OUT and shadow.n_samples > 0
    assert shadow.declared.memory_bytes == 512 * MIB  # its small resources
    assert "core-s" in (shadow.note or "")  # its cost is recorded
    assert rt.run_store().runs(KEY) == []  # never history, never the real try's row
    served = rt.forecasts().forecast_for(
        ForecastQuery(KEY, declared=ResourceVector(memory_bytes=64 * MIB), run_id="manual__1")
    )
    assert served.source is ForecastSource.SHADOW
    assert served.forecast.peaks(0.99).get(Metric.MEMORY_BYTES) > 120 * MIB
    other = rt.forecasts().forecast_for(ForecastQuery(KEY, declared=ResourceVector(memory_bytes=64 * MIB)))
    assert other.source is ForecastSource.DECLARED  # other runs are not affected


def test_a_python_callable_runs_in_the_shadow_with_the_flag(tmp_path: Path) -> None:
    out = tmp_path / "flag"

    def work(path: str) -> None:
        with open(path, "w") as f:
            f.write(os.environ.get(SHADOW_ENV, ""))
        buf = bytearray(100 * 2**20)
        time.sleep(0.5)
        del buf

    summary = _op(python_callable=work, op_args=[str(out)]).execute(_context())
    assert summary["shadowed"] and summary["end"] == "completed", repr(summary)
    assert out.read_text() == "1"
    [shadow] = _shadow_runs()
    assert shadow.outcome is Outcome.SUCCESS and shadow.exit_code == 0


def test_a_failing_shadow_leaves_the_real_try_unshadowed_and_never_fails() -> None:
    summary = _op(bash_command="exit 3").execute(_context())
    assert summary["shadowed"] and summary["end"] == "failed" and not summary["reforecast_stored"]
    [shadow] = _shadow_runs()
    assert shadow.outcome is Outcome.FAILED
    served = runtime.get_runtime().forecasts().forecast_for(ForecastQuery(KEY, run_id="manual__1"))
    assert served.source is not ForecastSource.SHADOW


def test_storage_down_skips_the_shadow_within_a_bounded_delay(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("AIRFLOW__PREDICTIVE__SQL_ALCHEMY_CONN", f"sqlite:///{tmp_path / 'missing' / 'x.db'}")
    runtime.reset_runtime()
    began = time.monotonic()
    summary = _op(bash_command=HOLD).execute(_context())
    assert time.monotonic() - began < 5
    assert not summary["shadowed"] and "storage unavailable" in summary["note"]


def test_a_well_known_task_is_not_shadowed_unless_asked() -> None:
    from datetime import UTC, datetime, timedelta

    from airflow_predictive.core.model.runs import RunIdentity, RunRecord

    store = runtime.get_runtime().run_store()
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    for i in range(3):
        pk = store.start_run(RunRecord(RunIdentity(KEY, f"r{i}"), start=t0 + timedelta(hours=i)))
        store.finish_run(pk, outcome=Outcome.SUCCESS, end=t0 + timedelta(hours=i, minutes=1))
    assert _op(bash_command="true").execute(_context())["reason"] == "well_known"
    asked = _op(bash_command="true", shadow_run=True).execute(_context())
    assert asked["shadowed"] and asked["reason"] == "asked"
    assert not _op(bash_command="true", shadow_run=False).execute(_context())["shadowed"]


def test_bad_arguments_fail_when_the_dag_is_parsed() -> None:
    with pytest.raises(ValueError, match="at most one"):
        ShadowRunOperator(task_id="s", target="w", bash_command="true", python_callable=print)
    with pytest.raises(ValueError, match="shadow_run"):
        ShadowRunOperator(task_id="s", target="w", bash_command="true", shadow_run="maybe")
    with pytest.raises(ValueError, match="budget"):
        ShadowRunOperator(task_id="s", target="w", bash_command="true", budget=2.0)


def test_a_shadow_store_down_at_store_time_leaves_the_real_try_unshadowed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from airflow_predictive.storage.engine import StorageUnavailable
    from airflow_predictive.storage.shadow_store import SqlShadowForecastStore

    def down(self: object, stored: object) -> None:
        raise StorageUnavailable("predictive database unreachable")

    monkeypatch.setattr(SqlShadowForecastStore, "put", down)
    summary = _op(bash_command=HOLD, env={"OUT": os.devnull}).execute(_context())
    assert summary["shadowed"] and summary["end"] == "budget" and not summary["reforecast_stored"]
    assert len(_shadow_runs()) == 1  # its cost is still recorded
    served = runtime.get_runtime().forecasts().forecast_for(ForecastQuery(KEY, run_id="manual__1"))
    assert served.source is not ForecastSource.SHADOW


def test_without_a_command_the_shadow_runs_the_targets_own_rendered_bash_command(tmp_path: Path) -> None:
    from airflow.providers.standard.operators.bash import BashOperator
    from airflow.sdk import DAG

    out = tmp_path / "flag"
    with DAG("dag", schedule=None) as dag:
        shadow = ShadowRunOperator(
            task_id="shadow", target="work", deadline_s=2.0, declared={"memory": 64 * MIB}
        )
        BashOperator(task_id="work", bash_command=f"echo -n {{{{ run_id }}}} > {out}; sleep 30")
    summary = shadow.execute({**_context("manual__7"), "dag": dag})
    assert summary["shadowed"] and summary["end"] == "budget", summary
    assert out.read_text() == "manual__7"  # the target's template, rendered for this run
