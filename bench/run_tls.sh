#!/usr/bin/env bash
# bench/run_tls.sh [BUILD_DIR] - TLS and authentication beside cleartext
# (issue 17; figures in docs/benchmarks.md). Two servers: `stele serve
# --tls-cert --tls-key --allow-cleartext` without users (targets `clear` and
# `tls`: the same server, the transport alone differs) and one with TLS and
# users (`--admin-password`; target `tls+auth`: every request carries HTTP
# Basic credentials, verified once with Argon2id, then from the cache). The
# same bench_http workloads against the three, in rounds whose order rotates,
# so that other work on this shared machine falls on all alike. Reported:
# each target's median round and the ratios tls/cleartext and
# tls+auth/cleartext per workload (goal: at least 0.8 for 256x1).
#
#   bench/run_tls.sh build          about 4.5 minutes; saved to
#                                   bench/results/tls-<UTC date-time>.txt
#   QUICK=1 bench/run_tls.sh build  1 short round (not saved)
#   ROUNDS=5 ...                    rounds per workload (default 3)
#   COST=0 ...                      without bench/tls_cost.sh at the end
#                                   (instructions and system calls per
#                                   append under callgrind and strace)
#   STELE_OLD=/path/to/old/stele    also an older build's server, serving
#                                   the targets clear-old and tls-old in the
#                                   same rounds (its ratio beside the new)
#   WORKLOADS="256x1" ...           only these workloads (default: all four)
#
# Besides the rates, each target's CPU per unit of work in its median
# round (`cpu` lines): the server's and bench_http's CPU-microseconds per
# event (per request for ping256), from bench_http's server_cpu and
# client_cpu; the two share the machine's cores.
#
# Workloads (200-byte events, exact expected revisions):
#   ping256    256 connections, GET /health/live (the round trip alone)
#   256x1      256 connections, 1 event per append
#   16x1000    16 connections, 1,000 events per append
#   read1x1000 1 connection reading $all as NDJSON in pages of 1,000
# (1x1 is bound by one fdatasync per append whatever the transport: left out.)
# Connections are opened (and TLS handshakes done) before each run: the
# figures are those of keep-alive clients, as real clients are.
set -euo pipefail

BUILD=${1:-build}
case "$BUILD" in /*) ;; *) BUILD="$PWD/$BUILD" ;; esac
if [ "${QUICK:-0}" = 1 ]; then
    WARM=0.5 DUR=2 RDUR=1 ROUNDS=1
else
    WARM=1 DUR=3 RDUR=2 ROUNDS=${ROUNDS:-3}
fi

# shellcheck source=bench/lib.sh
. "$(dirname "$0")/lib.sh"
bench_build "$BUILD" stele bench_http
STELE="$BUILD/stele"
BH="$BUILD/bench/bench_http"
bench_workdir tls

PKI="$WORK/pki"
bench_test_pki "$PKI"

# start_one NAME ARGS...: a server; its port and pid in PORT_NAME, PID_NAME.
start_one() {
    local name=$1
    shift
    rm -f "$WORK/ready-$name"
    STELE_READY_FD=3 "$STELE" serve --port 0 --data "$WORK/data-$name" --log-level error \
        --tls-cert "$PKI/srv.pem" --tls-key "$PKI/srv.key" "$@" \
        3>"$WORK/ready-$name" 2>>"$WORK/stele-$name.log" &
    eval "PID_$name=$!"
    for _ in $(seq 1 600); do grep -q ready "$WORK/ready-$name" 2>/dev/null && break; sleep 0.1; done
    eval "PORT_$name=$(awk '/ready/ {print $2}' "$WORK/ready-$name")"
    [ -n "$(eval echo "\$PORT_$name")" ] || { cat "$WORK/stele-$name.log" >&2; bench_die "stele serve did not start"; }
}
AUTH_PW="bench-$RANDOM-$RANDOM"
start_one plain --allow-cleartext
STELE_ADMIN_PASSWORD="$AUTH_PW" start_one auth
STELE_PID=$PID_plain # bench_cleanup stops this one
PID_old=""
TARGETS=(clear tls tls+auth)
if [ -n "${STELE_OLD:-}" ]; then
    STELE=$STELE_OLD start_one old --allow-cleartext
    TARGETS+=(clear-old tls-old)
fi
trap 'kill -TERM "$PID_auth" $PID_old 2>/dev/null; wait "$PID_auth" $PID_old 2>/dev/null; bench_cleanup' EXIT

bench_header "stele over TLS, and with users, beside cleartext" src include server
[ -n "${STELE_OLD:-}" ] && say "# old server (targets clear-old, tls-old): $STELE_OLD"
say "# $(openssl version); server certificate ECDSA P-256; TLS 1.3 negotiated by bench_http (OpenSSL)"
say "# sizes: ${QUICK:+QUICK=$QUICK }rounds=$ROUNDS, each: warmup=${WARM}s duration=${DUR}s (reads, pings ${RDUR}s)"

PREFIX="t$(date +%s)"
# run_target TARGET WORKLOAD ARGS...: one bench_http run.
run_target() {
    local t=$1 wl=$2
    shift 2
    case "$t" in
    clear) "$BH" --port "$PORT_plain" --server-pid "$PID_plain" "$@" ;;
    tls) "$BH" --port "$PORT_plain" --server-pid "$PID_plain" --tls-ca "$PKI/ca.pem" "$@" ;;
    tls+auth) "$BH" --port "$PORT_auth" --server-pid "$PID_auth" --tls-ca "$PKI/ca.pem" \
        --basic "admin:$AUTH_PW" "$@" ;;
    clear-old) "$BH" --port "$PORT_old" --server-pid "$PID_old" "$@" ;;
    tls-old) "$BH" --port "$PORT_old" --server-pid "$PID_old" --tls-ca "$PKI/ca.pem" "$@" ;;
    esac | sed "s/ workload=[^ ]* target=[^ ]* / workload=$wl target=$t /"
}

# cpu_per LINE KEY: "server=X client=Y" CPU-microseconds per unit of KEY
# (events or requests per second) in a result line.
cpu_per() {
    local rate srv cli
    rate=$(echo "$1" | field "$2")
    srv=$(echo "$1" | field server_cpu | tr -d %)
    cli=$(echo "$1" | field client_cpu | tr -d %)
    awk -v r="$rate" -v s="$srv" -v c="$cli" 'BEGIN {
        if (r > 0) printf "server=%.2f client=%.2f both=%.2f", s * 1e4 / r, c * 1e4 / r, (s + c) * 1e4 / r }'
}

# ratio_of A B KEY: A's value of KEY over B's (median lines).
ratio_of() {
    awk -v a="$(echo "$1" | field "$3")" -v b="$(echo "$2" | field "$3")" \
        'BEGIN {printf "%.3f", (b > 0 ? a / b : 0)}'
}

# rounds WORKLOAD KEY ARGS...: ROUNDS rounds of the targets (order
# rotating); then each one's median round, its CPU per unit, and the ratios.
rounds() {
    local wl=$1 key=$2 r i t line nt=${#TARGETS[@]}
    shift 2
    for t in "${TARGETS[@]}"; do : >"$WORK/r-$t"; done
    load
    for r in $(seq 1 "$ROUNDS"); do
        for i in $(seq 0 $((nt - 1))); do
            t=${TARGETS[$(((i + r - 1) % nt))]}
            sync
            sleep 0.3
            line=$(run_target "$t" "$wl" --workload "$wl" --prefix "${PREFIX}r${r}${t//[+-]/}" "$@")
            say "round $r/$ROUNDS: $line"
            echo "$line" >>"$WORK/r-$t"
        done
    done
    declare -A med
    for t in "${TARGETS[@]}"; do
        med[$t]=$(median "$key" "$ROUNDS" "$WORK/r-$t")
        say "${med[$t]}"
    done
    for t in "${TARGETS[@]}"; do
        say "cpu workload=$wl target=$t us_per_unit: $(cpu_per "${med[$t]}" "$key")"
    done
    local extra=""
    [ -n "${STELE_OLD:-}" ] &&
        extra=" old:tls/cleartext=$(ratio_of "${med[tls-old]}" "${med[clear-old]}" "$key")"
    say "ratio workload=$wl tls/cleartext=$(ratio_of "${med[tls]}" "${med[clear]}" "$key")" \
        "tls+auth/cleartext=$(ratio_of "${med[tls+auth]}" "${med[clear]}" "$key")$extra"
}

WORKLOADS=${WORKLOADS:-"ping256 256x1 16x1000 read1x1000"}
want() { case " $WORKLOADS " in *" $1 "*) return 0 ;; esac; return 1; }

want ping256 && rounds ping256 requests_per_s --mode ping --clients 256 --warmup "$WARM" --duration "$RDUR"
want 256x1 && rounds 256x1 events_per_s --mode append --clients 256 --batch 1 --warmup "$WARM" --duration "$DUR"
want 16x1000 && rounds 16x1000 events_per_s --mode append --clients 16 --batch 1000 --warmup "$WARM" --duration "$DUR"
want read1x1000 && rounds read1x1000 events_per_s --mode read --clients 1 --page 1000 --range 1000000 \
    --warmup "$WARM" --duration "$RDUR"
load
say "# ratios (median rounds, same run; clear and tls: the same server)"
RATIOS=$(grep -E '^(ratio|cpu) ' "$OUT" | sed 's/^/#   /')
say "$RATIOS"
# What one append costs the server in instructions and system calls, TLS
# beside clear (bench/tls_cost.sh, about 1.5 minutes): unlike the rates
# above, these figures do not move with other load on the machine.
if [ "${COST:-1}" = 1 ] && [ "${QUICK:-0}" != 1 ]; then
    say "$("$(dirname "$0")/tls_cost.sh" "$BUILD" 2>&1 | grep -v '^sending command')"
fi
bench_save tls
