#!/bin/sh
# Run one DynamoDB-backend test against a fresh DynamoDB Local: AWS's own
# emulator from the npm package amplify-dynamodb-simulator (tests/aws
# installs it), on Debian's openjdk-17 with a small heap, in memory (or on
# disk with DDB_ON_DISK=1, so a test can stop and restart it: the test
# then gets DDB_RESTART, a command that does so).
# Usage: run.sh COMMAND [ARGS...]; the command gets STELE_DDB_ENDPOINT.
set -e
AWS_DIR=$(cd "$(dirname "$0")/../aws" && pwd)
. "$AWS_DIR/lib.sh"
TMP=$(mktemp -d)
PORT=$(free_port)
export STELE_DDB_ENDPOINT=http://127.0.0.1:$PORT
EMU="$AWS_DIR/node_modules/amplify-dynamodb-simulator/emulator"
if [ -n "$DDB_ON_DISK" ]; then
  mkdir -p "$TMP/db"
  STORE="-sharedDb -dbPath $TMP/db"
else
  STORE="-inMemory"
fi
cat >"$TMP/ddb.sh" <<SH
#!/bin/sh
# start | stop: DynamoDB Local on port $PORT
case "\$1" in
start)
  cd "$EMU" && java -Xmx256m -Djava.library.path=DynamoDBLocal_lib -jar DynamoDBLocal.jar $STORE -port $PORT \
    >>"$TMP/ddb.log" 2>&1 </dev/null &
  echo \$! >"$TMP/ddb.pid"
  python3 - "$PORT" <<'PY'
import socket, sys, time, urllib.request
end = time.time() + 90
while time.time() < end:
    try:
        req = urllib.request.Request("http://127.0.0.1:%s/" % sys.argv[1], data=b"{}",
                                     headers={"X-Amz-Target": "DynamoDB_20120810.ListTables",
                                              "Content-Type": "application/x-amz-json-1.0",
                                              "Authorization": "AWS4-HMAC-SHA256 Credential=AKIDSTELETEST/20260101/us-east-1/dynamodb/aws4_request, SignedHeaders=host, Signature=0"})
        urllib.request.urlopen(req, timeout=2).read()
        sys.exit(0)
    except urllib.error.HTTPError:
        sys.exit(0)  # it answers
    except Exception:
        time.sleep(0.2)
sys.exit("DynamoDB Local did not answer on port " + sys.argv[1])
PY
  ;;
stop)
  # SIGTERM: DynamoDB Local on disk (SQLite) loses its last acknowledged
  # writes on SIGKILL (seen here: the emulator's durability, not
  # DynamoDB's); a test that wants the hard way passes "kill".
  sig=TERM; [ "\$2" = kill ] && sig=KILL
  if [ -f "$TMP/ddb.pid" ]; then
    pid=\$(cat "$TMP/ddb.pid"); kill -\$sig \$pid 2>/dev/null || true
    for i in \$(seq 1 100); do kill -0 \$pid 2>/dev/null || break; sleep 0.1; done
    kill -9 \$pid 2>/dev/null || true; rm -f "$TMP/ddb.pid"
  fi
  # wait until the port is free
  python3 -c "
import socket,time
for _ in range(100):
    s=socket.socket()
    try:
        s.connect(('127.0.0.1',$PORT)); s.close(); time.sleep(0.1)
    except OSError:
        break"
  ;;
esac
SH
chmod +x "$TMP/ddb.sh"
export DDB_CTL="$TMP/ddb.sh"
trap '"$TMP/ddb.sh" stop kill; rm -rf "$TMP"' EXIT INT TERM
"$TMP/ddb.sh" start
set +e
"$@"
rc=$?
[ $rc -ne 0 ] && tail -20 "$TMP/ddb.log" >&2
exit $rc
