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
PSQL=(psql -X -q -h 127.0.0.1 -p "$PG_PORT" -U postgres)

# 1. seeds/001's schema (bench/pg_seed.h's tables), pgbench.
"${PSQL[@]}" -d bench -v ON_ERROR_STOP=1 >/dev/null <<'SQL'
CREATE TABLE events (
  id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
  stream_id VARCHAR(255) NOT NULL,
  stream_type VARCHAR(255) NOT NULL,
  event_type VARCHAR(255) NOT NULL,
  event_data JSONB NOT NULL,
  metadata JSONB DEFAULT '{}',
  version BIGINT NOT NULL,
  global_position BIGSERIAL,
  created_at TIMESTAMPTZ DEFAULT NOW(),
  CONSTRAINT unique_stream_version UNIQUE (stream_id, version));
CREATE INDEX idx_events_stream ON events(stream_id, version);
CREATE INDEX idx_events_global ON events(global_position);
CREATE INDEX idx_events_type ON events(event_type);
SQL
cat >"$WORK/seed1.sql" <<'SQL'
INSERT INTO events (stream_id, stream_type, event_type, event_data, version)
SELECT 'Order-' || :client_id, 'Order', 'OrderPlaced', '{"customer":"c-1","total":4200,"items":[1,2,3]}',
       COALESCE(MAX(version), 0) + 1 FROM events WHERE stream_id = 'Order-' || :client_id;
SQL
cat >"$WORK/seed1000.sql" <<'SQL'
INSERT INTO events (stream_id, stream_type, event_type, event_data, version)
SELECT 'Batch-' || :client_id, 'Batch', 'OrderPlaced', '{"customer":"c-1","total":4200,"items":[1,2,3]}',
       v.m + g FROM generate_series(1, 1000) g,
       (SELECT COALESCE(MAX(version), 0) AS m FROM events WHERE stream_id = 'Batch-' || :client_id) v;
SQL
pgb() { # FILE CLIENTS EVENTS_PER_TXN
    local r tps
    r=$(as_postgres "$PGBIN/pgbench" -n -h 127.0.0.1 -p "$PG_PORT" -U postgres -f "$1" -c "$2" \
        -j 2 -T "$SECS" bench 2>&1)
    tps=$(echo "$r" | awk '/^tps = / {print $3; exit}')
    [ -n "$tps" ] || { echo "$r" | tail -5 >&2; bench_die "pgbench failed (output above)"; }
    say "pgbench workload=$2x$3 target=seed-schema events_per_s=$(awk -v t="$tps" -v k="$3" \
        'BEGIN {printf "%.0f", t * k}') tps=$tps $(echo "$r" | awk '/latency average/ {print "lat_avg_ms=" $4}')"
}
say "# \$ pgbench -n -f seed1.sql -c 256 -j 2 -T $SECS (seeds/001: one event per transaction)"
pgb "$WORK/seed1.sql" 256 1
say "# \$ pgbench -n -f seed1000.sql -c 16 -j 2 -T $SECS (seeds/001: 1,000 events per transaction)"
pgb "$WORK/seed1000.sql" 16 1000
load

# 2. Stele on PostgreSQL: N servers, one database.
PIDS=()
PORTS=()
start_n() { # N DB
    PIDS=()
    PORTS=()
    "${PSQL[@]}" -d postgres -c "CREATE DATABASE $2" >/dev/null
    local uri="postgresql://postgres@127.0.0.1:$PG_PORT/$2" i
    for i in $(seq 1 "$1"); do
        rm -f "$WORK/ready$i"
        STELE_READY_FD=3 "$STELE" serve --port 0 --store "$uri" --log-level error \
            3>"$WORK/ready$i" 2>>"$WORK/stele.log" &
        PIDS+=($!)
        for _ in $(seq 1 600); do grep -q ready "$WORK/ready$i" 2>/dev/null && break; sleep 0.1; done
        PORTS+=("$(awk '/ready/ {print $2}' "$WORK/ready$i")")
        [ -n "${PORTS[-1]}" ] || { cat "$WORK/stele.log" >&2; bench_die "stele serve did not start"; }
    done
}
stop_n() {
    local p
    for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    PIDS=()
}
# Run bench_http on every server at once (CLIENTS spread evenly), one line
# per server to $WORK/parts, and a summed line.
spread() { # N CLIENTS BATCH TARGET WORKLOAD
    local n=$1 per=$(($2 / $1)) i bpids=()
    : >"$WORK/parts"
    for i in $(seq 0 $((n - 1))); do
        "$BH" --port "${PORTS[$i]}" --mode append --clients "$per" --batch "$3" \
            --duration "$SECS" --warmup 1 --workload "$5" --target "$4" --prefix "s$i" \
            --server-pid "${PIDS[$i]}" >>"$WORK/parts" &
        bpids+=($!)
    done
    for i in "${bpids[@]}"; do wait "$i"; done
    awk -v t="$4" -v w="$5" -v n="$n" '
        { for (i = 1; i <= NF; i++) { split($i, kv, "="); v[kv[1]] += kv[2]; if (kv[1] == "p99_ms" && kv[2] > p99) p99 = kv[2]; if (kv[1] == "p50_ms") p50 = p50 "," kv[2] } }
        END { printf "http workload=%s target=%s servers=%d events_per_s=%.0f errors=%d conflicts=%d p50_ms_per_server=%s max_p99_ms=%s\n", w, t, n, v["events_per_s"], v["errors"], v["conflicts"], substr(p50, 2), p99 }' \
        "$WORK/parts" | tee -a "$OUT"
}
for n in 1 2 4; do
    start_n "$n" "stele$n"
    say "# $n stele serve --store postgresql://.../stele$n; bench_http on each server at once"
    spread "$n" 256 1 "stele-pg" 256x1
    spread "$n" 16 1000 "stele-pg" 16x1000
    stop_n
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
start_n 2 stelelat
say "# \$ pg_sub_latency.py: appends through server 1, an \$all subscriber on server 2"
python3 "$ROOT/bench/pg_sub_latency.py" "${PORTS[0]}" "${PORTS[1]}" 400 | tee -a "$OUT"
stop_n

bench_save pg
