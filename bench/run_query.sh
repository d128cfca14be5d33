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
case "$BUILD" in /*) ;; *) BUILD="$PWD/$BUILD" ;; esac

if [ "${QUICK:-0}" = 1 ]; then
    EVENTS=${EVENTS:-200000} STREAMS=2000 ROUNDS=3 REPS=3 NQ=5
    E1=500 E64=12800 E1000=100000
else
    EVENTS=${EVENTS:-10000000} STREAMS=100000 ROUNDS=${ROUNDS:-7} REPS=${REPS:-5} NQ=20
    E1=2000 E64=64000 E1000=300000
fi

# shellcheck source=bench/lib.sh
. "$(dirname "$0")/lib.sh"

bench_deps postgresql libpq-dev
bench_build "$BUILD" stele bench_query
STELE="$BUILD/stele"
BQ="$BUILD/bench/bench_query"
bench_workdir query

# run ARGS...: print the command, then its result lines.
run() {
    say "# \$ bench_query $*"
    "$BQ" "$@" | tee -a "$OUT"
}

bench_header "stele query benchmark against PostgreSQL" src include server bench
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
start_stele "$WORK/store"
run http --port "$STELE_PORT" --params "$WORK/params.txt" --reps "$REPS"
stop_stele
load

# 3c. PostgreSQL: a fresh cluster, fsync on, 512 MB shared buffers.
pg_start "shared_buffers = 512MB" "maintenance_work_mem = 512MB" "max_wal_size = 16GB" \
    "checkpoint_timeout = 30min"
say "# $("$PGBIN/postgres" --version); fsync=on shared_buffers=512MB maintenance_work_mem=512MB"
run pgload --dir "$WORK" --conninfo "$PGC"
run pgquery --conninfo "$PGC" --params "$WORK/params.txt" --reps "$REPS"
say "# store sizes: stele log $(du -sh "$WORK/store/log" | cut -f1), stele index $(du -sh "$WORK/store/index" | cut -f1), postgres cluster $(du -sh "$WORK/pg" | cut -f1)"
load

bench_save query
