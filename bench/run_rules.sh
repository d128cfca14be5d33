#!/usr/bin/env bash
# bench/run_rules.sh [BUILD_DIR] - delivery to a local webhook (issue 13):
# a Stele rule beside a hand-written worker (bench_rules_worker: the SSE feed,
# one POST per event) in the same run, against the same sink: events/s, and
# append-to-delivery latency p50/p99 under steady appends
# (bench/bench_rules.py describes each part).
#
#   bench/run_rules.sh build          full run (about 1 minute), saved to
#                                     bench/results/rules-<UTC date-time>.txt
#   QUICK=1 bench/run_rules.sh build  short smoke run (not saved)
#   N=50000 RATE=1000 DURATION=10 ... sizes
set -euo pipefail
BUILD="${1:-build}"
cd "$(dirname "$0")/.."
cmake --build "$BUILD" --target stele bench_rules_worker -j2 >/dev/null
STELE_BIN="$(pwd)/$BUILD/stele" exec python3 bench/bench_rules.py "$BUILD"
