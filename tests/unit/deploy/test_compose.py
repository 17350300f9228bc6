"""docker/compose.yaml: the services, their health checks and the provider's wiring hold together.

``docker compose config`` needs the compose plugin, absent here (and no daemon): the file is
parsed and checked against the code instead. ``apply_grants.py`` (airflow-init's grant step)
runs against the real PostgreSQL, twice, as a second ``docker compose up`` would.
"""

from __future__ import annotations

import importlib.util
import os
import re
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import yaml
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from airflow_predictive.cli.commands.db_grants import grants_sql
from airflow_predictive.config import OPTIONS
from tests._real_parts import require

if TYPE_CHECKING:
    from types import ModuleType

ROOT = Path(__file__).resolve().parents[3]
COMPOSE = ROOT / "docker" / "compose.yaml"
AIRFLOW_SERVICES = {
    "airflow-apiserver": "api-server",
    "airflow-scheduler": "scheduler",
    "airflow-dag-processor": "dag-processor",
    "airflow-triggerer": "triggerer",
}


def _compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def _expand(value: str) -> str:
    """``${VAR:-default}`` with the defaults (what compose gives on a machine without a .env)."""
    return re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", value)


def _env(service: str) -> dict[str, str]:
    return {k: _expand(str(v)) for k, v in _compose()["services"][service]["environment"].items()}


def test_local_airflow_has_every_component_and_postgres() -> None:
    services = _compose()["services"]
    assert set(services) == {"postgres", "airflow-init", *AIRFLOW_SERVICES}
    for name, command in AIRFLOW_SERVICES.items():
        assert services[name]["command"] == command


def test_every_long_running_service_has_a_health_check() -> None:
    services = _compose()["services"]
    for name in ("postgres", *AIRFLOW_SERVICES):
        check = services[name]["healthcheck"]
        assert check["test"][0] in ("CMD", "CMD-SHELL") and len(check["test"]) > 1, name
        assert check["retries"] >= 1


def _airflow_source(relative: str) -> str:
    spec = importlib.util.find_spec("airflow")
    assert spec is not None and spec.origin is not None
    return (Path(spec.origin).parent / relative).read_text()


def test_health_checks_ask_what_the_installed_airflow_serves() -> None:
    """Job types of `airflow jobs check`, the scheduler's health port and the API's version route,
    read from the installed Airflow's source (a renamed job type would leave a service unhealthy)."""
    services = _compose()["services"]
    choices = re.search(r'\("--job-type",\),\s*choices=\(([^)]*)\)', _airflow_source("cli/cli_config.py"))
    job_types = set(re.findall(r'"(\w+)"', choices.group(1))) if choices else set()
    for name in ("airflow-dag-processor", "airflow-triggerer"):
        (used,) = re.findall(r"--job-type (\w+)", services[name]["healthcheck"]["test"][1])
        assert used in job_types, name
    config = yaml.safe_load(_airflow_source("config_templates/config.yml"))
    port = config["scheduler"]["options"]["scheduler_health_check_server_port"]["default"]
    assert f"http://localhost:{port}/health" in services["airflow-scheduler"]["healthcheck"]["test"]
    assert 'prefix="/version"' in _airflow_source("api_fastapi/core_api/routes/public/version.py")
    assert "http://localhost:8080/api/v2/version" in services["airflow-apiserver"]["healthcheck"]["test"]


def test_components_wait_for_a_healthy_database_and_a_finished_migration() -> None:
    services = _compose()["services"]
    assert services["airflow-init"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    for name in AIRFLOW_SERVICES:
        deps = services[name]["depends_on"]
        assert deps["postgres"]["condition"] == "service_healthy", name
        assert deps["airflow-init"]["condition"] == "service_completed_successfully", name


def test_the_init_step_migrates_then_grants_the_recording_role() -> None:
    init = _compose()["services"]["airflow-init"]
    script = init["command"][-1]
    assert script.index("airflow db migrate") < script.index("airflow predictive db-grants")
    assert "apply_grants.py" in script
    for volume in init["volumes"]:
        host = volume.split(":", 1)[0]
        assert (COMPOSE.parent / host).exists(), host


def test_the_executor_is_the_predictive_one_and_exists() -> None:
    env = _env("airflow-scheduler")
    module, _, cls = env["AIRFLOW__CORE__EXECUTOR"].rpartition(".")
    source = ROOT / Path(*module.split(".")).with_suffix(".py")
    assert f"class {cls}(" in source.read_text()


def test_predictive_settings_are_declared_options_with_valid_values() -> None:
    for service in AIRFLOW_SERVICES:
        for key, value in _env(service).items():
            if not key.startswith("AIRFLOW__PREDICTIVE__"):
                continue
            option = key.removeprefix("AIRFLOW__PREDICTIVE__").lower()
            assert option in OPTIONS, key
            if OPTIONS[option]["type"] == "boolean":
                assert value.lower() in ("true", "false"), key


def test_tasks_reach_the_store_through_a_least_privilege_connection() -> None:
    """Task processes (LocalExecutor: in the scheduler) get the store_conn_id connection, as the
    recording role, on the metadata database's server and database; nowhere else gets it."""
    env = _env("airflow-scheduler")
    conn_id = env.get("AIRFLOW__PREDICTIVE__STORE_CONN_ID", OPTIONS["store_conn_id"]["default"])
    store = make_url(env[f"AIRFLOW_CONN_{conn_id.upper()}"].replace("postgres://", "postgresql://", 1))
    meta = make_url(env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"])
    assert store.username == env["PREDICTIVE_ROLE"] != meta.username
    assert (store.host, store.database) == (meta.host, meta.database)
    for service in ("airflow-apiserver", "airflow-dag-processor", "airflow-triggerer"):
        assert f"AIRFLOW_CONN_{conn_id.upper()}" not in _env(service)


def test_the_model_store_is_one_volume_the_image_prepared() -> None:
    """Training (a task) writes artefacts the scheduler loads: one volume in every container, at
    a folder the image creates as the airflow user (a fresh named volume takes its ownership)."""
    compose = _compose()
    env = _env("airflow-scheduler")
    model_dir = env["AIRFLOW__PREDICTIVE__MODEL_DIR"]
    for service in AIRFLOW_SERVICES:
        mounts = dict(v.split(":", 1) for v in compose["services"][service]["volumes"])
        assert model_dir.startswith(mounts["predictive-models"] + "/"), service
    assert "predictive-models" in compose["volumes"]
    assert f"mkdir -p {model_dir}" in (ROOT / "docker" / "Dockerfile").read_text()


def test_components_share_the_jwt_secret_and_the_execution_api() -> None:
    envs = [_env(s) for s in AIRFLOW_SERVICES]
    assert len({e["AIRFLOW__API_AUTH__JWT_SECRET"] for e in envs}) == 1
    assert all(
        e["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"].startswith("http://airflow-apiserver:") for e in envs
    )


# -- apply_grants.py on the real PostgreSQL -----------------------------------------------------


def _apply_grants() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "apply_grants", ROOT / "docker" / "compose" / "apply_grants.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_apply_grants_refuses_input_that_is_not_db_grants_output() -> None:
    with pytest.raises(SystemExit):
        _apply_grants().split_sql("DROP TABLE dag;")
    with pytest.raises(SystemExit):
        _apply_grants().dsn("sqlite:///x.db")


@pytest.mark.postgres
def test_apply_grants_creates_the_role_once_and_grants_only_provider_tables() -> None:
    url = os.environ.get("AIRFLOW_PREDICTIVE_TEST_PG_URL")
    require(url, "PostgreSQL: AIRFLOW_PREDICTIVE_TEST_PG_URL is not set")
    assert url is not None
    suffix = uuid.uuid4().hex[:10]
    database, role = f"t_compose_{suffix}", f"rec_{suffix}"
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{database}"'))
    db_url = url.rsplit("/", 1)[0] + f"/{database}"
    engine = create_engine(db_url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.execute(text("CREATE TABLE predictive_task_run (pk serial PRIMARY KEY)"))
            conn.execute(text("CREATE TABLE dag (dag_id text)"))
        module = _apply_grants()
        sql = grants_sql(role, database, "s3cret")
        assert module.apply(sql, db_url, role) is True
        assert module.apply(sql, db_url, role) is False  # the second `up`: no error, same grants
        with engine.connect() as conn:

            def can(table: str, privilege: str) -> bool:
                return bool(
                    conn.execute(
                        text("SELECT has_table_privilege(:r, :t, :p)"),
                        {"r": role, "t": table, "p": privilege},
                    ).scalar()
                )

            assert can("predictive_task_run", "INSERT") and can("predictive_task_run", "UPDATE")
            assert not can("predictive_task_run", "DELETE")
            assert not can("dag", "SELECT")
    finally:
        engine.dispose()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))
            conn.execute(text(f'DROP ROLE IF EXISTS "{role}"'))
        admin.dispose()
