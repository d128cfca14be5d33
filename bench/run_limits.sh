#!/usr/bin/env bash
# bench/run_limits.sh [BUILD_DIR] - the memory-limits benchmark (issue 10;
# docs/limits.md, figures in docs/benchmarks.md): this tree's `stele serve`
# beside the one before the limits (commit $BASE_COMMIT, default a2cbad6,
# built from `git archive` in a temporary directory in the same run).
#
#   bench/run_limits.sh build     about 4 minutes (2 vCPU); saved to
#                                 bench/results/limits-<UTC date-time>.txt
#   ROUNDS=5 ...                  rounds per workload (default 3)
#   BASE_COMMIT=abc1234 ...       the "before" build
#   ONLY="64x1 json100" ...       only these workloads, and no RSS part
#
# 1. Throughput: each workload runs ROUNDS times against each build (a
#    fresh server and store per build, both up at once; the order of the
#    builds alternates by round, so other work on this shared machine
#    disturbs them alike); the median round of each is reported with the
#    ratio after/before (goal: at least 0.95).
#      16x1000   16 connections appending 1,000 events (200 B) per append
#      64x1      64 connections appending 1 event per append
#      ndjson    1 connection reading $all as NDJSON, pages of 1,000
#      json1000  1 connection reading $all as JSON pages of 1,000 (sent in
#                parts by the new build)
#      json100   the same with pages of 100 (answered whole)
# 2. Server RSS under each hostile pattern of the issue, both builds
#    (bench/limits_rss.py): peak while the client holds on, then after it
#    left, three rounds each.
set -euo pipefail

BUILD=${1:-build}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
case "$BUILD" in /*) ;; *) BUILD="$PWD/$BUILD" ;; esac
BASE_COMMIT=${BASE_COMMIT:-a2cbad6}
ROUNDS=${ROUNDS:-3}
WARM=0.5 DUR=3 RDUR=2

WORK=$(mktemp -d "${TMPDIR:-/tmp}/stele-limits-bench.XXXXXX")
PIDS=()
cleanup() {
    set +e
    for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$BUILD" -j "$(nproc)" --target stele bench_http >/dev/null
mkdir "$WORK/base-src"
git -C "$ROOT" archive "$BASE_COMMIT" | tar -x -C "$WORK/base-src"
cmake -S "$WORK/base-src" -B "$WORK/base-build" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$WORK/base-build" -j "$(nproc)" --target stele >/dev/null
NEW="$BUILD/stele"
OLD="$WORK/base-build/stele"
BH="$BUILD/bench/bench_http"

STAMP=$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$ROOT/bench/results"
OUT="$ROOT/bench/results/limits-$STAMP.txt"
say() { printf '%s\n' "$*" | tee -a "$OUT"; }
say "# stele memory-limits benchmark, $(date -u +%Y-%m-%dT%H:%M:%SZ)"
say "# command: ${ONLY:+ONLY=\"$ONLY\" }ROUNDS=$ROUNDS bench/run_limits.sh $BUILD"
say "# after: $(git -C "$ROOT" rev-parse --short HEAD)$(git -C "$ROOT" diff --quiet HEAD -- src include server 2>/dev/null || echo ' (modified)'); before: $BASE_COMMIT"
say "# machine: $(nproc) vCPU, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo) RAM, load $(cut -d' ' -f1-3 /proc/loadavg)"

start() { # start NAME BINARY: sets PORT_<NAME>, PID_<NAME>
    local name=$1 bin=$2
    mkdir -p "$WORK/$name"
    STELE_READY_FD=3 "$bin" serve --port 0 --data "$WORK/$name/data" --log-level error \
        3>"$WORK/$name/ready" 2>"$WORK/$name/log" &
    local pid=$!
    PIDS+=("$pid")
    for _ in $(seq 1 100); do grep -q ready "$WORK/$name/ready" 2>/dev/null && break; sleep 0.1; done
    local port
    port=$(awk '/ready/ {print $2}' "$WORK/$name/ready")
    [ -n "$port" ] || { echo "run_limits: $name did not start" >&2; cat "$WORK/$name/log" >&2; exit 1; }
    printf -v "PORT_$name" '%s' "$port"
    printf -v "PID_$name" '%s' "$pid"
}
start before "$OLD"
start after "$NEW"

# ------------------------------------------------------------ throughput
declare -A RES CPU
WORKLOADS=${ONLY:-16x1000 64x1 ndjson json1000 json100}
run() { # run TARGET WORKLOAD ROUND
    local t=$1 w=$2 r=$3 port pid line
    port=$(eval echo "\$PORT_$t")
    pid=$(eval echo "\$PID_$t")
    case $w in
        16x1000) line=$("$BH" --port "$port" --clients 16 --batch 1000 --duration $DUR --warmup $WARM \
                        --workload "$w" --target "$t" --prefix "r$r" --server-pid "$pid") ;;
        64x1) line=$("$BH" --port "$port" --clients 64 --batch 1 --duration $DUR --warmup $WARM \
                     --workload "$w" --target "$t" --prefix "r$r" --server-pid "$pid") ;;
        ndjson) line=$("$BH" --port "$port" --mode read --page 1000 --range 500000 --duration $RDUR \
                       --warmup $WARM --workload "$w" --target "$t" --server-pid "$pid") ;;
        json1000) line=$("$BH" --port "$port" --mode read --json --page 1000 --range 500000 \
                         --duration $RDUR --warmup $WARM --workload "$w" --target "$t" --server-pid "$pid") ;;
        json100) line=$("$BH" --port "$port" --mode read --json --page 100 --range 500000 \
                        --duration $RDUR --warmup $WARM --workload "$w" --target "$t" --server-pid "$pid") ;;
    esac
    say "$line"
    RES[$t,$w]="${RES[$t,$w]:-} $(sed -n 's/.*events_per_s=\([0-9]*\).*/\1/p' <<<"$line")"
    # Server CPU per event (µs): server_cpu x seconds / events.
    CPU[$t,$w]="${CPU[$t,$w]:-} $(awk '{for (i = 1; i <= NF; i++) {split($i, a, "="); v[a[1]] = a[2]}
        sub("%", "", v["server_cpu"]); printf "%.2f", v["server_cpu"] / 100 * v["seconds"] / v["events"] * 1e6}' <<<"$line")"
}
median() { tr ' ' '\n' <<<"$1" | grep . | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

for w in $WORKLOADS; do
    for r in $(seq 1 "$ROUNDS"); do
        if [ $((r % 2)) = 1 ]; then order="before after"; else order="after before"; fi
        for t in $order; do run "$t" "$w" "$r"; done
    done
done
say "# medians (events/s; server CPU per event) and after/before:"
for w in $WORKLOADS; do
    b=$(median "${RES[before,$w]}") a=$(median "${RES[after,$w]}")
    say "$(printf 'limits workload=%-8s before=%s after=%s ratio=%s cpu_us_before=%s cpu_us_after=%s' \
        "$w" "$b" "$a" "$(awk -v a="$a" -v b="$b" 'BEGIN {printf "%.3f", b ? a / b : 0}')" \
        "$(median "${CPU[before,$w]}")" "$(median "${CPU[after,$w]}")")"
done
for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null; wait "$p" 2>/dev/null || true; done
PIDS=()
if [ -n "${ONLY:-}" ]; then
    say "# saved: ${OUT#"$ROOT"/}"
    exit 0
fi

# ------------------------------------------------------------ RSS under hostile clients
for pattern in pipeline sse grpc; do
    for t in before after; do
        bin=$OLD; [ $t = after ] && bin=$NEW
        python3 "$ROOT/bench/limits_rss.py" "$pattern" "$bin" "$t" | tee -a "$OUT"
    done
done
say "# saved: ${OUT#"$ROOT"/}"
