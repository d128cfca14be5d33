#!/bin/bash
# stele_on_pg.sh - stands in for the stele binary (as STELE_BIN) so that an
# HTTP suite written for the local engine runs on the PostgreSQL backend:
# every "--data DIR" becomes a libpq URI naming a database of its own
# (created on first use, named after DIR, so a restart on the same DIR
# finds the same data). run_on_pg.py sets STELE_REAL_BIN, PGW_HOST and
# PGW_PORT. `serve` also gets --node named after DIR. Other commands and
# arguments pass through unchanged.
set -e
args=()
while [ $# -gt 0 ]; do
  if [ "$1" = "--data" ] && [ $# -ge 2 ] && [ "${2#/}" != "$2" ]; then
    db="d$(printf '%s' "$2" | md5sum | cut -c1-16)"
    if ! psql -X -q -h "$PGW_HOST" -p "$PGW_PORT" -U postgres -d postgres -tAc \
         "SELECT 1 FROM pg_database WHERE datname = '$db'" | grep -q 1; then
      psql -X -q -h "$PGW_HOST" -p "$PGW_PORT" -U postgres -d postgres \
           -c "CREATE DATABASE $db" >/dev/null
    fi
    args+=("--data" "postgresql:///$db?host=$PGW_HOST&port=$PGW_PORT&user=postgres")
    # A server restarted on the same DIR is the same node: it takes back
    # its consumer groups' claims at once, as one local server would
    # (docs/consumer-groups.md, "Several servers").
    [ "${args[0]}" = "serve" ] && args+=("--node" "$db")
    shift 2
  else
    args+=("$1")
    shift
  fi
done
exec "$STELE_REAL_BIN" "${args[@]}"
