#!/usr/bin/env bash
# bench/run_open.sh [BUILD_DIR] - open after a machine crash (issue 21 item
# 6): stores of 1M and 10M events (SIZES to change), each crashed at the end
# of its build, then opened with stele.lock naming another boot: with the
# durable index checkpoint (only the log after it is replayed) and without
# it (STELE_INDEX_CKPT_MS=0: the whole index rebuilt from the log, as before
# durable checkpoints), in the same run on the same store. Seconds, CPU-
# seconds, and instruction counts (callgrind) of both opens of the smallest
# store. `make bench-open` runs it.
#
#   bench/run_open.sh build                 results saved to bench/results/open-<UTC>.txt
#   SIZES="1000000" bench/run_open.sh ...   other store sizes (events)
#   QUICK=1 ...                             a 200,000-event store, no callgrind, not saved
#   CALLGRIND=0 ...                         skip the instruction counts
#   DROP_CACHES=1 ...                       drop the page cache before each open (root;
#                                           only on a machine nobody else uses): a cold
#                                           open, as after a real reboot
#   BENCH_DIR=/mnt/disk ...                 where the stores go ($TMPDIR or /tmp)
#
# Each store is removed once measured. The page cache is warm otherwise
# (the log was just written), for both opens alike.
set -euo pipefail

BUILD=${1:-build}
case "$BUILD" in /*) ;; *) BUILD="$PWD/$BUILD" ;; esac
if [ "${QUICK:-0}" = 1 ]; then
    SIZES=${SIZES:-200000} CALLGRIND=${CALLGRIND:-0}
else
    SIZES=${SIZES:-1000000 10000000} CALLGRIND=${CALLGRIND:-1}
fi

# shellcheck source=bench/lib.sh
. "$(dirname "$0")/lib.sh"

[ "$CALLGRIND" = 1 ] && bench_deps valgrind
bench_build "$BUILD" bench_open
BO="$BUILD/bench/bench_open"
bench_workdir open

run() {
    say "# \$ ${RUNENV:+$RUNENV }bench_open $*"
    env $RUNENV "$BO" "$@" | tee -a "$OUT"
}

drop_caches() {
    if [ "${DROP_CACHES:-0}" = 1 ]; then
        sync
        echo 3 | $SUDO tee /proc/sys/vm/drop_caches >/dev/null
    fi
}

# callgrind_ir LABEL ARGS...: total instructions of one bench_open run.
callgrind_ir() {
    local label=$1
    shift
    local f="$WORK/cg.$label"
    say "# \$ ${RUNENV:+$RUNENV }valgrind --tool=callgrind bench_open $*"
    env $RUNENV valgrind --tool=callgrind --callgrind-out-file="$f" \
        "$BO" "$@" 2>"$f.log" | tee -a "$OUT"
    say "callgrind $label instructions=$(grep -m1 '^summary:' "$f" | awk '{print $2}')"
    rm -f "$f" "$f.log"
}

bench_header "stele open after a machine crash, durable index checkpoints on and off" src include bench
say "# policy: STELE_INDEX_CKPT_MS=${STELE_INDEX_CKPT_MS:-1000 (default)} STELE_INDEX_CKPT_EVENTS=${STELE_INDEX_CKPT_EVENTS:-200000 (default)}"
load
first=1
for N in $SIZES; do
    D="$WORK/n$N"
    mkdir -p "$D"
    STREAMS=$((N / 100))
    RUNENV=""
    run build --dir "$D" --events "$N" --streams "$STREAMS" --batch 100 --threads 4
    total=$(du -sk "$D/store" | cut -f1) index=$(du -sk "$D/store/index" | cut -f1)
    say "# size on disk: $((total / 1024)) MiB, of which the index $((index / 1024)) MiB"
    load
    drop_caches
    run crash-open --dir "$D"            # after: the durable checkpoint
    drop_caches
    RUNENV="STELE_INDEX_CKPT_MS=0"
    run crash-open --dir "$D" --keep     # before: the full rebuild
    RUNENV=""
    run open --dir "$D"                  # a clean close, for reference
    if [ "$first" = 1 ]; then
        # The writer's side: the same build with durable checkpoints off.
        mkdir -p "$D.off"
        RUNENV="STELE_INDEX_CKPT_MS=0"
        run build --dir "$D.off" --events "$N" --streams "$STREAMS" --batch 100 --threads 4
        RUNENV=""
        rm -rf "$D.off"
    fi
    if [ "$CALLGRIND" = 1 ] && [ "$first" = 1 ]; then
        # Crash it again (build a few more events), then count both opens.
        run build --dir "$D" --events 100000 --streams "$STREAMS" --batch 100 --threads 4
        callgrind_ir durable crash-open --dir "$D"
        RUNENV="STELE_INDEX_CKPT_MS=0"
        callgrind_ir rebuild crash-open --dir "$D" --keep
        RUNENV=""
    fi
    first=0
    rm -rf "$D"
done
load
bench_save open
