#!/usr/bin/env bash
# Run every test: build and install both extensions into PostgreSQL 18 and 15, then
# run the integration suite (real servers, real DuckLake, the reference Python
# client) against each. Extra arguments go to pytest (e.g. -k types).
set -euo pipefail
source "$(dirname "$0")/env.sh"
"$PROJECT_ROOT/scripts/setup.sh"
versions="${DUCKLAKE_PG_VERSIONS:-pg18 pg15}"
for version in $versions; do
    if [ ! -x "$(pg_config_for "$version")" ]; then
        echo "PostgreSQL $version is not installed; run scripts/setup.sh as root, or set DUCKLAKE_PG_VERSIONS=pg18" >&2
        exit 1
    fi
    "$PROJECT_ROOT/scripts/install.sh" "$version"
done
log "cargo test -p ducklake_formats (unit tests of the pure functions)"
(cd "$PROJECT_ROOT" && cargo test -q -p ducklake_formats)
pg_args=()
for version in $versions; do pg_args+=(--pg "$version"); done
cd "$PROJECT_ROOT"
exec "$PYTHON" -m pytest tests "${pg_args[@]}" "$@"
