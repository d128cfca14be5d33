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
trap 'kill -TERM "$PID_auth" 2>/dev/null; wait "$PID_auth" 2>/dev/null; bench_cleanup' EXIT

bench_header "stele over TLS, and with users, beside cleartext" src include server
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
    esac | sed "s/ workload=[^ ]* target=[^ ]* / workload=$wl target=$t /"
}

# rounds WORKLOAD KEY ARGS...: ROUNDS rounds of the three targets (order
# rotating); then each one's median round and the ratios.
rounds() {
    local wl=$1 key=$2 r i t line
    local -a ts=(clear tls tls+auth)
    shift 2
    for t in "${ts[@]}"; do : >"$WORK/r-$t"; done
    load
    for r in $(seq 1 "$ROUNDS"); do
        for i in 0 1 2; do
            t=${ts[$(((i + r - 1) % 3))]}
            sync
            sleep 0.3
            line=$(run_target "$t" "$wl" --workload "$wl" --prefix "${PREFIX}r${r}${t/+/}" "$@")
            say "round $r/$ROUNDS: $line"
            echo "$line" >>"$WORK/r-$t"
        done
    done
    local mc mt ma
    mc=$(median "$key" "$ROUNDS" "$WORK/r-clear")
    mt=$(median "$key" "$ROUNDS" "$WORK/r-tls")
    ma=$(median "$key" "$ROUNDS" "$WORK/r-tls+auth")
    say "$mc"
    say "$mt"
    say "$ma"
    say "ratio workload=$wl tls/cleartext=$(awk -v a="$(echo "$mt" | field "$key")" \
        -v b="$(echo "$mc" | field "$key")" 'BEGIN {printf "%.3f", (b > 0 ? a / b : 0)}') tls+auth/cleartext=$(awk -v a="$(echo "$ma" | field "$key")" \
        -v b="$(echo "$mc" | field "$key")" 'BEGIN {printf "%.3f", (b > 0 ? a / b : 0)}')"
}

rounds ping256 requests_per_s --mode ping --clients 256 --warmup "$WARM" --duration "$RDUR"
rounds 256x1 events_per_s --mode append --clients 256 --batch 1 --warmup "$WARM" --duration "$DUR"
rounds 16x1000 events_per_s --mode append --clients 16 --batch 1000 --warmup "$WARM" --duration "$DUR"
rounds read1x1000 events_per_s --mode read --clients 1 --page 1000 --range 1000000 \
    --warmup "$WARM" --duration "$RDUR"
load
say "# ratios (median rounds, same run; clear and tls: the same server)"
RATIOS=$(grep '^ratio ' "$OUT" | sed 's/^/#   /')
say "$RATIOS"
# What one append costs the server in instructions and system calls, TLS
# beside clear (bench/tls_cost.sh, about 1.5 minutes): unlike the rates
# above, these figures do not move with other load on the machine.
if [ "${COST:-1}" = 1 ] && [ "${QUICK:-0}" != 1 ]; then
    say "$("$(dirname "$0")/tls_cost.sh" "$BUILD" 2>&1 | grep -v '^sending command')"
fi
bench_save tls
