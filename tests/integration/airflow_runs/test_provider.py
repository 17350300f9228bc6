"""Airflow discovers the provider: provider info, config section, plugin with its listener, CLI group;
and parsing the example DAGs stays light (no TensorFlow, no profiler, no storage at parse time)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.airflow_runs.airflow_env import REPO, AirflowEnv

pytestmark = pytest.mark.airflow


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> AirflowEnv:
    return AirflowEnv.create(tmp_path_factory.mktemp("af-provider"))


def test_provider_is_registered(env: AirflowEnv) -> None:
    out = env.airflow("providers", "get", "airflow-provider-predictive", "--output", "json")
    assert out.returncode == 0, out.stderr[-2000:]
    assert "airflow-provider-predictive" in out.stdout


def test_config_section_is_declared(env: AirflowEnv) -> None:
    out = env.airflow("config", "list", "--section", "predictive", "--include-descriptions")
    assert out.returncode == 0, out.stderr[-2000:]
    for option in ("sql_alchemy_conn", "sample_interval", "record_all_tasks"):
        assert option in out.stdout


def test_plugin_registers_the_listener(env: AirflowEnv) -> None:
    out = env.airflow("plugins", "--output", "json")
    assert out.returncode == 0, out.stderr[-2000:]
    plugins = json.loads(out.stdout)
    ours = [p for p in plugins if p["name"] == "predictive"]
    assert ours and any("run_recorder" in str(x) for x in ours[0].get("listeners", []))


def test_cli_group_is_available(env: AirflowEnv) -> None:
    out = env.airflow("predictive", "--help")
    assert out.returncode == 0, out.stderr[-2000:]
    for command in ("history", "ingest", "migrate"):
        assert command in out.stdout


def test_parsing_the_example_dags_imports_nothing_heavy(env: AirflowEnv) -> None:
    code = (
        "import runpy, sys, json;"
        f"runpy.run_path({str(REPO / 'dags' / 'predictive_examples.py')!r});"
        "heavy = [m for m in ('tensorflow', 'keras', 'statsmodels', 'airflow_predictive.core.profiler',"
        " 'airflow_predictive.storage.run_store', 'kubernetes') if m in sys.modules];"
        "print(json.dumps(heavy))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=env.env, capture_output=True, text=True, check=False
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_provider_import_stays_light() -> None:
    code = (
        "import sys, json; import airflow_predictive.provider_info, airflow_predictive.plugins.predictive_plugin;"
        "print(json.dumps([m for m in ('tensorflow', 'numpy', 'sqlalchemy.orm', 'airflow_predictive.storage.run_store')"
        " if m in sys.modules]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=Path(REPO), capture_output=True, text=True, check=False
    )
    assert out.returncode == 0, out.stderr[-2000:]
    loaded = json.loads(out.stdout.strip().splitlines()[-1])
    assert "tensorflow" not in loaded and "airflow_predictive.storage.run_store" not in loaded
