#!/usr/bin/env bash
# bench/run_engine_ab.sh - issue 21's in-process goals (64 threads x 1
# event >= 300,000 events/s, 1 thread x 1,000 events >= 3M events/s)
# against the physical bound of this disk, and an older engine beside this
# one, in one run:
#
#   - each round runs 64x1 and 1x1000 with the old binary and the new one,
#     alternating which goes first, so both see the same background load;
#     the new binary also measures, right after each of its runs, the
#     disk's pwrite+fdatasync of one full group's log bytes and prints the
#     closed loop's ceiling beside the result (bench_engine.c,
#     group_sync_probe: T*B / sync with T appenders, B / (sync + CPU per
#     append) with one);
#   - medians of events/s and CPU microseconds per event (every thread of
#     the process, kernel time included: getrusage) per binary;
#   - instructions per event (callgrind, every thread): the difference
#     between a big and a small run over the difference in events, so open
#     and close cancel out. Under valgrind, OpenSSL's SHA-256 (the hash
#     chain, on its own thread) does not see the CPU's SHA extensions and
#     runs its portable code: its share is printed apart.
#
#   bench/run_engine_ab.sh [BUILD]      results: bench/results/engine-ab-<UTC>.txt
#   BASE=<commit>                       the old engine (default e289d13f, main
#                                       before branch eng21), built in the
#                                       work directory; OLD_BIN=path skips that
#   ROUNDS=5 ...                        rounds (default 3)
#   CALLGRIND=0 ...                     no instruction counts
#   QUICK=1 ...                         1 round, small runs, not saved
#   BENCH_DIR=/mnt/disk ...             where the stores go ($TMPDIR or /tmp)
#   VARIANTS="a=K=V,K2=V2 b=K=V" ...    the new binary again per variant, with
#                                       those environment settings (e.g. the
#                                       wake tree's STELE_WAKE_*: docs/benchmarks.md,
#                                       "Wake tree"); named new-a, new-b
set -euo pipefail

BUILD=${1:-build}
case "$BUILD" in /*) ;; *) BUILD="$PWD/$BUILD" ;; esac
BASE=${BASE:-e289d13f}
if [ "${QUICK:-0}" = 1 ]; then
    ROUNDS=${ROUNDS:-1} N64=32000 N1000=200000 SYNCS=20
    CG64_S=4000 CG64_B=12000 CG1000_S=20000 CG1000_B=60000
else
    ROUNDS=${ROUNDS:-3} N64=256000 N1000=2000000 SYNCS=50
    CG64_S=8000 CG64_B=24000 CG1000_S=50000 CG1000_B=150000
fi
CALLGRIND=${CALLGRIND:-1}

# shellcheck source=bench/lib.sh
. "$(dirname "$0")/lib.sh"

[ "$CALLGRIND" = 1 ] && bench_deps valgrind
bench_build "$BUILD" bench_engine
NEW="$BUILD/bench/bench_engine"
bench_workdir engine-ab

if [ -n "${OLD_BIN:-}" ]; then
    OLD=$OLD_BIN
else
    echo "$BENCH_NAME: building bench_engine at $BASE" >&2
    mkdir -p "$WORK/old-src"
    git -C "$ROOT" archive "$BASE" | tar -x -C "$WORK/old-src"
    cmake -S "$WORK/old-src" -B "$WORK/old-build" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
    cmake --build "$WORK/old-build" -j "$(nproc)" --target bench_engine >/dev/null
    OLD="$WORK/old-build/bench/bench_engine"
fi

# run WHICH NAME ARGS...: one append run in a fresh store; the new binary
# also measures the ceiling.
run() {
    local which=$1 name=$2 bin extra=() envs=()
    shift 2
    if [ "$which" = new ]; then
        bin=$NEW extra=(--ceiling-syncs "$SYNCS")
    elif [ "${which#new-}" != "$which" ]; then
        bin=$NEW extra=(--ceiling-syncs "$SYNCS")
        IFS=, read -r -a envs <<<"$(variant_env "${which#new-}")"
    else
        bin=$OLD
    fi
    say "# \$ $which: bench_engine append --dir D $* --ids server --name ${which}_$name ${extra[*]}"
    rm -rf "$WORK/store"
    # An older bench_engine prints no cpu_us_per_event: derived from its
    # cpu_pct (whole percent) and secs.
    env "${envs[@]}" "$bin" append --dir "$WORK/store" "$@" --ids server --name "${which}_$name" "${extra[@]}" |
        awk '!/ cpu_us_per_event=/ {
                 for (i = 1; i <= NF; i++) { split($i, kv, "="); f[kv[1]] = kv[2] }
                 if (f["events"] > 0)
                     $0 = $0 sprintf(" cpu_us_per_event=%.3f", f["cpu_pct"] / 100 * f["secs"] * 1e6 / f["events"])
             } { print }' | tee -a "$OUT" | tee -a "$WORK/lines"
    rm -rf "$WORK/store"
}

# variant_env NAME: the comma-separated settings of VARIANTS' NAME.
variant_env() {
    local v
    for v in ${VARIANTS:-}; do
        [ "${v%%=*}" = "$1" ] && { echo "${v#*=}"; return; }
    done
}
NEWS="new"
for v in ${VARIANTS:-}; do NEWS="$NEWS new-${v%%=*}"; done

# callgrind_ir WHICH EVENTS ARGS...: "total sha256" instructions of one run.
callgrind_ir() {
    local which=$1 events=$2 bin=$OLD f="$WORK/cg.out" extra=()
    shift 2
    [ "$which" = new ] && bin=$NEW extra=(--ceiling-syncs 0)
    rm -rf "$WORK/store" "$f"
    valgrind --tool=callgrind --callgrind-out-file="$f" "$bin" append --dir "$WORK/store" \
        --events "$events" --ids server "$@" "${extra[@]}" >/dev/null 2>"$f.log"
    local total sha
    total=$(grep -m1 '^summary:' "$f" | awk '{print $2}')
    # Inclusive cost of the chain's SHA-256 calls (OpenSSL, hasher thread).
    sha=$(callgrind_annotate --inclusive=yes "$f" 2>/dev/null |
        awk '/local_chain.c:sha256_with/ {gsub(",", "", $1); print $1; exit}')
    echo "$total ${sha:-0}"
    rm -rf "$WORK/store" "$f" "$f.log"
}

bench_header "stele in-process appends: the disk's ceiling, and $BASE beside this build" src include bench
say "# old: $OLD ($BASE)"
say "# new: $NEW"
load
for r in $(seq "$ROUNDS"); do
    say "## round $r"
    order="old $NEWS"
    [ $((r % 2)) = 0 ] && order="$NEWS old"
    for which in $order; do
        run "$which" 64x1 --threads 64 --batch 1 --events "$N64"
        run "$which" 1x1000 --threads 1 --batch 1000 --events "$N1000"
    done
    load
done

say "## medians over $ROUNDS rounds"
for wl in 64x1 1x1000; do
    for which in old $NEWS; do
        grep "^${which}_$wl " "$WORK/lines" >"$WORK/sel" || true
        n=$(wc -l <"$WORK/sel")
        [ "$n" -gt 0 ] || continue
        m=$(median events_per_s "$n" "$WORK/sel")
        say "median ${which}_$wl events_per_s=$(echo "$m" | field events_per_s) cpu_us_per_event=$(
            median cpu_us_per_event "$n" "$WORK/sel" | field cpu_us_per_event) writer_cpu_us_per_event=$(
            median writer_cpu_us_per_event "$n" "$WORK/sel" | field writer_cpu_us_per_event) caller_cpu_us_per_event=$(
            median caller_cpu_us_per_event "$n" "$WORK/sel" | field caller_cpu_us_per_event) appends_per_group=$(
            median appends_per_group "$n" "$WORK/sel" | field appends_per_group) $(
            echo "$m" | tr ' ' '\n' | grep '^rounds_')$(
            [ "$which" != old ] && echo " ceiling_events_per_s=$(echo "$m" | field ceiling_events_per_s) disk_sync_us=$(echo "$m" | field disk_sync_us)")"
    done
done

if [ "$CALLGRIND" = 1 ]; then
    say "## instructions per event (callgrind, all threads): (Ir(big) - Ir(small)) / (big - small events); sha256 = the chain's SHA-256 in OpenSSL's portable code"
    for which in old new; do
        for wl in "64x1 $CG64_S $CG64_B 64 1" "1x1000 $CG1000_S $CG1000_B 1 1000"; do
            read -r name small big t batch <<<"$wl"
            read -r s ss <<<"$(callgrind_ir "$which" "$small" --threads "$t" --batch "$batch")"
            read -r b bs <<<"$(callgrind_ir "$which" "$big" --threads "$t" --batch "$batch")"
            d=$((big - small))
            say "callgrind ${which}_$name ir_per_event=$(((b - s) / d)) sha256_per_event=$(((bs - ss) / d)) without_sha256=$(((b - s - bs + ss) / d))"
        done
    done
fi
load
bench_save engine-ab
say "# done"
