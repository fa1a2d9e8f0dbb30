#!/usr/bin/env bash
# A throwaway PostgreSQL cluster run by an unprivileged user.
#   scripts/cluster.sh start <dir> <port> <pg15|pg18>   initdb if needed, then start
#   scripts/cluster.sh stop <dir> <pg15|pg18>
# The cluster listens on 127.0.0.1:<port> and on a Unix socket in <dir>.
set -euo pipefail
source "$(dirname "$0")/env.sh"
action="${1:?usage: cluster.sh start|stop <dir> ...}"
dir="${2:?missing directory}"

case "$action" in
start)
    port="${3:?missing port}"
    bindir="$("$(pg_config_for "${4:-pg18}")" --bindir)"
    mkdir -p "$dir"
    [ "$(id -u)" = 0 ] && chown "$SERVER_USER" "$dir"
    if [ ! -f "$dir/data/PG_VERSION" ]; then
        as_server_user "$bindir/initdb" -D "$dir/data" -U postgres -A trust --no-sync -E UTF8 --locale=C.UTF-8 >/dev/null
        cat >> "$dir/data/postgresql.conf" <<CONF
port = $port
listen_addresses = '127.0.0.1'
unix_socket_directories = '$dir'
fsync = off
shared_buffers = 128MB
max_connections = 200
shared_preload_libraries = '${DUCKLAKE_PRELOAD:-}'
# Whole-query pushdown plans from a session's first query (see fdw/README.md).
session_preload_libraries = 'ducklake_fdw'
CONF
    fi
    as_server_user "$bindir/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 start >/dev/null
    ;;
stop)
    bindir="$("$(pg_config_for "${3:-pg18}")" --bindir)"
    if [ -f "$dir/data/postmaster.pid" ]; then
        as_server_user "$bindir/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null
    fi
    ;;
*) echo "unknown action $action" >&2; exit 2 ;;
esac
