"""`airflow predictive db-grants --role NAME`: SQL for a least-privilege recording role.

The recommended production setup (docs/recording.md): tasks reach the provider's tables with a
role of their own, set as ``[predictive] sql_alchemy_conn`` or the ``predictive_store``
connection, that can read and write the ``predictive_*`` tables and their sequences and nothing
else: no Airflow table (``dag``, ``connection``, ``variable`` ...) is readable with it. The tables
are created by ``airflow db migrate`` with the metadata database's own role; run the printed SQL
as that owner (or a superuser) after migrating, and again after an upgrade that adds tables (the
grants cover the ``predictive_*`` tables that exist when it runs).
"""

from __future__ import annotations

import re
from typing import Any

_ROLE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")

#: child rows a re-run of a finished try replaces (SqlRunStore.begin_leg): the only DELETE needed
DELETABLE = ("predictive_resource_sample", "predictive_run_leg")


def grants_sql(role: str, database: str, password: str | None = None) -> str:
    """CREATE ROLE + GRANTs on the provider's tables and sequences only (PostgreSQL)."""
    if not _ROLE.match(role):
        raise ValueError(f"role must be a plain SQL identifier, got {role!r}")
    secret = (password or "CHANGE-ME").replace("'", "''")
    db = database.replace('"', '""')
    deletable = ", ".join(f"'{t}'" for t in DELETABLE)
    return f"""CREATE ROLE {role} LOGIN PASSWORD '{secret}';
GRANT CONNECT ON DATABASE "{db}" TO {role};
GRANT USAGE ON SCHEMA public TO {role};
DO $grants$
DECLARE rel record;
BEGIN
  FOR rel IN SELECT c.relname, c.relkind FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname = 'public' AND c.relname LIKE 'predictive\\_%' AND c.relkind IN ('r', 'S')
  LOOP
    IF rel.relkind = 'S' THEN
      EXECUTE format('GRANT USAGE, SELECT ON SEQUENCE %I TO {role}', rel.relname);
    ELSIF rel.relname = 'predictive_alembic_version' THEN
      EXECUTE format('GRANT SELECT ON %I TO {role}', rel.relname);
    ELSE
      EXECUTE format('GRANT SELECT, INSERT, UPDATE ON %I TO {role}', rel.relname);
      IF rel.relname IN ({deletable}) THEN
        EXECUTE format('GRANT DELETE ON %I TO {role}', rel.relname);
      END IF;
    END IF;
  END LOOP;
END
$grants$;"""


def run(args: Any) -> None:
    from airflow_predictive.runtime import get_runtime

    url = get_runtime().storage_url()
    database = url.rsplit("/", 1)[-1].split("?", 1)[0] or "airflow"
    print(grants_sql(args.role, database, getattr(args, "password", None)))
