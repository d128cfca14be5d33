#!/usr/bin/env bash
# bench/run.sh BUILD_DIR - run every engine benchmark (bench/bench_engine)
# at full size, print the results and save them to
# bench/results/engine-<UTC date-time>.txt. `make bench` runs it.
#
#   QUICK=1 bench/run.sh build     small sizes, a smoke run (not saved)
#   BENCH_DIR=/mnt/disk ...        where the stores go (default $TMPDIR or /tmp);
#                                  fsync figures are those of that disk
#
# Every result line is preceded by the exact command that produced it
# ("# $ ..."). Nothing here judges a number: the goals are in
# docs/benchmarks.md.
set -euo pipefail

BUILD=${1:-build}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
case "$BUILD" in /*) ;; *) BUILD="$PWD/$BUILD" ;; esac
BIN="$BUILD/bench/bench_engine"
if [ ! -x "$BIN" ]; then
    echo "run.sh: $BIN not found; build first (make build)" >&2
    exit 1
fi

BASE=${BENCH_DIR:-${TMPDIR:-/tmp}}
mkdir -p "$BASE"
WORK=$(mktemp -d "$BASE/stele-bench.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

if [ "${QUICK:-0}" = 1 ]; then
    FSYNC_N=500 E1=500 E64=6400 E1000=20000
    STORE_EVENTS=100000 STORE_STREAMS=1000 BUILD_THREADS=8
    READ_REPS=20 MIXED_SECS=2 CLIENT_STORE_EVENTS=20000 CLIENT_STORE_STREAMS=200
else
    FSYNC_N=10000 E1=20000 E64=320000 E1000=2000000
    STORE_EVENTS=10000000 STORE_STREAMS=100000 BUILD_THREADS=8
    READ_REPS=1000 MIXED_SECS=20 CLIENT_STORE_EVENTS=1000000 CLIENT_STORE_STREAMS=10000
fi

OUT=$(mktemp "$BASE/stele-bench-out.XXXXXX")
trap 'rm -rf "$WORK" "$OUT"' EXIT

say() { printf '%s\n' "$*" | tee -a "$OUT"; }

# run ARGS...: print the command, then its result lines.
run() {
    say "# \$ $BIN $*"
    "$BIN" "$@" | tee -a "$OUT"
}

load() {
    say "# load: $(cut -d' ' -f1-3 /proc/loadavg) (1/5/15 min)$(
        [ -r /proc/pressure/io ] && printf '; io pressure: %s' "$(head -1 /proc/pressure/io)")"
}

say "# stele engine benchmarks, $(date -u +%Y-%m-%dT%H:%M:%SZ)"
# STELE_COMMIT names the source when it is not a git checkout (a snapshot).
if [ -n "${STELE_COMMIT:-}" ]; then
    say "# commit: $STELE_COMMIT"
else
    say "# commit: $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)$(
        git -C "$ROOT" diff --quiet HEAD -- src include 2>/dev/null || echo ' (src/ or include/ modified)')"
fi
say "# machine: $(nproc) vCPU, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo) RAM, $(
    grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'), $(uname -sr)"
say "# disk: $(df -T "$WORK" | awk 'NR==2 {print $1, $2}') ($WORK)"
say "# sizes: ${QUICK:+QUICK=$QUICK }fsync=$FSYNC_N 1x1=$E1 64x1=$E64 1x1000=$E1000 store=$STORE_EVENTS/$STORE_STREAMS"
load

# 1. Durable appends. The 1-thread, 1-event rate against the disk's own
# fdatasync rate: measured in alternating rounds, so both see the same
# background load (this machine is shared).
run fsync --dir "$WORK" --events "$FSYNC_N"
run append_vs_fsync --dir "$WORK" --events "$E1" --reps 10 --ids server
run append_vs_fsync --dir "$WORK" --events "$E1" --reps 10 --ids client
run append --dir "$WORK" --threads 1 --batch 1 --events "$E1" --ids server
run append --dir "$WORK" --threads 1 --batch 1 --events "$E1" --ids client
run append --dir "$WORK" --threads 64 --batch 1 --events "$E64" --ids server
run append --dir "$WORK" --threads 64 --batch 1 --events "$E64" --ids client
run append --dir "$WORK" --threads 1 --batch 1000 --events "$E1000" --ids server
load

# 2. The big store (server-made ids), then reads, opens and memory on it.
run build --dir "$WORK" --events "$STORE_EVENTS" --streams "$STORE_STREAMS" --batch 100 \
    --threads "$BUILD_THREADS" --ids server
run open_clean --dir "$WORK" --reps 3
run read_stream --dir "$WORK" --reps "$READ_REPS"
run read_all --dir "$WORK" --page 1000
run read_all --dir "$WORK" --page 10000
run open_kill --dir "$WORK"
run mixed --dir "$WORK" --secs "$MIXED_SECS"
rm -rf "$WORK/store"
load

# 3. A smaller store with client-given ids: the id index and its memory.
mkdir -p "$WORK/client"
run build --dir "$WORK/client" --events "$CLIENT_STORE_EVENTS" --streams "$CLIENT_STORE_STREAMS" \
    --batch 100 --threads "$BUILD_THREADS" --ids client
run mixed --dir "$WORK/client" --secs "$MIXED_SECS" --ids client
load

if [ "${QUICK:-0}" != 1 ]; then
    mkdir -p "$ROOT/bench/results"
    DEST="$ROOT/bench/results/engine-$(date -u +%Y%m%dT%H%M%SZ).txt"
    cp "$OUT" "$DEST"
    echo "run.sh: results saved to ${DEST#"$ROOT"/}"
fi
