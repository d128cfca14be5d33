#!/usr/bin/env bash
# bench/run_wire.sh [BUILD_DIR] - issue 21's HTTP goals and issue 17's TLS
# goal in one run, with the peers issue 21 asks for beside them:
#
#   disk    the disk's own rate: 4 KiB pwrite + fdatasync, sequential, on a
#           pre-zeroed file in the same directory as the stores
#           (bench_engine fsync; the fresh-file rate is printed beside)
#   1x1     HTTP, 1 connection, 1 event per append (bench_http, exact
#           expected revisions): appends/s and p50; goal >= 0.9 of disk
#   noop    wrk's ceiling: GET /health/live, 256 connections, 2 threads
#   wrk256  wrk POSTing 1 event per append over 256 connections (2
#           streams, one per wrk thread, expected revision any; a static
#           request, as the no-op's): goal >= 0.75 of noop
#   256x1   bench_http, 256 connections, exact expected revisions (as the
#           peers below and bench/run_http.sh)
#   tls256  the same 256x1 over TLS 1.3 to the same server: goal >= 0.8 of
#           256x1 in clear
#   pg      PostgreSQL, seeds/001's schema, pgbench, one event per
#           transaction, 256 clients and 1 client (fsync on)
#   redis   Redis, appendfsync always, bench_peers, 256x1 and 1x1
#
# For each Stele workload also the server's CPU per append (user and
# system, from /proc) and its system calls per append (perf stat,
# raw_syscalls:sys_enter) over the measured window: unlike the rates, these
# hardly move with other load on a shared machine.
#
#   bench/run_wire.sh build                     3 rounds, about 7 minutes
#   STELE_OLD=/tmp/old/stele bench/run_wire.sh build
#                    another build's server too, alternating with this one
#                    in every round (targets `old` and `new`)
#   ROUNDS=1 SECS=3 PEERS=0 bench/run_wire.sh build   a short run, no peers
#   CALLGRIND=1 ...  then instructions per append under callgrind (1x1 and
#                    256x1, clear and TLS: bench/tls_cost.sh) for each server
#
# Rounds rotate nothing but run every target back to back, after a `sync`;
# each target's result is its median round. Saved to
# bench/results/wire-<UTC date-time>.txt. Nothing asserts a figure.
set -euo pipefail

BUILD=${1:-build}
case "$BUILD" in /*) ;; *) BUILD="$PWD/$BUILD" ;; esac
ROUNDS=${ROUNDS:-3}
SECS=${SECS:-5}
WARM=${WARM:-1}
FSYNC_N=${FSYNC_N:-3000}
PEERS=${PEERS:-1}

# shellcheck source=bench/lib.sh
. "$(dirname "$0")/lib.sh"
deps="wrk linux-perf"
[ "$PEERS" = 1 ] && deps="$deps postgresql redis-server libpq-dev"
# shellcheck disable=SC2086
bench_deps $deps
bench_build "$BUILD" stele bench_http bench_peers bench_engine
BH="$BUILD/bench/bench_http"
BP="$BUILD/bench/bench_peers"
BE="$BUILD/bench/bench_engine"
declare -A BIN=([new]="$BUILD/stele")
TARGETS="new"
if [ -n "${STELE_OLD:-}" ]; then
    BIN[old]=$(readlink -f "$STELE_OLD")
    TARGETS="old new"
fi
bench_workdir wire
PKI="$WORK/pki"
bench_test_pki "$PKI"

# ------------------------------------------------------------ servers
declare -A PORT PID
start_target() { # start_target NAME: `stele serve` with TLS and cleartext
    local t=$1
    rm -f "$WORK/ready-$t"
    STELE_READY_FD=3 "${BIN[$t]}" serve --port 0 --data "$WORK/data-$t" --log-level error \
        --tls-cert "$PKI/srv.pem" --tls-key "$PKI/srv.key" --allow-cleartext \
        3>"$WORK/ready-$t" 2>>"$WORK/stele-$t.log" &
    PID[$t]=$!
    for _ in $(seq 1 600); do grep -q ready "$WORK/ready-$t" 2>/dev/null && break; sleep 0.1; done
    PORT[$t]=$(awk '/ready/ {print $2}' "$WORK/ready-$t")
    [ -n "${PORT[$t]}" ] || { cat "$WORK/stele-$t.log" >&2; bench_die "stele serve ($t) did not start"; }
}
stop_targets() {
    local t
    for t in $TARGETS; do
        [ -n "${PID[$t]:-}" ] && { kill -TERM "${PID[$t]}" 2>/dev/null || true; wait "${PID[$t]}" 2>/dev/null || true; }
        PID[$t]=""
    done
}
for t in $TARGETS; do start_target "$t"; done

REDIS_PID=""
if [ "$PEERS" = 1 ]; then
    pg_start "max_connections = 300" "shared_buffers = 512MB" "max_wal_size = 16GB" \
        "checkpoint_timeout = 30min"
    pg_seed_schema
    REDIS_PORT=$(free_port)
    mkdir "$WORK/redis"
    redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --protected-mode no --dir "$WORK/redis" \
        --appendonly yes --appendfsync always --save '' --daemonize no \
        --logfile "$WORK/redis/redis.log" &
    REDIS_PID=$!
    for _ in $(seq 1 100); do [ "$(redis-cli -p "$REDIS_PORT" ping 2>/dev/null)" = PONG ] && break; sleep 0.1; done
fi
trap 'stop_targets; bench_cleanup' EXIT

# wrk's POST of one event, expected revision any: one stream per wrk
# thread (2), and no request() function, so that wrk builds each thread's
# request once, as for the no-op GET: the same client cost on both sides.
cp "$(dirname "$0")/wrk_post.lua" "$WORK/post.lua"

bench_header "stele on the wire: 1x1 against the disk, 256x1 against wrk's no-op, TLS, peers" src include server
say "# targets: $(for t in $TARGETS; do printf '%s=%s ' "$t" "${BIN[$t]}"; done)"
say "# $(wrk --version 2>&1 | head -1); $(openssl version)"
[ "$PEERS" = 1 ] && say "# peers: $("$PGBIN/postgres" --version) (fsync=on synchronous_commit=on, seeds/001 schema, pgbench); $(redis-server --version | cut -d' ' -f1-3) (appendonly yes, appendfsync always)"
say "# rounds=$ROUNDS secs=$SECS warmup=$WARM fsync_writes=$FSYNC_N"

# ------------------------------------------------------------ measuring
metric() { curl -s "http://127.0.0.1:$1/metrics" | awk -v m="$2" '$1 == m {print $2}'; }
cpu_ticks() { sed 's/^.*) //' "/proc/$1/stat" | awk '{print $12, $13}'; }

# measure TARGET WORKLOAD CMD...: run the load generator CMD (WARM s of
# warm-up, SECS counted), and over a window inside its counted part the
# server's appends, CPU (user, system) and system calls. One line.
measure() {
    local t=$1 wl=$2 p=${PID[$1]} port=${PORT[$1]}
    shift 2
    "$@" >"$WORK/out" 2>&1 &
    local g=$! win a0 a1 u0 s0 u1 s1 ms
    win=$(awk -v s="$SECS" 'BEGIN {printf "%.1f", s - 0.6}')
    # bench_http opens its connections (TLS handshakes) before its warm-up:
    # the window opens WARM after the first appends, inside its counted part.
    if [ "$wl" != noop ]; then
        a0=$(metric "$port" stele_appends_total)
        for _ in $(seq 1 600); do
            [ "$(metric "$port" stele_appends_total)" != "$a0" ] && break
            sleep 0.05
        done
    fi
    sleep "$(awk -v w="$WARM" 'BEGIN {print w + 0.3}')"
    a0=$(metric "$port" stele_appends_total)
    read -r u0 s0 <<<"$(cpu_ticks "$p")"
    perf stat -x, -e raw_syscalls:sys_enter,task-clock -p "$p" -o "$WORK/stat" -- sleep "$win" 2>/dev/null || true
    a1=$(metric "$port" stele_appends_total)
    read -r u1 s1 <<<"$(cpu_ticks "$p")"
    wait "$g" || true
    local rate p50 errs sc
    if grep -q '^Requests/sec' "$WORK/out"; then # wrk
        rate=$(awk '/^Requests\/sec/ {printf "%.0f", $2}' "$WORK/out")
        p50=$(awk '$1 == "50%" {v = $2; if (v ~ /us$/) {sub(/us/, "", v); v /= 1000} else if (v ~ /ms$/) sub(/ms/, "", v); else if (v ~ /s$/) {sub(/s/, "", v); v *= 1000}; printf "%.3f", v}' "$WORK/out")
        errs=$(awk '/Non-2xx|Socket errors/ {s = s $0 "; "} END {print (s == "" ? 0 : "\"" s "\"")}' "$WORK/out")
    else # bench_http, bench_peers: key=value
        rate=$(tr ' ' '\n' <"$WORK/out" | awk -F= '$1 == "events_per_s" || $1 == "requests_per_s" {if ($2 > 0) v = $2} END {print v + 0}')
        p50=$(tr ' ' '\n' <"$WORK/out" | awk -F= '$1 == "p50_ms" {print $2; exit}')
        errs=$(tr ' ' '\n' <"$WORK/out" | awk -F= '$1 == "errors" || $1 == "conflicts" {s += $2} END {print s + 0}')
    fi
    sc=$(awk -F, '/raw_syscalls/ {print $1}' "$WORK/stat" 2>/dev/null)
    ms=$(awk -F, '/task-clock/ {print $1}' "$WORK/stat" 2>/dev/null)
    local line
    # CPU: perf's task-clock (precise), split into user and system in the
    # proportion of /proc's tick counts (10 ms ticks: too coarse alone).
    line=$(awk -v t="$t" -v wl="$wl" -v r="$rate" -v p50="${p50:-0}" -v e="$errs" -v a=$((a1 - a0)) \
        -v u=$((u1 - u0)) -v s=$((s1 - s0)) -v ms="${ms:-0}" -v sc="${sc:-0}" 'BEGIN {
        printf "wire round=%s target=%s workload=%s rate=%s p50_ms=%s errors=%s", ENVIRON["ROUND"], t, wl, r, p50, e
        fu = (u + s > 0) ? u / (u + s) : 0.5
        if (a > 0) printf " window_appends=%d cpu_us_per_append=%.1f cpu_user_us_per_append=%.1f cpu_sys_us_per_append=%.1f syscalls_per_append=%.2f", a, ms * 1000 / a, ms * 1000 * fu / a, ms * 1000 * (1 - fu) / a, sc / a
        else if (wl == "noop") printf " window_appends=0"
        printf "\n" }')
    say "$line"
}

# peer TARGET WORKLOAD CMD...: a peer's line (rate and p50 only).
peer() {
    local t=$1 wl=$2 r lat
    shift 2
    "$@" >"$WORK/out" 2>&1 || { cat "$WORK/out" >&2; bench_die "$t $wl failed"; }
    r=$(tr ' ' '\n' <"$WORK/out" | awk -F= '$1 == "events_per_s" {print $2; exit}')
    # bench_peers prints p50_ms; pgbench only an average (lat_avg_ms)
    lat=$(tr ' ' '\n' <"$WORK/out" | grep -E '^(p50_ms|lat_avg_ms|errors|conflicts)=' | paste -sd' ' -)
    say "wire round=$ROUND target=$t workload=$wl rate=$r $lat"
}

export ROUND
PREFIX="w$(date +%s)"
for ROUND in $(seq 1 "$ROUNDS"); do
    load
    sync
    "$BE" fsync --dir "$WORK/fsync" --events "$FSYNC_N" >"$WORK/fs.txt"
    say "wire round=$ROUND target=disk workload=fsync rate=$(tr ' ' '\n' <"$WORK/fs.txt" | awk -F= '$1 == "prezeroed" {print $2}') p50_ms=$(tr ' ' '\n' <"$WORK/fs.txt" | awk -F= '$1 == "prezeroed_p50_us" {printf "%.3f", $2 / 1000}') errors=0 fresh_file_rate=$(tr ' ' '\n' <"$WORK/fs.txt" | awk -F= '$1 == "fresh" {print $2}')"
    for t in $TARGETS; do
        p=${PORT[$t]}
        sync
        measure "$t" 1x1 "$BH" --port "$p" --mode append --clients 1 --batch 1 --warmup "$WARM" \
            --duration "$SECS" --prefix "${PREFIX}r${ROUND}${t}a"
    done
    for t in $TARGETS; do
        p=${PORT[$t]}
        # (wrk has no warm-up: it runs WARM + SECS, the window is the same)
        measure "$t" noop wrk -t2 -c256 -d"$((WARM + SECS))s" --latency "http://127.0.0.1:$p/health/live"
        sync
        measure "$t" wrk256 wrk -t2 -c256 -d"$((WARM + SECS))s" --latency -s "$WORK/post.lua" \
            "http://127.0.0.1:$p" -- "${PREFIX}r${ROUND}${t}"
        sync
        measure "$t" 256x1 "$BH" --port "$p" --mode append --clients 256 --batch 1 --warmup "$WARM" \
            --duration "$SECS" --prefix "${PREFIX}r${ROUND}${t}b"
        sync
        measure "$t" tls256 "$BH" --port "$p" --tls-ca "$PKI/ca.pem" --mode append --clients 256 \
            --batch 1 --warmup "$WARM" --duration "$SECS" --prefix "${PREFIX}r${ROUND}${t}c"
    done
    if [ "$PEERS" = 1 ]; then
        sync
        SECS=$SECS peer postgres 256x1 pg_seed_bench "$WORK/seed1.sql" 256 1
        sync
        SECS=$SECS peer postgres 1x1 pg_seed_bench "$WORK/seed1.sql" 1 1
        sync
        peer redis 256x1 "$BP" redis --port "$REDIS_PORT" --server-pid "$REDIS_PID" --clients 256 \
            --batch 1 --warmup "$WARM" --duration "$SECS" --prefix "${PREFIX}r${ROUND}x"
        sync
        peer redis 1x1 "$BP" redis --port "$REDIS_PORT" --server-pid "$REDIS_PID" --clients 1 \
            --batch 1 --warmup "$WARM" --duration "$SECS" --prefix "${PREFIX}r${ROUND}y"
    fi
done
load

# ------------------------------------------------------------ summary
say "# medians of $ROUNDS rounds, and the goals' ratios (same run)"
say "$(grep '^wire ' "$OUT" | python3 -c '
import statistics, sys
rows = {}
for line in sys.stdin:
    kv = dict(x.split("=", 1) for x in line.split()[1:] if "=" in x)
    rows.setdefault((kv["target"], kv["workload"]), []).append(kv)
med = {}
for key, rs in rows.items():
    m = {}
    for k in ("rate", "p50_ms", "cpu_us_per_append", "cpu_user_us_per_append", "cpu_sys_us_per_append", "syscalls_per_append"):
        vals = [float(r[k]) for r in rs if k in r and r[k].replace(".", "", 1).isdigit()]
        if vals:
            m[k] = statistics.median(vals)
    med[key] = m
    print("median target=%s workload=%s %s rounds_rate=%s" % (key[0], key[1],
          " ".join("%s=%g" % (k, round(v, 3)) for k, v in m.items()),
          ",".join(r["rate"] for r in rs)))
def r(a, b):
    x, y = med.get(a, {}).get("rate"), med.get(b, {}).get("rate")
    return "%.3f" % (x / y) if x and y else "n/a"
for t in ("old", "new"):
    if (t, "1x1") not in med:
        continue
    print("ratio target=%s 1x1/disk=%s (goal 0.9) wrk256/noop=%s 256x1/noop=%s (goal 0.75) tls256/256x1=%s (goal 0.8)"
          % (t, r((t, "1x1"), ("disk", "fsync")), r((t, "wrk256"), (t, "noop")),
             r((t, "256x1"), (t, "noop")), r((t, "tls256"), (t, "256x1"))))
    if ("postgres", "256x1") in med:
        print("ratio target=%s 256x1/postgres=%s 256x1/redis=%s 1x1/postgres=%s 1x1/redis=%s"
              % (t, r((t, "256x1"), ("postgres", "256x1")), r((t, "256x1"), ("redis", "256x1")),
                 r((t, "1x1"), ("postgres", "1x1")), r((t, "1x1"), ("redis", "1x1"))))
')"
if [ "${CALLGRIND:-0}" = 1 ]; then
    for t in $TARGETS; do
        for c in 1 256; do
            say "# callgrind, target $t, ${c}x1 (bench/tls_cost.sh)"
            say "$(CLIENTS=$c STELE_BIN=${BIN[$t]} "$(dirname "$0")/tls_cost.sh" "$BUILD" 2>&1 | grep -v '^sending command')"
        done
    done
fi
bench_save wire
