#!/usr/bin/env bash
# The quick start: build and install into a local PostgreSQL 18, start a throwaway
# cluster, create a lake with the embedded default (catalog in that database, data
# under its data directory), load sample events and query them.
#   scripts/demo.sh          run, print, stop the cluster
#   scripts/demo.sh --keep   leave the cluster running and print how to connect
set -euo pipefail
source "$(dirname "$0")/env.sh"
"$PROJECT_ROOT/scripts/setup.sh"
"$PROJECT_ROOT/scripts/install.sh" pg18

dir="${DUCKLAKE_DEMO_DIR:-$DUCKLAKE_CACHE/demo}"
port="${DUCKLAKE_DEMO_PORT:-55433}"
psql="$("$(pg18_config)" --bindir)/psql"
"$PROJECT_ROOT/scripts/cluster.sh" stop "$dir" pg18 2>/dev/null || true
rm -rf "$dir"
log "starting PostgreSQL 18 in $dir (port $port)"
"$PROJECT_ROOT/scripts/cluster.sh" start "$dir" "$port" pg18
"$psql" -h "$dir" -p "$port" -U postgres -d postgres -v ON_ERROR_STOP=1 -q -f "$PROJECT_ROOT/sql/quickstart.sql"
if [ "${1:-}" = "--keep" ]; then
    echo
    echo "The cluster is running. Connect with:"
    echo "  $psql -h $dir -p $port -U postgres postgres"
    echo "Stop it with:"
    echo "  $PROJECT_ROOT/scripts/cluster.sh stop $dir pg18"
else
    "$PROJECT_ROOT/scripts/cluster.sh" stop "$dir" pg18
fi
