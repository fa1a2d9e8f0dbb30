#!/usr/bin/env bash
# The time-travel demo without Docker: a local PostgreSQL 18 (unprivileged), both
# extensions, the same init.sql and generator.py as the Docker setup.
#   demos/ducklake-time-travel/run.sh          start (builds and installs on first use)
#   demos/ducklake-time-travel/run.sh stop     stop the generator and PostgreSQL
# Settings (environment or .env in this folder): BATCH_SIZE, INTERVAL_MS, POSTGRES_PORT.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
source "$here/../../scripts/env.sh"
[ -f "$here/.env" ] && { set -a; source "$here/.env"; set +a; }
port="${POSTGRES_PORT:-5432}"
dir="${DEMO_DIR:-$DUCKLAKE_CACHE/demo-time-travel}"
bindir="$("$(pg18_config)" --bindir)"

if [ "${1:-}" = "stop" ]; then
    [ -f "$dir/generator.pid" ] && kill "$(cat "$dir/generator.pid")" 2>/dev/null || true
    "$PROJECT_ROOT/scripts/cluster.sh" stop "$dir" pg18
    exit 0
fi

if [ -z "${DEMO_SKIP_INSTALL:-}" ]; then
    "$PROJECT_ROOT/scripts/setup.sh"
    "$PROJECT_ROOT/scripts/install.sh" pg18
fi
"$PROJECT_ROOT/scripts/cluster.sh" stop "$dir" pg18 2>/dev/null || true
rm -rf "$dir"
log "starting PostgreSQL 18 in $dir (port $port) with ducklake_ivm preloaded"
DUCKLAKE_PRELOAD=ducklake_ivm "$PROJECT_ROOT/scripts/cluster.sh" start "$dir" "$port" pg18
mkdir -p "$dir/lake"; chmod 777 "$dir/lake"
psql=("$bindir/psql" -h "$dir" -p "$port" -U postgres -v ON_ERROR_STOP=1 -q)
"${psql[@]}" -d postgres -c "ALTER USER postgres PASSWORD 'postgres'" -c "CREATE DATABASE timetravel_demo"
"${psql[@]}" -d timetravel_demo -v data_path="$dir/lake/" -f "$here/init.sql" >/dev/null
PGHOST="$dir" PGPORT="$port" PGUSER=postgres PGDATABASE=timetravel_demo \
    BATCH_SIZE="${BATCH_SIZE:-50}" INTERVAL_MS="${INTERVAL_MS:-2000}" \
    nohup "$PYTHON" "$here/generator.py" >"$dir/generator.log" 2>&1 &
echo $! > "$dir/generator.pid"
cat <<MSG

The demo is running: the generator inserts ${BATCH_SIZE:-50} events every ${INTERVAL_MS:-2000} ms
into lake.events, and event_summary refreshes every 5 seconds. Connect with:
  $bindir/psql postgresql://postgres:postgres@127.0.0.1:$port/timetravel_demo
Generator log: $dir/generator.log. Stop everything with:
  $here/run.sh stop
MSG
