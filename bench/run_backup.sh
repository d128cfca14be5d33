#!/usr/bin/env bash
# bench/run_backup.sh [BUILD_DIR] - the backup benchmark (issue 19): a store
# of 10M events, backed up online (stele_backup) while durable appends go on,
# the appends' throughput beside the same appends without the backup in the
# same run, an incremental second backup, and a restore to the position in
# the middle (copy, index rebuild, check). `make bench-backup` runs it.
#
#   bench/run_backup.sh build          full size (10M events, ~2.9 GB of log),
#                                      saved to bench/results/backup-<UTC>.txt
#   QUICK=1 bench/run_backup.sh build  1M events, a smoke run (not saved)
#   BENCH_DIR=/mnt/disk ...            where the stores go (default $TMPDIR
#                                      or /tmp); needs ~2.5x the log size
#
# Nothing here judges a number: docs/benchmarks.md does.
set -euo pipefail

BUILD=${1:-build}
case "$BUILD" in /*) ;; *) BUILD="$PWD/$BUILD" ;; esac

if [ "${QUICK:-0}" = 1 ]; then
    EVENTS=1000000 SECS=3
else
    EVENTS=10000000 SECS=10
fi

# shellcheck source=bench/lib.sh
. "$(dirname "$0")/lib.sh"

bench_build "$BUILD" bench_backup
BIN="$BUILD/bench/bench_backup"
bench_workdir backup

bench_header "stele backup and restore benchmark" src include
say "# sizes: ${QUICK:+QUICK=$QUICK }events=$EVENTS streams=1000 batch=1000 writers=4 append_secs=$SECS"
load
say "# \$ $BIN --dir $WORK --events $EVENTS --streams 1000 --batch 1000 --writers 4 --secs $SECS"
"$BIN" --dir "$WORK" --events "$EVENTS" --streams 1000 --batch 1000 --writers 4 --secs "$SECS" | tee -a "$OUT"
load

bench_save backup
