#!/usr/bin/env bash
# bench/run_pipeline.sh [BUILD_DIR] [BASE_COMMIT] - the local writer's
# pipeline (docs/architecture.md, "The pipeline"; docs/benchmarks.md, "The
# writer's pipeline") against the serial writer before it, in one run:
# bench_engine from BUILD_DIR (default build) and from BASE_COMMIT (default
# 0c55e79, the last commit before the pipeline; built once into
# /tmp/stele-pipeline-base-<commit>) take turns (ABAB...) on the same disk,
# ROUNDS times (default 5) per workload:
#
#   64x1     64 threads x 1 event per append, 64,000 events (goal 300,000/s)
#   1x1000   1 thread x 1,000 events per append, 400,000 events (goal 3M/s)
#   1x1      1 thread x 1 event per append, 500 events
#   fsync    the disk's own sequential fdatasync rate (same run)
#
# and prints each round, then per workload and side the median events/s and
# the median CPU µs per event (process CPU, all threads). Nothing is judged:
# the machine's load decides how far wall-clock figures can be trusted.
#   BENCH_DIR=/mnt/disk ROUNDS=9 bench/run_pipeline.sh build
set -euo pipefail
BUILD=${1:-build}
BASE=${2:-0c55e79}
ROUNDS=${ROUNDS:-5}
cmake --build "$BUILD" --target bench_engine -j2 >/dev/null
BASEDIR=/tmp/stele-pipeline-base-$BASE
if [ ! -x "$BASEDIR/build/bench/bench_engine" ]; then
    rm -rf "$BASEDIR"
    mkdir -p "$BASEDIR"
    git archive "$BASE" | tar -x -C "$BASEDIR"
    cmake -S "$BASEDIR" -B "$BASEDIR/build" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
    cmake --build "$BASEDIR/build" --target bench_engine -j2 >/dev/null
fi
DIR=$(mktemp -d "${BENCH_DIR:-/tmp}/stele-bench-pipeline-XXXXXX")
trap 'rm -rf "$DIR"' EXIT
declare -A ARGS=(
    [64x1]="--threads 64 --batch 1 --events 64000"
    [1x1000]="--threads 1 --batch 1000 --events 400000"
    [1x1]="--threads 1 --batch 1 --events 500"
)
echo "# $(date -u +%FT%TZ) $(uname -srm), $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg); pipeline: git $(git rev-parse --short HEAD), serial: $BASE"
RES="$DIR/results"
: >"$RES"
for r in $(seq 1 "$ROUNDS"); do
    for w in 64x1 1x1000 1x1; do
        for side in serial pipeline; do
            bin="$BUILD/bench/bench_engine"
            [ $side = serial ] && bin="$BASEDIR/build/bench/bench_engine"
            out=$("$bin" append --dir "$DIR/s" ${ARGS[$w]})
            rm -rf "$DIR/s"
            eps=$(grep -o 'events_per_s=[0-9.]*' <<<"$out" | cut -d= -f2)
            secs=$(grep -o ' secs=[0-9.]*' <<<"$out" | cut -d= -f2)
            cpu=$(grep -o 'cpu_pct=[0-9.]*' <<<"$out" | cut -d= -f2)
            ev=$(grep -o ' events=[0-9]*' <<<"$out" | cut -d= -f2)
            apg=$(grep -o 'appends_per_group=[0-9.]*' <<<"$out" | cut -d= -f2)
            cus=$(awk -v c="$cpu" -v s="$secs" -v e="$ev" 'BEGIN{printf "%.2f", c/100*s/e*1e6}')
            echo "round $r $w $side events_per_s=$eps cpu_us_per_event=$cus appends_per_group=$apg"
            echo "$w $side $eps $cus" >>"$RES"
        done
    done
    "$BUILD/bench/bench_engine" fsync --dir "$DIR/f" --events 500 | sed "s/^/round $r /"
    rm -rf "$DIR/f"
done
echo "# medians over $ROUNDS rounds"
for w in 64x1 1x1000 1x1; do
    for side in serial pipeline; do
        eps=$(awk -v w=$w -v s=$side '$1==w && $2==s {print $3}' "$RES" | sort -n | awk '{a[NR]=$1} END{print a[int((NR+1)/2)]}')
        cus=$(awk -v w=$w -v s=$side '$1==w && $2==s {print $4}' "$RES" | sort -n | awk '{a[NR]=$1} END{print a[int((NR+1)/2)]}')
        echo "$w $side median_events_per_s=$eps median_cpu_us_per_event=$cus"
    done
done
