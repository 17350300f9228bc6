"""Recording in an Airflow 3 deployment: metadata database on PostgreSQL set only by environment
variables, LocalExecutor, a real API server, Airflow's own example DAGs and the provider's.

Tasks never read the metadata database's URL (Airflow hides it from them anyway): they reach the
provider's tables through the ``predictive_store`` connection, fetched via the Task SDK and the
API server with the task's own token, holding a least-privilege role made from
``airflow predictive db-grants``. Every task that ran is recorded with its curve; the role can
record and cannot read Airflow's own tables; nothing is written to a SQLite fallback.
"""

from __future__ import annotations

import os
import uuid
from typing import TYPE_CHECKING

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import ProgrammingError

from airflow_predictive.cli.commands.db_grants import grants_sql
from airflow_predictive.core.model.runs import Outcome, RunSource
from airflow_predictive.storage.engine import engine_for
from airflow_predictive.storage.run_store import SqlRunStore
from tests._real_parts import require
from tests.integration.airflow_runs.airflow_env import AirflowEnv, wait_recorded

if TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = [pytest.mark.airflow, pytest.mark.postgres]

EXAMPLES = tuple(
    os.environ.get("RECORDING_PG_EXAMPLES", "example_bash_operator,tutorial").split(",")
)  # runnable offline, no extra providers
SHAPES = {"input_mb": 64, "cpu_seconds": 2}


class Deployment:
    def __init__(self, env: AirflowEnv, metadata_url: str, role_url: str, outputs: list[str]) -> None:
        self.env, self.metadata_url, self.role_url, self.outputs = env, metadata_url, role_url, outputs


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    admin_url = os.environ.get("AIRFLOW_PREDICTIVE_TEST_PG_URL")
    require(admin_url, "PostgreSQL: AIRFLOW_PREDICTIVE_TEST_PG_URL is not set")
    assert admin_url is not None
    suffix = uuid.uuid4().hex[:10]
    db, role, password = f"af_{suffix}", f"rec_{suffix}", uuid.uuid4().hex
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{db}"'))
    base = admin_url.rsplit("/", 1)[0]
    metadata_url = f"{base}/{db}"
    host_port = base.split("@", 1)[1]
    home = tmp_path_factory.mktemp("af-postgres")
    env = AirflowEnv.create(
        home,
        {"AIRFLOW__CORE__LOAD_EXAMPLES": "True", "AIRFLOW__PREDICTIVE__SAMPLE_FLUSH_INTERVAL": "2"},
        database_url=metadata_url,
    )
    try:
        env.migrate()  # Airflow's tables and, through the provider's DB manager, predictive_*
        owner = create_engine(metadata_url, isolation_level="AUTOCOMMIT")
        with owner.connect() as conn:
            conn.execute(text(grants_sql(role, db, password)))
        owner.dispose()
        # --conn-uri: `--conn-type postgres` is stored as "generic" without the postgres provider
        out = env.airflow(
            "connections",
            "add",
            "predictive_store",
            "--conn-uri",
            f"postgres://{role}:{password}@{host_port}/{db}",
        )
        assert out.returncode == 0, out.stderr[-2000:]
        env.start_api_server()
        outputs = []
        for dag_id, conf in [*((d, {}) for d in EXAMPLES), ("predictive_shapes", SHAPES)]:
            out = env.dags_test(dag_id, conf)
            outputs.append(out.stdout + out.stderr)
            (home / f"dags-test-{dag_id}.log").write_text(out.stdout + out.stderr)
            assert out.returncode == 0, (out.stdout + out.stderr)[-4000:]
        wait_recorded(SqlRunStore(engine_for(metadata_url)))
        yield Deployment(
            env, metadata_url, f"postgresql+psycopg2://{role}:{password}@{host_port}/{db}", outputs
        )
    finally:
        env.stop()
        engine_for(metadata_url).dispose()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)'))
            conn.execute(text(f"DROP ROLE IF EXISTS {role}"))
        admin.dispose()


def _tasks_that_ran(metadata_url: str) -> set[tuple[str, str, str, int]]:
    q = text(
        "SELECT dag_id, task_id, run_id, try_number FROM task_instance "
        "WHERE hostname IS NOT NULL AND hostname <> '' AND dag_id = ANY(:dags)"
    )
    with create_engine(metadata_url).connect() as conn:
        rows = conn.execute(q, {"dags": [*EXAMPLES, "predictive_shapes"]}).all()
    return {(r[0], r[1], r[2], int(r[3])) for r in rows}


def test_every_task_that_ran_is_recorded_with_its_curve(deployment: Deployment) -> None:
    ran = _tasks_that_ran(deployment.metadata_url)
    assert len(ran) >= 12, ran
    store = SqlRunStore(engine_for(deployment.metadata_url))
    runs = {
        (r.key.dag_id, r.key.task_id, r.identity.run_id, r.identity.try_number): r
        for r in store.runs()
        if r.identity.source is RunSource.LISTENER
    }
    missing = ran - set(runs)
    assert not missing, f"{len(missing)} of {len(ran)} tasks not recorded: {sorted(missing)}"
    for key in ran:
        run = runs[key]
        assert run.outcome in (Outcome.SUCCESS, Outcome.SKIPPED), (key, run.outcome, run.note)
        assert run.n_samples >= 1 and run.peak.memory_bytes, (key, run.n_samples)
    print(f"{len(ran)} tasks ran, {len(ran)} recorded")


def test_tasks_never_fell_back_to_another_database(deployment: Deployment) -> None:
    assert not (deployment.env.home / "predictive.db").exists()
    text_ = "\n".join(deployment.outputs)
    assert "no such table" not in text_ and "recording disabled" not in text_


def test_the_recording_role_records_and_cannot_read_airflows_tables(deployment: Deployment) -> None:
    engine = create_engine(deployment.role_url)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM predictive_task_run")).scalar()
        for table in ("dag", "connection", "variable", "task_instance"):
            with pytest.raises(ProgrammingError, match="permission denied"):
                conn.execute(text(f"SELECT 1 FROM {table} LIMIT 1"))
            conn.rollback()
    engine.dispose()
