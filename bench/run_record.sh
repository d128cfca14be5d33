#!/usr/bin/env bash
# bench/run_record.sh - bytes written and instructions per event with the
# record formats side by side (docs/file-format.md): kind 1 event records,
# compact ones (kind 8) and compact ones sharing the stream name and type
# within a commit (kind 9, the default), in one run, on the same binary:
# the writer's format is chosen with STELE_RECORD_KIND=1 or =8, or left to
# its default (kind 9 where a name can be shared, kind 8 elsewhere).
#
# For each round and each format, bench_engine's append workloads
# (200-byte JSON events, stream bench-N, type OrderPlaced, server ids):
#   1x1      1 thread, 1 event per append
#   64x1     64 threads, 1 event per append
#   1x10     1 thread, 10 events per append
#   1x1000   1 thread, 1,000 events per append
# giving events/s, CPU % and write_syscall_bytes_per_event (bytes passed to
# write(2)/pwrite(2) by the process per event: records, chain records,
# segment headers, the index's LMDB pages). Then instruction counts
# (callgrind, every thread) of 1x1000 at two sizes; their difference over
# the difference in events is the marginal instructions per event, free of
# open and close.
#
#   bench/run_record.sh [BUILD]          results saved to bench/results/record-<UTC>.txt
#   ROUNDS=5 ...                         rounds (default 3)
#   QUICK=1 ...                          1 round, smaller runs, not saved
#   CALLGRIND=0 ...                      skip the instruction counts
#   BENCH_DIR=/mnt/disk ...              where the stores go ($TMPDIR or /tmp)
set -euo pipefail

BUILD=${1:-build}
case "$BUILD" in /*) ;; *) BUILD="$PWD/$BUILD" ;; esac
if [ "${QUICK:-0}" = 1 ]; then
    ROUNDS=${ROUNDS:-1} N1=2000 N64=32000 N10=20000 N1000=200000 CG_SMALL=20000 CG_BIG=60000
else
    ROUNDS=${ROUNDS:-3} N1=10000 N64=128000 N10=100000 N1000=2000000 CG_SMALL=50000 CG_BIG=150000
fi
CALLGRIND=${CALLGRIND:-1}

# shellcheck source=bench/lib.sh
. "$(dirname "$0")/lib.sh"

[ "$CALLGRIND" = 1 ] && bench_deps valgrind
bench_build "$BUILD" bench_engine
BE="$BUILD/bench/bench_engine"
bench_workdir record

# run KIND NAME ARGS...: one bench_engine append run in a fresh store.
run() {
    local kind=$1 name=$2
    shift 2
    local envs=()
    [ "$kind" != 9 ] && envs=(STELE_RECORD_KIND="$kind")
    say "# \$ ${envs[*]:+${envs[*]} }bench_engine append --dir D $* --ids server --name $name"
    rm -rf "$WORK/store"
    env "${envs[@]}" "$BE" append --dir "$WORK/store" "$@" --ids server --name "$name" \
        | tee -a "$OUT"
    rm -rf "$WORK/store"
}

# callgrind_ir KIND EVENTS: total instructions of a 1x1000 run of EVENTS.
callgrind_ir() {
    local kind=$1 events=$2 envs=() f="$WORK/cg.out"
    [ "$kind" != 9 ] && envs=(STELE_RECORD_KIND="$kind")
    rm -rf "$WORK/store" "$f"
    env "${envs[@]}" valgrind --tool=callgrind --callgrind-out-file="$f" "$BE" append \
        --dir "$WORK/store" --threads 1 --batch 1000 --events "$events" --ids server \
        >/dev/null 2>"$f.log"
    grep -m1 '^summary:' "$f" | awk '{print $2}'
    rm -rf "$WORK/store" "$f" "$f.log"
}

bench_header "stele record formats: kind 1 (STELE_RECORD_KIND=1), kind 8 (=8) and kind 9 (default)" src include bench
load
for r in $(seq "$ROUNDS"); do
    say "## round $r"
    for kind in 1 8 9; do
        run "$kind" "kind${kind}_1x1" --threads 1 --batch 1 --events "$N1"
        run "$kind" "kind${kind}_64x1" --threads 64 --batch 1 --events "$N64"
        run "$kind" "kind${kind}_1x10" --threads 1 --batch 10 --events "$N10"
        run "$kind" "kind${kind}_1x1000" --threads 1 --batch 1000 --events "$N1000"
    done
    load
done

if [ "$CALLGRIND" = 1 ]; then
    say "## instructions per event, 1x1000 (callgrind, all threads): (Ir($CG_BIG) - Ir($CG_SMALL)) / $((CG_BIG - CG_SMALL))"
    for kind in 1 8 9; do
        small=$(callgrind_ir "$kind" "$CG_SMALL")
        big=$(callgrind_ir "$kind" "$CG_BIG")
        say "callgrind kind$kind ir_${CG_SMALL}=$small ir_${CG_BIG}=$big ir_per_event=$(( (big - small) / (CG_BIG - CG_SMALL) ))"
    done
fi
load
bench_save record
say "# done"
