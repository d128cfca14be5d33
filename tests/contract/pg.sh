#!/bin/bash
# pg.sh TEST [ARGS...] - run a contract test on the PostgreSQL backend: a
# private PostgreSQL cluster (initdb in a temporary directory, its own port
# and socket, small memory settings) with one database; every case gets a
# fresh store as its own PostgreSQL schema (the URI's search_path), dropped
# by STELE_TEST_STORE_DROP. The cluster is stopped and removed at the end.
set -eu
PGBIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
[ -n "$PGBIN" ] || { echo "pg.sh: PostgreSQL is not installed (apt-get install postgresql)" >&2; exit 1; }
base=$(mktemp -d "${TMPDIR:-/tmp}/stele-contract-pg-XXXXXX")
chmod 755 "$base"
as_pg() { if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
[ "$(id -u)" -eq 0 ] && chown postgres: "$base"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cleanup() {
    as_pg "$PGBIN/pg_ctl" -D "$base/pg" -m immediate -w stop >/dev/null 2>&1 || true
    rm -rf "$base"
}
trap cleanup EXIT INT TERM
as_pg "$PGBIN/initdb" -D "$base/pg" -U postgres -A trust -E UTF8 --no-locale >/dev/null
cat >>"$base/pg/postgresql.conf" <<CONF
port = $port
listen_addresses = ''
unix_socket_directories = '$base'
shared_buffers = 32MB
max_connections = 120
fsync = off
CONF
as_pg "$PGBIN/pg_ctl" -D "$base/pg" -l "$base/pg.log" -w -t 120 start >/dev/null
psql -X -q -h "$base" -p "$port" -U postgres -d postgres -c "CREATE DATABASE stele" >/dev/null
export STELE_TEST_STORE="postgresql:///stele?host=$base&port=$port&user=postgres&options=-csearch_path%3D{}"
export PG_SH_BASE="$base" PG_SH_PORT="$port"
export STELE_TEST_STORE_DROP='PGOPTIONS="-c client_min_messages=warning" psql -X -q -h "$PG_SH_BASE" -p "$PG_SH_PORT" -U postgres -d stele -c "DROP SCHEMA IF EXISTS ${1##*%3D} CASCADE" >/dev/null'
"$@"
