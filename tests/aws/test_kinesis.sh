#!/bin/sh
# The Kinesis target against kinesalite (npm), persisted in a temporary
# LevelDB directory so it can be restarted: batches over 500 records and
# over 5 MiB, the endpoint down (retryable), kinesalite killed and
# restarted in the middle of a run (every event arrives; duplicates allowed
# only there), a missing stream and an oversized record (final, with the
# reason), no credentials (refused at open); throttling from a fake endpoint
# (fake_kinesis.py): failed records retried alone, none lost or doubled;
# a wrong secret (the fake verifies SigV4 itself) dead-letters with its text. KINESIS_CHECK: the driver.
set -e
. "$(dirname "$0")/lib.sh"
CHECK=${KINESIS_CHECK:?set by CTest}
TMP=$(mktemp -d)
PORT=$(free_port)
export KINESIS_ENDPOINT=http://127.0.0.1:$PORT
KPID=
start() {
  node "$AWS_DIR/node_modules/kinesalite/cli.js" --port "$PORT" --path "$TMP/db" \
    --createStreamMs 0 --deleteStreamMs 0 --updateStreamMs 0 >"$TMP/kinesalite.log" 2>&1 &
  KPID=$!
  wait_port "$PORT"
}
stop() { if [ -n "$KPID" ]; then kill "$KPID" 2>/dev/null || true; wait "$KPID" 2>/dev/null || true; fi; KPID=; }
trap 'stop; rm -rf "$TMP"' EXIT INT TERM

start
"$CHECK" setup s1
"$CHECK" put s1 0 1200          # 700 per call: two PutRecords each (500 + 200)
"$CHECK" big s1 1200            # 8 x 900 KiB: split at 5 MiB
stop
"$CHECK" down s1                # refused connection: retryable
start
"$CHECK" check s1 1208
"$CHECK" put s1 1208 20000 &    # kinesalite killed and restarted under it
PUT=$!
sleep 0.5
kill -9 "$KPID"; wait "$KPID" 2>/dev/null || true; KPID=
sleep 1
start
wait "$PUT"
"$CHECK" errors s1
"$CHECK" check s1 21208 allow-dups

# Throttling (kinesalite never throttles): a fake PutRecords endpoint fails
# 30% of the records and every 4th call with ProvisionedThroughputExceeded.
# Every event must get in, and none twice: failed records go again alone.
python3 "$AWS_DIR/fake_kinesis.py" >"$TMP/fake.out" &
FPID=$!
while ! grep -q port "$TMP/fake.out" 2>/dev/null; do sleep 0.1; done
FPORT=$(awk '{print $2}' "$TMP/fake.out")
KINESIS_ENDPOINT=http://127.0.0.1:$FPORT "$CHECK" put throttled 0 3000
# The fake checks signatures itself: a wrong secret is refused, for good.
KINESIS_ENDPOINT=http://127.0.0.1:$FPORT AWS_SECRET_ACCESS_KEY=not-the-secret "$CHECK" wrongcreds throttled
STATS=$(python3 -c "import urllib.request;print(urllib.request.urlopen('http://127.0.0.1:$FPORT/stats').read().decode())")
kill "$FPID"; wait "$FPID" 2>/dev/null || true
echo "throttling: $STATS"
python3 - "$STATS" <<'PY'
import json, sys
s = json.loads(sys.argv[1])
assert s["accepted"] == 3000, s
assert s["duplicates"] == 0, s
assert s["throttled_records"] > 0 and s["throttled_calls"] > 0, s
PY
echo "aws_kinesis: 1 passed, 0 failed"
