#!/bin/sh
# bench/run_perfnet.sh STELE_BINARY BENCH_HTTP [WORKLOADS] - issue 21's
# before/after figures in a few minutes: a new store, `stele serve` on a free
# port, then for each workload (ping256 256x1 16x1000 by default) 1 s of
# warm-up and $SECS (5) s counted by bench/bench_http; then, with
# CALLGRIND=1, the same server binary under callgrind serving $CG (16x1000)
# for 10 s, reporting the instructions (Ir) spent per append request in
# json_parse_append and in the whole server (start-up included); with
# STRACE=1, the server under strace -c serving $CG for 3 s: system calls
# per append. Nothing asserts a figure.
set -eu
STELE=$1 BH=$2
WORKLOADS=${3:-"ping256 256x1 16x1000"}
SECS=${SECS:-5}
CG=${CG:-16x1000}
WORK=$(mktemp -d)
trap 'kill $PID 2>/dev/null; wait 2>/dev/null; rm -rf "$WORK"' EXIT
start() { # start [WRAPPER...]
    rm -f "$WORK/ready"; rm -rf "$WORK/data"
    STELE_READY_FD=3 "$@" "$STELE" serve --port 0 --data "$WORK/data" --log-level error \
        3>"$WORK/ready" 2>>"$WORK/log" &
    PID=$!
    for _ in $(seq 1 600); do grep -q ready "$WORK/ready" 2>/dev/null && break; sleep 0.1; done
    PORT=$(awk '/ready/ {print $2}' "$WORK/ready")
    [ -n "$PORT" ] || { cat "$WORK/log" >&2; exit 1; }
}
start
for wl in $WORKLOADS; do
    case $wl in
    ping256) a="--mode ping --clients 256" ;;
    *x*) a="--mode append --clients ${wl%x*} --batch ${wl#*x}" ;;
    esac
    sync
    # shellcheck disable=SC2086
    "$BH" --port "$PORT" --server-pid "$PID" $a --warmup 1 --duration "$SECS" --prefix "p$$" \
        --workload "$wl" --target "${TARGET:-stele}"
done
kill -TERM $PID; wait $PID || true
if [ "${CALLGRIND:-0}" = 1 ]; then
    start valgrind --tool=callgrind --callgrind-out-file="$WORK/cg.out" --dump-instr=no
    "$BH" --port "$PORT" --mode append --clients "${CG%x*}" --batch "${CG#*x}" --warmup 0 --duration 10 \
        --prefix "cg$$" > "$WORK/cg.txt"
    req=$(curl -s "http://127.0.0.1:$PORT/metrics" | awk '/^stele_appends_total/ {print $2}')
    kill -TERM $PID; wait $PID || true
    total=$(callgrind_annotate "$WORK/cg.out" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",","",$1); print $1}')
    parse=$(callgrind_annotate --inclusive=yes "$WORK/cg.out" 2>/dev/null |
        awk '/json_parse_append/ {gsub(",","",$1); print $1; exit}')
    echo "callgrind $CG target=${TARGET:-stele}: appends=$req server_Ir=$total" \
        "server_Ir_per_append=$((total / req)) json_parse_append_Ir_per_append=$((parse / req))"
    cat "$WORK/cg.txt"
fi
if [ "${STRACE:-0}" = 1 ]; then
    start strace -f -c -o "$WORK/st.txt" -e trace=recvfrom,read,sendto,write,epoll_wait
    "$BH" --port "$PORT" --mode append --clients "${CG%x*}" --batch "${CG#*x}" --warmup 0 --duration 3 \
        --prefix "st$$" > "$WORK/st-run.txt"
    req=$(curl -s "http://127.0.0.1:$PORT/metrics" | awk '/^stele_appends_total/ {print $2}')
    pkill -TERM -P $PID; wait $PID || true # the server, strace's child
    echo "strace $CG target=${TARGET:-stele}: appends=$req"
    awk -v n="$req" '$NF ~ /^(recvfrom|read|sendto|write|epoll_wait)$/ {printf "  %s calls=%s per_append=%.2f\n", $NF, $4, $4 / n}' "$WORK/st.txt"
fi
