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
ROOT=$(cd "$(dirname "$0")/.." && pwd)
case "$BUILD" in /*) ;; *) BUILD="$PWD/$BUILD" ;; esac

if [ "${QUICK:-0}" = 1 ]; then
    N=1000000 WARM=1 DUR=3 ROUNDS=${ROUNDS:-1} FAN_ROUNDS=${FAN_ROUNDS:-1} PGFILL=3
else
    N=10000000 WARM=2 DUR=10 ROUNDS=${ROUNDS:-3} FAN_ROUNDS=${FAN_ROUNDS:-5} PGFILL=15
fi

PARTS=${PARTS:-catchup latency fanout postgres}
part() { case " $PARTS " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }

SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"

# ------------------------------------------------------------ packages, build
missing=""
for p in postgresql libpq-dev; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
    echo "run_subs: installing$missing" >&2
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq
    # shellcheck disable=SC2086
    $SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi
cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$BUILD" -j "$(nproc)" --target stele bench_subs bench_pgnotify bench_peers >/dev/null
STELE="$BUILD/stele"
BS="$BUILD/bench/bench_subs"
BN="$BUILD/bench/bench_pgnotify"
BP="$BUILD/bench/bench_peers"
PGBIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)

# ------------------------------------------------------------ temp dir, cleanup
BASE=${BENCH_DIR:-${TMPDIR:-/tmp}}
mkdir -p "$BASE"
WORK=$(mktemp -d "$BASE/stele-subs-bench.XXXXXX")
chmod 755 "$WORK"
OUT="$WORK/results.txt"
STELE_PID="" PG_STARTED=0

as_postgres() {
    if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

stop_stele() {
    if [ -n "$STELE_PID" ]; then
        kill -TERM "$STELE_PID" 2>/dev/null || true
        wait "$STELE_PID" 2>/dev/null || true
        STELE_PID=""
    fi
}

cleanup() {
    set +e
    stop_stele
    if [ "$PG_STARTED" = 1 ]; then
        as_postgres "$PGBIN/pg_ctl" -D "$WORK/pg" -m fast -w stop >/dev/null 2>&1
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# start_stele DATA_DIR: stele serve on a free port ($STELE_PORT, $STELE_PID).
start_stele() {
    rm -f "$WORK/ready"
    STELE_READY_FD=3 "$STELE" serve --port 0 --data "$1" --log-level error \
        3>"$WORK/ready" 2>>"$WORK/stele.log" &
    STELE_PID=$!
    for _ in $(seq 1 300); do grep -q ready "$WORK/ready" 2>/dev/null && break; sleep 0.1; done
    STELE_PORT=$(awk '/ready/ {print $2}' "$WORK/ready")
    [ -n "$STELE_PORT" ] || { echo "run_subs: stele serve did not start:" >&2; cat "$WORK/stele.log" >&2; exit 1; }
}

say() { printf '%s\n' "$*" | tee -a "$OUT"; }
load() {
    say "# load: $(cut -d' ' -f1-3 /proc/loadavg) (1/5/15 min)$(
        [ -r /proc/pressure/io ] && printf '; io pressure: %s' "$(head -1 /proc/pressure/io)")"
}

# field NAME: the value of NAME=... in the line on stdin.
field() { tr ' ' '\n' | awk -F= -v k="$1" '$1 == k {print $2; exit}'; }

# rounds LABEL KEY CMD...: $ROUNDS runs of CMD (a sync before each); every
# line is printed, then the median round by KEY with KEY of every round.
rounds() {
    local label=$1 key=$2 r line all med
    shift 2
    : >"$WORK/rounds"
    for r in $(seq 1 "$ROUNDS"); do
        sync
        sleep 0.5
        line=$("$@")
        say "round $r/$ROUNDS $label: $line"
        echo "$line" >>"$WORK/rounds"
    done
    all=$(while read -r l; do echo "$l" | field "$key"; done <"$WORK/rounds" | paste -sd, -)
    med=$(while read -r l; do echo "$(echo "$l" | field "$key") $l"; done <"$WORK/rounds" |
        sort -g | awk -v n="$ROUNDS" 'NR == int((n + 1) / 2) {sub(/^[^ ]* /, ""); print}')
    say "median $label: $med rounds_$key=$all"
}

# ------------------------------------------------------------ header
say "# stele subscription benchmark (SSE) with PostgreSQL as the peer, $(date -u +%Y-%m-%dT%H:%M:%SZ)"
say "# commit: $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)$(
    git -C "$ROOT" diff --quiet HEAD -- src include server 2>/dev/null || echo ' (src/, include/ or server/ modified)')"
say "# machine: $(nproc) vCPU, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo) RAM, $(
    grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'), $(uname -sr)"
say "# disk: $(df -T "$WORK" | awk 'NR==2 {print $1, $2}') ($WORK)"
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
    all=$(while read -r l; do echo "$l" | field events_per_s; done <"$WORK/fan$subs" | paste -sd, -)
    med=$(while read -r l; do echo "$(echo "$l" | field events_per_s) $l"; done <"$WORK/fan$subs" |
        sort -g | awk -v n="$FAN_ROUNDS" 'NR == int((n + 1) / 2) {sub(/^[^ ]* /, ""); print}')
    say "median fanout-$subs: $med rounds_events_per_s=$all"
done
load
fi
stop_stele

# ------------------------------------------------------------ PostgreSQL
if part postgres; then
# A fresh cluster, fsync and synchronous_commit on (the defaults, stated
# anyway), the settings of bench/run_http.sh.
PG_PORT=$(for _ in $(seq 1 100); do p=$((20000 + RANDOM % 40000)); ss -Htln "sport = :$p" | grep -q . || { echo "$p"; break; }; done)
mkdir "$WORK/pg" "$WORK/pgsock"
[ "$(id -u)" -eq 0 ] && chown postgres: "$WORK/pg" "$WORK/pgsock"
as_postgres "$PGBIN/initdb" -D "$WORK/pg" -U postgres -A trust -E UTF8 --no-locale >"$WORK/initdb.log" 2>&1 ||
    { cat "$WORK/initdb.log" >&2; exit 1; }
cat >>"$WORK/pg/postgresql.conf" <<EOF
port = $PG_PORT
listen_addresses = '127.0.0.1'
unix_socket_directories = '$WORK/pgsock'
fsync = on
synchronous_commit = on
full_page_writes = on
max_connections = 300
shared_buffers = 512MB
max_wal_size = 16GB
checkpoint_timeout = 30min
EOF
as_postgres "$PGBIN/pg_ctl" -D "$WORK/pg" -l "$WORK/pgsock/pg.log" -w start >/dev/null ||
    { echo "run_subs: postgres did not start:" >&2; tail -20 "$WORK/pgsock/pg.log" >&2; exit 1; }
PG_STARTED=1
as_postgres "$PGBIN/createdb" -h 127.0.0.1 -p "$PG_PORT" -U postgres bench
PGC="host=127.0.0.1 port=$PG_PORT dbname=bench user=postgres"
PG_PID=$(head -1 "$WORK/pg/postmaster.pid")
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

if [ "${QUICK:-0}" != 1 ]; then
    mkdir -p "$ROOT/bench/results"
    DEST="$ROOT/bench/results/subs-$(date -u +%Y%m%dT%H%M%SZ).txt"
    cp "$OUT" "$DEST"
    echo "run_subs: saved $DEST" >&2
fi
