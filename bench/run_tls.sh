#!/usr/bin/env bash
# bench/run_tls.sh [BUILD_DIR] - TLS beside cleartext (issue 17; figures in
# docs/benchmarks.md): one `stele serve --tls-cert --tls-key
# --allow-cleartext` on one store, the same bench_http workloads over TLS
# (--tls-ca: a test CA made here) and in clear, in the same run, in rounds
# whose order alternates, so that other work on this shared machine falls on
# both alike. Reported: each transport's median round and the ratio
# tls/cleartext per workload (goal: at least 0.8 for 256x1).
#
#   bench/run_tls.sh build          about 2 minutes; saved to
#                                   bench/results/tls-<UTC date-time>.txt
#   QUICK=1 bench/run_tls.sh build  1 short round (not saved)
#   ROUNDS=5 ...                    rounds per workload (default 3)
#
# Workloads (200-byte events, exact expected revisions):
#   ping256    256 connections, GET /health/live (the round trip alone)
#   1x1        1 connection, 1 event per append
#   256x1      256 connections, 1 event per append
#   16x1000    16 connections, 1,000 events per append
#   read1x1000 1 connection reading $all as NDJSON in pages of 1,000
# Connections are opened (and TLS handshakes done) before each run: the
# figures are those of keep-alive clients, as real clients are.
set -euo pipefail

BUILD=${1:-build}
case "$BUILD" in /*) ;; *) BUILD="$PWD/$BUILD" ;; esac
if [ "${QUICK:-0}" = 1 ]; then
    WARM=0.5 DUR=2 RDUR=1 ROUNDS=1
else
    WARM=1 DUR=5 RDUR=3 ROUNDS=${ROUNDS:-3}
fi

# shellcheck source=bench/lib.sh
. "$(dirname "$0")/lib.sh"
bench_build "$BUILD" stele bench_http
STELE="$BUILD/stele"
BH="$BUILD/bench/bench_http"
bench_workdir tls

# A test CA and a server certificate for localhost (P-256, as most
# deployments' ECDSA certificates).
PKI="$WORK/pki"
mkdir "$PKI"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$PKI/ca.key" \
    -out "$PKI/ca.pem" -days 2 -subj /CN=bench-ca 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$PKI/srv.key" \
    -out "$PKI/srv.csr" -subj /CN=localhost 2>/dev/null
echo "subjectAltName=DNS:localhost,IP:127.0.0.1" >"$PKI/ext"
openssl x509 -req -in "$PKI/srv.csr" -CA "$PKI/ca.pem" -CAkey "$PKI/ca.key" -CAcreateserial \
    -out "$PKI/srv.pem" -days 2 -extfile "$PKI/ext" 2>/dev/null

rm -f "$WORK/ready"
STELE_READY_FD=3 "$STELE" serve --port 0 --data "$WORK/data" --log-level error \
    --tls-cert "$PKI/srv.pem" --tls-key "$PKI/srv.key" --allow-cleartext \
    3>"$WORK/ready" 2>>"$WORK/stele.log" &
STELE_PID=$!
for _ in $(seq 1 600); do grep -q ready "$WORK/ready" 2>/dev/null && break; sleep 0.1; done
STELE_PORT=$(awk '/ready/ {print $2}' "$WORK/ready")
[ -n "$STELE_PORT" ] || { cat "$WORK/stele.log" >&2; bench_die "stele serve did not start"; }

bench_header "stele over TLS beside cleartext (one server, --allow-cleartext)" src include server
say "# $(openssl version); server certificate ECDSA P-256; TLS 1.3 negotiated by bench_http (OpenSSL)"
say "# sizes: ${QUICK:+QUICK=$QUICK }rounds=$ROUNDS, each: warmup=${WARM}s duration=${DUR}s (reads, pings ${RDUR}s)"

PREFIX="t$(date +%s)"
# rounds WORKLOAD KEY ARGS...: ROUNDS rounds of tls and clear (order
# alternating); then each one's median round and the ratio.
rounds() {
    local wl=$1 key=$2 r t line
    shift 2
    : >"$WORK/r-tls"
    : >"$WORK/r-clear"
    load
    for r in $(seq 1 "$ROUNDS"); do
        for t in $([ $((r % 2)) = 1 ] && echo "tls clear" || echo "clear tls"); do
            sync
            sleep 0.3
            line=$("$BH" --port "$STELE_PORT" --server-pid "$STELE_PID" --workload "$wl" \
                --target "$t" --prefix "${PREFIX}r${r}$t" \
                $([ "$t" = tls ] && echo "--tls-ca $PKI/ca.pem") "$@")
            say "round $r/$ROUNDS: $line"
            echo "$line" >>"$WORK/r-$t"
        done
    done
    local mt mc
    mt=$(median "$key" "$ROUNDS" "$WORK/r-tls")
    mc=$(median "$key" "$ROUNDS" "$WORK/r-clear")
    say "$mt"
    say "$mc"
    say "ratio workload=$wl tls/cleartext=$(awk -v a="$(echo "$mt" | field "$key")" \
        -v b="$(echo "$mc" | field "$key")" 'BEGIN {printf "%.3f", (b > 0 ? a / b : 0)}')"
}

rounds ping256 requests_per_s --mode ping --clients 256 --warmup "$WARM" --duration "$RDUR"
rounds 1x1 events_per_s --mode append --clients 1 --batch 1 --warmup "$WARM" --duration "$DUR"
rounds 256x1 events_per_s --mode append --clients 256 --batch 1 --warmup "$WARM" --duration "$DUR"
rounds 16x1000 events_per_s --mode append --clients 16 --batch 1000 --warmup "$WARM" --duration "$DUR"
rounds read1x1000 events_per_s --mode read --clients 1 --page 1000 --range 1000000 \
    --warmup "$WARM" --duration "$RDUR"
load
say "# ratios (tls/cleartext, median rounds, same server, same run)"
RATIOS=$(grep '^ratio ' "$OUT" | sed 's/^/#   /')
say "$RATIOS"
bench_save tls
