#!/usr/bin/env bash
# bench/run_aws.sh [BUILD_DIR] - the Kinesis and DynamoDB rule targets
# (issue 14) beside seed 000's path (a Node worker on the SSE feed with the
# official @aws-sdk clients), in the same run, against kinesalite and
# DynamoDB Local (tests/aws installs both). bench/bench_aws.py describes
# each part.
#
#   bench/run_aws.sh build          full run (about 2 minutes), saved to
#                                   bench/results/aws-<UTC date-time>.txt
#   QUICK=1 bench/run_aws.sh build  short smoke run (not saved)
set -euo pipefail
BUILD="${1:-build}"
cd "$(dirname "$0")/.."
cmake --build "$BUILD" --target stele aws_cli -j2 >/dev/null
if [ -n "${QUICK:-}" ]; then
  STELE_BIN="$(pwd)/$BUILD/stele" exec python3 bench/bench_aws.py "$BUILD"
fi
mkdir -p bench/results
out="bench/results/aws-$(date -u +%Y%m%dT%H%M%SZ).txt"
STELE_BIN="$(pwd)/$BUILD/stele" python3 bench/bench_aws.py "$BUILD" | tee "$out"
echo "saved $out"
