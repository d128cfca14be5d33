#!/usr/bin/env bash
# bench/run_ui.sh [BUILD_DIR] - the web UI's benchmark (issue 18). `make
# bench-ui` runs it.
#
#   bench/run_ui.sh build             a 10M-event store; results saved to
#                                     bench/results/ui-<UTC>.txt
#   QUICK=1 bench/run_ui.sh build     a 200,000-event store, 3 rounds, 5 s
#                                     of tail (a smoke run, not saved)
#   STORE=/path/to/store ...          an existing store instead (not removed)
#   BENCH_DIR=/mnt/disk ...           where the store goes ($TMPDIR or /tmp)
#
# 1. The store: bench_engine build, EVENTS events of 200 bytes of JSON in
#    streams "stream-N" (each 1,000-event append goes to one of
#    100,000 names at random: about 10,000 streams of about 1,000 events),
#    one thread: 25 s for 10M events on this machine when quiet, 55 s
#    under the other sessions' load.
# 2. tests/ui/bench_ui.mjs against `stele serve` on it, in Debian's chromium
#    (playwright-core): first contentful paint and the time until the data
#    is on screen for the dashboard, a stream page, the category's $ce- view
#    (all 10M events) and the stream list, each in a fresh browser context;
#    then the live tail while 10,000 events/s are appended: frame intervals,
#    long tasks, the rate shown, seconds spent sampling.
set -euo pipefail
BUILD=${1:-build}
case "$BUILD" in /*) ;; *) BUILD="$PWD/$BUILD" ;; esac
ROOT=$(cd "$(dirname "$0")/.." && pwd)
if [ "${QUICK:-0}" = 1 ]; then
    EVENTS=${EVENTS:-200000} ROUNDS=3 SECS=5
else
    EVENTS=${EVENTS:-10000000} ROUNDS=${ROUNDS:-7} SECS=${SECS:-10}
fi
cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$BUILD" -j "$(nproc)" --target stele bench_engine >/dev/null
(cd "$ROOT/tests/ui" && { [ -f node_modules/.package-lock.json ] && [ ! package-lock.json -nt node_modules/.package-lock.json ] || npm ci --no-audit --no-fund --loglevel=error; })

WORK=""
cleanup() { [ -n "$WORK" ] && rm -rf "$WORK"; }
trap cleanup EXIT
trap 'exit 130' INT TERM
if [ -z "${STORE:-}" ]; then
    base=${BENCH_DIR:-${TMPDIR:-/tmp}}
    WORK=$(mktemp -d "$base/stele-ui-bench.XXXXXX")
    echo "building a store of $EVENTS events (bench_engine build)..." >&2
    start=$(date +%s)
    "$BUILD/bench/bench_engine" build --dir "$WORK" --events "$EVENTS" --streams 100000 \
        --batch 1000 --threads 1 >/dev/null
    echo "store built in $(( $(date +%s) - start )) s" >&2
    STORE="$WORK/store"
fi
out=$(mktemp)
{
    echo "# make bench-ui: $(date -u +%Y-%m-%dT%H:%M:%SZ), $(nproc) cores, $(chromium --version 2>/dev/null | head -1)"
    echo "# EVENTS=$EVENTS ROUNDS=$ROUNDS SECS=$SECS RATE=10000; load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
    STELE_BIN="$BUILD/stele" STORE="$STORE" ROUNDS=$ROUNDS SECS=$SECS RATE=10000 \
        node "$ROOT/tests/ui/bench_ui.mjs"
    echo "# load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
} | tee "$out"
if [ "${QUICK:-0}" != 1 ]; then
    mkdir -p "$ROOT/bench/results"
    cp "$out" "$ROOT/bench/results/ui-$(date -u +%Y%m%dT%H%M%SZ).txt"
fi
rm -f "$out"
