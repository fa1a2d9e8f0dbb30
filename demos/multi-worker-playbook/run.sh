#!/usr/bin/env bash
# The multi-worker playbook without Docker: two local PostgreSQL 18 instances (unprivileged)
# with ducklake_fdw, one catalog database on the first, one shared data directory; then
# every scenario of playbook.sh. The instances keep running so you can explore.
#   demos/multi-worker-playbook/run.sh          start and run the playbook (builds on first use)
#   demos/multi-worker-playbook/run.sh stop     stop both instances
# Settings (environment or .env in this folder): POSTGRES_PORT (first instance, default 5442),
# SECOND_POSTGRES_PORT (default 5443), WORKERS (8), USER_IDS (300).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
source "$here/../../scripts/env.sh"
[ -f "$here/.env" ] && { set -a; source "$here/.env"; set +a; }
first_port="${POSTGRES_PORT:-5442}"
second_port="${SECOND_POSTGRES_PORT:-5443}"
dir="${DEMO_DIR:-$DUCKLAKE_CACHE/demo-multi-worker}"
bindir="$("$(pg18_config)" --bindir)"

if [ "${1:-}" = "stop" ]; then
    "$PROJECT_ROOT/scripts/cluster.sh" stop "$dir/first" pg18
    "$PROJECT_ROOT/scripts/cluster.sh" stop "$dir/second" pg18
    exit 0
fi

if [ -z "${DEMO_SKIP_INSTALL:-}" ]; then
    "$PROJECT_ROOT/scripts/setup.sh"
    "$PROJECT_ROOT/scripts/install.sh" pg18
fi
"$PROJECT_ROOT/scripts/cluster.sh" stop "$dir/first" pg18 2>/dev/null || true
"$PROJECT_ROOT/scripts/cluster.sh" stop "$dir/second" pg18 2>/dev/null || true
rm -rf "$dir"
log "starting two PostgreSQL 18 instances in $dir (ports $first_port and $second_port)"
"$PROJECT_ROOT/scripts/cluster.sh" start "$dir/first" "$first_port" pg18
"$PROJECT_ROOT/scripts/cluster.sh" start "$dir/second" "$second_port" pg18
# The catalog role logs in with a password over TCP, so the user mappings' password is used.
as_server_user sed -i "1i host all ducklake 127.0.0.1/32 scram-sha-256" "$dir/first/data/pg_hba.conf"
as_server_user "$bindir/pg_ctl" -D "$dir/first/data" reload >/dev/null
mkdir -p "$dir/lake"; chmod 777 "$dir/lake"

FIRST_HOST=127.0.0.1 FIRST_PORT="$first_port" SECOND_HOST=127.0.0.1 SECOND_PORT="$second_port" \
PGUSER=postgres CATALOG_CONNECTION="postgresql://127.0.0.1:$first_port/ducklake_catalog" \
CATALOG_PASSWORD=ducklake DATA_PATH="$dir/lake/" PSQL="$bindir/psql" PYTHON="$PYTHON" \
    "$here/playbook.sh"

cat <<MSG

Both instances keep running on one lake (catalog in ducklake_catalog on port $first_port, data in
$dir/lake). Connect with:
  $bindir/psql "host=127.0.0.1 port=$first_port user=postgres dbname=ducklake_catalog"
  $bindir/psql "host=127.0.0.1 port=$second_port user=postgres dbname=playbook"
Stop them with:
  $here/run.sh stop
MSG
