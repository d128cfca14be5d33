#!/usr/bin/env bash
# bench/run_multi.sh [BUILD_DIR] - multi-stream appends and DCB conditions
# (issue 11; docs/benchmarks.md). `make bench-multi` runs it.
#
#  1. in process (bench_multi): two-stream transfers vs single-stream appends
#     of the same two events, 64 threads, alternating rounds; DCB
#     conditional appends with 1 and 64 threads (and single appends with 1
#     thread, the fsync-bound baseline of the 1-client figure);
#  2. over HTTP (bench_multi --http against `stele serve`): the same pair,
#     64 keep-alive clients;
#  3. PostgreSQL (bench_multi_pg): the same transfer as one transaction with
#     row locks on seeds/001's schema, vs a single-stream append of the two
#     events; a fresh cluster, fsync on, stopped and removed at the end.
#
#   SECS=5 ROUNDS=2 THREADS=64 bench/run_multi.sh build
#   BENCH_DIR=/mnt/disk ...     where the stores go ($TMPDIR or /tmp)
set -euo pipefail

BUILD=${1:-build}
case "$BUILD" in /*) ;; *) BUILD="$PWD/$BUILD" ;; esac
SECS=${SECS:-5} ROUNDS=${ROUNDS:-2} THREADS=${THREADS:-64}
# shellcheck source=bench/lib.sh
. "$(dirname "$0")/lib.sh"

bench_deps postgresql libpq-dev
bench_build "$BUILD" stele bench_multi bench_multi_pg
STELE="$BUILD/stele"
BM="$BUILD/bench/bench_multi"
BP="$BUILD/bench/bench_multi_pg"
bench_workdir multi

run() {
    say "# \$ $(basename "$1") ${*:2}"
    "$@" | tee -a "$OUT"
}

bench_header "stele multi-stream benchmark"
load

# 1. In process.
run "$BM" "$WORK/inproc" "$SECS" "$THREADS" "$ROUNDS"
load

# 2. Over HTTP.
start_stele "$WORK/http"
run "$BM" --http "$STELE_PORT" "$SECS" "$THREADS" "$ROUNDS"
stop_stele
load

# 3. PostgreSQL: a fresh cluster, fsync on.
pg_start "shared_buffers = 256MB" "max_connections = 200"
say "# $("$PGBIN/postgres" --version); fsync=on synchronous_commit=on"
run "$BP" "$PGC" "$SECS" "$THREADS" "$ROUNDS"
load

bench_save multi
