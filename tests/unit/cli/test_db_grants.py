"""`airflow predictive db-grants`: SQL for the provider's tables only, never an injectable name.
(The role it makes is tested on the real PostgreSQL in tests/integration/airflow_runs/test_recording_postgres.py.)"""

from __future__ import annotations

import pytest

from airflow_predictive.cli.commands.db_grants import grants_sql


def test_grants_cover_only_the_providers_tables() -> None:
    sql = grants_sql("recorder", "airflow", "s3cr'et")
    assert "CREATE ROLE recorder LOGIN PASSWORD 's3cr''et';" in sql
    assert "LIKE 'predictive\\_%'" in sql and "GRANT DELETE" in sql
    assert " ALL " not in sql.upper() and "SUPERUSER" not in sql.upper()


@pytest.mark.parametrize("role", ["x; DROP TABLE dag", "1abc", "a-b", ""])
def test_role_names_must_be_plain_identifiers(role: str) -> None:
    with pytest.raises(ValueError, match="identifier"):
        grants_sql(role, "airflow")
