"""Per-run features: params, input sizes with units, declared input size, try number."""

from __future__ import annotations

import subprocess
import sys

import pytest

from airflow_predictive.core.profiler.run_features import input_size, param_input_bytes, run_features

MIB = 2.0**20


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"input_mb": 512}, 512 * MIB),
        ({"input_bytes": 1000}, 1000.0),
        ({"source_gb": 2}, 2 * 2.0**30),
        ({"chunk_kb": 4, "input_mb": 1}, 4 * 1024 + MIB),  # sized params add up
        ({"input_rows": 10_000}, 10_000.0),  # a count: taken as it is
        ({"input_rows": 10_000, "input_mb": 3}, 3 * MIB),  # a sized param wins over counts
        ({"output_mb": 9, "input_path": "s3://x"}, None),  # outputs and text are not input sizes
        ({"input_mb": -1}, None),
        ({"input_mb": True}, None),
    ],
)
def test_input_size_comes_from_params_with_their_units(params, expected):
    features = run_features(params)
    assert features.get("input_bytes") == expected
    assert param_input_bytes(features) == expected


def test_declared_input_size_wins_and_accepts_quantities():
    f = run_features({"input_mb": 1}, executor_config={"predictive": {"input_size": "2Gi"}})
    assert f["input_bytes"] == 2 * 2.0**30
    bad = run_features({"input_mb": 1}, executor_config={"predictive": {"input_size": "lots"}})
    assert bad["input_bytes"] == MIB  # an unreadable declaration leaves the params' answer


def test_try_number_upstream_sizes_and_params_are_kept():
    f = run_features(
        {"n": 3, "name": "x", "nan": float("nan"), "obj": [1]}, try_number=2, upstream_output_bytes=5e6
    )
    assert f == {"param.n": 3, "param.name": "x", "try_number": 2, "upstream_output_bytes": 5e6}


def test_runs_recorded_with_params_only_still_have_an_input_size():
    """Runs stored before ``input_bytes`` was recorded carry only ``param.*``: still sized."""
    assert input_size({"param.input_mb": 100}) == 100 * MIB
    assert input_size({"input_bytes": 7.0, "param.input_mb": 100}) == 7.0  # explicit first
    assert input_size({"input_files": 3}) is None  # trace features are not params


def test_the_listener_side_import_costs_no_numpy():
    code = (
        "import sys; import airflow_predictive.core.profiler.run_features; assert 'numpy' not in sys.modules"
    )
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60).returncode == 0
