"""Recording through a real Airflow (LocalExecutor, API server, triggerer, SQLite):

- the recorded curve is the task's own: its absolute peak matches the peak RSS (VmHWM) the task
  read from /proc/self/status, within 8% (the sampler sidecar, a child of the task process, is
  no longer counted);
- a deferrable task that defers to a real trigger and resumes is one complete run: samples of
  both legs, the deferred interval marked as such, and SUCCESS.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from airflow_predictive.core.model.resources import MIB
from airflow_predictive.core.model.runs import LegEnd, Outcome, TaskKey
from airflow_predictive.storage.engine import engine_for
from airflow_predictive.storage.run_store import SqlRunStore
from tests.integration.airflow_runs.airflow_env import REPO, AirflowEnv, wait_recorded

if TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = pytest.mark.airflow

HERE = Path(__file__).resolve().parent


def dags_folder(root: Path) -> Path:
    """The repo's DAGs plus the test DAGs of this folder."""
    folder = root / "dags"
    folder.mkdir()
    for src in [*sorted((REPO / "dags").glob("*.py")), HERE / "dags" / "recording_checks.py"]:
        (folder / src.name).symlink_to(src)
    return folder


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[AirflowEnv, SqlRunStore, int]]:
    root = tmp_path_factory.mktemp("af-recording")
    env = AirflowEnv.create(root / "home", dags_folder=dags_folder(root))
    env.migrate()
    env.start_api_server()
    env.start_triggerer()
    try:
        hwm_file = root / "hwm.txt"
        out = env.dags_test("recording_checks", {"hwm_file": str(hwm_file)}, timeout=300)
        assert out.returncode == 0, (out.stdout + out.stderr)[-4000:]
        store = SqlRunStore(engine_for(env.predictive_url))
        wait_recorded(store)
        yield env, store, int(hwm_file.read_text())
    finally:
        env.stop()


def test_the_recorded_absolute_peak_is_the_tasks_own_peak_rss(
    recorded: tuple[AirflowEnv, SqlRunStore, int],
) -> None:
    _, store, hwm = recorded
    [run] = store.runs(TaskKey("recording_checks", "allocate"))
    assert run.outcome is Outcome.SUCCESS
    peak = run.peak.memory_bytes
    assert peak is not None
    print(f"own peak: recorded {peak / MIB:.1f} MiB, VmHWM {hwm / MIB:.1f} MiB ({(peak - hwm) / hwm:+.1%})")
    assert abs(peak - hwm) <= 0.08 * hwm


def test_a_deferred_try_is_one_complete_run_with_both_legs(
    recorded: tuple[AirflowEnv, SqlRunStore, int],
) -> None:
    _, store, _ = recorded
    runs = store.runs(TaskKey("recording_checks", "work_then_defer"))
    assert len(runs) == 1, runs
    [run] = runs
    assert run.outcome is Outcome.SUCCESS, run
    legs = store.legs(run.run_pk)  # type: ignore[arg-type]
    assert [leg.end for leg in legs] == [LegEnd.DEFERRED, LegEnd.FINISHED], legs
    [waited] = store.wait_intervals(run.run_pk)  # type: ignore[arg-type]
    assert waited.reason is LegEnd.DEFERRED and waited.t_end_s - waited.t_start_s >= 1.0
    times = [s.t_s for s in store.samples(run.run_pk)]  # type: ignore[arg-type]
    before = [t for t in times if t <= waited.t_start_s]
    after = [t for t in times if t >= waited.t_end_s]
    assert len(before) >= 2 and len(after) >= 2, (times, waited)
    assert not [t for t in times if waited.t_start_s < t < waited.t_end_s]  # nothing sampled while deferred
    print(
        json.dumps(
            {"legs": len(legs), "samples": len(times), "deferred_s": waited.t_end_s - waited.t_start_s}
        )
    )
