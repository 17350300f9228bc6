"""`airflow predictive evaluate` through the real Airflow CLI, on small generated traces."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import pytest

from tests.integration.predictive_cli import run_predictive
from tests.unit.training.synthetic_traces import write_trace

if TYPE_CHECKING:
    import subprocess
    from pathlib import Path


def _run(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_predictive(tmp_path, "evaluate", *args)


@pytest.mark.airflow
def test_evaluate_prints_json_figures_as_last_line(tmp_path: Path) -> None:
    traces = write_trace(tmp_path / "trace")
    proc = _run(tmp_path, "--traces", str(traces), "--json", "--candidates", "median_peak,linear_input")
    assert proc.returncode == 0, proc.stderr[-2000:]
    last = proc.stdout.strip().splitlines()[-1]
    figures = json.loads(last)
    mem = figures["overall"]["memory"]
    assert mem["peak_error"]["median"] < 0.05
    assert 0 <= mem["coverage"]["p99"] <= 1
    assert figures["tasks"]["wf.align"]["memory"]["runs"] == 6
    assert set(figures["estimators"]) >= {"profiler", "declared", "vpa", "autopilot"}
    assert "held out 12 runs" in proc.stdout


@pytest.mark.airflow
def test_evaluate_on_a_folder_without_traces_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    proc = _run(tmp_path, "--traces", str(tmp_path / "empty"), "--json")
    assert proc.returncode == 2
    assert "no trace found" in proc.stderr
