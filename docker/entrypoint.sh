#!/usr/bin/env bash
# Start PostgreSQL 18 with ducklake_ivm preloaded. On first start: initdb, password
# authentication for postgres/$POSTGRES_PASSWORD, database $POSTGRES_DB (unless "postgres"), the SQL of
# $INIT_SQL (the demo's init.sql) with the lake's data in $LAKE_DIR (/var/lib/postgresql/lake).
# Any other command (e.g. the generator) runs instead of the server.
set -euo pipefail
bindir="$(dirname "$(find /opt/pg-ducklake/venv -path '*pginstall/bin/pg_config' | head -1)")"
export PATH="$bindir:$PATH"  # psql for commands such as the playbook
if [ "$#" -gt 0 ]; then exec "$@"; fi
lake="${LAKE_DIR:-/var/lib/postgresql/lake}"
mkdir -p "$PGDATA" "$lake" && chown -R postgres "$(dirname "$PGDATA")" "$lake"
run() { su postgres -s /bin/bash -c "$*"; }
if [ ! -f "$PGDATA/PG_VERSION" ]; then
    echo "${POSTGRES_PASSWORD:-postgres}" > /tmp/pwfile && chown postgres /tmp/pwfile
    run "$bindir/initdb -D $PGDATA -U postgres --pwfile=/tmp/pwfile -A scram-sha-256 -E UTF8 --locale=C.UTF-8"
    rm /tmp/pwfile
    cat >> "$PGDATA/postgresql.conf" <<CONF
listen_addresses = '*'
shared_preload_libraries = 'ducklake_ivm'
CONF
    echo "host all all 0.0.0.0/0 scram-sha-256" >> "$PGDATA/pg_hba.conf"
    run "$bindir/pg_ctl -D $PGDATA -w start -o '-c listen_addresses=localhost'"
    export PGPASSWORD="${POSTGRES_PASSWORD:-postgres}"
    if [ "${POSTGRES_DB:-timetravel_demo}" != postgres ]; then
        run "PGPASSWORD=$PGPASSWORD $bindir/psql -h localhost -U postgres -v ON_ERROR_STOP=1 -c 'CREATE DATABASE ${POSTGRES_DB:-timetravel_demo}'"
    fi
    if [ -n "${INIT_SQL:-}" ]; then
        run "PGPASSWORD=$PGPASSWORD $bindir/psql -h localhost -U postgres -d ${POSTGRES_DB:-timetravel_demo} -v data_path=$lake/ -f $INIT_SQL"
    fi
    run "$bindir/pg_ctl -D $PGDATA -w stop"
fi
exec su postgres -s /bin/bash -c "exec $bindir/postgres -D $PGDATA"
