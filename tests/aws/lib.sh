# Shared by the tests/aws scripts: npm packages, free ports, waiting.
AWS_DIR=${AWS_DIR:-$(cd "$(dirname "$0")" && pwd)}
command -v node >/dev/null || { echo "node missing (scripts/deps.sh installs it)" >&2; exit 1; }
if [ ! -f "$AWS_DIR/node_modules/.package-lock.json" ] ||
   [ "$AWS_DIR/package-lock.json" -nt "$AWS_DIR/node_modules/.package-lock.json" ]; then
  (cd "$AWS_DIR" && npm ci --no-audit --no-fund --loglevel=error) || exit 1
fi
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
# wait_port PORT: until something listens on 127.0.0.1:PORT (60 s at most).
wait_port() {
  python3 - "$1" <<'PY'
import socket, sys, time
end = time.time() + 60
while time.time() < end:
    try:
        socket.create_connection(("127.0.0.1", int(sys.argv[1])), 1).close(); sys.exit(0)
    except OSError:
        time.sleep(0.1)
sys.exit("nothing listens on port " + sys.argv[1])
PY
}
# Test credentials for the local emulators (never real ones).
export AWS_ACCESS_KEY_ID=AKIDSTELETEST AWS_SECRET_ACCESS_KEY=stele-test-secret AWS_REGION=us-east-1
unset AWS_SESSION_TOKEN AWS_PROFILE
