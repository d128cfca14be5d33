#!/usr/bin/env bash
# bench/wire_cost.sh [BUILD_DIR] - what one HTTP append costs the server
# beside wrk's no-op, in instructions: the figures behind issue 21's
# "256x1 against wrk's ceiling" that the other load on a shared machine
# does not change (docs/benchmarks.md, "Appends on the wire: a cheaper
# loop").
#
# For each server (this build's, and STELE_OLD's if set) and each workload
# (wrk POSTing one event per append over 256 connections, the body and
# streams of bench/run_wire.sh; wrk GET /health/live over 256 connections),
# one `stele serve` under valgrind --tool=callgrind with its store on tmpfs
# (so that the disk does not shape the commit groups) serves wrk for
# WARM + CG_SECS + a tail; the counters are zeroed after WARM seconds and
# dumped CG_SECS later. Reported per request (stele_appends_total, or
# stele_http_requests_total for the no-op, from /metrics over the window):
# the event-loop thread's instructions (thread 1: HTTP, JSON, the gate,
# the submission) and the whole server's (with the writer thread). Nothing
# asserts a figure.
#
#   bench/wire_cost.sh build                          about 2 minutes
#   STELE_OLD=/tmp/old/stele bench/wire_cost.sh build   the same for another build, first
#   WORKLOADS=post bench/wire_cost.sh build           only the appends
set -euo pipefail

BUILD=${1:-build}
case "$BUILD" in /*) ;; *) BUILD="$PWD/$BUILD" ;; esac
CG_SECS=${CG_SECS:-8}
WARM=${WARM:-5}
WORKLOADS=${WORKLOADS:-"post noop"}
# shellcheck source=bench/lib.sh
. "$(dirname "$0")/lib.sh"
bench_deps valgrind wrk
bench_build "$BUILD" stele
bench_workdir wirecost
SHM=${BENCH_DIR:-/dev/shm}/stele-wirecost-$$
mkdir -p "$SHM"

declare -A BIN
TARGETS=""
if [ -n "${STELE_OLD:-}" ]; then
    BIN[old]=$STELE_OLD
    TARGETS="old"
fi
BIN[new]=$BUILD/stele
TARGETS="$TARGETS new"

cp "$(dirname "$0")/wrk_post.lua" "$WORK/post.lua"

PID=""
WRK=""
stop() {
    [ -n "$WRK" ] && { kill "$WRK" 2>/dev/null || true; wait "$WRK" 2>/dev/null || true; }
    [ -n "$PID" ] && { kill -TERM "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; }
    PID="" WRK=""
}
trap 'stop; rm -rf "$SHM"; bench_cleanup' EXIT
metric() { curl -s "http://127.0.0.1:$PORT/metrics" | awk -v m="$1" '$1 == m {print $2}'; }
sum_ir() { awk '/PROGRAM TOTALS/ {gsub(",","",$1); s += $1} END {print s + 0}'; }

echo "# stele HTTP cost per request under callgrind (tmpfs store, wrk -t2 -c256), tree at $(git -C "$ROOT" rev-parse --short HEAD)"
for t in $TARGETS; do
    for w in $WORKLOADS; do
        out="$WORK/cg-$t-$w.out"
        rm -rf "$SHM/data" "$WORK/ready"
        STELE_READY_FD=3 valgrind --tool=callgrind --callgrind-out-file="$out" --dump-instr=no \
            --separate-threads=yes "${BIN[$t]}" serve --port 0 --data "$SHM/data" \
            --log-level error 3>"$WORK/ready" 2>>"$WORK/log" &
        PID=$!
        for _ in $(seq 1 600); do grep -q ready "$WORK/ready" 2>/dev/null && break; sleep 0.1; done
        PORT=$(awk '/ready/ {print $2}' "$WORK/ready")
        [ -n "$PORT" ] || { cat "$WORK/log" >&2; bench_die "stele serve did not start"; }
        total_secs=$((WARM + CG_SECS + 30))
        if [ "$w" = post ]; then
            wrk -t2 -c256 -d"${total_secs}s" -s "$WORK/post.lua" "http://127.0.0.1:$PORT" -- cg \
                >/dev/null 2>&1 &
            key=stele_appends_total
        else
            wrk -t2 -c256 -d"${total_secs}s" "http://127.0.0.1:$PORT/health/live" >/dev/null 2>&1 &
            key=stele_http_requests_total
        fi
        WRK=$!
        sleep "$WARM"
        callgrind_control -z "$PID" >/dev/null
        n0=$(metric "$key")
        sleep "$CG_SECS"
        callgrind_control -d "$PID" >/dev/null
        n=$(($(metric "$key") - n0))
        stop
        [ "$n" -gt 0 ] || bench_die "no requests counted ($t $w)"
        total=0
        for f in "$out".*-*; do
            total=$((total + $(callgrind_annotate --threshold=100 "$f" 2>/dev/null | sum_ir)))
        done
        loop=$(callgrind_annotate --threshold=100 "$(ls "$out".*-01 | tail -1)" 2>/dev/null | sum_ir)
        echo "callgrind target=$t workload=$w requests=$n loop_thread_Ir_per_request=$((loop / n))" \
            "server_Ir_per_request=$((total / n))"
        rm -f "$out".*
    done
done
