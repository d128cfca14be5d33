#!/usr/bin/env bash
# bench/run_multi.sh [BUILD_DIR] - multi-stream appends and DCB conditions
# (issue 11; docs/benchmarks.md). `make bench-multi` runs it.
#
#  1. in process (bench_multi): two-stream transfers vs single-stream appends
#     of the same two events, 64 threads, alternating rounds; DCB
#     conditional appends with 1 and 64 threads (and single appends with 1
#     thread, the fsync-bound baseline of the 1-client figure);
#  2. over HTTP (bench_multi --http against `stele serve`): the same pair,
#     64 keep-alive clients;
#  3. PostgreSQL (bench_multi_pg): the same transfer as one transaction with
#     row locks on seeds/001's schema, vs a single-stream append of the two
#     events; a fresh cluster, fsync on, stopped and removed at the end.
#
#   SECS=5 ROUNDS=2 THREADS=64 bench/run_multi.sh build
#   BENCH_DIR=/mnt/disk ...     where the stores go ($TMPDIR or /tmp)
set -euo pipefail

BUILD=${1:-build}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
case "$BUILD" in /*) ;; *) BUILD="$PWD/$BUILD" ;; esac
SECS=${SECS:-5} ROUNDS=${ROUNDS:-2} THREADS=${THREADS:-64}

SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
missing=""
for p in postgresql libpq-dev; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
    echo "run_multi: installing$missing" >&2
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq
    # shellcheck disable=SC2086
    $SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi
cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$BUILD" -j "$(nproc)" --target stele bench_multi bench_multi_pg >/dev/null
STELE="$BUILD/stele"
BM="$BUILD/bench/bench_multi"
BP="$BUILD/bench/bench_multi_pg"
PGBIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)

BASE=${BENCH_DIR:-${TMPDIR:-/tmp}}
mkdir -p "$BASE"
WORK=$(mktemp -d "$BASE/stele-multi-bench.XXXXXX")
chmod 755 "$WORK"
OUT="$WORK/results.txt"
STELE_PID="" PG_STARTED=0

as_postgres() {
    if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}
cleanup() {
    set +e
    if [ -n "$STELE_PID" ]; then
        kill -TERM "$STELE_PID" 2>/dev/null
        wait "$STELE_PID" 2>/dev/null
    fi
    if [ "$PG_STARTED" = 1 ]; then
        as_postgres "$PGBIN/pg_ctl" -D "$WORK/pg" -m fast -w stop >/dev/null 2>&1
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
    local p
    for _ in $(seq 1 100); do
        p=$((20000 + RANDOM % 40000))
        if ! ss -Htln "sport = :$p" | grep -q .; then
            echo "$p"
            return
        fi
    done
    echo "run_multi: no free port found" >&2
    exit 1
}
say() { printf '%s\n' "$*" | tee -a "$OUT"; }
load() { say "# load: $(cut -d' ' -f1-3 /proc/loadavg) (1/5/15 min)"; }
run() {
    say "# \$ $(basename "$1") ${*:2}"
    "$@" | tee -a "$OUT"
}

say "# stele multi-stream benchmark, $(date -u +%Y-%m-%dT%H:%M:%SZ)"
say "# commit: $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)"
say "# machine: $(nproc) vCPU, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo) RAM, $(
    grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'), $(uname -sr)"
say "# disk: $(df -T "$WORK" | awk 'NR==2 {print $1, $2}') ($WORK)"
load

# 1. In process.
run "$BM" "$WORK/inproc" "$SECS" "$THREADS" "$ROUNDS"
load

# 2. Over HTTP.
STELE_READY_FD=3 "$STELE" serve --port 0 --data "$WORK/http" --log-level error \
    3>"$WORK/ready" 2>"$WORK/stele.log" &
STELE_PID=$!
for _ in $(seq 1 600); do grep -q ready "$WORK/ready" 2>/dev/null && break; sleep 0.1; done
PORT=$(awk '/ready/ {print $2}' "$WORK/ready")
[ -n "$PORT" ] || { echo "run_multi: stele serve did not start:" >&2; cat "$WORK/stele.log" >&2; exit 1; }
run "$BM" --http "$PORT" "$SECS" "$THREADS" "$ROUNDS"
kill -TERM "$STELE_PID"
wait "$STELE_PID" || true
STELE_PID=""
load

# 3. PostgreSQL: a fresh cluster, fsync on.
PG_PORT=$(free_port)
mkdir "$WORK/pg" "$WORK/pgsock"
[ "$(id -u)" -eq 0 ] && chown postgres: "$WORK/pg" "$WORK/pgsock"
as_postgres "$PGBIN/initdb" -D "$WORK/pg" -U postgres -A trust -E UTF8 --no-locale >"$WORK/initdb.log" 2>&1 ||
    { cat "$WORK/initdb.log" >&2; exit 1; }
cat >>"$WORK/pg/postgresql.conf" <<CONF
port = $PG_PORT
listen_addresses = '127.0.0.1'
unix_socket_directories = '$WORK/pgsock'
fsync = on
synchronous_commit = on
shared_buffers = 256MB
max_connections = 200
CONF
as_postgres "$PGBIN/pg_ctl" -D "$WORK/pg" -l "$WORK/pgsock/pg.log" -w start >/dev/null ||
    { echo "run_multi: postgres did not start:" >&2; tail -20 "$WORK/pgsock/pg.log" >&2; exit 1; }
PG_STARTED=1
as_postgres "$PGBIN/createdb" -h 127.0.0.1 -p "$PG_PORT" -U postgres bench
say "# $("$PGBIN/postgres" --version); fsync=on synchronous_commit=on"
run "$BP" "host=127.0.0.1 port=$PG_PORT dbname=bench user=postgres" "$SECS" "$THREADS" "$ROUNDS"
load

mkdir -p "$ROOT/bench/results"
DEST="$ROOT/bench/results/multi-$(date -u +%Y%m%dT%H%M%SZ).txt"
cp "$OUT" "$DEST"
echo "run_multi: saved $DEST" >&2
