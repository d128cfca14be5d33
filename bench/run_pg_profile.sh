#!/usr/bin/env bash
# bench/run_pg_profile.sh [BUILD_DIR] [OTHER_STELE...] - where the time of
# Stele's PostgreSQL writer goes at 256 clients x 1 event (issue 15;
# docs/benchmarks.md, "Stele on PostgreSQL"). `make bench-pg-profile`.
#
# One fresh PostgreSQL cluster (fsync and synchronous_commit on,
# pg_stat_statements loaded), and in the same run, ROUNDS times in turn:
#  - seeds/001's schema under pgbench, 256 clients, one event per
#    transaction (as bench/run_pg.sh);
#  - for BUILD_DIR's stele and every OTHER_STELE binary given (an older
#    build, to compare in the same conditions): one `stele serve --store
#    postgresql://...` on a fresh database, bench_http 1 client x 1 event
#    (SECS1 seconds: the latency of one append alone), then 256 clients x
#    1 event, exact expected revisions; then from the server's /metrics the
#    appends per group commit (is the batch filling?), and from
#    pg_stat_statements the statements PostgreSQL ran for it: calls per
#    group commit (round trips) and the time spent in each.
#
#   SECS=10 SECS1=5 ROUNDS=3 bench/run_pg_profile.sh build /tmp/old/build/stele
set -euo pipefail

BUILD=${1:-build}
case "$BUILD" in /*) ;; *) BUILD="$PWD/$BUILD" ;; esac
shift || true
SECS=${SECS:-10}
SECS1=${SECS1:-5}
ROUNDS=${ROUNDS:-3}
# shellcheck source=bench/lib.sh
. "$(dirname "$0")/lib.sh"

bench_deps postgresql libpq-dev curl
bench_build "$BUILD" stele bench_http
BINS=("$BUILD/stele" "$@")
BH="$BUILD/bench/bench_http"
bench_workdir pgprof

bench_header "stele on PostgreSQL: writer profile" src include server
pg_start "shared_buffers = 128MB" "max_connections = 320" "max_wal_size = 1GB" \
    "shared_preload_libraries = 'pg_stat_statements'" "pg_stat_statements.track = top"
say "# $("$PGBIN/postgres" --version); fsync=on synchronous_commit=on shared_buffers=128MB"
PSQL=(psql -X -q -h 127.0.0.1 -p "$PG_PORT" -U postgres)

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

SPID=""
stop_one() {
    if [ -n "$SPID" ]; then
        kill -TERM "$SPID" 2>/dev/null || true
        wait "$SPID" 2>/dev/null || true
        SPID=""
    fi
}
trap 'stop_one; bench_cleanup' EXIT

metric() { curl -s "http://127.0.0.1:$1/metrics" | awk -v k="$2" '$1 == k {v = $2} END {print v}'; }

n=0
for round in $(seq 1 "$ROUNDS"); do
    load
    r=$(as_postgres "$PGBIN/pgbench" -n -h 127.0.0.1 -p "$PG_PORT" -U postgres -f "$WORK/seed1.sql" \
        -c 256 -j 2 -T "$SECS" bench 2>&1)
    say "round=$round pgbench workload=256x1 target=seed-schema events_per_s=$(echo "$r" |
        awk '/^tps = / {printf "%.0f", $3; exit}')"
    for bin in "${BINS[@]}"; do
        n=$((n + 1))
        db="prof$n"
        "${PSQL[@]}" -d postgres -c "CREATE DATABASE $db" >/dev/null
        "${PSQL[@]}" -d "$db" -c "CREATE EXTENSION pg_stat_statements" >/dev/null
        rm -f "$WORK/ready"
        STELE_READY_FD=3 "$bin" serve --port 0 --store "postgresql://postgres@127.0.0.1:$PG_PORT/$db" \
            --log-level error 3>"$WORK/ready" 2>>"$WORK/stele.log" &
        SPID=$!
        for _ in $(seq 1 600); do grep -q ready "$WORK/ready" 2>/dev/null && break; sleep 0.1; done
        port=$(awk '/ready/ {print $2}' "$WORK/ready")
        [ -n "$port" ] || { cat "$WORK/stele.log" >&2; bench_die "stele serve did not start"; }
        # 1 x 1 first: one client, so every append is a batch of one and
        # its latency is the writer's round trips plus the COMMIT.
        line=$("$BH" --port "$port" --mode append --clients 1 --batch 1 --duration "$SECS1" \
            --warmup 1 --workload 1x1 --target stele-pg --server-pid "$SPID")
        say "round=$round binary=$bin $line"
        "${PSQL[@]}" -d "$db" -c "SELECT pg_stat_statements_reset()" >/dev/null
        base_groups=$(metric "$port" stele_store_group_commits)
        base_appends=$(metric "$port" stele_appends_total)
        line=$("$BH" --port "$port" --mode append --clients 256 --batch 1 --duration "$SECS" \
            --warmup 1 --workload 256x1 --target stele-pg --server-pid "$SPID")
        groups=$(($(metric "$port" stele_store_group_commits) - base_groups))
        appends=$(($(metric "$port" stele_appends_total) - base_appends))
        say "round=$round binary=$bin $line appends=$appends group_commits=$groups" \
            "appends_per_group=$(awk -v a="$appends" -v g="$groups" 'BEGIN {if (g > 0) printf "%.1f", a / g}')"
        # Statements of this database, heaviest first: calls per group
        # commit, total and mean time inside PostgreSQL.
        "${PSQL[@]}" -d "$db" -At -F ' ' -v g="${groups:-0}" >>"$WORK/stmts" <<'SQL'
SELECT 'stmt calls=' || s.calls || ' per_group=' || round(s.calls::numeric / GREATEST(:g, 1), 2)
       || ' total_ms=' || round(s.total_exec_time::numeric, 0) || ' mean_ms='
       || round(s.mean_exec_time::numeric, 3) || ' sql=' || left(regexp_replace(s.query, '\s+', ' ', 'g'), 70)
FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid
WHERE d.datname = current_database() AND s.calls > 10
ORDER BY s.total_exec_time DESC LIMIT 12;
SQL
        tee -a "$OUT" <"$WORK/stmts"
        : >"$WORK/stmts"
        stop_one
    done
done
load
bench_save pgprof
