# shellcheck shell=bash
# bench/lib.sh - what the bench/run_*.sh scripts share, sourced by them
# (not run): installing missing Debian packages, building the targets, a
# temporary work directory removed at the end (also on failure or Ctrl-C)
# with everything started in it stopped first, `stele serve` on a free port,
# a fresh PostgreSQL cluster (fsync on), the results header and saving the
# results to bench/results/.
#
# The sourcing script sets `set -euo pipefail`; it may set BENCH_DIR (where
# the work directory goes), QUICK=1 (bench_save keeps nothing) and
# STELE_COMMIT (the commit named in the header). Messages name the script
# ($BENCH_NAME, "run_multi" for bench/run_multi.sh).

BENCH_NAME=$(basename "$0" .sh)
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
STELE_PID="" STELE_PORT="" PG_STARTED=0 PGBIN=""

bench_die() {
    echo "$BENCH_NAME: $*" >&2
    exit 1
}

# bench_deps PACKAGE...: install the Debian packages that are missing.
bench_deps() {
    local p missing=""
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
    done
    if [ -n "$missing" ]; then
        echo "$BENCH_NAME: installing$missing" >&2
        export DEBIAN_FRONTEND=noninteractive
        $SUDO apt-get update -qq
        # shellcheck disable=SC2086
        $SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
    fi
}

# bench_build BUILD_DIR TARGET...: configure (RelWithDebInfo) and build.
bench_build() {
    local build=$1
    shift
    cmake -S "$ROOT" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
    cmake --build "$build" -j "$(nproc)" --target "$@" >/dev/null
}

# bench_workdir TAG: $WORK, a fresh directory under $BENCH_DIR (or $TMPDIR,
# or /tmp), readable by the postgres user; $OUT, the results file in it.
# On exit: bench_cleanup.
bench_workdir() {
    local base=${BENCH_DIR:-${TMPDIR:-/tmp}}
    mkdir -p "$base"
    WORK=$(mktemp -d "$base/stele-$1-bench.XXXXXX")
    chmod 755 "$WORK"
    OUT="$WORK/results.txt"
    trap bench_cleanup EXIT
    trap 'exit 130' INT TERM
}

# Stop what is running (stele serve, the process in $REDIS_PID if any,
# PostgreSQL), remove $WORK.
bench_cleanup() {
    set +e
    stop_stele
    [ "${#SPIDS[@]}" -gt 0 ] && stele_pg_stop
    if [ -n "${REDIS_PID:-}" ]; then
        kill -TERM "$REDIS_PID" 2>/dev/null
        wait "$REDIS_PID" 2>/dev/null
    fi
    pg_stop
    rm -rf "$WORK"
}

as_postgres() {
    if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

# free_port: a TCP port nothing listens on.
free_port() {
    local p
    for _ in $(seq 1 100); do
        p=$((20000 + RANDOM % 40000))
        if ! ss -Htln "sport = :$p" | grep -q .; then
            echo "$p"
            return
        fi
    done
    bench_die "no free port found"
}

# start_stele DATA_DIR: `stele serve` ($STELE, the binary) on a free port:
# $STELE_PORT, $STELE_PID; its log goes to $WORK/stele.log.
start_stele() {
    rm -f "$WORK/ready"
    STELE_READY_FD=3 "$STELE" serve --port 0 --data "$1" --log-level error \
        3>"$WORK/ready" 2>>"$WORK/stele.log" &
    STELE_PID=$!
    for _ in $(seq 1 600); do grep -q ready "$WORK/ready" 2>/dev/null && break; sleep 0.1; done
    STELE_PORT=$(awk '/ready/ {print $2}' "$WORK/ready")
    [ -n "$STELE_PORT" ] || { cat "$WORK/stele.log" >&2; bench_die "stele serve did not start (log above)"; }
}

stop_stele() {
    if [ -n "$STELE_PID" ]; then
        kill -TERM "$STELE_PID" 2>/dev/null || true
        wait "$STELE_PID" 2>/dev/null || true
        STELE_PID=""
    fi
}

# bench_test_pki DIR: a test CA (DIR/ca.pem) and a server certificate for
# localhost and 127.0.0.1 (DIR/srv.pem, DIR/srv.key), P-256 as most
# deployments' ECDSA certificates.
bench_test_pki() {
    mkdir -p "$1"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$1/ca.key" \
        -out "$1/ca.pem" -days 2 -subj /CN=bench-ca 2>/dev/null
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$1/srv.key" \
        -out "$1/srv.csr" -subj /CN=localhost 2>/dev/null
    echo "subjectAltName=DNS:localhost,IP:127.0.0.1" >"$1/ext"
    openssl x509 -req -in "$1/srv.csr" -CA "$1/ca.pem" -CAkey "$1/ca.key" -CAcreateserial \
        -out "$1/srv.pem" -days 2 -extfile "$1/ext" 2>/dev/null
}

# pg_start [SETTING...]: a fresh PostgreSQL cluster in $WORK/pg on a free
# port with fsync and synchronous_commit on (the defaults, stated anyway)
# and the given postgresql.conf lines ("shared_buffers = 512MB"), started,
# with a database `bench`: $PG_PORT, $PG_PID, $PGC (its libpq conninfo),
# $PGBIN (the newest installed PostgreSQL's bin directory).
# shellcheck disable=SC2034 # PG_PID and PGC are for the caller
pg_start() {
    # shellcheck disable=SC2012 # the directories are version numbers
    PGBIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
    PG_PORT=$(free_port)
    mkdir "$WORK/pg" "$WORK/pgsock"
    [ "$(id -u)" -eq 0 ] && chown postgres: "$WORK/pg" "$WORK/pgsock"
    as_postgres "$PGBIN/initdb" -D "$WORK/pg" -U postgres -A trust -E UTF8 --no-locale >"$WORK/initdb.log" 2>&1 ||
        { cat "$WORK/initdb.log" >&2; bench_die "initdb failed (log above)"; }
    {
        echo "port = $PG_PORT"
        echo "listen_addresses = '127.0.0.1'"
        echo "unix_socket_directories = '$WORK/pgsock'"
        echo "fsync = on"
        echo "synchronous_commit = on"
        printf '%s\n' "$@"
    } >>"$WORK/pg/postgresql.conf"
    as_postgres "$PGBIN/pg_ctl" -D "$WORK/pg" -l "$WORK/pgsock/pg.log" -w start >/dev/null ||
        { tail -20 "$WORK/pgsock/pg.log" >&2; bench_die "postgres did not start (log above)"; }
    PG_STARTED=1
    as_postgres "$PGBIN/createdb" -h 127.0.0.1 -p "$PG_PORT" -U postgres bench
    PGC="host=127.0.0.1 port=$PG_PORT dbname=bench user=postgres"
    PG_PID=$(head -1 "$WORK/pg/postmaster.pid")
}

pg_stop() {
    if [ "$PG_STARTED" = 1 ]; then
        as_postgres "$PGBIN/pg_ctl" -D "$WORK/pg" -m fast -w stop >/dev/null 2>&1 || true
        PG_STARTED=0
    fi
}

say() { printf '%s\n' "$*" | tee -a "$OUT"; }
load() {
    say "# load: $(cut -d' ' -f1-3 /proc/loadavg) (1/5/15 min)$(
        [ -r /proc/pressure/io ] && printf '; io pressure: %s' "$(head -1 /proc/pressure/io)")"
}

# field NAME: the value of NAME=... in the line on stdin.
field() { tr ' ' '\n' | awk -F= -v k="$1" '$1 == k {print $2; exit}'; }

# median KEY N FILE: of FILE's N result lines, the median one by the value
# of KEY, followed by " rounds_KEY=" and every line's value of KEY.
median() {
    local key=$1 n=$2 file=$3 all med
    all=$(while read -r l; do echo "$l" | field "$key"; done <"$file" | paste -sd, -)
    med=$(while read -r l; do echo "$(echo "$l" | field "$key") $l"; done <"$file" |
        sort -g | awk -v n="$n" 'NR == int((n + 1) / 2) {sub(/^[^ ]* /, ""); print}')
    echo "$med rounds_$key=$all"
}

# bench_header TITLE [DIR...]: the results' first lines: TITLE and the
# date, the commit (marked if any DIR has uncommitted changes), the
# machine, the disk of $WORK.
bench_header() {
    local title=$1 dirty="" list="" d i=0
    shift
    say "# $title, $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    if [ -n "${STELE_COMMIT:-}" ]; then
        say "# commit: $STELE_COMMIT"
    else
        for d in "$@"; do # "src/, include/ or server/"
            i=$((i + 1))
            if [ "$i" -eq 1 ]; then list="$d/"; elif [ "$i" -eq $# ]; then list="$list or $d/"; else list="$list, $d/"; fi
        done
        if [ $# -gt 0 ] && ! git -C "$ROOT" diff --quiet HEAD -- "$@" 2>/dev/null; then
            dirty=" ($list modified)"
        fi
        say "# commit: $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)$dirty"
    fi
    say "# machine: $(nproc) vCPU, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo) RAM, $(
        grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'), $(uname -sr)"
    say "# disk: $(df -T "$WORK" | awk 'NR==2 {print $1, $2}') ($WORK)"
}

# bench_save NAME: keep $OUT as bench/results/NAME-<UTC date-time>.txt,
# unless QUICK=1.
bench_save() {
    [ "${QUICK:-0}" = 1 ] && return 0
    local dest
    mkdir -p "$ROOT/bench/results"
    dest="$ROOT/bench/results/$1-$(date -u +%Y%m%dT%H%M%SZ).txt"
    cp "$OUT" "$dest"
    echo "$BENCH_NAME: saved $dest" >&2
}

# ------------------------------------------------------------ PostgreSQL peers
# (bench/run_pg.sh and bench/run_pg_profile.sh)

# pg_seed_schema: in the cluster pg_start made, seeds/001's events table
# (bench/pg_seed.h's) in database `bench`, and pgbench scripts for it:
# $WORK/seed1.sql (one event per transaction: the version read and the row
# inserted in one statement; UNIQUE (stream_id, version) is the concurrency
# check) and $WORK/seed1000.sql (1,000 events per transaction). Sets PSQL
# (psql on the cluster, as an array).
pg_seed_schema() {
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
    cat >"$WORK/seed1000.sql" <<'SQL'
INSERT INTO events (stream_id, stream_type, event_type, event_data, version)
SELECT 'Batch-' || :client_id, 'Batch', 'OrderPlaced', '{"customer":"c-1","total":4200,"items":[1,2,3]}',
       v.m + g FROM generate_series(1, 1000) g,
       (SELECT COALESCE(MAX(version), 0) AS m FROM events WHERE stream_id = 'Batch-' || :client_id) v;
SQL
}

# tree_cpu_s PID: CPU seconds (user + system) of PID, its live descendants
# and the children it has reaped (PostgreSQL's postmaster reaps every
# backend: its tree's CPU is the cluster's).
tree_cpu_s() {
    local tck
    tck=$(getconf CLK_TCK)
    ps -e -o pid=,ppid= | awk -v root="$1" '
        { parent[$1] = $2 }
        END { n = 1; keep[root] = 1; changed = 1
              while (changed) { changed = 0
                  for (p in parent) if (!(p in keep) && (parent[p] in keep)) { keep[p] = 1; changed = 1 } }
              for (p in keep) print p }' |
        while read -r p; do
            # Fields after the command (which may hold spaces): utime is
            # the 14th of the line, cutime and cstime the 16th and 17th.
            sed 's/^.*) //' "/proc/$p/stat" 2>/dev/null |
                awk -v self="$([ "$p" = "$1" ] && echo 1 || echo 0)" \
                    '{ t = $12 + $13; if (self) t += $14 + $15; print t }'
        done | awk -v tck="$tck" '{ s += $1 } END { printf "%.2f", s / tck }'
}

# pg_seed_bench FILE CLIENTS EVENTS_PER_TXN: pgbench on seeds/001's schema
# for $SECS seconds; prints "events_per_s=... tps=... lat_avg_ms=...
# pg_cpu_s=..." (pg_cpu_s: the cluster's CPU seconds during the run).
pg_seed_bench() {
    local r tps c0 c1
    c0=$(tree_cpu_s "$PG_PID")
    r=$(as_postgres "$PGBIN/pgbench" -n -h 127.0.0.1 -p "$PG_PORT" -U postgres -f "$1" -c "$2" \
        -j 2 -T "$SECS" bench 2>&1)
    c1=$(tree_cpu_s "$PG_PID")
    tps=$(echo "$r" | awk '/^tps = / {print $3; exit}')
    [ -n "$tps" ] || { echo "$r" | tail -5 >&2; bench_die "pgbench failed (output above)"; }
    echo "events_per_s=$(awk -v t="$tps" -v k="$3" 'BEGIN {printf "%.0f", t * k}') tps=$tps" \
        "$(echo "$r" | awk '/latency average/ {print "lat_avg_ms=" $4}')" \
        "pg_cpu_s=$(awk -v a="$c0" -v b="$c1" 'BEGIN {printf "%.2f", b - a}')"
}

# stele_pg_start N DB [STELE_BINARY]: a fresh database DB in the cluster
# and N `stele serve --store postgresql://.../DB` (each on a free port):
# SPIDS and SPORTS (arrays); logs to $WORK/stele.log. stele_pg_stop stops
# them.
SPIDS=() SPORTS=()
stele_pg_start() {
    local bin=${3:-$STELE} uri="postgresql://postgres@127.0.0.1:$PG_PORT/$2" i
    SPIDS=() SPORTS=()
    "${PSQL[@]}" -d postgres -c "CREATE DATABASE $2" >/dev/null
    for i in $(seq 1 "$1"); do
        rm -f "$WORK/ready$i"
        STELE_READY_FD=3 "$bin" serve --port 0 --store "$uri" --log-level error \
            3>"$WORK/ready$i" 2>>"$WORK/stele.log" &
        SPIDS+=($!)
        for _ in $(seq 1 600); do grep -q ready "$WORK/ready$i" 2>/dev/null && break; sleep 0.1; done
        SPORTS+=("$(awk '/ready/ {print $2}' "$WORK/ready$i")")
        [ -n "${SPORTS[-1]}" ] || { cat "$WORK/stele.log" >&2; bench_die "stele serve did not start"; }
    done
}

stele_pg_stop() {
    local p
    for p in "${SPIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    for p in "${SPIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    SPIDS=()
}
