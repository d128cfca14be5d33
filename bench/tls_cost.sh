#!/usr/bin/env bash
# bench/tls_cost.sh [BUILD_DIR] - what one append costs the server over TLS
# beside cleartext, in instructions and system calls: figures that the
# other load on a shared machine does not change (issue 17; run by
# `make bench-tls` after the throughput rounds, or alone).
#
# One `stele serve --tls-cert --tls-key --allow-cleartext` (no users) under
# valgrind --tool=callgrind serves bench_http's 256x1 workload (256
# connections, one 200-byte event per append, keep-alive) for CG_SECS (8)
# seconds in clear, then a fresh one the same over TLS. Reported per append
# (stele_appends_total from /metrics, counted once every connection is
# open; 256 handshakes under valgrind are slow, hence --request-timeout):
# the server's instructions (Ir), those of its event-loop thread
# (HTTP and TLS; the writer thread's share moves with the size of commit
# groups, i.e. with the load) and the loop's share inside libssl and
# libcrypto; and, from a run under strace -f -c for 3 s, read/recv and
# write/send calls. Then the client's own instructions per append (bench_http
# under callgrind against a server at full speed), and each thread's and
# bench_http's CPU per append at full speed (user + system, from /proc).
# Nothing asserts a figure.
#
#   bench/tls_cost.sh build           about 1 minute
#   TARGETS="tls" bench/tls_cost.sh   only one of clear, tls
#   STELE_BIN=/tmp/old/stele ...       measure another build's server
#   BH_BIN=/tmp/old/bench_http ...     the client's part with another client
#   CLIENT_COST=0 ...                  without the client's part
#   THREADS=0 ...                      without the per-thread CPU part
#   CALLGRIND=0 / STRACE=0 ...         without the instruction counts / the
#                                      system call counts
# `make bench-tls` runs it after bench/run_tls.sh's rounds (COST=0: not).
set -euo pipefail

BUILD=${1:-build}
case "$BUILD" in /*) ;; *) BUILD="$PWD/$BUILD" ;; esac
CG_SECS=${CG_SECS:-8}
CLIENTS=${CLIENTS:-256} # connections, one event per append (1: the 1x1 path)
# the system calls counted under strace
TRACED="recvfrom|read|sendto|write|epoll_wait|epoll_pwait2|epoll_ctl|futex|getpeername|pwrite64|fdatasync"
TARGETS=${TARGETS:-"clear tls"}
# shellcheck source=bench/lib.sh
. "$(dirname "$0")/lib.sh"
bench_deps valgrind strace
bench_build "$BUILD" stele bench_http
STELE=${STELE_BIN:-$BUILD/stele} # STELE_BIN: another build's server (a before/after pair)
BH="$BUILD/bench/bench_http"
bench_workdir tlscost

PKI="$WORK/pki"
bench_test_pki "$PKI"

PID=""
# start WRAPPER...: a fresh server under the wrapper; $PORT, $PID.
start() {
    rm -f "$WORK/ready"
    rm -rf "$WORK/data"
    STELE_READY_FD=3 "$@" "$STELE" serve --port 0 --data "$WORK/data" --log-level error \
        --tls-cert "$PKI/srv.pem" --tls-key "$PKI/srv.key" --allow-cleartext --request-timeout 600 \
        3>"$WORK/ready" 2>>"$WORK/log" &
    PID=$!
    for _ in $(seq 1 1200); do grep -q ready "$WORK/ready" 2>/dev/null && break; sleep 0.1; done
    PORT=$(awk '/ready/ {print $2}' "$WORK/ready")
    [ -n "$PORT" ] || { cat "$WORK/log" >&2; bench_die "stele serve did not start"; }
}
stop() {
    pkill -TERM -P "$PID" 2>/dev/null || true # strace's child, if any
    kill -TERM "$PID" 2>/dev/null || true
    wait "$PID" 2>/dev/null || true
    PID=""
}
trap 'stop; bench_cleanup' EXIT
appends() {
    curl -s "http://127.0.0.1:$PORT/metrics" | awk '/^stele_appends_total/ {print $2}'
}
tls_args() { if [ "$1" = tls ]; then echo "--tls-ca $PKI/ca.pem"; fi; }

echo "# stele TLS cost per append, ${CLIENTS}x1, server $STELE (tree at $(git -C "$ROOT" rev-parse --short HEAD)), $(openssl version)"
for t in $( [ "${CALLGRIND:-1}" = 1 ] && echo "$TARGETS"); do
    # Counting starts once every connection is open (handshakes done) and
    # appends flow: the counters are zeroed then, and dumped before the end.
    start valgrind --tool=callgrind --callgrind-out-file="$WORK/cg-$t.out" --dump-instr=no \
        --separate-threads=yes
    # shellcheck disable=SC2046
    "$BH" --port "$PORT" $(tls_args "$t") --mode append --clients "$CLIENTS" --batch 1 --warmup 3 \
        --duration $((CG_SECS + 600)) --prefix "cg$t" >"$WORK/cg-$t.txt" 2>&1 &
    BHPID=$!
    for _ in $(seq 1 3000); do [ "$(appends)" -gt 500 ] 2>/dev/null && break; sleep 0.1; done
    # The window: CG_SECS of appends while every connection stays open
    # (neither the handshakes nor the closes fall in it).
    callgrind_control -z "$PID" >/dev/null
    n0=$(appends)
    sleep "$CG_SECS"
    callgrind_control -d "$PID" >/dev/null
    n=$(($(appends) - n0))
    kill "$BHPID" 2>/dev/null || true
    wait "$BHPID" 2>/dev/null || true
    stop
    # Thread 1 is the event loop (HTTP, TLS); the others are the store's
    # writer and helpers, whose cost per append moves with the size of
    # the commit groups (the load), not with the transport.
    sum_ir() { awk '/PROGRAM TOTALS/ {gsub(",","",$1); s += $1} END {print s + 0}'; }
    total=0
    for f in "$WORK"/cg-"$t".out.*-*; do
        total=$((total + $(callgrind_annotate --threshold=100 "$f" 2>/dev/null | sum_ir)))
    done
    f=$(find "$WORK" -name "cg-$t.out.*-01" | sort | tail -1)
    ann=$(callgrind_annotate --threshold=100 --inclusive=no "$f" 2>/dev/null)
    loop=$(echo "$ann" | sum_ir)
    ssl=$(echo "$ann" | awk '/libssl|libcrypto/ {gsub(",","",$1); s += $1} END {print s + 0}')
    echo "callgrind ${CLIENTS}x1 target=$t appends=$n server_Ir_per_append=$((total / n))" \
        "loop_thread_Ir_per_append=$((loop / n)) loop_in_libssl_libcrypto=$((ssl / n))"
    cp "$f" "${CG_KEEP:-$WORK}/tls-cost-$t.callgrind" 2>/dev/null || true
done
# The client's side: bench_http (one thread) under callgrind against a
# server running at full speed, the same window once every connection is
# open: what the client pays per append, in clear and over TLS. The client
# shares the machine's cores with the server, so its TLS cost is part of
# the throughput ratio (CLIENT_COST=0: skip; BH_BIN: another bench_http).
BHC=${BH_BIN:-$BH}
if [ "${CLIENT_COST:-1}" = 1 ] && [ "${CALLGRIND:-1}" = 1 ]; then
    for t in $TARGETS; do
        start
        # shellcheck disable=SC2046
        valgrind --tool=callgrind --callgrind-out-file="$WORK/cgc-$t.out" --dump-instr=no \
            "$BHC" --port "$PORT" $(tls_args "$t") --mode append --clients "$CLIENTS" --batch 1 \
            --warmup 3 --duration $((CG_SECS + 600)) --prefix "cgc$t" >"$WORK/cgc-$t.txt" 2>&1 &
        BHPID=$!
        for _ in $(seq 1 3000); do [ "$(appends)" -gt 500 ] 2>/dev/null && break; sleep 0.1; done
        callgrind_control -z "$BHPID" >/dev/null
        n0=$(appends)
        sleep "$CG_SECS"
        callgrind_control -d "$BHPID" >/dev/null
        n=$(($(appends) - n0))
        kill "$BHPID" 2>/dev/null || true
        wait "$BHPID" 2>/dev/null || true
        stop
        f=$(find "$WORK" -name "cgc-$t.out.*" | sort | tail -1)
        ann=$(callgrind_annotate --threshold=100 --inclusive=no "$f" 2>/dev/null)
        ir=$(echo "$ann" | awk '/PROGRAM TOTALS/ {gsub(",","",$1); s += $1} END {print s + 0}')
        ssl=$(echo "$ann" | awk '/libssl|libcrypto/ {gsub(",","",$1); s += $1} END {print s + 0}')
        echo "callgrind ${CLIENTS}x1 target=$t client=bench_http appends=$n" \
            "client_Ir_per_append=$((ir / n)) client_in_libssl_libcrypto=$((ssl / n))"
    done
fi
# CPU per append per thread and per process, at full speed (no valgrind):
# user and system time of each server thread (the event loop is the thread
# named like the binary, the store's are stele-writer, stele-syncer ...)
# and of bench_http, from /proc over a THREAD_SECS window once every
# connection is open. Unlike the instruction counts these include the
# kernel's share and move with the machine's load (THREADS=0: skip).
THREAD_SECS=${THREAD_SECS:-4}
# tstat PID: "name utime stime" per thread (clock ticks), threads of one
# name summed.
tstat() {
    for f in /proc/"$1"/task/*; do
        printf '%s %s\n' "$(tr ' ' _ <"$f/comm")" "$(awk '{print $14, $15}' "$f/stat")"
    done | awk '{u[$1] += $2; s[$1] += $3} END {for (k in u) print k, u[k], s[k]}' | sort
}
if [ "${THREADS:-1}" = 1 ]; then
    for t in $TARGETS; do
        start
        # shellcheck disable=SC2046
        "$BHC" --port "$PORT" $(tls_args "$t") --mode append --clients "$CLIENTS" --batch 1 \
            --warmup 1.5 --duration $((THREAD_SECS + 30)) --prefix "th$t" >/dev/null 2>&1 &
        BHPID=$!
        for _ in $(seq 1 300); do [ "$(appends)" -gt 500 ] 2>/dev/null && break; sleep 0.1; done
        sleep 1
        n0=$(appends)
        tstat "$PID" >"$WORK/t0"
        c0=$(awk '{print $14, $15}' "/proc/$BHPID/stat")
        sleep "$THREAD_SECS"
        n=$(($(appends) - n0))
        tstat "$PID" >"$WORK/t1"
        c1=$(awk '{print $14, $15}' "/proc/$BHPID/stat")
        kill "$BHPID" 2>/dev/null || true
        wait "$BHPID" 2>/dev/null || true
        stop
        tick=$(getconf CLK_TCK)
        line=$(join "$WORK/t0" "$WORK/t1" | awk -v n="$n" -v k="$tick" '{
            u = ($4 - $2) * 1e6 / k / n; s = ($5 - $3) * 1e6 / k / n; tu += u; ts += s
            if (u + s > 0.05) printf " %s=%.2f+%.2f", $1, u, s }
            END { printf " server=%.2f+%.2f", tu, ts }')
        cl=$(echo "$c0 $c1" | awk -v n="$n" -v k="$tick" '{
            printf " bench_http=%.2f+%.2f", ($3 - $1) * 1e6 / k / n, ($4 - $2) * 1e6 / k / n }')
        echo "threads ${CLIENTS}x1 target=$t appends=$n rate=$((n / THREAD_SECS))/s" \
            "cpu_us_per_append(user+sys):$line$cl"
    done
fi
for t in $( [ "${STRACE:-1}" = 1 ] && echo "$TARGETS"); do
    start strace -f -c -o "$WORK/st-$t.txt" -e trace="$(echo "$TRACED" | tr '|' ,)"
    # shellcheck disable=SC2046
    "$BH" --port "$PORT" $(tls_args "$t") --mode append --clients "$CLIENTS" --batch 1 --warmup 0.5 \
        --duration 3 --prefix "st$t" >"$WORK/st-run-$t.txt"
    n=$(appends)
    stop
    awk -v n="$n" -v t="$t" -v cl="$CLIENTS" -v re="^($TRACED)\$" '$NF ~ re {
        c = ($4 ~ /^[0-9]+$/) ? $4 : $3; s = s sprintf(" %s=%.2f", $NF, c / n) }
        END { print "strace " cl "x1 target=" t " appends=" n " calls_per_append:" s }' "$WORK/st-$t.txt"
done
