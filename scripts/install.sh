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
    phase_begin "build $crate for $version"
    # The schema generator cargo-pgrx runs links to libduckdb.so too.
    if ! (cd "$PROJECT_ROOT/$crate" && LD_LIBRARY_PATH="$DUCKDB_LIB_DIR" cargo pgrx install --pg-config "$pg_config" \
            --no-default-features --features "$version") >"$build_log" 2>&1; then
        tail -n 60 "$build_log" >&2
        exit 1
    fi
    phase_end
done
# Beside ducklake_fdw.so, which finds it there ($ORIGIN, see fdw/build.rs).
install -m 0755 "$DUCKDB_LIB_DIR/libduckdb.so" "$("$pg_config" --pkglibdir)/libduckdb.so"
"$(dirname "$0")/install-duckdb-extensions.sh" "$("$pg_config" --sharedir)/ducklake_fdw"
