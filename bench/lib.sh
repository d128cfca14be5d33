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
