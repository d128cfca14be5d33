#!/usr/bin/env bash
# bench/run_scavenge.sh [BUILD_DIR] - the scavenging benchmark (issue 5):
# Stele's stele_scavenge against PostgreSQL's VACUUM and VACUUM FULL
# (seeds/001's schema, fsync and synchronous_commit on), on stores of the
# same events where every other stream is deleted, and the latency of
# durable 1-event appends while each runs. `make bench-scavenge` runs it.
#
#   bench/run_scavenge.sh build          full size (4M events, ~1.2 GB of
#                                        log), saved to
#                                        bench/results/scavenge-<UTC time>.txt
#   QUICK=1 bench/run_scavenge.sh build  small sizes, a smoke run (not saved)
#   BENCH_DIR=/mnt/disk ...              where the stores go (default $TMPDIR
#                                        or /tmp)
#
# It installs what is missing (postgresql, libpq-dev), builds bench_scavenge,
# starts PostgreSQL in a temporary directory on a free port (as the postgres
# user when run as root), runs bench/bench_scavenge for Stele, then for
# PostgreSQL, prints each result line after the exact command that produced
# it, and removes everything (also on failure or Ctrl-C). Nothing here judges
# a number: docs/benchmarks.md does.
set -euo pipefail

BUILD=${1:-build}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
case "$BUILD" in /*) ;; *) BUILD="$PWD/$BUILD" ;; esac

if [ "${QUICK:-0}" = 1 ]; then
    EVENTS=400000 STREAMS=200 BATCH=100 SECS=2
else
    EVENTS=4000000 STREAMS=1000 BATCH=100 SECS=10
fi

SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
missing=""
for p in postgresql libpq-dev; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
    echo "run_scavenge: installing$missing" >&2
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq
    # shellcheck disable=SC2086
    $SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi
cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$BUILD" -j "$(nproc)" --target bench_scavenge >/dev/null
BIN="$BUILD/bench/bench_scavenge"
PGBIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)

BASE=${BENCH_DIR:-${TMPDIR:-/tmp}}
mkdir -p "$BASE"
WORK=$(mktemp -d "$BASE/stele-scav-bench.XXXXXX")
chmod 755 "$WORK"
OUT="$WORK/results.txt"
PG_STARTED=0

as_postgres() {
    if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}
cleanup() {
    set +e
    if [ "$PG_STARTED" = 1 ]; then
        as_postgres "$PGBIN/pg_ctl" -D "$WORK/pg" -m fast -w stop >/dev/null 2>&1
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
    local p
    for _ in $(seq 1 100); do
        p=$((20000 + RANDOM % 40000))
        if ! ss -Htln "sport = :$p" | grep -q .; then
            echo "$p"
            return
        fi
    done
    echo "run_scavenge: no free port found" >&2
    exit 1
}

# PostgreSQL: a fresh cluster, fsync and synchronous_commit on (the
# defaults, stated anyway), the same settings as the HTTP benchmark.
PG_PORT=$(free_port)
mkdir "$WORK/pg" "$WORK/pgsock" "$WORK/stele"
[ "$(id -u)" -eq 0 ] && chown postgres: "$WORK/pg" "$WORK/pgsock"
as_postgres "$PGBIN/initdb" -D "$WORK/pg" -U postgres -A trust -E UTF8 --no-locale >"$WORK/initdb.log" 2>&1 ||
    { cat "$WORK/initdb.log" >&2; exit 1; }
cat >>"$WORK/pg/postgresql.conf" <<EOF
port = $PG_PORT
listen_addresses = '127.0.0.1'
unix_socket_directories = '$WORK/pgsock'
fsync = on
synchronous_commit = on
full_page_writes = on
shared_buffers = 512MB
max_wal_size = 16GB
checkpoint_timeout = 30min
EOF
as_postgres "$PGBIN/pg_ctl" -D "$WORK/pg" -l "$WORK/pgsock/pg.log" -w start >/dev/null ||
    { echo "run_scavenge: postgres did not start:" >&2; tail -20 "$WORK/pgsock/pg.log" >&2; exit 1; }
PG_STARTED=1
as_postgres "$PGBIN/createdb" -h 127.0.0.1 -p "$PG_PORT" -U postgres bench
PGC="host=127.0.0.1 port=$PG_PORT dbname=bench user=postgres"

say() { printf '%s\n' "$*" | tee -a "$OUT"; }
load() {
    say "# load: $(cut -d' ' -f1-3 /proc/loadavg) (1/5/15 min)$(
        [ -r /proc/pressure/io ] && printf '; io pressure: %s' "$(head -1 /proc/pressure/io)")"
}
run() {
    say "# \$ $BIN $*"
    "$BIN" "$@" | tee -a "$OUT"
}

say "# stele scavenging benchmark against PostgreSQL VACUUM, $(date -u +%Y-%m-%dT%H:%M:%SZ)"
if [ -n "${STELE_COMMIT:-}" ]; then
    say "# commit: $STELE_COMMIT"
else
    say "# commit: $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)$(
        git -C "$ROOT" diff --quiet HEAD -- src include 2>/dev/null || echo ' (src/ or include/ modified)')"
fi
say "# machine: $(nproc) vCPU, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo) RAM, $(
    grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'), $(uname -sr)"
say "# disk: $(df -T "$WORK" | awk 'NR==2 {print $1, $2}') ($WORK)"
say "# $("$PGBIN/postgres" --version): fsync=on synchronous_commit=on full_page_writes=on shared_buffers=512MB max_wal_size=16GB"
say "# sizes: ${QUICK:+QUICK=$QUICK }events=$EVENTS streams=$STREAMS batch=$BATCH append_secs=$SECS"
load
run stele --dir "$WORK/stele" --events "$EVENTS" --streams "$STREAMS" --batch "$BATCH" --secs "$SECS"
load
run pg --conninfo "$PGC" --events "$EVENTS" --streams "$STREAMS" --batch "$BATCH" --secs "$SECS"
load

if [ "${QUICK:-0}" != 1 ]; then
    mkdir -p "$ROOT/bench/results"
    DEST="$ROOT/bench/results/scavenge-$(date -u +%Y%m%dT%H%M%SZ).txt"
    cp "$OUT" "$DEST"
    echo "run_scavenge: results saved to ${DEST#"$ROOT"/}"
fi
