"""Apply `airflow predictive db-grants` output idempotently (docker/compose.yaml's airflow-init).

The printed SQL starts with one `CREATE ROLE` line, which fails when the role exists (a second
`docker compose up`); the grants that follow are idempotent. So: create the role only when
missing, then run the grants. Reads the SQL on stdin, connects with Airflow's metadata URL
(AIRFLOW__DATABASE__SQL_ALCHEMY_CONN, the tables' owner) and the role name from PREDICTIVE_ROLE.
Uses only psycopg2 (the image's `postgres` extra); never prints the password.
"""

from __future__ import annotations

import os
import sys


def split_sql(sql: str) -> tuple[str, str]:
    """(the CREATE ROLE statement, the grants after it)."""
    first, _, rest = sql.strip().partition("\n")
    if not first.upper().startswith("CREATE ROLE "):
        raise SystemExit("apply_grants: expected `airflow predictive db-grants` output on stdin")
    return first, rest


def dsn(sqlalchemy_url: str) -> str:
    """libpq URL from a SQLAlchemy one (postgresql+psycopg2://... -> postgresql://...)."""
    scheme, sep, rest = sqlalchemy_url.partition("://")
    if not sep or not scheme.startswith("postgres"):
        raise SystemExit("apply_grants: AIRFLOW__DATABASE__SQL_ALCHEMY_CONN is not a PostgreSQL URL")
    return f"postgresql://{rest}"


def apply(sql: str, url: str, role: str) -> bool:
    """Run ``sql``; True when the role was created now, False when it existed already."""
    import psycopg2

    create, grants = split_sql(sql)
    conn = psycopg2.connect(dsn(url))
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,))
            created = cur.fetchone() is None
            if created:
                cur.execute(create)
            cur.execute(grants)
        return created
    finally:
        conn.close()


def main() -> int:
    role = os.environ["PREDICTIVE_ROLE"]
    created = apply(sys.stdin.read(), os.environ["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"], role)
    print(f"apply_grants: role {role} {'created' if created else 'exists'}; grants applied")
    return 0


if __name__ == "__main__":
    sys.exit(main())
