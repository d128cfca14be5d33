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
#    build, to compare in the same conditions), and for each writer count
#    in WRITERS (STELE_PG_WRITERS: batches in flight per server; BUILD_DIR's
#    binary only, an older one runs once with its own writer): one
#    `stele serve --store postgresql://...` on a fresh database, bench_http
#    1 client x 1 event (SECS1 seconds: the latency of one append alone),
#    then 256 clients x 1 event, exact expected revisions; then from the
#    server's /metrics the appends per group commit (is the batch
#    filling?), from pg_stat_wal the WAL flushes and their time per group
#    commit, the CPU seconds of PostgreSQL (every backend) and of the
#    server per 1,000 events, and from pg_stat_statements the statements
#    PostgreSQL ran for it: calls per group commit (round trips) and the
#    time spent in each.
#
#   SECS=10 SECS1=5 ROUNDS=3 bench/run_pg_profile.sh build /tmp/old/build/stele
#   WRITERS="2 1" (the default) compares two batches in flight with one.
#   PERF=1 samples PostgreSQL's processes and the server with perf during
#   256 x 1 and prints the functions with the most self time (and the
#   share of PostgreSQL's time under parse, analysis, planning, execution).
#   BIG=1 also runs 16 clients x 1,000 events per binary and writer count
#   (CPU per event of PostgreSQL and the server, and its statements)
#   (after the 256 x 1 run, on the same database).
set -euo pipefail

BUILD=${1:-build}
case "$BUILD" in /*) ;; *) BUILD="$PWD/$BUILD" ;; esac
shift || true
SECS=${SECS:-10}
SECS1=${SECS1:-5}
ROUNDS=${ROUNDS:-3}
WRITERS=${WRITERS:-2 1}
# shellcheck source=bench/lib.sh
. "$(dirname "$0")/lib.sh"

bench_deps postgresql libpq-dev curl
if [ "${PERF:-0}" = 1 ] && ! command -v perf >/dev/null; then
    bench_die "PERF=1 needs perf (Debian package linux-perf)"
fi
bench_build "$BUILD" stele bench_http
BINS=("$BUILD/stele" "$@")
BH="$BUILD/bench/bench_http"
bench_workdir pgprof

bench_header "stele on PostgreSQL: writer profile" src include server
pg_start "shared_buffers = 128MB" "max_connections = 320" "max_wal_size = 1GB" \
    "shared_preload_libraries = 'pg_stat_statements'" "pg_stat_statements.track = top" \
    "pg_stat_statements.track_planning = on" "track_wal_io_timing = on"
say "# $("$PGBIN/postgres" --version); fsync=on synchronous_commit=on shared_buffers=128MB"
pg_seed_schema

trap 'stele_pg_stop; bench_cleanup' EXIT

metric() { curl -s "http://127.0.0.1:$1/metrics" | awk -v k="$2" '$1 == k {v = $2} END {print v}'; }

# wal: the cluster's WAL flushes (fsyncs), the ms they took, the WAL
# records and bytes written, since the last pg_stat_reset_shared('wal').
# Records and bytes per event do not depend on the machine's load: they
# count what PostgreSQL wrote for each append (index entries, row locks,
# row versions).
wal() { "${PSQL[@]}" -d postgres -At -F ' ' -c "SELECT wal_sync, round(wal_sync_time::numeric, 1), wal_records, wal_bytes FROM pg_stat_wal"; }
per() { awk -v a="$1" -v b="$2" -v k="${3:-1}" 'BEGIN {if (b > 0) printf "%.2f", k * a / b; else print "n/a"}'; }

n=0
for round in $(seq 1 "$ROUNDS"); do
    load
    "${PSQL[@]}" -d postgres -c "SELECT pg_stat_reset_shared('wal')" >/dev/null
    line=$(pg_seed_bench "$WORK/seed1.sql" 256 1)
    read -r fs fsms wrec wbytes < <(wal)
    ev=$(echo "$line" | field events_per_s)
    say "round=$round pgbench workload=256x1 target=seed-schema $line" \
        "pg_cpu_ms_per_1k_events=$(per "$(echo "$line" | field pg_cpu_s)" "$((ev * SECS))" 1000000)" \
        "wal_syncs=$fs wal_sync_ms=$fsms"
    for bin in "${BINS[@]}"; do
        # WRITERS applies to BUILD_DIR's binary; an older one runs once
        # with its own writer ("-").
        ws=$WRITERS
        [ "$bin" = "${BINS[0]}" ] || ws="-"
        for w in $ws; do
            n=$((n + 1))
            if [ "$w" = - ]; then
                stele_pg_start 1 "prof$n" "$bin"
            else
                STELE_PG_WRITERS=$w stele_pg_start 1 "prof$n" "$bin"
            fi
            port=${SPORTS[0]} spid=${SPIDS[0]}
            "${PSQL[@]}" -d "prof$n" -c "CREATE EXTENSION pg_stat_statements" >/dev/null
            # 1 x 1 first: one client, so every append is a batch of one and
            # its latency is the writer's round trips plus the COMMIT.
            line=$("$BH" --port "$port" --mode append --clients 1 --batch 1 --duration "$SECS1" \
                --warmup 1 --workload 1x1 --target stele-pg --server-pid "$spid")
            say "round=$round binary=$bin writers=$w $line"
            "${PSQL[@]}" -d "prof$n" -c "SELECT pg_stat_statements_reset()" >/dev/null
            "${PSQL[@]}" -d postgres -c "SELECT pg_stat_reset_shared('wal')" >/dev/null
            base_groups=$(metric "$port" stele_store_group_commits)
            base_appends=$(metric "$port" stele_appends_total)
            c0=$(tree_cpu_s "$PG_PID") s0=$(tree_cpu_s "$spid")
            # PERF=1: perf samples of PostgreSQL's backends (the server's
            # connections, made at its start) during the 256 x 1 run.
            perfpid=
            if [ "${PERF:-0}" = 1 ]; then
                perf record -q -F 499 -g -o "$WORK/perf.data" \
                    -p "$(pgrep -d, -P "$PG_PID")" >/dev/null 2>&1 &
                perfpid=$!
                perf record -q -F 499 -g -o "$WORK/perf-srv.data" -p "$spid" >/dev/null 2>&1 &
                perfspid=$!
            fi
            line=$("$BH" --port "$port" --mode append --clients 256 --batch 1 --duration "$SECS" \
                --warmup 1 --workload 256x1 --target stele-pg --server-pid "$spid")
            c1=$(tree_cpu_s "$PG_PID") s1=$(tree_cpu_s "$spid")
            if [ -n "$perfpid" ]; then
                kill -INT "$perfpid" "$perfspid"
                wait "$perfpid" || true
                wait "$perfspid" || true
                # The server's own functions with the most self time.
                perf report -i "$WORK/perf-srv.data" --no-children --sort sym --stdio 2>/dev/null |
                    awk '/^ +[0-9.]+%/ {print "perf_server round='"$round"' self=" $1, $3, $4}' |
                    head -25 | tee -a "$OUT" || true
                # Self time per function over every PostgreSQL process.
                perf report -i "$WORK/perf.data" --no-children --sort sym --stdio 2>/dev/null |
                    awk '/^ +[0-9.]+%/ {print "perf round='"$round"' self=" $1, $3, $4}' |
                    head -30 | tee -a "$OUT" || true
                # Time under the phases of a statement (children included):
                # parse, analysis, planning, execution, index upkeep, commit.
                perf report -i "$WORK/perf.data" --children --sort sym --stdio 2>/dev/null |
                    awk '/^ +[0-9.]+%/ && $4 ~ /^(PostgresMain|pg_parse_query|parse_analyze_fixedparams|parse_analyze_varparams|pg_analyze_and_rewrite_varparams|pg_analyze_and_rewrite_fixedparams|pg_plan_queries|GetCachedPlan|standard_ExecutorRun|ExecInsertIndexTuples|heap_insert|heap_multi_insert|ExecUpdate|CommitTransactionCommand|XLogFlush|exec_bind_message|exec_execute_message|exec_parse_message|exec_simple_query|ProcessClientReadInterrupt|pq_getbyte|secure_read|secure_write|ExecLockRows|ProcessUtility)$/ {print "perf_phase round='"$round"' children=" $1, "self=" $2, $4}' |
                    tee -a "$OUT" || true
                [ -z "${PERF_KEEP:-}" ] || cp "$WORK/perf.data" "$PERF_KEEP"
            fi
            read -r fs fsms wrec wbytes < <(wal)
            groups=$(($(metric "$port" stele_store_group_commits) - base_groups))
            appends=$(($(metric "$port" stele_appends_total) - base_appends))
            # CPU and WAL over the whole run (warm-up included), so per
            # append of the whole run, counted by /metrics.
            say "round=$round binary=$bin writers=$w $line appends=$appends group_commits=$groups" \
                "appends_per_group=$(per "$appends" "$groups")" \
                "pg_cpu_ms_per_1k_events=$(per "$(awk -v a="$c0" -v b="$c1" 'BEGIN {print b - a}')" "$appends" 1000000)" \
                "server_cpu_ms_per_1k_events=$(per "$(awk -v a="$s0" -v b="$s1" 'BEGIN {print b - a}')" "$appends" 1000000)" \
                "wal_syncs_per_group=$(per "$fs" "$groups") wal_sync_ms_per_group=$(per "$fsms" "$groups")" \
                "wal_records_per_event=$(per "$wrec" "$appends") wal_bytes_per_event=$(per "$wbytes" "$appends")"
            # Statements of this database, heaviest first: calls per group
            # commit, total and mean time inside PostgreSQL.
            "${PSQL[@]}" -d "prof$n" -At -F ' ' -v g="${groups:-0}" >>"$WORK/stmts" <<'SQL'
SELECT 'stmt calls=' || s.calls || ' per_group=' || round(s.calls::numeric / GREATEST(:g, 1), 2)
       || ' total_ms=' || round(s.total_exec_time::numeric, 0) || ' mean_ms='
       || round(s.mean_exec_time::numeric, 3) || ' plans=' || s.plans || ' plan_ms='
       || round(s.total_plan_time::numeric, 0) || ' sql=' || left(regexp_replace(s.query, '\s+', ' ', 'g'), 70)
FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid
WHERE d.datname = current_database() AND s.calls > 10
ORDER BY s.total_exec_time DESC LIMIT 12;
SQL
            tee -a "$OUT" <"$WORK/stmts"
            : >"$WORK/stmts"
            if [ "${BIG:-0}" = 1 ]; then
                "${PSQL[@]}" -d "prof$n" -c "SELECT pg_stat_statements_reset()" >/dev/null
                base_groups=$(metric "$port" stele_store_group_commits)
                c0=$(tree_cpu_s "$PG_PID") s0=$(tree_cpu_s "$spid")
                line=$("$BH" --port "$port" --mode append --clients 16 --batch 1000 \
                    --duration "$SECS" --warmup 1 --workload 16x1000 --target stele-pg \
                    --server-pid "$spid")
                c1=$(tree_cpu_s "$PG_PID") s1=$(tree_cpu_s "$spid")
                groups=$(($(metric "$port" stele_store_group_commits) - base_groups))
                # CPU per event over the measured seconds plus the warm-up
                # (counted at the measured rate), as bench/run_pg.sh does.
                ev=$(($(echo "$line" | field events_per_s) * (SECS + 1)))
                say "round=$round binary=$bin writers=$w $line pg_cpu_s=$(awk -v a="$c0" -v b="$c1" 'BEGIN {print b - a}')" \
                    "group_commits=$groups" \
                    "pg_cpu_us_per_event=$(per "$(awk -v a="$c0" -v b="$c1" 'BEGIN {print b - a}')" "$ev" 1000000)" \
                    "server_cpu_us_per_event=$(per "$(awk -v a="$s0" -v b="$s1" 'BEGIN {print b - a}')" "$ev" 1000000)"
                # The statements of the 16 x 1,000 run (big batches: the
                # insert's time per group commit).
                "${PSQL[@]}" -d "prof$n" -At -F ' ' -v g="${groups:-0}" >>"$WORK/stmts" <<'SQL'
SELECT 'stmt16x1000 calls=' || s.calls || ' per_group=' || round(s.calls::numeric / GREATEST(:g, 1), 2)
       || ' total_ms=' || round(s.total_exec_time::numeric, 0) || ' mean_ms='
       || round(s.mean_exec_time::numeric, 3) || ' sql=' || left(regexp_replace(s.query, '\s+', ' ', 'g'), 70)
FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid
WHERE d.datname = current_database() AND s.calls > 2
ORDER BY s.total_exec_time DESC LIMIT 6;
SQL
                tee -a "$OUT" <"$WORK/stmts"
                : >"$WORK/stmts"
            fi
            stele_pg_stop
        done
    done
done
load
bench_save pgprof
