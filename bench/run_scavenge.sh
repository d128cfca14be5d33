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
case "$BUILD" in /*) ;; *) BUILD="$PWD/$BUILD" ;; esac

if [ "${QUICK:-0}" = 1 ]; then
    EVENTS=400000 STREAMS=200 BATCH=100 SECS=2
else
    EVENTS=4000000 STREAMS=1000 BATCH=100 SECS=10
fi

# shellcheck source=bench/lib.sh
. "$(dirname "$0")/lib.sh"

bench_deps postgresql libpq-dev
bench_build "$BUILD" bench_scavenge
BIN="$BUILD/bench/bench_scavenge"
bench_workdir scav

# PostgreSQL: the settings of the HTTP benchmark.
pg_start "full_page_writes = on" "shared_buffers = 512MB" "max_wal_size = 16GB" \
    "checkpoint_timeout = 30min"
mkdir "$WORK/stele"

run() {
    say "# \$ $BIN $*"
    "$BIN" "$@" | tee -a "$OUT"
}

bench_header "stele scavenging benchmark against PostgreSQL VACUUM" src include
say "# $("$PGBIN/postgres" --version): fsync=on synchronous_commit=on full_page_writes=on shared_buffers=512MB max_wal_size=16GB"
say "# sizes: ${QUICK:+QUICK=$QUICK }events=$EVENTS streams=$STREAMS batch=$BATCH append_secs=$SECS"
load
run stele --dir "$WORK/stele" --events "$EVENTS" --streams "$STREAMS" --batch "$BATCH" --secs "$SECS"
load
run pg --conninfo "$PGC" --events "$EVENTS" --streams "$STREAMS" --batch "$BATCH" --secs "$SECS"
load

bench_save scavenge
