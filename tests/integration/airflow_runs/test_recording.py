"""A real Airflow (LocalExecutor, API server, SQLite) runs the example DAG; the recorded curves match
what the tasks really did: the memory curve rises by what the task allocated, the CPU phase shows
where it ran, and `airflow predictive history` / `ingest` work on the result."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest

from airflow_predictive.core.model.resources import MIB, Metric
from airflow_predictive.core.model.runs import Outcome, RunSource, TaskKey
from airflow_predictive.storage.engine import engine_for
from airflow_predictive.storage.run_store import SqlRunStore
from tests.integration.airflow_runs.airflow_env import AirflowEnv, wait_recorded

if TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = pytest.mark.airflow

INPUT_MB = 512
CPU_SECONDS = 6.0


@pytest.fixture(scope="module")
def airflow_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[AirflowEnv, SqlRunStore]]:
    env = AirflowEnv.create(tmp_path_factory.mktemp("airflow-home"))
    env.migrate()
    env.start_api_server()
    try:
        out = env.dags_test(
            "predictive_shapes", {"input_mb": INPUT_MB, "cpu_seconds": CPU_SECONDS}, skip="disk_io|network"
        )
        assert out.returncode == 0, (out.stdout + out.stderr)[-4000:]
        store = SqlRunStore(engine_for(env.predictive_url))
        wait_recorded(store)  # the sidecars record the ends just after their tasks exit
        yield env, store
    finally:
        env.stop()


def _only_run(store: SqlRunStore, task_id: str):  # type: ignore[no-untyped-def]
    runs = [
        r
        for r in store.runs(TaskKey("predictive_shapes", task_id))
        if r.identity.source is RunSource.LISTENER
    ]
    assert len(runs) == 1, runs
    return runs[0]


def test_db_migrate_created_the_provider_tables(airflow_run: tuple[AirflowEnv, SqlRunStore]) -> None:
    env, store = airflow_run
    assert Path(env.home / "predictive.db").exists()
    assert store.task_keys()


def test_memory_curve_peaks_at_what_the_task_allocated(airflow_run: tuple[AirflowEnv, SqlRunStore]) -> None:
    _, store = airflow_run
    run = _only_run(store, "memory_ramp")
    assert run.outcome is Outcome.SUCCESS
    assert run.declared.memory_bytes == 2 * 1024**3  # from executor_config {"predictive": {"memory": "2Gi"}}
    series = store.series(run.run_pk)  # type: ignore[arg-type]
    mem = series.get(Metric.MEMORY_BYTES)
    assert mem is not None and len(series) >= 5
    # the task process's own level (Python + Airflow's task runner, ~200 MiB) is read after the ramp
    # frees its blocks; the first samples can be lower, taken while the task runner still imports
    top = int(np.nanargmax(mem))
    baseline = float(np.nanmin(mem[top:]))
    rise = float(np.nanmax(mem)) - baseline
    print(
        f"memory_ramp: baseline {baseline / MIB:.0f} MiB, rise {rise / MIB:.0f} MiB for {INPUT_MB} MiB allocated"
    )
    assert abs(rise - INPUT_MB * MIB) <= 0.10 * INPUT_MB * MIB, f"rise {rise / MIB:.0f} MiB vs {INPUT_MB}"
    assert run.peak.memory_bytes == pytest.approx(float(np.nanmax(mem)))
    # the ramp goes up in steps: the curve is not flat at its peak from the start
    assert mem[0] < baseline + 0.5 * INPUT_MB * MIB


def test_cpu_phase_appears_where_it_ran(airflow_run: tuple[AirflowEnv, SqlRunStore]) -> None:
    _, store = airflow_run
    run = _only_run(store, "cpu_phases")
    series = store.series(run.run_pk)  # type: ignore[arg-type]
    cpu = series.get(Metric.CPU_CORES)
    assert cpu is not None
    t, c = series.times[np.isfinite(cpu)], cpu[np.isfinite(cpu)]
    trace = list(zip(t.tolist(), c.tolist(), strict=True))
    # the task idles 2 s, burns one core for CPU_SECONDS, idles 2 s: busy samples form one block
    # of about CPU_SECONDS, with idle samples after it (thresholds allow a shared 2-core machine)
    is_busy = c > 0.5 * c.max()
    busy = t[is_busy]
    assert busy.size >= 3, trace
    span = busy.max() - busy.min()
    assert CPU_SECONDS - 2.5 <= span <= CPU_SECONDS + 2.0, trace
    during = c[(t >= busy.min()) & (t <= busy.max())]
    after = c[t > busy.max()]
    assert after.size >= 1, f"no idle phase recorded after the burn: {trace}"
    assert float(during.mean()) > 3 * float(after.mean()) + 0.05, trace


def test_history_cli_prints_the_recorded_curves(airflow_run: tuple[AirflowEnv, SqlRunStore]) -> None:
    env, _ = airflow_run
    out = env.airflow("predictive", "history", "predictive_shapes", "memory_ramp")
    assert out.returncode == 0, out.stderr[-2000:]
    assert "success" in out.stdout and "mem " in out.stdout and "GiB" in out.stdout


def test_ingest_backfills_from_task_instances(airflow_run: tuple[AirflowEnv, SqlRunStore]) -> None:
    env, store = airflow_run
    out = env.airflow("predictive", "ingest", "--dag-id", "predictive_shapes")
    assert out.returncode == 0, out.stderr[-2000:]
    ingested = [
        r
        for r in store.runs(TaskKey("predictive_shapes", "cpu_phases"))
        if r.identity.source is RunSource.INGEST
    ]
    assert len(ingested) == 1
    assert ingested[0].duration_s is not None and ingested[0].duration_s >= CPU_SECONDS
    assert ingested[0].outcome is Outcome.SUCCESS
