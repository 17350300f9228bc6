"""A default install (``[core] load_examples`` on) finds the provider's example DAGs where Airflow
3.3 looks for them, logs no "Could not load provider module" traceback, and the same DAGs still
come from a plain DAGs folder when examples are off, without two bundles declaring one dag_id."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import TYPE_CHECKING

import pytest

from tests.integration.airflow_runs.airflow_env import REPO, AirflowEnv

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = pytest.mark.airflow

OUR_DAGS = {"predictive_shapes", "predictive_etl"}
BUNDLE = "airflow-provider-predictive-example-dags"
SHIPPED = REPO / "airflow_provider_predictive" / "example_dags" / "predictive_examples.py"
MAINTENANCE = "predictive_maintenance"
SHIPPED_MAINTENANCE = SHIPPED.parent / "predictive_maintenance.py"


def _listed(env: AirflowEnv) -> dict[str, dict[str, str]]:
    """The DAGs the refresh serialized, as the metadata database holds them (what the UI lists)."""
    import sqlite3

    with sqlite3.connect(env.home / "airflow.db") as db:
        rows = db.execute("SELECT dag_id, bundle_name, fileloc FROM dag WHERE NOT is_stale").fetchall()
    return {r[0]: {"dag_id": r[0], "bundle_name": r[1], "fileloc": r[2]} for r in rows}


@pytest.fixture(scope="module")
def examples_on(tmp_path_factory: pytest.TempPathFactory) -> tuple[AirflowEnv, str]:
    env = AirflowEnv.create(tmp_path_factory.mktemp("af-examples"), {"AIRFLOW__CORE__LOAD_EXAMPLES": "True"})
    env.migrate()
    out = env.airflow("dags", "reserialize")
    assert out.returncode == 0, out.stderr[-3000:]
    return env, out.stdout + out.stderr


def test_bundle_refresh_logs_no_provider_module_error(examples_on: tuple[AirflowEnv, str]) -> None:
    _, log = examples_on
    assert "Could not load provider module" not in log
    assert BUNDLE in log  # the lookup found our example_dags folder and made it a bundle


def test_airflow_db_migrate_creates_the_provider_tables_through_its_db_manager(
    examples_on: tuple[AirflowEnv, str],
) -> None:
    import sqlite3

    env, _ = examples_on
    # Airflow on SQLite: the provider's tables live in the sibling predictive.db (config.storage_url)
    with sqlite3.connect(env.home / "predictive.db") as db:
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"predictive_task_run", "predictive_alembic_version"} <= tables


def test_example_dags_are_listed_from_the_provider_bundle(examples_on: tuple[AirflowEnv, str]) -> None:
    env, _ = examples_on
    dags = _listed(env)
    assert set(dags) >= OUR_DAGS
    for dag_id in OUR_DAGS:
        assert dags[dag_id]["bundle_name"] == BUNDLE
        assert dags[dag_id]["fileloc"] == str(SHIPPED)
    # the maintenance DAG ships too (a pip install has no repo dags/), and the DAGs folder's
    # one-import file does not declare it a second time
    assert dags[MAINTENANCE]["bundle_name"] == BUNDLE
    assert dags[MAINTENANCE]["fileloc"] == str(SHIPPED_MAINTENANCE)


def test_with_examples_off_the_dags_folder_declares_them_once(tmp_path: Path) -> None:
    env = AirflowEnv.create(tmp_path, {"AIRFLOW__CORE__LOAD_EXAMPLES": "False"})
    env.migrate()
    out = env.airflow("dags", "reserialize")
    assert out.returncode == 0, out.stderr[-3000:]
    assert BUNDLE not in out.stdout + out.stderr
    dags = _listed(env)
    assert set(dags) >= OUR_DAGS
    for dag_id in OUR_DAGS:
        assert dags[dag_id]["bundle_name"] == "dags-folder"
        assert dags[dag_id]["fileloc"] == str(REPO / "dags" / "predictive_examples.py")
    assert dags[MAINTENANCE]["bundle_name"] == "dags-folder"


def test_shipped_examples_parse_import_light() -> None:
    # what parsing the file adds beyond the Airflow SDK itself
    code = (
        "import runpy, sys, json; import airflow.sdk;"
        "before = set(sys.modules);"
        f"runpy.run_path({str(SHIPPED)!r}); runpy.run_path({str(SHIPPED_MAINTENANCE)!r});"
        "print(json.dumps(sorted(set(sys.modules) - before)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    added = json.loads(out.stdout.strip().splitlines()[-1])
    # the provider's operators may be imported (predictive_story uses ShadowRunOperator), never
    # what they use at run time: storage, training, backends, the profiler, numpy, SQLAlchemy, TF
    heavy = (
        "tensorflow", "keras", "statsmodels", "numpy", "sqlalchemy", "kubernetes",
        "airflow_predictive.storage", "airflow_predictive.training", "airflow_predictive.backends",
        "airflow_predictive.core.profiler", "airflow_predictive.runtime",
    )  # fmt: skip
    assert [m for m in added if m.startswith(heavy)] == []
    assert "airflow_predictive.operators.shadow_run" in added  # the check sees the provider's imports


def test_a_shipped_example_runs_from_the_provider_bundle(examples_on: tuple[AirflowEnv, str]) -> None:
    env, _ = examples_on
    out = env.airflow(
        "dags", "test", "predictive_etl", "-c", json.dumps({"input_mb": 16, "cpu_seconds": 0.5})
    )
    assert out.returncode == 0, (out.stdout + out.stderr)[-3000:]
    assert "Dag run in success state" in out.stdout + out.stderr
