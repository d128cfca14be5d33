#!/usr/bin/env bash
# bench/run_subs.sh [BUILD_DIR] - the subscription benchmarks (issue 4), with
# PostgreSQL as the peer in the same run (make bench-subs):
#
#   catchup    one subscriber over SSE reads N events of $all from position 0
#              (N = 10,000,000 events with 200 bytes of JSON data; the store
#              is built first with 10,000-event appends through libstele);
#              peer: PostgreSQL's paged read of seeds/001's table (the way a
#              tailer catches up there), rows of the same 200 bytes.
#   latency    append acknowledged -> event received by a live subscriber,
#              under a steady R appends/s of 1 event each (R = 10,000 and
#              1,000); the append latency (its fsync) in the same run; peer:
#              PostgreSQL tailed with LISTEN/NOTIFY (a trigger on seeds/001's
#              table), at 1,000/s and at 10,000/s.
#   fanout     append throughput (64 connections, 1 event per append, closed
#              loop) with 0 and with 100 live subscribers, rounds alternating.
#
#   bench/run_subs.sh build          full run (about 8 minutes), saved to
#                                    bench/results/subs-<UTC date-time>.txt
#   QUICK=1 bench/run_subs.sh build  short smoke run (1M events, 1 round, short
#                                    durations; not saved)
#   ROUNDS=5 ...                     rounds per measurement (default 3; the
#                                    fan-out pair FAN_ROUNDS, default 5)
#   BENCH_DIR=/mnt/disk ...          where the stores go (default $TMPDIR or /tmp)
#   PARTS="fanout" ...               only some parts: catchup, latency, fanout,
#                                    postgres (default all four)
#
# Every round's line is printed; then per measurement the median round (by
# the key figure named in the script) with the key figure of every round.
# Lines carry client_cpu (the load generator, 100% = one core) and
# server_cpu (stele serve). Stores and PostgreSQL live in a temporary
# directory, removed at the end (also on failure or Ctrl-C).
set -euo pipefail

BUILD=${1:-build}
case "$BUILD" in /*) ;; *) BUILD="$PWD/$BUILD" ;; esac

if [ "${QUICK:-0}" = 1 ]; then
    N=1000000 WARM=1 DUR=3 ROUNDS=${ROUNDS:-1} FAN_ROUNDS=${FAN_ROUNDS:-1} PGFILL=3
else
    N=10000000 WARM=2 DUR=10 ROUNDS=${ROUNDS:-3} FAN_ROUNDS=${FAN_ROUNDS:-5} PGFILL=15
fi

PARTS=${PARTS:-catchup latency fanout postgres}
part() { case " $PARTS " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }

# shellcheck source=bench/lib.sh
. "$(dirname "$0")/lib.sh"

# ------------------------------------------------------------ packages, build
bench_deps postgresql libpq-dev
bench_build "$BUILD" stele bench_subs bench_pgnotify bench_peers
STELE="$BUILD/stele"
BS="$BUILD/bench/bench_subs"
BN="$BUILD/bench/bench_pgnotify"
BP="$BUILD/bench/bench_peers"
bench_workdir subs

# rounds LABEL KEY CMD...: $ROUNDS runs of CMD (a sync before each); every
# line is printed, then the median round by KEY with KEY of every round.
rounds() {
    local label=$1 key=$2 r line
    shift 2
    : >"$WORK/rounds"
    for r in $(seq 1 "$ROUNDS"); do
        sync
        sleep 0.5
        line=$("$@")
        say "round $r/$ROUNDS $label: $line"
        echo "$line" >>"$WORK/rounds"
    done
    say "median $label: $(median "$key" "$ROUNDS" "$WORK/rounds")"
}

# ------------------------------------------------------------ header
bench_header "stele subscription benchmark (SSE) with PostgreSQL as the peer" src include server
say "# parts: $PARTS"
say "# sizes: ${QUICK:+QUICK=$QUICK }catch-up events=$N (200-byte data) rounds=$ROUNDS warmup=${WARM}s duration=${DUR}s; live events carry 100 bytes of JSON data"
load

# ------------------------------------------------------------ catch-up
if part catchup; then
say "$("$BS" build --dir "$WORK/catchup" --events "$N" --batch 10000 --data-bytes 200)"
start_stele "$WORK/catchup"
rounds catchup events_per_s "$BS" catchup --port "$STELE_PORT" --events "$N" --server-pid "$STELE_PID"
stop_stele
rm -rf "$WORK/catchup"
load
fi

# ------------------------------------------------------------ live: latency, fan-out
start_stele "$WORK/live"
if part latency; then
rounds "latency-10000/s" event_p99_ms "$BS" latency --port "$STELE_PORT" --rate 10000 --clients 256 \
    --warmup "$WARM" --duration "$DUR" --server-pid "$STELE_PID"
rounds "latency-1000/s" event_p99_ms "$BS" latency --port "$STELE_PORT" --rate 1000 --clients 16 \
    --warmup "$WARM" --duration "$DUR" --server-pid "$STELE_PID"
load
fi
# fan-out: the rounds alternate between no subscriber and 100 subscribers
# (more of them: this figure is a ratio of two noisy throughputs)
if part fanout; then
: >"$WORK/fan0"
: >"$WORK/fan100"
for r in $(seq 1 "$FAN_ROUNDS"); do
    for subs in 0 100; do
        sync
        sleep 0.5
        line=$("$BS" fanout --port "$STELE_PORT" --subs "$subs" --clients 64 --warmup "$WARM" \
            --duration "$DUR" --server-pid "$STELE_PID")
        say "round $r/$FAN_ROUNDS fanout-$subs: $line"
        echo "$line" >>"$WORK/fan$subs"
    done
done
for subs in 0 100; do
    say "median fanout-$subs: $(median events_per_s "$FAN_ROUNDS" "$WORK/fan$subs")"
done
load
fi
stop_stele

# ------------------------------------------------------------ PostgreSQL
if part postgres; then
# A fresh cluster, the settings of bench/run_http.sh.
pg_start "full_page_writes = on" "max_connections = 300" "shared_buffers = 512MB" \
    "max_wal_size = 16GB" "checkpoint_timeout = 30min"
say "# $("$PGBIN/postgres" --version): fsync=on synchronous_commit=on full_page_writes=on shared_buffers=512MB"
say "$("$BN" --conninfo "$PGC" --mode setup)"
rounds "postgres-latency-1000/s" event_p99_ms "$BN" --conninfo "$PGC" --mode latency --rate 1000 \
    --clients 16 --warmup "$WARM" --duration "$DUR"
rounds "postgres-latency-10000/s" event_p99_ms "$BN" --conninfo "$PGC" --mode latency --rate 10000 \
    --clients 256 --warmup "$WARM" --duration "$DUR"
# catch-up peer: fill with 1,000-event appends, then read it back in pages
# of 1,000 rows by global_position (seeds/001's read_all).
say "$("$BP" postgres --conninfo "$PGC" --mode append --clients 16 --batch 1000 --warmup 0 \
    --duration "$PGFILL" --workload fill --prefix "fill$(date +%s)" --data-bytes 200 --server-pid "$PG_PID")"
ROWS=$(as_postgres "$PGBIN/psql" -h 127.0.0.1 -p "$PG_PORT" -U postgres -d bench -Atc "SELECT count(*) FROM events")
say "# postgres rows for the catch-up read: $ROWS"
rounds "postgres-catchup" events_per_s "$BP" postgres --conninfo "$PGC" --mode read --clients 1 \
    --page 1000 --range "$ROWS" --warmup 1 --duration 5 --workload catchup --server-pid "$PG_PID"
load
fi

bench_save subs
