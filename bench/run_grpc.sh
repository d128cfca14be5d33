#!/usr/bin/env bash
# bench/run_grpc.sh [BUILD_DIR] - the gRPC benchmark (issue 6): appends over
# the KurrentDB client protocol (bench_grpc: Streams.Append and
# Streams.BatchAppend over HTTP/2) side by side with the same appends over
# the HTTP/JSON API (bench_http), against one `stele serve`, in the same run.
#
#   bench/run_grpc.sh build          full run (about 6 minutes), saved to
#                                    bench/results/grpc-<UTC date-time>.txt
#   QUICK=1 bench/run_grpc.sh build  short smoke run, 1 round (not saved)
#   ONLY=transfer64 ...              run one workload only (1x1, 256x1,
#                                    16x1000, flood10, transfer64)
#   ROUNDS=5 ROUNDS_1X1=9 ...        rounds per workload (default 3; 5 for 1x1)
#   BENCH_DIR=/mnt/disk ...          where the store goes (default $TMPDIR or /tmp)
#
# Workloads (events carry 200 bytes of JSON data, type BenchEvent; every
# append has an exact expected revision except the write flood):
#   1x1       one call at a time, 1 event per append
#   256x1     256 calls at once, 1 event each: HTTP over 256 connections;
#             gRPC as clients do it, 256 streams on 1 connection
#             (target grpc-append), and over 256 connections
#             (grpc-append-256conn)
#   16x1000   16 calls at once, 1,000 events each: HTTP; gRPC Append (1,000
#             messages per call); gRPC BatchAppend (one 1,000-event request
#             per batch on a long-lived call, what the official clients use)
#   flood10   KurrentDB's write flood: 10 clients, 1 event per write,
#             expected revision `any` (gRPC Append and BatchAppend; HTTP with
#             exact revisions, as bench_http always checks)
#   transfer64  two-stream transfers, 64 calls at once on one connection (as
#             the clients do): gRPC v2 AppendRecords, one record to each of
#             two streams with a consistency check (exact revision) on
#             each, one atomic commit per transfer (target grpc-records);
#             beside single-stream appends of the same 2 events with an
#             exact revision, over gRPC Append (1 connection, 64 calls) and
#             HTTP (64 connections). Transfers/s = requests_per_s.
# Rounds rotate the order of the targets; the result of a target is its
# median round by events/s. Each line has client_cpu, server_cpu and
# cpu_busy as in bench_http. KurrentDB's published write-flood figure is
# printed for reference: it was measured on other hardware.
set -euo pipefail

BUILD=${1:-build}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
case "$BUILD" in /*) ;; *) BUILD="$PWD/$BUILD" ;; esac

if [ "${QUICK:-0}" = 1 ]; then
    WARM=0.5 DUR=2 DUR_1X1=2 ROUNDS=${ROUNDS:-1} ROUNDS_1X1=${ROUNDS:-1}
else
    WARM=2 DUR=7 DUR_1X1=4 ROUNDS=${ROUNDS:-3} ROUNDS_1X1=${ROUNDS_1X1:-5}
fi

cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$BUILD" -j "$(nproc)" --target stele bench_http bench_grpc >/dev/null
STELE="$BUILD/stele"
BH="$BUILD/bench/bench_http"
BG="$BUILD/bench/bench_grpc"

BASE=${BENCH_DIR:-${TMPDIR:-/tmp}}
mkdir -p "$BASE"
WORK=$(mktemp -d "$BASE/stele-grpc-bench.XXXXXX")
OUT="$WORK/results.txt"
STELE_PID=""
cleanup() {
    set +e
    if [ -n "$STELE_PID" ]; then
        kill -TERM "$STELE_PID" 2>/dev/null
        wait "$STELE_PID" 2>/dev/null
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

STELE_READY_FD=3 "$STELE" serve --port 0 --data "$WORK/data" --log-level error \
    3>"$WORK/ready" 2>"$WORK/log" &
STELE_PID=$!
for _ in $(seq 1 100); do grep -q ready "$WORK/ready" 2>/dev/null && break; sleep 0.1; done
PORT=$(awk '/ready/ {print $2}' "$WORK/ready")
[ -n "$PORT" ] || { echo "run_grpc: stele serve did not start:" >&2; cat "$WORK/log" >&2; exit 1; }

say() { echo "$*" | tee -a "$OUT"; }
load() { say "# load: $(cut -d' ' -f1-3 /proc/loadavg)"; }

say "# bench/run_grpc.sh $(date -u +%Y-%m-%dT%H:%M:%SZ)"
say "# commit: $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)$(
    git -C "$ROOT" diff --quiet HEAD -- src include server bench 2>/dev/null || echo ' (modified)')"
say "# machine: $(nproc) vCPU, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo) RAM, $(
    grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'), $(uname -sr)"
say "# disk: $(df -T "$WORK" | awk 'NR==2 {print $1, $2}') ($WORK)"
say "# sizes: ${QUICK:+QUICK=$QUICK }rounds=$ROUNDS (1x1: $ROUNDS_1X1), warmup=${WARM}s duration=${DUR}s (1x1 ${DUR_1X1}s)"

PREFIX="g$(date +%s)"
ROUND=1

# run_one TARGET WORKLOAD ARGS...: one result line.
run_one() {
    local target=$1 wl=$2
    shift 2
    local pfx="${PREFIX}r${ROUND}${target}" # fresh streams for every run
    case "$target" in
    http) "$BH" --port "$PORT" --server-pid "$STELE_PID" --target http --workload "$wl" --prefix "$pfx" "$@" ;;
    grpc-append) "$BG" --port "$PORT" --server-pid "$STELE_PID" --target "$target" --workload "$wl" \
        --prefix "$pfx" --mode append "$@" ;;
    grpc-append-256conn) "$BG" --port "$PORT" --server-pid "$STELE_PID" --target "$target" \
        --workload "$wl" --prefix "$pfx" --mode append "$@" ;;
    grpc-batch) "$BG" --port "$PORT" --server-pid "$STELE_PID" --target "$target" --workload "$wl" \
        --prefix "$pfx" --mode batch "$@" ;;
    grpc-records) "$BG" --port "$PORT" --server-pid "$STELE_PID" --target "$target" --workload "$wl" \
        --prefix "$pfx" --mode records "$@" ;;
    esac
}

field() { tr ' ' '\n' | awk -F= -v k="$1" '$1 == k {print $2; exit}'; }

# rounds WORKLOAD "TARGET:ARGS;TARGET:ARGS..." COMMON_ARGS...
rounds() {
    local wl=$1 spec=$2 r i n t line
    shift 2
    local -a specs
    IFS=';' read -r -a specs <<<"$spec"
    n=${#specs[@]}
    : >"$WORK/rounds"
    load
    for r in $(seq 1 "$ROUNDS"); do
        ROUND=$r
        for i in $(seq 0 $((n - 1))); do
            local s=${specs[$(((i + r - 1) % n))]}
            t=${s%%:*}
            local -a targs
            read -r -a targs <<<"${s#*:}"
            sync
            sleep 0.5
            # A run with errors or conflicts still prints its line (they
            # are in it); keep going.
            line=$(run_one "$t" "$wl" "${targs[@]}" "$@") || true
            say "round $r/$ROUNDS: $line"
            echo "$line" >>"$WORK/rounds"
        done
    done
    for s in "${specs[@]}"; do
        t=${s%%:*}
        local all med
        all=$(grep " target=$t " "$WORK/rounds" | while read -r l; do echo "$l" | field events_per_s; done | paste -sd, -)
        med=$(grep " target=$t " "$WORK/rounds" | while read -r l; do echo "$(echo "$l" | field events_per_s) $l"; done |
            sort -n | awk -v n="$ROUNDS" 'NR == int((n + 1) / 2) {sub(/^[^ ]* /, ""); print}')
        say "$med rounds=$all"
    done
}

want() { [ -z "${ONLY:-}" ] || [ "$ONLY" = "$1" ]; }
R=$ROUNDS
ROUNDS=$ROUNDS_1X1
want 1x1 && rounds 1x1 "http:--clients 1;grpc-append:--clients 1 --streams 1" --batch 1 --warmup "$WARM" --duration "$DUR_1X1"
ROUNDS=$R
want 256x1 && rounds 256x1 "http:--clients 256;grpc-append:--clients 1 --streams 256;grpc-append-256conn:--clients 256 --streams 1" \
    --batch 1 --warmup "$WARM" --duration "$DUR"
want 16x1000 && rounds 16x1000 "http:--clients 16;grpc-append:--clients 16 --streams 1;grpc-batch:--clients 16 --streams 1" \
    --batch 1000 --warmup "$WARM" --duration "$DUR"
want flood10 && rounds flood10 "http:--clients 10;grpc-append:--clients 10 --streams 1 --expect any;grpc-batch:--clients 10 --streams 1 --expect any" \
    --batch 1 --warmup "$WARM" --duration "$DUR"
want transfer64 && rounds transfer64 "grpc-records:--clients 1 --streams 64 --batch 1;grpc-append:--clients 1 --streams 64 --batch 2;http:--clients 64 --batch 2" \
    --warmup "$WARM" --duration "$DUR"
load
say "# reference (other hardware, not measured here): KurrentDB's published write flood, 10 clients, 1 event per write, fsync on: 33208 writes/s"
say "# store size after the run: $(du -sh "$WORK/data" | cut -f1)"

if [ "${QUICK:-0}" != 1 ]; then
    mkdir -p "$ROOT/bench/results"
    DEST="$ROOT/bench/results/grpc-$(date -u +%Y%m%dT%H%M%SZ).txt"
    cp "$OUT" "$DEST"
    echo "run_grpc: saved $DEST" >&2
fi
