#!/usr/bin/env bash
# bench/run_floor.sh [BUILD_DIR] - issue 21's unmet goals on this machine:
# Stele beside the floor (bench/bench_floor.c: the same work done by
# programs with none of Stele's code, the best a simple implementation
# reaches here), in the same run, alternating, on the same disk:
#
#   disk    the disk's own rate: 4 KiB pwrite + fdatasync on a pre-zeroed
#           file in the stores' directory (bench_engine fsync, as
#           run_wire.sh: the goal's denominator for both)
#   1x1     bench_http, 1 connection, 1 event per append, against `stele
#           serve` and against `bench_floor serve` (floor: one epoll thread:
#           recv, pwrite, fdatasync, send; floorho: Stele's shape, an event
#           loop handing each turn's appends to a writer thread that syncs
#           and answers); the floor without fdatasync too (floornosync: the
#           round trip alone). Goal: Stele >= 0.9 of disk
#   noop    wrk -t2 -c256 GET /health/live against stele, floor, floorho
#   256x1   bench_http, 256 connections, 1 event per append, against the
#           same. Goal: Stele >= 0.75 of Stele's noop
#   wrk256  wrk POSTing 1 event per request, 256 connections, the same
#   64x1    in process, 64 threads x 1 event: bench_engine append against
#           bench_floor group (mutex, futex, one writer thread). Goal 300,000/s
#   1x1000  in process, 1 thread x 1,000 events: the same. Goal 3M/s
#
# For each goal the summary prints Stele / disk (or the goal's own
# denominator), floor / disk and Stele / floor, medians of the rounds; at
# 1x1 also each run against a short disk probe right before it (ADJ_N
# writes, default 500: the `adjacent` lines).
#
#   bench/run_floor.sh build                 3 rounds, about 6 minutes
#   ROUNDS=5 SECS=5 WARM=1 ...               rounds, seconds per run, warm-up
#   STELE_VARIANTS="spin=STELE_WRITER_SPIN_US=50" ...
#                    another `stele serve` per variant, with those
#                    environment settings (comma-separated), measured at
#                    1x1, noop and 256x1 in the same rounds (stele-NAME)
#   FLOOR_SPIN_US=50 ...   the floor's loop also polls that long before it
#                    sleeps (target floorspin, 1x1 only)
#   TMPFS=1 ...      Stele with its store on /dev/shm too (target steletmpfs,
#                    1x1 only): its round trip without the disk, beside
#                    floornosync's
#   PARTS="1x1 256 engine" ...   which parts run: 1x1 (every server), 256
#                    (noop, 256x1 and wrk256), engine (in process)
#   BENCH_DIR=/mnt/disk ...  where the stores go ($TMPDIR or /tmp; not tmpfs)
#
# The order of the targets rotates in every round. Saved to
# bench/results/floor-<UTC date-time>.txt. Nothing asserts a figure.
set -euo pipefail

BUILD=${1:-build}
case "$BUILD" in /*) ;; *) BUILD="$PWD/$BUILD" ;; esac
ROUNDS=${ROUNDS:-3}
SECS=${SECS:-5}
WARM=${WARM:-1}
FSYNC_N=${FSYNC_N:-3000}
ADJ_N=${ADJ_N:-500}
ADJ=""
N64=${N64:-256000}
N1000=${N1000:-2000000}
PARTS=${PARTS:-"1x1 256 engine"}
FLOOR_BYTES=${FLOOR_BYTES:-300}

# shellcheck source=bench/lib.sh
. "$(dirname "$0")/lib.sh"
bench_deps wrk linux-perf
bench_build "$BUILD" stele bench_http bench_engine bench_floor
BH="$BUILD/bench/bench_http"
BE="$BUILD/bench/bench_engine"
BF="$BUILD/bench/bench_floor"
bench_workdir floor
case "$(df -T "$WORK" | awk 'NR==2 {print $2}')" in
    tmpfs | ramfs) bench_die "$WORK is on tmpfs: set BENCH_DIR to a directory on the disk" ;;
esac

# ------------------------------------------------------------ servers
declare -A PORT PID ENVS
SERVERS="stele floor floorho"
ENVS[stele]=""
for v in ${STELE_VARIANTS:-}; do
    SERVERS="$SERVERS stele-${v%%=*}"
    ENVS[stele-${v%%=*}]=${v#*=}
done
[ -n "${FLOOR_SPIN_US:-}" ] && SERVERS="$SERVERS floorspin"
SHM=""
if [ "${TMPFS:-0}" = 1 ]; then
    SERVERS="$SERVERS steletmpfs"
    SHM=$(mktemp -d /dev/shm/stele-floor.XXXXXX)
fi
SERVERS="$SERVERS floornosync"

start_server() { # start_server NAME
    local s=$1 envs=()
    rm -f "$WORK/ready-$s"
    mkdir -p "$WORK/data-$s"
    case "$s" in
        steletmpfs)
            STELE_READY_FD=3 "$BUILD/stele" serve --port 0 --data "$SHM/data" \
                --log-level error 3>"$WORK/ready-$s" 2>>"$WORK/$s.log" &
            ;;
        stele*)
            IFS=, read -r -a envs <<<"${ENVS[$s]}"
            env "${envs[@]}" STELE_READY_FD=3 "$BUILD/stele" serve --port 0 --data "$WORK/data-$s" \
                --log-level error 3>"$WORK/ready-$s" 2>>"$WORK/$s.log" &
            ;;
        floor) "$BF" serve --dir "$WORK/data-$s" --ready-fd 3 3>"$WORK/ready-$s" >>"$WORK/$s.log" 2>&1 & ;;
        floorho)
            "$BF" serve --dir "$WORK/data-$s" --handoff --ready-fd 3 3>"$WORK/ready-$s" \
                >>"$WORK/$s.log" 2>&1 &
            ;;
        floorspin)
            "$BF" serve --dir "$WORK/data-$s" --spin-us "$FLOOR_SPIN_US" --ready-fd 3 \
                3>"$WORK/ready-$s" >>"$WORK/$s.log" 2>&1 &
            ;;
        floornosync)
            "$BF" serve --dir "$WORK/data-$s" --nosync --ready-fd 3 3>"$WORK/ready-$s" \
                >>"$WORK/$s.log" 2>&1 &
            ;;
    esac
    PID[$s]=$!
    for _ in $(seq 1 600); do grep -q ready "$WORK/ready-$s" 2>/dev/null && break; sleep 0.1; done
    PORT[$s]=$(awk '/ready/ {print $2}' "$WORK/ready-$s")
    [ -n "${PORT[$s]}" ] || { cat "$WORK/$s.log" >&2; bench_die "$s did not start"; }
}
stop_servers() {
    local s
    for s in $SERVERS; do
        [ -n "${PID[$s]:-}" ] && { kill -TERM "${PID[$s]}" 2>/dev/null || true; wait "${PID[$s]}" 2>/dev/null || true; }
        PID[$s]=""
    done
}
if [[ " $PARTS " == *" 1x1 "* || " $PARTS " == *" 256 "* ]]; then
    for s in $SERVERS; do start_server "$s"; done
fi
trap 'stop_servers; [ -n "$SHM" ] && rm -rf "$SHM"; bench_cleanup' EXIT
cp "$(dirname "$0")/wrk_post.lua" "$WORK/post.lua"

bench_header "issue 21's goals: Stele beside the machine's floor (bench_floor), same run" src include server bench
say "# servers: $SERVERS$(for s in $SERVERS; do [ -n "${ENVS[$s]:-}" ] && printf ' %s: %s' "$s" "${ENVS[$s]}"; done)"
say "# $(wrk --version 2>&1 | head -1); rounds=$ROUNDS secs=$SECS warmup=$WARM parts=\"$PARTS\" floor_record_bytes=$FLOOR_BYTES"

# wire TARGET WORKLOAD CMD...: one load generator run against TARGET; its
# rate, p50, and the server's CPU and system calls per request (perf stat
# on the server over the whole run, warm-up included, divided by every
# request of the run: the requests counted by the load generator over its
# counted part, scaled by the run's length over that part).
wire() {
    local t=$1 wl=$2 p=${PID[$1]} rate p50 reqs errs ps
    shift 2
    perf stat -x, -e task-clock,raw_syscalls:sys_enter -p "$p" -o "$WORK/stat" &
    ps=$!
    if ! "$@" >"$WORK/out" 2>&1; then
        cat "$WORK/out" >&2
        kill -0 "$p" 2>/dev/null || wait "$p" ||
            echo "$BENCH_NAME: $t exited with status $?; its log: $(tail -5 "$WORK/$t.log")" >&2
        bench_die "$t $wl failed"
    fi
    kill -INT "$ps" 2>/dev/null || true
    wait "$ps" 2>/dev/null || true
    if grep -q '^Requests/sec' "$WORK/out"; then # wrk
        rate=$(awk '/^Requests\/sec/ {printf "%.0f", $2}' "$WORK/out")
        p50=$(awk '$1 == "50%" {v = $2; if (v ~ /us$/) {sub(/us/, "", v); v /= 1000} else if (v ~ /ms$/) sub(/ms/, "", v); else if (v ~ /s$/) {sub(/s/, "", v); v *= 1000}; printf "%.3f", v}' "$WORK/out")
        reqs=$(awk '/requests in/ {print $1}' "$WORK/out")
        errs=$(awk '/Non-2xx|Socket errors/ {n++} END {print n + 0}' "$WORK/out")
    else
        rate=$(tr ' ' '\n' <"$WORK/out" | awk -F= '$1 == "requests_per_s" {print $2}')
        p50=$(tr ' ' '\n' <"$WORK/out" | awk -F= '$1 == "p50_ms" {print $2}')
        reqs=$(tr ' ' '\n' <"$WORK/out" | awk -F= '$1 == "requests" {print $2}')
        errs=$(tr ' ' '\n' <"$WORK/out" | awk -F= '$1 == "errors" || $1 == "conflicts" {s += $2} END {print s + 0}')
    fi
    # bench_http counts SECS of WARM + SECS (plus the drain); wrk all of it
    [ "$wl" = noop ] || [ "$wl" = wrk256 ] || reqs=$(awk -v r="${reqs:-0}" -v w="$WARM" -v s="$SECS" \
        'BEGIN {printf "%.0f", r * (w + s) / s}')
    say "floor round=$ROUND target=$t workload=$wl rate=$rate p50_ms=${p50:-0} errors=$errs" \
        "${ADJ:+disk_before=$ADJ}" \
        "$(awk -F, -v n="${reqs:-0}" '/task-clock/ {c = $1} /raw_syscalls/ {k = $1}
            END {if (n > 0) printf "server_cpu_us_per_req=%.1f syscalls_per_req=%.2f", c * 1000 / n, k / n}' "$WORK/stat")"
}

# rot LIST: LIST rotated by the round number.
rot() {
    local a n i out=""
    read -r -a a <<<"$1"
    n=${#a[@]}
    for i in $(seq 0 $((n - 1))); do out="$out ${a[$(((i + ROUND) % n))]}"; done
    echo "$out"
}

PREFIX="f$(date +%s)"
# wrk runs WARM + SECS whole seconds (it has no warm-up of its own)
WRK_S=$(awk -v w="$WARM" -v s="$SECS" 'BEGIN {printf "%d", w + s + 0.999}')
export ROUND
for ROUND in $(seq 1 "$ROUNDS"); do
    load
    sync
    "$BE" fsync --dir "$WORK/fsync" --events "$FSYNC_N" >"$WORK/fs.txt"
    say "floor round=$ROUND target=disk workload=fsync rate=$(tr ' ' '\n' <"$WORK/fs.txt" | awk -F= '$1 == "prezeroed" {print $2}') p50_ms=$(tr ' ' '\n' <"$WORK/fs.txt" | awk -F= '$1 == "prezeroed_p50_us" {printf "%.3f", $2 / 1000}') errors=0"
    if [[ " $PARTS " == *" 1x1 "* ]]; then
        for t in $(rot "$SERVERS"); do
            sync
            # The disk right before each 1x1 run too (ADJ_N writes): the
            # ratio to it moves less than the ratio to the round's probe.
            "$BE" fsync --dir "$WORK/fsync" --events "$ADJ_N" >"$WORK/fs.txt"
            ADJ=$(tr ' ' '\n' <"$WORK/fs.txt" | awk -F= '$1 == "prezeroed" {print $2}')
            wire "$t" 1x1 "$BH" --port "${PORT[$t]}" --mode append --clients 1 --batch 1 \
                --warmup "$WARM" --duration "$SECS" --prefix "${PREFIX}r${ROUND}${t}a"
            ADJ=""
        done
    fi
    if [[ " $PARTS " == *" 256 "* ]]; then
        for t in $(rot "$SERVERS"); do
            case "$t" in floorspin | floornosync | steletmpfs) continue ;; esac
            wire "$t" noop wrk -t2 -c256 -d"${WRK_S}s" --latency \
                "http://127.0.0.1:${PORT[$t]}/health/live"
            sync
            wire "$t" 256x1 "$BH" --port "${PORT[$t]}" --mode append --clients 256 --batch 1 \
                --warmup "$WARM" --duration "$SECS" --prefix "${PREFIX}r${ROUND}${t}b"
            sync
            wire "$t" wrk256 wrk -t2 -c256 -d"${WRK_S}s" --latency -s "$WORK/post.lua" \
                "http://127.0.0.1:${PORT[$t]}" -- "${PREFIX}r${ROUND}${t}"
        done
    fi
    if [[ " $PARTS " == *" engine "* ]]; then
        for t in $(rot "stele floor"); do
            for wl in "64x1 64 1 $N64" "1x1000 1 1000 $N1000"; do
                read -r name th b n <<<"$wl"
                sync
                if [ "$t" = stele ]; then
                    rm -rf "$WORK/eng"
                    "$BE" append --dir "$WORK/eng" --threads "$th" --batch "$b" --events "$n" \
                        --ids server --name "e$name" >"$WORK/out"
                    rm -rf "$WORK/eng"
                    say "floor round=$ROUND target=stele workload=$name rate=$(field events_per_s <"$WORK/out")" \
                        "p50_ms=$(awk -v v="$(field p50_us <"$WORK/out")" 'BEGIN {printf "%.3f", v / 1000}')" \
                        "errors=0 cpu_us_per_event=$(field cpu_us_per_event <"$WORK/out")" \
                        "appends_per_group=$(field appends_per_group <"$WORK/out")" \
                        "write_bytes_per_event=$(field write_syscall_bytes_per_event <"$WORK/out")" \
                        "group_sync_us=$(field disk_sync_us <"$WORK/out")" \
                        "ceiling=$(field ceiling_events_per_s <"$WORK/out")"
                else
                    mkdir -p "$WORK/grp"
                    "$BF" group --dir "$WORK/grp" --threads "$th" --batch "$b" --events "$n" \
                        --bytes "$FLOOR_BYTES" --rounds 1 | grep -v median >"$WORK/out"
                    say "floor round=$ROUND target=floor workload=$name rate=$(field events_per_s <"$WORK/out")" \
                        "p50_ms=$(awk -v v="$(field p50_us <"$WORK/out")" 'BEGIN {printf "%.3f", v / 1000}')" \
                        "errors=0 cpu_us_per_event=$(field cpu_us_per_event <"$WORK/out")" \
                        "appends_per_group=$(field appends_per_group <"$WORK/out")" \
                        "write_bytes_per_event=$FLOOR_BYTES group_sync_us=$(field group_sync_us <"$WORK/out")" \
                        "ceiling=$(field sync_only_events_per_s <"$WORK/out")"
                fi
            done
        done
    fi
done
load
stop_servers
for s in $SERVERS; do
    case "$s" in floor*) say "# $s: $(grep '^floor serve' "$WORK/$s.log" | tail -1)" ;; esac
done

# ------------------------------------------------------------ summary
say "# medians of $ROUNDS rounds, and each goal's ratios (same run)"
say "$(grep '^floor round=' "$OUT" | python3 -c '
import statistics, sys
rows = {}
for line in sys.stdin:
    kv = dict(x.split("=", 1) for x in line.split()[1:] if "=" in x)
    rows.setdefault((kv["target"], kv["workload"]), []).append(kv)
med = {}
def num(s):
    try:
        return float(s)
    except ValueError:
        return None
for key, rs in sorted(rows.items()):
    m = {}
    for k in ("rate", "p50_ms", "server_cpu_us_per_req", "syscalls_per_req", "cpu_us_per_event",
              "appends_per_group",
              "group_sync_us", "ceiling"):
        vals = [num(r[k]) for r in rs if k in r and num(r[k]) is not None]
        if vals:
            m[k] = statistics.median(vals)
    med[key] = m
    print("median target=%s workload=%s %s rounds_rate=%s" % (key[0], key[1],
          " ".join("%s=%g" % (k, round(v, 3)) for k, v in m.items()), ",".join(r["rate"] for r in rs)))
def rate(t, w):
    return med.get((t, w), {}).get("rate")
def q(a, b):
    return "%.3f" % (a / b) if a and b else "n/a"
disk = rate("disk", "fsync")
stele = [t for (t, w) in med if t.startswith("stele") and t != "steletmpfs" and w == "1x1"]
for t in sorted(stele):
    print("goal 1x1/disk (0.9): %s/disk=%s floor/disk=%s floornosync/disk=%s %s/floor=%s" % (
        t, q(rate(t, "1x1"), disk), q(rate("floor", "1x1"), disk), q(rate("floornosync", "1x1"), disk),
        t, q(rate(t, "1x1"), rate("floor", "1x1"))))
if rate("steletmpfs", "1x1"):
    print("round trip without the disk: steletmpfs=%.0f/s p50 %.3f ms floornosync=%.0f/s p50 %.3f ms "
          "steletmpfs/floornosync=%s" % (rate("steletmpfs", "1x1"), med[("steletmpfs", "1x1")]["p50_ms"],
          rate("floornosync", "1x1") or 0, med.get(("floornosync", "1x1"), {}).get("p50_ms", 0),
          q(rate("steletmpfs", "1x1"), rate("floornosync", "1x1"))))
if rate("floorho", "1x1"):
    print("goal 1x1/disk (0.9): floorho/disk=%s floorho/floor=%s stele/floorho=%s" % (
        q(rate("floorho", "1x1"), disk), q(rate("floorho", "1x1"), rate("floor", "1x1")),
        q(rate("stele", "1x1"), rate("floorho", "1x1"))))
if rate("floorspin", "1x1"):
    print("goal 1x1/disk (0.9): floorspin/disk=%s floorspin/floor=%s" % (
        q(rate("floorspin", "1x1"), disk), q(rate("floorspin", "1x1"), rate("floor", "1x1"))))
for t in sorted(stele):
    if rate(t, "256x1"):
        print("goal 256x1/noop (0.75): %s=%s floor=%s floor256x1/%snoop=%s %s256x1/floor256x1=%s "
              "%snoop/floornoop=%s wrk256/noop: %s=%s floor=%s" % (
            t, q(rate(t, "256x1"), rate(t, "noop")), q(rate("floor", "256x1"), rate("floor", "noop")),
            t, q(rate("floor", "256x1"), rate(t, "noop")), t, q(rate(t, "256x1"), rate("floor", "256x1")),
            t, q(rate(t, "noop"), rate("floor", "noop")),
            t, q(rate(t, "wrk256"), rate(t, "noop")), q(rate("floor", "wrk256"), rate("floor", "noop"))))
if rate("floorho", "256x1"):
    print("goal 256x1/noop (0.75): floorho=%s floorho256x1/stelenoop=%s stele256x1/floorho256x1=%s "
          "wrk256/noop: floorho=%s" % (q(rate("floorho", "256x1"), rate("floorho", "noop")),
          q(rate("floorho", "256x1"), rate("stele", "noop")), q(rate("stele", "256x1"), rate("floorho", "256x1")),
          q(rate("floorho", "wrk256"), rate("floorho", "noop"))))
# Paired: in each round the ratio of two targets measured in it, then the
# median of those (steadier than a ratio of medians here).
def paired(t, w, ref, rw):
    a = {r["round"]: num(r["rate"]) for r in rows.get((t, w), [])}
    b = {r["round"]: num(r["rate"]) for r in rows.get((ref, rw), [])}
    v = [a[k] / b[k] for k in a if k in b and a[k] and b[k]]
    return ("%.3f (rounds %s)" % (statistics.median(v), ",".join("%.2f" % x for x in v))) if v else "n/a"
for (t, w) in sorted(med):
    if w == "1x1":
        print("paired 1x1 %s/disk=%s %s/floor=%s %s/stele=%s" % (t, paired(t, w, "disk", "fsync"),
              t, paired(t, w, "floor", w), t, paired(t, w, "stele", w)))
# 1x1 against the disk probed right before it (disk_before)
for (t, w) in sorted(med):
    if w == "1x1":
        v = [num(r["rate"]) / num(r["disk_before"]) for r in rows[(t, w)]
             if num(r.get("disk_before", "x"))]
        if v:
            print("adjacent 1x1 %s/disk_before=%.3f (rounds %s)" % (t, statistics.median(v),
                  ",".join("%.2f" % x for x in v)))
for (t, w) in sorted(med):
    if w == "256x1":
        print("paired 256x1 %s: 256x1/noop=%s, 256x1/stele=%s, wrk256/noop=%s" % (t,
              paired(t, w, t, "noop"), paired(t, w, "stele", w), paired(t, "wrk256", t, "noop")))
for w, goal in (("64x1", 300000), ("1x1000", 3000000)):
    if rate("stele", w):
        print("goal %s (%d/s): stele=%.0f floor=%.0f stele/goal=%s floor/goal=%s stele/floor=%s "
              "disk-bound(floor group sync)=%.0f" % (
            w, goal, rate("stele", w), rate("floor", w) or 0, q(rate("stele", w), goal),
            q(rate("floor", w), goal), q(rate("stele", w), rate("floor", w)),
            med.get(("floor", w), {}).get("ceiling", 0)))
')"
load
bench_save floor
