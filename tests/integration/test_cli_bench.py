"""`airflow predictive bench` through the real Airflow CLI, on a small generated trace folder."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import pytest

from tests.integration.predictive_cli import run_predictive
from tests.unit.training.synthetic_traces import write_trace

if TYPE_CHECKING:
    import subprocess
    from pathlib import Path

KEYS = {
    "memory_slack",
    "cpu_slack",
    "memory_waste_gib_s",
    "cpu_waste_core_s",
    "oom_per_1000",
    "throttled_share",
    "queue_wait_s_p50",
    "queue_wait_s_p95",
    "makespan_s",
    "resizes_per_run",
}
POLICIES = {"declared", "vpa", "autopilot", "reactive", "oracle", "predictive", "predictive_shadow"}


def _run(
    tmp_path: Path, *args: str, env_extra: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return run_predictive(tmp_path, "bench", *args, env_extra=env_extra)


@pytest.mark.airflow
def test_bench_compares_every_policy_and_prints_the_json_last(tmp_path: Path) -> None:
    traces = write_trace(tmp_path / "trace")
    proc = _run(tmp_path, "--traces", str(traces), "--json", "--candidates", "median_peak,linear_input")
    assert proc.returncode == 0, proc.stderr[-2000:]
    figures = json.loads(proc.stdout.strip().splitlines()[-1])
    assert figures["runs"] == 12  # the held-out half of 2 tasks x 12 runs
    assert set(figures["policies"]) == POLICIES
    for name, policy in figures["policies"].items():
        assert set(policy) >= KEYS, name
        assert 0 <= policy["memory_slack"] <= 1 and 0 <= policy["cpu_slack"] <= 1, name
    p = figures["policies"]
    assert p["oracle"]["memory_slack"] < p["predictive"]["memory_slack"] < p["declared"]["memory_slack"]
    assert p["oracle"]["oom_per_1000"] == 0
    assert "replaying 12 held-out runs" in proc.stdout


@pytest.mark.airflow
def test_bench_on_a_folder_without_traces_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    proc = _run(tmp_path, "--traces", str(tmp_path / "empty"), "--json")
    assert proc.returncode == 2
    assert "no trace found" in proc.stderr


@pytest.mark.airflow
def test_bench_replays_the_runs_the_provider_recorded(tmp_path: Path) -> None:
    from tests.unit.simulation.test_bench import _recorded_store

    store = _recorded_store(tmp_path)
    url = str(store.engine.url)
    store.engine.dispose()
    proc = _run(
        tmp_path,
        "--from-store",
        "--json",
        "--policies",
        "declared,oracle",
        env_extra={"AIRFLOW__PREDICTIVE__SQL_ALCHEMY_CONN": url},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    figures = json.loads(proc.stdout.strip().splitlines()[-1])
    assert figures["runs"] == 3 and set(figures["policies"]) == {"declared", "oracle"}


@pytest.mark.airflow
def test_bench_needs_exactly_one_source(tmp_path: Path) -> None:
    proc = _run(tmp_path, "--json")
    assert proc.returncode == 2
    assert "either --traces DIR or --from-store" in proc.stderr
