#!/usr/bin/env bash
# bench/run_query.sh [BUILD_DIR] - the query benchmark (issue 5): Stele's
# secondary indexes and queries against PostgreSQL with the seeds' schema and
# indexes, in one run on this machine. `make bench-query` runs it.
#
#   bench/run_query.sh build            full run: a 10M-event store; results
#                                       saved to bench/results/query-<UTC>.txt
#   QUICK=1 bench/run_query.sh build    a 200,000-event store, fewer rounds
#                                       (a smoke run, not saved)
#   EVENTS=2000000 ...                  another store size (saved)
#   BENCH_DIR=/mnt/disk ...             where the stores go ($TMPDIR or /tmp)
#
# What it runs (bench/bench_query.c has the details of each):
#  1. appends with the secondary indexes on and off, alternating rounds on
#     fresh stores: bench_engine's workloads (1x1, 64x1, 1x1000) with its
#     event (2 index keys per event), and 1x1000 / 64x1 with --shape full
#     (types, 2 tags, $correlationId and $actor: 6 keys per event);
#  2. the query store: EVENTS events in 100,000 streams of 100 categories,
#     1,000 event types ("type0000" takes 10%), 100-event appends by 8
#     threads; then its open after a clean close and with the index removed
#     (a rebuild from the log);
#  3. the queries: 20 category reads of 10,000 events from a random
#     position, and 20 reads of the 10,000 "type0000" events of a time window,
#     each timed REPS times: in process (libstele), over HTTP (stele serve,
#     NDJSON) and on PostgreSQL (libpq; the same events copied in, seeds/001's
#     table with its indexes plus seed 003's (stream_type, created_at) and
#     seed 002's (event_type, created_at)).
# PostgreSQL runs in a fresh cluster in a temporary directory (fsync on),
# stopped and removed at the end, also on failure or Ctrl-C.
set -euo pipefail

BUILD=${1:-build}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
case "$BUILD" in /*) ;; *) BUILD="$PWD/$BUILD" ;; esac

if [ "${QUICK:-0}" = 1 ]; then
    EVENTS=${EVENTS:-200000} STREAMS=2000 ROUNDS=3 REPS=3 NQ=5
    E1=500 E64=12800 E1000=100000
else
    EVENTS=${EVENTS:-10000000} STREAMS=100000 ROUNDS=${ROUNDS:-7} REPS=${REPS:-5} NQ=20
    E1=2000 E64=64000 E1000=300000
fi

SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
missing=""
for p in postgresql libpq-dev; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
    echo "run_query: installing$missing" >&2
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq
    # shellcheck disable=SC2086
    $SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi
cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$BUILD" -j "$(nproc)" --target stele bench_query >/dev/null
STELE="$BUILD/stele"
BQ="$BUILD/bench/bench_query"
PGBIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)

BASE=${BENCH_DIR:-${TMPDIR:-/tmp}}
mkdir -p "$BASE"
WORK=$(mktemp -d "$BASE/stele-query-bench.XXXXXX")
chmod 755 "$WORK"
OUT="$WORK/results.txt"
STELE_PID="" PG_STARTED=0

as_postgres() {
    if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

cleanup() {
    set +e
    if [ -n "$STELE_PID" ]; then
        kill -TERM "$STELE_PID" 2>/dev/null
        wait "$STELE_PID" 2>/dev/null
    fi
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
    echo "run_query: no free port found" >&2
    exit 1
}

say() { printf '%s\n' "$*" | tee -a "$OUT"; }
load() {
    say "# load: $(cut -d' ' -f1-3 /proc/loadavg) (1/5/15 min)$(
        [ -r /proc/pressure/io ] && printf '; io pressure: %s' "$(head -1 /proc/pressure/io)")"
}
# run ARGS...: print the command, then its result lines.
run() {
    say "# \$ bench_query $*"
    "$BQ" "$@" | tee -a "$OUT"
}

say "# stele query benchmark against PostgreSQL, $(date -u +%Y-%m-%dT%H:%M:%SZ)"
if [ -n "${STELE_COMMIT:-}" ]; then
    say "# commit: $STELE_COMMIT"
else
    say "# commit: $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)$(
        git -C "$ROOT" diff --quiet HEAD -- src include server bench 2>/dev/null || echo ' (modified)')"
fi
say "# machine: $(nproc) vCPU, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo) RAM, $(
    grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'), $(uname -sr)"
say "# disk: $(df -T "$WORK" | awk 'NR==2 {print $1, $2}') ($WORK)"
say "# sizes: ${QUICK:+QUICK=$QUICK }events=$EVENTS streams=$STREAMS rounds=$ROUNDS reps=$REPS queries=$NQ+$NQ"
load

# 1. Appends, secondary indexes on vs off (alternating rounds, fresh stores).
mkdir -p "$WORK/append"
run append --dir "$WORK/append" --threads 1 --batch 1 --events "$E1" --rounds "$ROUNDS"
run append --dir "$WORK/append" --threads 64 --batch 1 --events "$E64" --rounds "$ROUNDS"
run append --dir "$WORK/append" --threads 1 --batch 1000 --events "$E1000" --rounds "$ROUNDS"
run append --dir "$WORK/append" --threads 64 --batch 1 --events "$E64" --rounds "$ROUNDS" --shape full
run append --dir "$WORK/append" --threads 1 --batch 1000 --events "$E1000" --rounds "$ROUNDS" --shape full
load

# 2. The query store.
run build --dir "$WORK" --events "$EVENTS" --streams "$STREAMS" --categories 100 --types 1000 \
    --batch 100 --threads 8
run open --dir "$WORK"
run open --dir "$WORK" --no-indexes
run params --dir "$WORK" --params "$WORK/params.txt" --reps "$NQ" --count 10000
load

# 3a. In process.
run query --dir "$WORK" --params "$WORK/params.txt" --reps "$REPS"
run views --dir "$WORK" --categories 100 --reps 2000

# 3b. Over HTTP.
STELE_READY_FD=3 "$STELE" serve --port 0 --data "$WORK/store" --log-level error \
    3>"$WORK/ready" 2>"$WORK/stele.log" &
STELE_PID=$!
for _ in $(seq 1 600); do grep -q ready "$WORK/ready" 2>/dev/null && break; sleep 0.1; done
PORT=$(awk '/ready/ {print $2}' "$WORK/ready")
[ -n "$PORT" ] || { echo "run_query: stele serve did not start:" >&2; cat "$WORK/stele.log" >&2; exit 1; }
run http --port "$PORT" --params "$WORK/params.txt" --reps "$REPS"
kill -TERM "$STELE_PID"
wait "$STELE_PID" || true
STELE_PID=""
load

# 3c. PostgreSQL: a fresh cluster, fsync on, 512 MB shared buffers.
PG_PORT=$(free_port)
mkdir "$WORK/pg" "$WORK/pgsock"
[ "$(id -u)" -eq 0 ] && chown postgres: "$WORK/pg" "$WORK/pgsock"
as_postgres "$PGBIN/initdb" -D "$WORK/pg" -U postgres -A trust -E UTF8 --no-locale >"$WORK/initdb.log" 2>&1 ||
    { cat "$WORK/initdb.log" >&2; exit 1; }
cat >>"$WORK/pg/postgresql.conf" <<EOF
port = $PG_PORT
listen_addresses = '127.0.0.1'
unix_socket_directories = '$WORK/pgsock'
fsync = on
synchronous_commit = on
shared_buffers = 512MB
maintenance_work_mem = 512MB
max_wal_size = 16GB
checkpoint_timeout = 30min
EOF
as_postgres "$PGBIN/pg_ctl" -D "$WORK/pg" -l "$WORK/pgsock/pg.log" -w start >/dev/null ||
    { echo "run_query: postgres did not start:" >&2; tail -20 "$WORK/pgsock/pg.log" >&2; exit 1; }
PG_STARTED=1
as_postgres "$PGBIN/createdb" -h 127.0.0.1 -p "$PG_PORT" -U postgres bench
PGC="host=127.0.0.1 port=$PG_PORT dbname=bench user=postgres"
say "# $("$PGBIN/postgres" --version); fsync=on shared_buffers=512MB maintenance_work_mem=512MB"
run pgload --dir "$WORK" --conninfo "$PGC"
run pgquery --conninfo "$PGC" --params "$WORK/params.txt" --reps "$REPS"
say "# store sizes: stele log $(du -sh "$WORK/store/log" | cut -f1), stele index $(du -sh "$WORK/store/index" | cut -f1), postgres cluster $(du -sh "$WORK/pg" | cut -f1)"
load

if [ "${QUICK:-0}" != 1 ]; then
    mkdir -p "$ROOT/bench/results"
    DEST="$ROOT/bench/results/query-$(date -u +%Y%m%dT%H%M%SZ).txt"
    cp "$OUT" "$DEST"
    echo "run_query: saved $DEST" >&2
fi
