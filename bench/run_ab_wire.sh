#!/usr/bin/env bash
# bench/run_ab_wire.sh OLD_STELE NEW_STELE [BUILD_DIR] - two `stele serve`
# binaries side by side on what issue 21 items 4 and 5 changed, rounds
# alternating between them (so both see the same machine), each on a fresh
# store, with the server's CPU time and system calls counted by `perf stat`
# over the measured window:
#
#   fanout   bench_subs fanout (64 connections x 1 event, closed loop) with 0
#            and with 100 live $all subscribers: appends/s, the ratio
#            100/0, server CPU-µs per append, subscriber sends per append
#   latency  bench_subs latency: one live subscriber, 1,000 appends/s of 1
#            event over 16 connections: append acknowledged and event
#            received, p50/p99 (that one subscriber is never held in rounds,
#            so both binaries should match)
#   grpc     gRPC Append 256 x 1 on one connection (as the KurrentDB clients
#            multiplex calls) and 16 x 1,000, gRPC BatchAppend 16 x 1,000,
#            HTTP 256 x 1 and 16 x 1,000: events/s, server CPU-µs per
#            1,000 events, sends per append
#
#   PARTS="fanout grpc" ROUNDS=3 SECS=5 bench/run_ab_wire.sh /tmp/stele-main build/stele
#
# Build the old binary from the commit to compare with (for example a
# worktree of main). The load generators come from BUILD_DIR (default
# build). Needs perf (linux-perf) with tracepoints readable (root, or
# kernel.perf_event_paranoid <= 1). Medians of the rounds are printed last.
set -euo pipefail

OLD=$(readlink -f "$1")
NEW=$(readlink -f "$2")
BUILD=$(readlink -f "${3:-build}")
ROUNDS=${ROUNDS:-3}
SECS=${SECS:-5}
PARTS=${PARTS:-fanout grpc}  # latency: only when named
part() { case " $PARTS " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }
command -v perf >/dev/null || { echo "run_ab_wire.sh: perf is needed (apt-get install linux-perf)" >&2; exit 2; }
WORK=$(mktemp -d "${TMPDIR:-/tmp}/stele-ab.XXXXXX")
trap 'kill -TERM $P 2>/dev/null || true; rm -rf "$WORK"' EXIT
P=

start() { # start BIN: a fresh server; sets P and PORT
    rm -rf "$WORK/d" "$WORK/ready"
    STELE_READY_FD=3 "$1" serve --port 0 --data "$WORK/d" --log-level error 3>"$WORK/ready" 2>>"$WORK/log" &
    P=$!
    for _ in $(seq 1 300); do grep -q ready "$WORK/ready" 2>/dev/null && break; sleep 0.1; done
    PORT=$(awk '/ready/ {print $2}' "$WORK/ready")
}
stop() { kill -TERM "$P"; wait "$P" || true; P=; }
# ticks PID: the process's user and system CPU in clock ticks ("U S").
ticks() { awk '{sub(/.*\) /, ""); print $12, $13}' "/proc/$1/stat"; }
metric() { curl -s "http://127.0.0.1:$PORT/metrics" | awk -v m="$1" '$1 == m {print $2}'; }
EVENTS="syscalls:sys_enter_sendto,syscalls:sys_enter_sendmsg,syscalls:sys_enter_writev,task-clock"

# measure NAME CMD...: run CMD (a load generator with 1 s of warm-up), count
# the server's CPU and sends over SECS seconds of its measured window.
measure() {
    local name=$1
    shift
    "$@" >"$WORK/out" 2>&1 &
    local g=$!
    sleep 1.3
    local a0 e0
    a0=$(metric stele_appends_total)
    e0=$(metric stele_append_events_total)
    local k0 k1
    k0=$(ticks "$P")
    perf stat -x, -e "$EVENTS" -p "$P" -o "$WORK/stat" -- sleep "$((SECS - 1))" 2>/dev/null
    local a1 e1
    a1=$(metric stele_appends_total)
    e1=$(metric stele_append_events_total)
    k1=$(ticks "$P")
    wait "$g" || true
    # user and system µs per append from the ticks (the perf window and the
    # append counters cover about the same SECS-1 seconds).
    awk -F, -v n="$name" -v a=$((a1 - a0)) -v e=$((e1 - e0)) -v out="$(tr '\n' ' ' <"$WORK/out")" \
        -v k0="$k0" -v k1="$k1" -v hz="$(getconf CLK_TCK)" '
        /sys_enter_send|sys_enter_writev/ {s += $1} /task-clock/ {t = $1}
        function field(k,   m) {
            if (!match(out, k "=[0-9.]+")) return -1
            return substr(out, RSTART + length(k) + 1, RLENGTH - length(k) - 1)
        }
        END {
            split(k0, x, " "); split(k1, y, " ")
            printf "%s events_per_s=%s server_cpu_us_per_append=%.1f server_usr_us_per_append=%.1f server_sys_us_per_append=%.1f server_cpu_us_per_1k_events=%.0f sends_per_append=%.3f appends=%d",
                n, field("events_per_s"), t * 1000 / a, (y[1] - x[1]) * 1e6 / hz / a, (y[2] - x[2]) * 1e6 / hz / a, t * 1e6 / e, s / a, a
            if (field("sub_bytes_per_append") >= 0)
                printf " sub_bytes_per_append=%s subscriber_cpu_pct=%s client_cpu_pct=%s ack_p50_ms=%s ack_p99_ms=%s",
                    field("sub_bytes_per_append"), field("subscriber_cpu"), field("client_cpu"),
                    field("ack_p50_ms"), field("ack_p99_ms")
            printf "\n"
        }' "$WORK/stat" | tee -a "$WORK/lines"
}

BS="$BUILD/bench/bench_subs"
BH="$BUILD/bench/bench_http"
BG="$BUILD/bench/bench_grpc"
: >"$WORK/lines"
echo "# run_ab_wire.sh $(date -u +%FT%TZ) old=$OLD new=$NEW rounds=$ROUNDS secs=$SECS load: $(cut -d' ' -f1-3 /proc/loadavg)"
for r in $(seq 1 "$ROUNDS"); do
    for which in old new; do
        bin=$OLD
        [ "$which" = new ] && bin=$NEW
        if part fanout; then
            for subs in 0 100; do
                start "$bin"
                measure "$which fanout-$subs" "$BS" fanout --port "$PORT" --subs "$subs" --clients 64 \
                    --warmup 1 --duration "$SECS" --server-pid "$P"
                stop
            done
        fi
        if part latency; then
            start "$bin"
            line=$("$BS" latency --port "$PORT" --rate 1000 --clients 16 --warmup 1 --duration "$SECS" --server-pid "$P")
            # the same key=value shape as measure's lines, for the medians
            echo "$which latency-1000/s $(tr ' ' '\n' <<<"$line" | grep -E '^(achieved|ack_p50_ms|ack_p99_ms|event_p50_ms|event_p99_ms|event_minus_ack_p99_ms)=' | tr '\n' ' ' | sed 's/ $//; s/^achieved=/events_per_s=/')" |
                tee -a "$WORK/lines"
            stop
        fi
        if part grpc; then
            start "$bin"
            measure "$which http-256x1" "$BH" --port "$PORT" --clients 256 --batch 1 --warmup 1 --duration "$SECS" --server-pid "$P"
            measure "$which grpc-append-256x1" "$BG" --port "$PORT" --mode append --clients 1 --streams 256 --batch 1 --warmup 1 --duration "$SECS" --server-pid "$P"
            measure "$which http-16x1000" "$BH" --port "$PORT" --clients 16 --batch 1000 --warmup 1 --duration "$SECS" --server-pid "$P"
            measure "$which grpc-append-16x1000" "$BG" --port "$PORT" --mode append --clients 16 --batch 1000 --warmup 1 --duration "$SECS" --server-pid "$P"
            measure "$which grpc-batch-16x1000" "$BG" --port "$PORT" --mode batch --clients 16 --batch 1000 --warmup 1 --duration "$SECS" --server-pid "$P"
            stop
        fi
    done
done
echo "# medians of $ROUNDS rounds"
python3 - "$WORK/lines" <<'PY'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    f = line.split()
    kv = dict(x.split("=", 1) for x in f[2:])
    rows.setdefault((f[0], f[1]), []).append({k: float(v) for k, v in kv.items()})
med = {}
for key in sorted(rows, key=lambda k: (k[1], k[0] != "old")):
    rs = rows[key]
    m = {k: statistics.median(r[k] for r in rs) for k in rs[0]}
    med[key] = m
    print("%s %s %s (events/s rounds: %s)" % (key[0], key[1],
          " ".join("%s=%g" % (k, round(v, 3)) for k, v in m.items()),
          ", ".join("%g" % r["events_per_s"] for r in rs)))
for w in ("old", "new"):
    a, b = med.get((w, "fanout-0")), med.get((w, "fanout-100"))
    if a and b and a["events_per_s"]:
        print("%s: appends with 100 live subscribers / with none = %.2f" % (w, b["events_per_s"] / a["events_per_s"]))
PY
