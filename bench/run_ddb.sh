#!/usr/bin/env bash
# bench/run_ddb.sh [BUILD_DIR] - appends through Stele on DynamoDB Local
# (`stele serve --store dynamodb://...`, driven over HTTP by bench_http)
# beside seed 000's own path (bench/ddb_seed.js: a Node client with
# @aws-sdk/client-dynamodb doing conditional PutItem and TransactWriteItems)
# in the same run, on the same DynamoDB Local (in memory, -Xmx256m):
#   1 client x 1 event, 64 clients x 1 event, 16 clients x 100-event
#   batches (Stele: 95, the most one transaction holds with its stream,
#   category and type counters, sequencer and feed items; a 100-event append is refused with ETOOBIG,
#   shown once), and the capacity units each path consumed per event
#   (ReturnConsumedCapacity TOTAL; Stele's from STELE_DDB_CAPACITY_FILE:
#   its writer's reads and transactions).
#
#   bench/run_ddb.sh build                 ~2 minutes, saved to
#                                          bench/results/ddb-<UTC>.txt
#   DURATION=3 WARMUP=1 bench/run_ddb.sh   a short smoke run (not saved)
set -euo pipefail
BUILD="${1:-build}"
cd "$(dirname "$0")/.."
ROOT=$(pwd)
cmake --build "$BUILD" --target stele bench_http -j2 >/dev/null
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}
AWS_DIR="$ROOT/tests/aws"
. "$AWS_DIR/lib.sh"
TMP=$(mktemp -d)
PORT=$(free_port)
EP=http://127.0.0.1:$PORT
(cd "$AWS_DIR/node_modules/amplify-dynamodb-simulator/emulator" &&
 exec java -Xmx256m -Djava.library.path=DynamoDBLocal_lib -jar DynamoDBLocal.jar -inMemory -port "$PORT" \
   >"$TMP/ddb.log" 2>&1) &
DPID=$!
SPID=
cleanup() {
  [ -n "$SPID" ] && kill "$SPID" 2>/dev/null || true
  kill "$DPID" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$TMP"
}
trap cleanup EXIT INT TERM
wait_port "$PORT"
sleep 2

run() {
  local out
  if [ -z "${SAVE:-}" ]; then echo "$*"; else echo "$*" | tee -a "$SAVE"; fi
}

stele_run() { # CLIENTS BATCH
  local c=$1 b=$2 sp cap="$TMP/cap-$1x$2"
  sp=$(free_port)
  STELE_DDB_CAPACITY_FILE=$cap "$ROOT/$BUILD/stele" serve --port "$sp" \
    --store "dynamodb://bench$c-$b-$$?endpoint=$EP&region=us-east-1" >"$TMP/serve-$c-$b.log" 2>&1 &
  SPID=$!
  wait_port "$sp"
  local line
  line=$("$ROOT/$BUILD/bench/bench_http" --port "$sp" --mode append --clients "$c" --batch "$b" \
         --duration "$DURATION" --warmup "$WARMUP" --workload "${c}x$b" --target stele-ddb \
         --server-pid "$SPID" --prefix "b$$")
  if [ "$b" -gt 90 ]; then
    # What 100 events in one append get: a clear refusal.
    local body
    body=$(python3 -c 'import json; print(json.dumps([{"type":"X","data":{}}]*100))')
    line="$line
  100-event append: $(curl -s -X POST "127.0.0.1:$sp/streams/too-big" -H 'Content-Type: application/json' -d "$body")"
  fi
  kill "$SPID"; wait "$SPID" 2>/dev/null || true; SPID=
  run "$line"
  run "  $(cat "$cap" 2>/dev/null || echo 'no capacity file')"
}

seed_run() { # CLIENTS BATCH
  run "$(node --no-warnings "$ROOT/bench/ddb_seed.js" "$EP" "seed$1x$2" "$1" "$2" "$DURATION" "$WARMUP" 2>"$TMP/seed.err" || cat "$TMP/seed.err")"
}

if [ "$DURATION" -ge 10 ]; then
  mkdir -p bench/results
  SAVE="bench/results/ddb-$(date -u +%Y%m%dT%H%M%SZ).txt"
  : >"$SAVE"
fi
run "# bench/run_ddb.sh: DynamoDB Local $(grep -o 'Version:.*' "$TMP/ddb.log" | head -1), ${DURATION}s per workload, $(nproc) CPUs"
for w in "1 1" "64 1" "16 95"; do
  stele_run $w
done
for w in "1 1" "64 1" "16 100"; do
  seed_run $w
done
[ -n "${SAVE:-}" ] && echo "saved $SAVE"
exit 0
