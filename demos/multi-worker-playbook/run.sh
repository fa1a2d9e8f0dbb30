#!/usr/bin/env bash
# The multi-worker playbook without Docker: two local PostgreSQL 18 instances (unprivileged)
# with ducklake_fdw, one catalog database on the first, one shared data directory; then
# every scenario of playbook.sh. The instances keep running so you can explore.
#   demos/multi-worker-playbook/run.sh          start and run the playbook (builds on first use)
#   demos/multi-worker-playbook/run.sh --s3     the same with the lake's data in an S3 bucket of
#                                               a local S3 server (moto's, on loopback)
#   demos/multi-worker-playbook/run.sh stop     stop both instances (and the S3 server)
# Settings (environment or .env in this folder): POSTGRES_PORT (first instance, default 5442),
# SECOND_POSTGRES_PORT (default 5443), S3_PORT (default 5444), WORKERS (8), USER_IDS (300).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
source "$here/../../scripts/env.sh"
[ -f "$here/.env" ] && { set -a; source "$here/.env"; set +a; }
first_port="${POSTGRES_PORT:-5442}"
second_port="${SECOND_POSTGRES_PORT:-5443}"
s3_port="${S3_PORT:-5444}"
dir="${DEMO_DIR:-$DUCKLAKE_CACHE/demo-multi-worker}"
bindir="$("$(pg18_config)" --bindir)"

stop_s3() {
    if [ -f "$dir/s3.pid" ]; then
        kill "$(cat "$dir/s3.pid")" 2>/dev/null || true
        rm -f "$dir/s3.pid"
    fi
}

if [ "${1:-}" = "stop" ]; then
    "$PROJECT_ROOT/scripts/cluster.sh" stop "$dir/first" pg18
    "$PROJECT_ROOT/scripts/cluster.sh" stop "$dir/second" pg18
    stop_s3
    exit 0
fi
s3=""
[ "${1:-}" = "--s3" ] && s3=1

if [ -z "${DEMO_SKIP_INSTALL:-}" ]; then
    "$PROJECT_ROOT/scripts/setup.sh"
    "$PROJECT_ROOT/scripts/install.sh" pg18
fi
"$PROJECT_ROOT/scripts/cluster.sh" stop "$dir/first" pg18 2>/dev/null || true
"$PROJECT_ROOT/scripts/cluster.sh" stop "$dir/second" pg18 2>/dev/null || true
stop_s3
rm -rf "$dir"
log "starting two PostgreSQL 18 instances in $dir (ports $first_port and $second_port)"
"$PROJECT_ROOT/scripts/cluster.sh" start "$dir/first" "$first_port" pg18
"$PROJECT_ROOT/scripts/cluster.sh" start "$dir/second" "$second_port" pg18
# The catalog role logs in with a password over TCP, so the user mappings' password is used.
as_server_user sed -i "1i host all ducklake 127.0.0.1/32 scram-sha-256" "$dir/first/data/pg_hba.conf"
as_server_user "$bindir/pg_ctl" -D "$dir/first/data" reload >/dev/null
if [ -n "$s3" ]; then
    # The bucket's keys go in the instances' user mappings; this local server accepts any.
    log "starting an S3 server on 127.0.0.1:$s3_port (moto), bucket playbook-lake"
    "$VENV/bin/moto_server" -H 127.0.0.1 -p "$s3_port" >"$dir/s3.log" 2>&1 &
    echo $! > "$dir/s3.pid"
    "$PYTHON" - "$s3_port" <<'PY'
import sys, time, boto3, botocore
s3 = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{sys.argv[1]}", aws_access_key_id="playbook",
                  aws_secret_access_key="playbook-secret", region_name="us-east-1")
for _ in range(200):
    try:
        s3.create_bucket(Bucket="playbook-lake")
        break
    except botocore.exceptions.EndpointConnectionError:
        time.sleep(0.05)
else:
    sys.exit("the S3 server did not start")
PY
    data_path="s3://playbook-lake/lake/"
    export S3_ENDPOINT="127.0.0.1:$s3_port" S3_KEY_ID=playbook S3_SECRET=playbook-secret
    # Every insert becomes an object in the bucket, instead of rows kept in the catalog.
    export DATA_INLINING_ROW_LIMIT=0
else
    mkdir -p "$dir/lake"; chmod 777 "$dir/lake"
    data_path="$dir/lake/"
fi

FIRST_HOST=127.0.0.1 FIRST_PORT="$first_port" SECOND_HOST=127.0.0.1 SECOND_PORT="$second_port" \
PGUSER=postgres CATALOG_CONNECTION="postgresql://127.0.0.1:$first_port/ducklake_catalog" \
CATALOG_PASSWORD=ducklake DATA_PATH="$data_path" PSQL="$bindir/psql" PYTHON="$PYTHON" \
    "$here/playbook.sh"

cat <<MSG

Both instances keep running on one lake (catalog in ducklake_catalog on port $first_port, data in
$data_path). Connect with:
  $bindir/psql "host=127.0.0.1 port=$first_port user=postgres dbname=ducklake_catalog"
  $bindir/psql "host=127.0.0.1 port=$second_port user=postgres dbname=playbook"
Stop them${s3:+ and the S3 server} with:
  $here/run.sh stop
MSG
