#!/usr/bin/env bash
# Copy the DuckLake, Postgres, ICU, httpfs, aws and azure DuckDB extensions (v1.5.5, from their PyPI wheels)
# into a directory, under the file names DuckDB expects:
#   scripts/install-duckdb-extensions.sh <directory>
set -euo pipefail
source "$(dirname "$0")/env.sh"
target="${1:?usage: install-duckdb-extensions.sh <directory>}"
sp="$(site_packages)"
mkdir -p "$target"
install -m 0644 "$sp/duckdb_extension_ducklake/extensions/v$PINNED_DUCKDB/ducklake.duckdb_extension" \
    "$target/ducklake.duckdb_extension"
# Its entry point is postgres_scanner_*: DuckDB only finds it under this name.
install -m 0644 "$sp/duckdb_extension_postgres/extensions/v$PINNED_DUCKDB/postgres.duckdb_extension" \
    "$target/postgres_scanner.duckdb_extension"
# Time zones for TIMESTAMPTZ arithmetic. The official libduckdb the FDW links to has ICU
# built in (loading this file there is a no-op); the reference client, Python's DuckDB, loads it.
install -m 0644 "$sp/duckdb_extension_icu/extensions/v$PINNED_DUCKDB/icu.duckdb_extension" "$target/icu.duckdb_extension"
# Object stores: httpfs reads and writes s3:// and gs://, azure az:// and abfss://; aws
# resolves a server's S3 credential chain (environment, instance role). Loaded only by
# lakes that need them.
for name in httpfs aws azure; do
    install -m 0644 "$sp/duckdb_extension_$name/extensions/v$PINNED_DUCKDB/$name.duckdb_extension" "$target/$name.duckdb_extension"
done
