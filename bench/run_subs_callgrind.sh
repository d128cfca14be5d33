#!/usr/bin/env bash
# bench/run_subs_callgrind.sh STELE [BUILD_DIR] - the server's instructions
# (callgrind, user space only) under bench_subs fanout: start-up alone, then
# 64 connections x 1 event for 8 s with no subscriber and with 100 live
# ones, each on a fresh store. Prints one line per run: Ir and appends;
# Ir per append = (Ir - start-up Ir) / appends (docs/benchmarks.md, fan21).
#
#   bench/run_subs_callgrind.sh /tmp/main-2821284/build/stele
#   bench/run_subs_callgrind.sh build/stele
set -euo pipefail
BIN=$(readlink -f "$1")
BUILD=$(readlink -f "${2:-build}")
command -v valgrind >/dev/null || { echo "run_subs_callgrind.sh: valgrind is needed" >&2; exit 2; }
one() { # one SUBS (-1: start-up only)
    local w p port a ir
    w=$(mktemp -d "${TMPDIR:-/tmp}/stele-cg.XXXXXX")
    STELE_READY_FD=3 valgrind --tool=callgrind --callgrind-out-file="$w/cg.out" "$BIN" serve \
        --port 0 --data "$w/d" --log-level error 3>"$w/ready" 2>"$w/log" &
    p=$!
    for _ in $(seq 1 600); do grep -q ready "$w/ready" 2>/dev/null && break; sleep 0.2; done
    port=$(awk '/ready/ {print $2}' "$w/ready")
    : >"$w/out"
    if [ "$1" -ge 0 ]; then
        "$BUILD/bench/bench_subs" fanout --port "$port" --subs "$1" --clients 64 --warmup 1 \
            --duration 8 >"$w/out"
    fi
    a=$(curl -s "http://127.0.0.1:$port/metrics" | awk '$1 == "stele_appends_total" {print $2}')
    kill -TERM "$p"
    wait "$p" || true
    ir=$(awk '/^(summary|totals):/ {print $2; exit}' "$w/cg.out")
    echo "callgrind subs=$1 Ir=$ir appends=$a $(grep -o 'subs_complete=[0-9/]*' "$w/out" || true)"
    rm -rf "$w"
}
echo "# run_subs_callgrind.sh $(date -u +%FT%TZ) stele=$BIN"
for subs in -1 0 100; do one "$subs"; done
