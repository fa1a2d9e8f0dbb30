#!/usr/bin/env bash
# Build and install both extensions, and the DuckDB extension files they load, into
# one PostgreSQL: scripts/install.sh pg18|pg15
set -euo pipefail
source "$(dirname "$0")/env.sh"
version="${1:-pg18}"
pg_config="$(pg_config_for "$version")"
[ -x "$pg_config" ] || { echo "no pg_config for $version at $pg_config (run scripts/setup.sh, as root for pg15)" >&2; exit 1; }

build_log_dir="$DUCKLAKE_CACHE/logs"; mkdir -p "$build_log_dir"
for crate in fdw ivm; do
    build_log="$build_log_dir/install-$crate-$version.log"
    log "cargo pgrx install $crate for $version (log: $build_log)"
    if ! (cd "$PROJECT_ROOT/$crate" && cargo pgrx install --pg-config "$pg_config" \
            --no-default-features --features "$version") >"$build_log" 2>&1; then
        tail -n 60 "$build_log" >&2
        exit 1
    fi
done
"$(dirname "$0")/install-duckdb-extensions.sh" "$("$pg_config" --sharedir)/ducklake_fdw"
