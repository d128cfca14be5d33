#!/usr/bin/env bash
# bench/run_inline.sh [BUILD_DIR] - inline projections' append cost (issue
# 12, goal: appends with an inline projection at >= 0.7 of the rate
# without). `make bench-inline` runs it; results are saved to
# bench/results/inline-<UTC>.txt (QUICK=1: smaller, not saved).
#
# Workload (bench/bench_proj.c, `inline`): 8 threads append one event each
# time (stele_append, expected revision any) to 1,000 streams of category
# Acct, on a fresh store per round, without and with an inline projection
# (fromCategory('Acct').foreachStream(), a Deposited handler that reads the
# body). Three measures:
#   1. wall rate with / without and their ratio, plus CPU microseconds per
#      append (user + system, every thread) and the ratio of appends per
#      CPU-second: ROUNDS (default 5) alternating rounds of APPENDS (8000);
#   2. instructions per append (callgrind, whole process): each mode run
#      at two sizes (CG_APPENDS and twice it, 1 round); the difference
#      divided by the difference of appends cancels start-up, the first
#      append of each of the 1,000 streams and close: a steady-state append
#      (with CG_APPENDS >= 8 x 1,000, the state cache holds every stream);
#   3. the same wall run with PEER_BUILD's bench_proj, if given (e.g. a
#      build of the previous commit), in the same run, for a before/after.
set -euo pipefail

BUILD=${1:-build}
case "$BUILD" in /*) ;; *) BUILD="$PWD/$BUILD" ;; esac
if [ "${QUICK:-0}" = 1 ]; then
    APPENDS=${APPENDS:-2000} ROUNDS=${ROUNDS:-2} CG_APPENDS=${CG_APPENDS:-2000}
else
    APPENDS=${APPENDS:-8000} ROUNDS=${ROUNDS:-5} CG_APPENDS=${CG_APPENDS:-8000}
fi

# shellcheck source=bench/lib.sh
. "$(dirname "$0")/lib.sh"

bench_deps valgrind
bench_build "$BUILD" bench_proj
BP="$BUILD/bench/bench_proj"
bench_workdir inline

bench_header "stele inline projection appends" src include bench
say "# sizes: appends=$APPENDS rounds=$ROUNDS callgrind_appends=$CG_APPENDS,$((CG_APPENDS * 2))"

load
say "# \$ bench_proj inline --events $APPENDS --rounds $ROUNDS"
mkdir -p "$WORK/this" "$WORK/peer"
"$BP" inline --dir "$WORK/this" --events "$APPENDS" --rounds "$ROUNDS" | tee -a "$OUT"
rm -rf "$WORK/this"
if [ -n "${PEER_BUILD:-}" ]; then
    load
    say "# peer ($PEER_BUILD): \$ bench_proj inline --events $APPENDS"
    "$PEER_BUILD/bench/bench_proj" inline --dir "$WORK/peer" --events "$APPENDS" | tee -a "$OUT"
    rm -rf "$WORK/peer"
fi
load

# Instructions per append: (Ir at 2N - Ir at N) / N for each mode.
ir() {
    local mode=$1 n=$2 f="$WORK/cg-$1-$2.out"
    mkdir -p "$WORK/cg-$mode-$n"
    valgrind --tool=callgrind --callgrind-out-file="$f" "$BP" inline --dir "$WORK/cg-$mode-$n" \
        --events "$n" --rounds 1 --mode "$mode" >/dev/null 2>&1
    rm -rf "$WORK/cg-$mode-$n"
    awk '/^summary:/ {print $2}' "$f"
}
declare -A per
for mode in without with; do
    a=$(ir "$mode" "$CG_APPENDS")
    b=$(ir "$mode" $((CG_APPENDS * 2)))
    per[$mode]=$(( (b - a) / CG_APPENDS ))
    say "inline_instructions mode=$mode appends=$CG_APPENDS,$((CG_APPENDS * 2)) ir=$a,$b per_append=${per[$mode]}"
done
say "inline_instructions_ratio without_over_with=$(awk -v a="${per[without]}" -v b="${per[with]}" 'BEGIN {printf "%.2f", a / b}')"
load

bench_save inline
