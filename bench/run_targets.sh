#!/usr/bin/env bash
# bench/run_targets.sh [BUILD_DIR] - rule delivery to real systems (issue 14):
# events/s and append-to-target latency p50/p99 for the postgres, nats and
# rabbitmq targets, each against a server this run starts (bench/bench_targets.py
# describes each part). Needs postgresql and nats-server (scripts/deps.sh).
#
#   bench/run_targets.sh build            20,000 events per target (under a
#                                         minute), saved to
#                                         bench/results/targets-<UTC date-time>.txt
#   EVENTS=5000 bench/run_targets.sh ...  another size
set -euo pipefail
BUILD="${1:-build}"
cd "$(dirname "$0")/.."
cmake --build "$BUILD" --target stele rmq_tool -j2 >/dev/null
mkdir -p bench/results
OUT="bench/results/targets-$(date -u +%Y%m%dT%H%M%SZ).txt"
STELE_BIN="$(pwd)/$BUILD/stele" RMQ_TOOL="$(pwd)/$BUILD/tests/rmq_tool" python3 bench/bench_targets.py | tee "$OUT"
