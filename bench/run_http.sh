#!/usr/bin/env bash
# bench/run_http.sh [BUILD_DIR] - the HTTP benchmark (issue 3): `stele serve`
# against its durable peers, PostgreSQL (seeds/001's schema, fsync and
# synchronous_commit on) and Redis (appendonly yes, appendfsync always), with
# the same workloads, side by side in the same run, all on this machine.
#
#   bench/run_http.sh build          full run (about 9 minutes), saved to
#                                    bench/results/http-<UTC date-time>.txt
#   QUICK=1 bench/run_http.sh build  short smoke run, 1 round (not saved)
#   ROUNDS=5 ROUNDS_1X1=9 ...        rounds per workload (default 3; 7 for 1x1)
#   BENCH_DIR=/mnt/disk ...          where the stores go (default $TMPDIR or
#                                    /tmp); fsync figures are that disk's
#   SCHEMA=minimal ...               PostgreSQL with the one-index schema
#                                    (bench/bench_peers.c) instead of seeds/001's
#
# It installs what is missing (postgresql, redis-server, libpq-dev), builds
# stele, bench_http and bench_peers, starts the three servers in a temporary
# directory on free ports (PostgreSQL as the postgres user when run as root),
# runs each workload against the three in rounds (3 by default; in each
# round every target in turn, the order rotating, so that other work on this
# shared machine disturbs them alike), prints every round's line, then one
# line per result (the median round of each target) and a ratio line per
# workload, then stops everything and removes the temporary directory (also
# on failure or Ctrl-C).
#
# Workloads (events carry 200 bytes of JSON data; every append has an exact
# expected revision/version):
#   1x1        1 connection, 1 event per append
#   256x1      256 connections, 1 event per append
#   16x1000    16 connections, 1,000 events per append
#   read1x1000 1 connection reading $all in pages of 1,000 events (Stele:
#              NDJSON; PostgreSQL: SELECT ... ORDER BY global_position;
#              Redis: XRANGE over every stream, which has no global order)
#   stream     Stele only: one NDJSON request streaming the first RANGE
#              events of $all (latency = time to the first byte)
#   ping1, ping256  Stele only: GET /health/live with 1 and 256 connections,
#              the HTTP round trip without store work (a baseline)
# Each line also has client_cpu (the load generator, 100% = one core),
# server_cpu (the server process and its children), other_cpu (the rest of
# the machine's work meanwhile: other processes, a measure of disturbance)
# and cpu_busy (the whole machine, 100% = every core).
set -euo pipefail

BUILD=${1:-build}
case "$BUILD" in /*) ;; *) BUILD="$PWD/$BUILD" ;; esac
SCHEMA=${SCHEMA:-seed}

if [ "${QUICK:-0}" = 1 ]; then
    WARM=0.5 DUR=2 RDUR=1 RANGE=100000 ROUNDS=${ROUNDS:-1} ROUNDS_1X1=${ROUNDS:-1} DUR_1X1=2
else
    WARM=2 DUR=7 RDUR=4 RANGE=1000000 ROUNDS=${ROUNDS:-3} ROUNDS_1X1=${ROUNDS_1X1:-7} DUR_1X1=3
fi

# shellcheck source=bench/lib.sh
. "$(dirname "$0")/lib.sh"

# ------------------------------------------------------------ packages, build
bench_deps postgresql redis-server libpq-dev
bench_build "$BUILD" stele bench_http bench_peers
STELE="$BUILD/stele"
BH="$BUILD/bench/bench_http"
BP="$BUILD/bench/bench_peers"
REDIS=$(command -v redis-server)
REDIS_CLI=$(command -v redis-cli)
REDIS_PID=""
bench_workdir http

# ------------------------------------------------------------ servers
mkdir "$WORK/stele"
start_stele "$WORK/stele/data"

# PostgreSQL: more connections than the 256 clients; a WAL and checkpoint
# budget that keeps checkpoints out of the run.
pg_start "full_page_writes = on" "max_connections = 300" "shared_buffers = 512MB" \
    "max_wal_size = 16GB" "checkpoint_timeout = 30min"

# Redis: every write fsynced before its reply, no RDB snapshots.
REDIS_PORT=$(free_port)
mkdir "$WORK/redis"
"$REDIS" --port "$REDIS_PORT" --bind 127.0.0.1 --protected-mode no --dir "$WORK/redis" \
    --appendonly yes --appendfsync always --save '' --daemonize no \
    --logfile "$WORK/redis/redis.log" &
REDIS_PID=$!
for _ in $(seq 1 100); do
    [ "$("$REDIS_CLI" -p "$REDIS_PORT" ping 2>/dev/null)" = PONG ] && break
    sleep 0.1
done
[ "$("$REDIS_CLI" -p "$REDIS_PORT" ping 2>/dev/null)" = PONG ] || bench_die "redis did not start"

# ------------------------------------------------------------ header
bench_header "stele HTTP benchmark against PostgreSQL and Redis" src include server
say "# stele $("$STELE" --version 2>/dev/null | head -1 || echo '?') on :$STELE_PORT; $("$PGBIN/postgres" --version) on :$PG_PORT; $("$REDIS" --version | cut -d' ' -f1-3) on :$REDIS_PORT"
say "# postgres: fsync=on synchronous_commit=on full_page_writes=on shared_buffers=512MB max_wal_size=16GB checkpoint_timeout=30min, schema=$SCHEMA"
say "# redis: appendonly yes, appendfsync always, save ''"
say "# sizes: ${QUICK:+QUICK=$QUICK }rounds=$ROUNDS (1x1: $ROUNDS_1X1), each: warmup=${WARM}s duration=${DUR}s (1x1 ${DUR_1X1}s, reads and pings ${RDUR}s) read_range=$RANGE"
"$BP" postgres --conninfo "$PGC" --mode setup --schema "$SCHEMA" | tee -a "$OUT"

# ------------------------------------------------------------ workloads
# Every round of a workload writes fresh streams (the prefix names the run
# and the round), so that each connection's first append expects no stream.
PREFIX="b$(date +%s)"
ROUND=1

# run_one TARGET WORKLOAD ARGS...: one result line on stdout.
run_one() {
    local target=$1 wl=$2
    shift 2
    case "$target" in
    stele) "$BH" --port "$STELE_PORT" --server-pid "$STELE_PID" --workload "$wl" --prefix "${PREFIX}r$ROUND" "$@" ;;
    postgres) "$BP" postgres --conninfo "$PGC" --server-pid "$PG_PID" --schema "$SCHEMA" \
        --workload "$wl" --prefix "${PREFIX}r$ROUND" "$@" ;;
    redis) "$BP" redis --port "$REDIS_PORT" --server-pid "$REDIS_PID" --workload "$wl" --prefix "${PREFIX}r$ROUND" "$@" ;;
    esac
}

# rounds WORKLOAD "TARGETS" KEY ARGS...: $ROUNDS rounds; in each, every
# target in turn (the order rotates from round to round, so that a
# disturbance of this shared machine falls on all of them alike). Every
# round's line is kept ("round i/N: http ..."); then, per target, the line of
# its median round by KEY (events_per_s, or requests_per_s for ping) is the
# result, with the KEY of every round appended. Before each run, `sync`
# writes back what the previous one left dirty (PostgreSQL's table pages,
# Redis's AOF, Stele's segments), so that no run pays for another's writes.
rounds() {
    local wl=$1 key=$3 r i n t line
    local -a ts
    read -r -a ts <<<"$2"
    shift 3
    n=${#ts[@]}
    : >"$WORK/rounds"
    load
    for r in $(seq 1 "$ROUNDS"); do
        ROUND=$r
        for i in $(seq 0 $((n - 1))); do
            t=${ts[$(((i + r - 1) % n))]}
            sync
            sleep 0.5
            line=$(run_one "$t" "$wl" "$@")
            say "round $r/$ROUNDS: $line"
            echo "$line" >>"$WORK/rounds"
        done
    done
    for t in "${ts[@]}"; do
        local all med
        all=$(grep " target=$t " "$WORK/rounds" | while read -r l; do echo "$l" | field "$key"; done | paste -sd, -)
        med=$(grep " target=$t " "$WORK/rounds" | while read -r l; do echo "$(echo "$l" | field "$key") $l"; done |
            sort -n | awk -v n="$ROUNDS" 'NR == int((n + 1) / 2) {sub(/^[^ ]* /, ""); print}')
        say "$med rounds=$all"
    done
}

# ratio WORKLOAD: Stele's events/s over each peer's (median rounds).
ratio() {
    awk -v wl="$1" '
        $1 == "http" {
            w = ""; t = ""; e = ""
            for (i = 2; i <= NF; i++) {
                split($i, kv, "=")
                if (kv[1] == "workload") w = kv[2]
                if (kv[1] == "target") t = kv[2]
                if (kv[1] == "events_per_s") e = kv[2]
            }
            if (w == wl) r[t] = e
        }
        END {
            s = r["stele"]; p = r["postgres"]; d = r["redis"]
            printf "ratio workload=%s stele/postgres=%s stele/redis=%s\n", wl,
                (p > 0 ? sprintf("%.2f", s / p) : "n/a"), (d > 0 ? sprintf("%.2f", s / d) : "n/a")
        }' "$OUT"
}

# The HTTP round trip alone (GET /health/live, no store work): the floor
# under the append latencies and the ceiling over requests/s.
rounds ping1 "stele" requests_per_s --mode ping --clients 1 --warmup "$WARM" --duration "$RDUR"
rounds ping256 "stele" requests_per_s --mode ping --clients 256 --warmup "$WARM" --duration "$RDUR"
# 1x1 is bound by the disk's fdatasync latency, which drifts over minutes
# on this virtual disk: more, shorter rounds.
R=$ROUNDS
ROUNDS=$ROUNDS_1X1
rounds 1x1 "stele postgres redis" events_per_s --mode append --clients 1 --batch 1 \
    --warmup "$WARM" --duration "$DUR_1X1"
ROUNDS=$R
for w in "256 1" "16 1000"; do
    read -r c b <<<"$w"
    rounds "${c}x${b}" "stele postgres redis" events_per_s --mode append --clients "$c" --batch "$b" \
        --warmup "$WARM" --duration "$DUR"
done
# (--prefix: Redis reads every stream of the run, of every round.)
rounds read1x1000 "stele postgres redis" events_per_s --mode read --clients 1 --page 1000 \
    --range "$RANGE" --warmup "$WARM" --duration "$RDUR" --prefix "$PREFIX"
rounds stream "stele" events_per_s --mode read --clients 1 --page 0 --range "$RANGE"
load

say "# ratios (events/s of Stele over the peer's, median rounds, same run)"
for wl in 1x1 256x1 16x1000 read1x1000; do say "$(ratio "$wl")"; done
say "# store sizes after the run: stele $(du -sh "$WORK/stele/data" | cut -f1), postgres $(du -sh "$WORK/pg" | cut -f1), redis aof $(du -sh "$WORK/redis" | cut -f1) (redis used_memory $("$REDIS_CLI" -p "$REDIS_PORT" info memory | awk -F: '/^used_memory_human/ {gsub(/\r/, ""); print $2}'))"

bench_save http
