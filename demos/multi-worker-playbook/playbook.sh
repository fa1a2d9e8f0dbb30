#!/usr/bin/env bash
# The playbook's scenarios against two running PostgreSQL instances that have ducklake_fdw
# installed. run.sh starts such instances locally; docker-compose.yml runs this in a container.
#
# Environment:
#   FIRST_HOST, FIRST_PORT     the first instance: it holds the catalog database ducklake_catalog
#   SECOND_HOST, SECOND_PORT   the second instance: database playbook, same lake
#   PGUSER, PGPASSWORD         a superuser of both instances (client side)
#   CATALOG_CONNECTION         how the instances reach the catalog (postgresql://host:port/ducklake_catalog)
#   CATALOG_PASSWORD           password of the catalog role "ducklake" (created here)
#   DATA_PATH                  the shared data directory, the same path on both instances,
#                              or an object-store prefix (s3://bucket/prefix/)
#   S3_ENDPOINT, S3_KEY_ID, S3_SECRET
#                              for an s3:// DATA_PATH: the store's endpoint (host:port, plain
#                              HTTP, path-style URLs) and keys; unset: AWS's own S3
#   DATA_INLINING_ROW_LIMIT    the server option (unset: DuckLake's default, 10 rows)
#   WORKERS, USER_IDS          size of the distributed loop (default 8 workers, 300 user ids)
#   PYTHON, PSQL               interpreters (default python3, psql)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
psql="${PSQL:-psql}"
first="host=$FIRST_HOST port=$FIRST_PORT"
second="host=$SECOND_HOST port=$SECOND_PORT"

step() { printf '\n\033[1m=== %s\033[0m\n' "$*"; }
run_sql() {  # run_sql <conninfo> <file> [psql -v args...]
    local conn="$1" file="$2"; shift 2
    printf '\033[2m$ psql "%s" -f %s\033[0m\n' "$conn" "sql/$(basename "$file")"
    "$psql" -X -v ON_ERROR_STOP=1 -d "$conn" "$@" -f "$file"
}

step "Prerequisites: the catalog database and role, on the first instance"
run_sql "$first dbname=postgres" "$here/sql/metastore.sql" -v catalog_password="$CATALOG_PASSWORD"
"$psql" -X -q -v ON_ERROR_STOP=1 -d "$second dbname=postgres" -c "CREATE DATABASE playbook"
for conn in "$first dbname=ducklake_catalog" "$second dbname=playbook"; do
    store=()
    [ -n "${S3_KEY_ID:-}" ] && store+=(-v s3_key_id="$S3_KEY_ID" -v s3_secret="$S3_SECRET")
    [ -n "${S3_ENDPOINT:-}" ] && store+=(-v s3_endpoint="$S3_ENDPOINT")
    [ -n "${DATA_INLINING_ROW_LIMIT:-}" ] && store+=(-v data_inlining_row_limit="$DATA_INLINING_ROW_LIMIT")
    run_sql "$conn" "$here/sql/server.sql" -v catalog_connection="$CATALOG_CONNECTION" \
        -v catalog_password="$CATALOG_PASSWORD" -v data_path="$DATA_PATH" ${store[@]+"${store[@]}"}
done

step "1. Create table and insert data (first instance)"
run_sql "$first dbname=ducklake_catalog" "$here/sql/1_create_users.sql"

step "2. Query data (time travel)"
run_sql "$first dbname=ducklake_catalog" "$here/sql/2_time_travel.sql"

step "3. Track changes"
run_sql "$first dbname=ducklake_catalog" "$here/sql/3_track_changes.sql"

step "4. Distributed loop: workers on both instances insert into user_events"
run_sql "$first dbname=ducklake_catalog" "$here/sql/4_user_events.sql"
run_sql "$second dbname=playbook" "$here/sql/4_second_instance.sql"
"${PYTHON:-python3}" "$here/workers.py" --workers "${WORKERS:-8}" --user-ids "${USER_IDS:-300}" \
    "$first dbname=ducklake_catalog" "$second dbname=playbook"

step "Check catalog state"
run_sql "$first dbname=ducklake_catalog" "$here/sql/5_catalog.sql"
