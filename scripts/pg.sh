#!/usr/bin/env bash
# A throw-away PostgreSQL server on loopback for the storage tests: start | stop | url.
set -euo pipefail
PORT="${AIRFLOW_PREDICTIVE_TEST_PG_PORT:-55432}"
DIR="${AIRFLOW_PREDICTIVE_TEST_PG_DIR:-/tmp/airflow-predictive-pg-$PORT}"
BINDIR="$(dirname "$(ls /usr/lib/postgresql/*/bin/initdb | sort -V | tail -1)")"
as_pg() { if [ "$(id -u)" -eq 0 ]; then su postgres -s /bin/bash -c "$*"; else bash -c "$*"; fi; }
case "${1:-}" in
  start)
    if [ -f "$DIR/data/postmaster.pid" ] && as_pg "$BINDIR/pg_ctl -D $DIR/data status" >/dev/null 2>&1; then
      exit 0
    fi
    rm -rf "$DIR"; mkdir -p "$DIR"
    [ "$(id -u)" -eq 0 ] && chown postgres "$DIR"
    as_pg "$BINDIR/initdb -D $DIR/data -U postgres -A trust >/dev/null"
    as_pg "$BINDIR/pg_ctl -D $DIR/data -l $DIR/log -w -o '-p $PORT -k $DIR -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=300' start >/dev/null"
    as_pg "$BINDIR/createdb -h 127.0.0.1 -p $PORT -U postgres predictive_test"
    echo "PostgreSQL started on 127.0.0.1:$PORT"
    ;;
  stop)
    [ -d "$DIR/data" ] && as_pg "$BINDIR/pg_ctl -D $DIR/data -m fast stop >/dev/null" || true
    ;;
  url)
    echo "postgresql+psycopg2://postgres@127.0.0.1:$PORT/predictive_test"
    ;;
  *) echo "usage: $0 start|stop|url" >&2; exit 2 ;;
esac
