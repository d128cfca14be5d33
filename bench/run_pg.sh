#!/usr/bin/env bash
# bench/run_pg.sh [BUILD_DIR] - Stele on PostgreSQL (issue 15;
# docs/benchmarks.md, docs/backends.md). `make bench-pg` runs it.
#
# One fresh PostgreSQL cluster (fsync and synchronous_commit on), and in
# the same run:
#  1. seeds/001's schema driven by pgbench: one event per transaction
#     (the version read and the row inserted in one statement; the UNIQUE
#     (stream_id, version) constraint is the concurrency check), 256
#     clients; and 1,000-event transactions, 16 clients;
#  2. Stele on PostgreSQL with 1, 2 and 4 `stele serve --store
#     postgres://...` on one database (a fresh one per count): bench_http
#     256 clients x 1 event and 16 clients x 1,000 events, the clients
#     spread evenly over the servers, exact expected revisions; events/s
#     summed over the servers;
#  3. Stele's local engine (a directory) with the same two workloads;
#  4. subscriber latency: appends through one server, an $all subscriber
#     (SSE) on another; from the append's acknowledgment to the delivery
#     (p50/p99), and from the request's send.
#
#   SECS=10 bench/run_pg.sh build      seconds per measurement
#   BENCH_DIR=/mnt/disk ...            where the stores go ($TMPDIR or /tmp)
set -euo pipefail

BUILD=${1:-build}
case "$BUILD" in /*) ;; *) BUILD="$PWD/$BUILD" ;; esac
SECS=${SECS:-10}
# shellcheck source=bench/lib.sh
. "$(dirname "$0")/lib.sh"

bench_deps postgresql libpq-dev
bench_build "$BUILD" stele bench_http
STELE="$BUILD/stele"
BH="$BUILD/bench/bench_http"
bench_workdir pg

run() {
    say "# \$ $(basename "$1") ${*:2}"
    "$@" | tee -a "$OUT"
}

bench_header "stele on PostgreSQL benchmark" src include server
load
pg_start "shared_buffers = 128MB" "max_connections = 320" "max_wal_size = 1GB"
say "# $("$PGBIN/postgres" --version); fsync=on synchronous_commit=on shared_buffers=128MB"
pg_seed_schema
pgb() { # FILE CLIENTS EVENTS_PER_TXN
    say "pgbench workload=$2x$3 target=seed-schema $(pg_seed_bench "$@")"
}
say "# \$ pgbench -n -f seed1.sql -c 256 -j 2 -T $SECS (seeds/001: one event per transaction)"
pgb "$WORK/seed1.sql" 256 1
say "# \$ pgbench -n -f seed1000.sql -c 16 -j 2 -T $SECS (seeds/001: 1,000 events per transaction)"
pgb "$WORK/seed1000.sql" 16 1000
load

# 2. Stele on PostgreSQL: N servers, one database (STELE_PG_WRITERS, if
# set, is each server's number of writer connections: docs/backends.md).
# Run bench_http on every server at once (CLIENTS spread evenly), one line
# per server to $WORK/parts, and a summed line.
# pg_cpu_s: the cluster's CPU seconds over the whole run (warm-up
# included), beside the events of the measured window.
spread() { # N CLIENTS BATCH TARGET WORKLOAD
    local n=$1 per=$(($2 / $1)) i bpids=() c0 c1
    : >"$WORK/parts"
    c0=$(tree_cpu_s "$PG_PID")
    for i in $(seq 0 $((n - 1))); do
        "$BH" --port "${SPORTS[$i]}" --mode append --clients "$per" --batch "$3" \
            --duration "$SECS" --warmup 1 --workload "$5" --target "$4" --prefix "s$i" \
            --server-pid "${SPIDS[$i]}" >>"$WORK/parts" &
        bpids+=($!)
    done
    for i in "${bpids[@]}"; do wait "$i"; done
    c1=$(tree_cpu_s "$PG_PID")
    awk -v t="$4" -v w="$5" -v n="$n" -v pgc="$(awk -v a="$c0" -v b="$c1" 'BEGIN {print b - a}')" '
        { for (i = 1; i <= NF; i++) { split($i, kv, "="); v[kv[1]] += kv[2]; if (kv[1] == "p99_ms" && kv[2] > p99) p99 = kv[2]; if (kv[1] == "p50_ms") p50 = p50 "," kv[2]; if (kv[1] == "server_cpu") sc = sc "," kv[2] } }
        END { printf "http workload=%s target=%s servers=%d events_per_s=%.0f errors=%d conflicts=%d p50_ms_per_server=%s max_p99_ms=%s server_cpu=%s pg_cpu_s=%.2f\n", w, t, n, v["events_per_s"], v["errors"], v["conflicts"], substr(p50, 2), p99, substr(sc, 2), pgc }' \
        "$WORK/parts" | tee -a "$OUT"
}
for n in 1 2 4; do
    stele_pg_start "$n" "stele$n"
    say "# $n stele serve --store postgresql://.../stele$n; bench_http on each server at once"
    spread "$n" 256 1 "stele-pg" 256x1
    spread "$n" 16 1000 "stele-pg" 16x1000
    stele_pg_stop
    load
done

# 3. The local engine.
start_stele "$WORK/local"
say "# stele serve --data DIR (the local engine)"
run "$BH" --port "$STELE_PORT" --mode append --clients 256 --batch 1 --duration "$SECS" \
    --warmup 1 --workload 256x1 --target stele-local --server-pid "$STELE_PID"
run "$BH" --port "$STELE_PORT" --mode append --clients 16 --batch 1000 --duration "$SECS" \
    --warmup 1 --workload 16x1000 --target stele-local --server-pid "$STELE_PID"
stop_stele
load

# 4. Subscriber latency across servers.
stele_pg_start 2 stelelat
say "# \$ pg_sub_latency.py: appends through server 1, an \$all subscriber on server 2"
python3 "$ROOT/bench/pg_sub_latency.py" "${SPORTS[0]}" "${SPORTS[1]}" 400 | tee -a "$OUT"
stele_pg_stop

bench_save pg
