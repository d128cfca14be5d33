#!/usr/bin/env bash
# bench/run_open.sh [BUILD_DIR] - open after a machine crash (issue 21 item
# 6), and what durable index checkpoints cost the writer. `make bench-open`
# runs it.
#
#  1. the writer's cost: the same 300,000-event build (4 threads, appends of
#     100 events, 1,000 event types: the index's worst churn) with durable
#     checkpoints on and off, alternating, ROUNDS times each: events/s and
#     CPU-seconds;
#  2. for each store size in SIZES (1M and 10M events): build all but the
#     last 300,000 events with checkpoints off (fast), then open (a durable
#     checkpoint is taken at open) and append the last 300,000 with
#     checkpoints on, as a running store does, and crash right after the
#     last acknowledged append (the process exits without closing: the log
#     after the last durable checkpoint is as long as the policy allows).
#     Then open with stele.lock naming another boot: with the durable
#     checkpoint (only the log after it is replayed), then on the same
#     store with STELE_INDEX_CKPT_MS=0 (the whole index rebuilt from the
#     log, as before durable checkpoints). Seconds, CPU-seconds, events
#     replayed; for the first size also instruction counts (callgrind) of
#     both opens, on the same store crashed once more.
#
#   bench/run_open.sh build                 results saved to bench/results/open-<UTC>.txt
#   SIZES="1000000" ROUNDS=3 ...            other store sizes (events), rounds of step 1
#   QUICK=1 ...                             a 400,000-event store, 1 round, no callgrind, not saved
#   CALLGRIND=0 ...                         skip the instruction counts
#   DATA_BYTES=32 TYPES=1 ...               smaller events of one type (defaults 200
#                                           bytes of JSON, 1,000 types): a 100M-event
#                                           store in about 11 GB instead of ~37 GB
#   DROP_CACHES=1 ...                       drop the page cache before each open (root;
#                                           only on a machine nobody else uses): a cold
#                                           open, as after a real reboot
#   BENCH_DIR=/mnt/disk ...                 where the stores go ($TMPDIR or /tmp)
#
# Each store is removed once measured. Without DROP_CACHES the page cache is
# warm (the log was just written), for both opens alike.
set -euo pipefail

BUILD=${1:-build}
case "$BUILD" in /*) ;; *) BUILD="$PWD/$BUILD" ;; esac
if [ "${QUICK:-0}" = 1 ]; then
    SIZES=${SIZES:-400000} CALLGRIND=${CALLGRIND:-0} ROUNDS=${ROUNDS:-1}
else
    SIZES=${SIZES:-1000000 10000000} CALLGRIND=${CALLGRIND:-1} ROUNDS=${ROUNDS:-3}
fi
TAIL=300000
# Durable checkpoints are off unless STELE_INDEX_CKPT_MS is set (> 0): on
# for every step below but those that set it to 0.
export STELE_INDEX_CKPT_MS=${STELE_INDEX_CKPT_MS:-1000}
DATA_BYTES=${DATA_BYTES:-200} TYPES=${TYPES:-1000}
SHAPE=(--data-bytes "$DATA_BYTES" --types "$TYPES")

# shellcheck source=bench/lib.sh
. "$(dirname "$0")/lib.sh"

[ "$CALLGRIND" = 1 ] && bench_deps valgrind
bench_build "$BUILD" bench_open
BO="$BUILD/bench/bench_open"
bench_workdir open

# run [VAR=VALUE...] -- ARGS...: print the command, then its result lines.
run() {
    local envs=()
    while [ "$1" != "--" ]; do envs+=("$1"); shift; done
    shift
    say "# \$ ${envs[*]:+${envs[*]} }bench_open $*"
    env "${envs[@]}" "$BO" "$@" | tee -a "$OUT"
}

drop_caches() {
    if [ "${DROP_CACHES:-0}" = 1 ]; then
        sync
        echo 3 | $SUDO tee /proc/sys/vm/drop_caches >/dev/null
    fi
}

# callgrind_ir LABEL [VAR=VALUE...] -- ARGS...: total instructions of one run.
callgrind_ir() {
    local label=$1 envs=()
    shift
    while [ "$1" != "--" ]; do envs+=("$1"); shift; done
    shift
    local f="$WORK/cg.$label"
    say "# \$ ${envs[*]:+${envs[*]} }valgrind --tool=callgrind bench_open $*"
    env "${envs[@]}" valgrind --tool=callgrind --callgrind-out-file="$f" "$BO" "$@" \
        2>"$f.log" | tee -a "$OUT"
    say "callgrind $label instructions=$(grep -m1 '^summary:' "$f" | awk '{print $2}')"
    rm -f "$f" "$f.log"
}

bench_header "stele open after a machine crash, durable index checkpoints on and off" src include bench
say "# policy: STELE_INDEX_CKPT_MS=$STELE_INDEX_CKPT_MS (set by the bench; stele's default is off) STELE_INDEX_CKPT_EVENTS=${STELE_INDEX_CKPT_EVENTS:-200000 (default)}"
say "# events: $DATA_BYTES bytes of JSON data, $TYPES event type(s) drawn per event, appends of 100"
load

say "## 1. the writer with durable checkpoints on and off (each round a fresh store)"
for r in $(seq "$ROUNDS"); do
    for ms in 0 "$STELE_INDEX_CKPT_MS"; do
        D="$WORK/w$r-$ms"
        mkdir -p "$D"
        run STELE_INDEX_CKPT_MS="$ms" -- build --dir "$D" --events $TAIL --streams 3000 --threads 4 "${SHAPE[@]}"
        say "# index file: $(($(du -sk "$D/store/index/data.mdb" | cut -f1) / 1024)) MiB on disk"
        rm -rf "$D"
    done
done
load

say "## 2. open after a machine crash"
first=1
for N in $SIZES; do
    D="$WORK/n$N"
    mkdir -p "$D"
    STREAMS=$((N / 100))
    run STELE_INDEX_CKPT_MS=0 -- build --dir "$D" --events $((N - TAIL)) --streams "$STREAMS" "${SHAPE[@]}"
    run -- build --dir "$D" --events $TAIL --streams "$STREAMS" "${SHAPE[@]}"
    total=$(du -sk "$D/store" | cut -f1) index=$(du -sk "$D/store/index" | cut -f1)
    say "# size on disk: $((total / 1024)) MiB, of which the index $((index / 1024)) MiB"
    load
    drop_caches
    run -- crash-open --dir "$D"                             # after: the durable checkpoint
    drop_caches
    run STELE_INDEX_CKPT_MS=0 -- crash-open --dir "$D" --keep # before: the full rebuild
    run -- open --dir "$D"                                   # a clean close, for reference
    if [ "$CALLGRIND" = 1 ] && [ "$first" = 1 ]; then
        # Crash it once more (a short tail), then count both opens.
        run -- build --dir "$D" --events 100000 --streams "$STREAMS" "${SHAPE[@]}"
        callgrind_ir durable -- crash-open --dir "$D"
        callgrind_ir rebuild STELE_INDEX_CKPT_MS=0 -- crash-open --dir "$D" --keep
    fi
    first=0
    rm -rf "$D"
done
load
bench_save open
