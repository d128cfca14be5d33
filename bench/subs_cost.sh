#!/usr/bin/env bash
# bench/subs_cost.sh STELE [BUILD_DIR] - where the CPU of 100 live SSE
# subscribers goes (issue 21 item 5), per append of bench_subs fanout
# (64 connections x 1 event, closed loop), with 0 and with 100 subscribers,
# each on a fresh store; ROUNDS pairs (default 2), SECS seconds each
# (default 8).
#
# For each run it prints bench_subs' line (which splits the CPU per append
# by thread and process: the server's event loop, writer and other
# threads, the appending connections, the subscribers' user and system
# time; and subscriber 0's delivery latency), then:
#   sys_*_per_append   the server's system calls per append (perf stat over
#                      3 s of the window): sendmsg (subscriber chunks),
#                      sendto/writev (answers), recvfrom, epoll waits;
#   loop_*_us          the server's loop thread by where its time goes
#                      (perf record -g of that thread over the same 3 s,
#                      shares of its samples times its CPU per append):
#                      send = the sendmsg path itself, send_rx = the
#                      receivers' TCP work that a loopback send runs in the
#                      sender (net_rx_action under sendmsg: on a network it
#                      runs on the subscriber's machine), recv and recv_rx
#                      likewise for recvfrom, epoll, other system calls,
#                      user = the server's own code.
# Needs perf with tracepoints (root, or kernel.perf_event_paranoid <= 1).
#
#   bench/subs_cost.sh build/stele
#   ROUNDS=3 SECS=10 bench/subs_cost.sh /tmp/main/build/stele build
set -euo pipefail
BIN=$(readlink -f "$1")
BUILD=$(readlink -f "${2:-build}")
ROUNDS=${ROUNDS:-2}
SECS=${SECS:-8}
command -v perf >/dev/null || { echo "subs_cost.sh: perf is needed (apt-get install linux-perf)" >&2; exit 2; }
BS="$BUILD/bench/bench_subs"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/stele-subcost.XXXXXX")
P=
trap 'kill -TERM $P 2>/dev/null || true; rm -rf "$WORK"' EXIT

start() {
    rm -rf "$WORK/d" "$WORK/ready"
    STELE_READY_FD=3 "$BIN" serve --port 0 --data "$WORK/d" --log-level error 3>"$WORK/ready" 2>>"$WORK/log" &
    P=$!
    for _ in $(seq 1 300); do grep -q ready "$WORK/ready" 2>/dev/null && break; sleep 0.1; done
    PORT=$(awk '/ready/ {print $2}' "$WORK/ready")
}
stop() { kill -TERM "$P"; wait "$P" || true; P=; }
metric() { curl -s "http://127.0.0.1:$PORT/metrics" | awk -v m="$1" '$1 == m {print $2}'; }
EVENTS="syscalls:sys_enter_sendmsg,syscalls:sys_enter_sendto,syscalls:sys_enter_writev,syscalls:sys_enter_recvfrom,syscalls:sys_enter_epoll_pwait2,syscalls:sys_enter_epoll_wait"

echo "# subs_cost.sh $(date -u +%FT%TZ) stele=$BIN rounds=$ROUNDS secs=$SECS load: $(cut -d' ' -f1-3 /proc/loadavg)"
for r in $(seq 1 "$ROUNDS"); do
    for subs in 0 100; do
        start
        "$BS" fanout --port "$PORT" --subs "$subs" --clients 64 --warmup 2 --duration "$SECS" \
            --server-pid "$P" >"$WORK/out" &
        g=$!
        # 3 s inside the measured window (it starts 2 s after the
        # subscribers are ready: give them a second more)
        sleep 3.5
        a0=$(metric stele_appends_total)
        perf stat -x, -e "$EVENTS" -p "$P" -o "$WORK/stat" -- \
            perf record -q -g -F 1999 -t "$P" -o "$WORK/perf.data" -- sleep 3 >/dev/null 2>&1
        a1=$(metric stele_appends_total)
        wait "$g" || true
        echo "round $r subs=$subs $(cat "$WORK/out")"
        loop=$(grep -o 'loop_us_per_append=[0-9.]*' "$WORK/out" | cut -d= -f2)
        awk -F, -v a=$((a1 - a0)) '/syscalls/ {n = $3; sub("syscalls:sys_enter_", "", n); c[n] += $1}
            END {printf "  sys_sendmsg_per_append=%.3f sys_sendto_writev_per_append=%.3f sys_recvfrom_per_append=%.3f sys_epoll_per_append=%.3f appends=%d\n",
                 c["sendmsg"] / a, (c["sendto"] + c["writev"]) / a, c["recvfrom"] / a, (c["epoll_pwait2"] + c["epoll_wait"]) / a, a}' "$WORK/stat"
        perf script -i "$WORK/perf.data" 2>/dev/null | awk -v loop="${loop:-0}" '
            function done_sample() {
                if (!any) return
                k = "user"
                if (st ~ / ____sys_sendmsg /) k = st ~ / net_rx_action / ? "send_rx" : "send"
                else if (st ~ / __sys_recvfrom /) k = st ~ / net_rx_action / ? "recv_rx" : "recv"
                else if (st ~ / do_epoll_wait /) k = "epoll"
                else if (st ~ /\(\[kernel/) k = "other_sys"
                n[k]++; tot++; any = 0; st = " "
            }
            /^[^ \t]/ { done_sample(); any = 1; st = " "; next }
            /^[ \t]+[0-9a-f]+ / { st = st $2 " "; sub(/\+0x[0-9a-f]+/, "", st); if ($0 ~ /kernel\.kallsyms/) st = st "([kernel "; next }
            END {
                done_sample()
                printf "  loop_split"
                split("send send_rx recv recv_rx epoll other_sys user", ks, " ")
                for (i = 1; i <= 7; i++) printf " loop_%s_us=%.2f", ks[i], tot ? loop * n[ks[i]] / tot : 0
                printf " samples=%d\n", tot
            }'
        stop
    done
done
