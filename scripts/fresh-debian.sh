#!/bin/bash
# Check the README's claim on a fresh, minimal Debian 12: build a debootstrap
# "minbase" root, add only `make` (what the README asks a minimal machine to
# have), clone this repository into it, and run the two commands there as
# root: `make test` must pass, and `make run` must answer /health/live.
#
# Usage (as root, on a Debian or Ubuntu host):
#   scripts/fresh-debian.sh [ROOT_DIR]     (default /var/tmp/stele-fresh)
# Environment: MIRROR (default http://deb.debian.org/debian), KEEP=1 keeps
# the root afterwards, PORT (default 2199) for the `make run` check,
# SKIP_TEST=1 checks only `make run`.
#
# The root shares the host's network (loopback included) but nothing else:
# its own /proc, /sys, /dev and /dev/pts are mounted for the run and
# unmounted at the end. What the commands install, and how long each step
# took, is printed at the end and recorded in docs/fresh-debian.md by hand.
set -euo pipefail
[ "$(id -u)" -eq 0 ] || { echo "fresh-debian: run as root" >&2; exit 2; }
ROOT=${1:-/var/tmp/stele-fresh}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
PORT=${PORT:-2199}
SRC=$(cd "$(dirname "$0")/.." && pwd)
LOG=$(mktemp -d /tmp/stele-fresh-log.XXXXXX)
t0=$(date +%s)
stamp() { echo "fresh-debian: [$(( $(date +%s) - t0 )) s] $*"; }

if ! command -v debootstrap >/dev/null; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
fi

mounted=()
cleanup() {
  [ -n "${run_pid:-}" ] && chroot "$ROOT" pkill -f "stele serve" 2>/dev/null || true
  for ((i = ${#mounted[@]} - 1; i >= 0; i--)); do umount -l "${mounted[i]}" 2>/dev/null || true; done
  if [ "${KEEP:-0}" != 1 ]; then rm -rf "$ROOT"; fi
}
trap cleanup EXIT

rm -rf "$ROOT"
stamp "debootstrap --variant=minbase bookworm $ROOT"
debootstrap --variant=minbase bookworm "$ROOT" "$MIRROR" >"$LOG/debootstrap.log" 2>&1 ||
  { tail -20 "$LOG/debootstrap.log"; exit 1; }
for m in proc sys dev dev/pts; do mkdir -p "$ROOT/$m"; done
mount -t proc proc "$ROOT/proc" && mounted+=("$ROOT/proc")
mount -t sysfs sys "$ROOT/sys" && mounted+=("$ROOT/sys")
mount --bind /dev "$ROOT/dev" && mounted+=("$ROOT/dev")
mount -t devpts devpts "$ROOT/dev/pts" && mounted+=("$ROOT/dev/pts")
cp /etc/resolv.conf "$ROOT/etc/resolv.conf"
# A host whose network intercepts TLS (a corporate proxy, this project's
# sandbox) trusts an extra CA that a fresh root cannot know: hand it over,
# like resolv.conf, so npm reaches its registry. Nothing else is copied.
EXTRA_CA=
if ls /usr/local/share/ca-certificates/*.crt >/dev/null 2>&1; then
  cat /usr/local/share/ca-certificates/*.crt >"$ROOT/etc/host-extra-ca.pem"
  EXTRA_CA=/etc/host-extra-ca.pem
fi
chroot "$ROOT" dpkg-query -W -f '${Package}\n' | sort >"$LOG/packages-before"

stamp "apt-get install make (the only package the README asks for)"
chroot "$ROOT" sh -c 'apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq make' \
  >"$LOG/make.log" 2>&1 || { tail -20 "$LOG/make.log"; exit 1; }
if chroot "$ROOT" sh -c 'command -v cc || command -v git || command -v sudo' >/dev/null 2>&1; then
  echo "fresh-debian: the root is not minimal (cc, git or sudo present)" >&2
  exit 1
fi

stamp "clone $SRC (HEAD $(git -C "$SRC" rev-parse --short HEAD)) into $ROOT/root/stele"
git clone -q "$SRC" "$ROOT/root/stele"

if [ "${SKIP_TEST:-0}" != 1 ]; then
  stamp "make test (inside the root)"
  ts=$(date +%s)
  if ! chroot "$ROOT" env -i HOME=/root PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
      ${EXTRA_CA:+NODE_EXTRA_CA_CERTS=$EXTRA_CA} TERM=dumb sh -c 'cd /root/stele && make test' >"$LOG/make-test.log" 2>&1; then
    tail -60 "$LOG/make-test.log"
    echo "fresh-debian: FAIL: make test failed in the fresh root (log: $LOG/make-test.log)" >&2
    exit 1
  fi
  test_s=$(( $(date +%s) - ts ))
  grep -E "tests passed|make test:" "$LOG/make-test.log" | tail -3
  stamp "make test passed in $test_s s"
fi

stamp "make run (inside the root), then GET /health/live on port $PORT"
ts=$(date +%s)
chroot "$ROOT" env -i HOME=/root PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
  STELE_PORT="$PORT" sh -c 'cd /root/stele && exec make run' >"$LOG/make-run.log" 2>&1 &
run_pid=$!
ok=0
for _ in $(seq 1 600); do
  if curl -fsS "http://127.0.0.1:$PORT/health/live" >"$LOG/health" 2>/dev/null; then ok=1; break; fi
  kill -0 "$run_pid" 2>/dev/null || break
  sleep 1
done
run_s=$(( $(date +%s) - ts ))
chroot "$ROOT" pkill -INT -f "stele serve" 2>/dev/null || true
wait "$run_pid" 2>/dev/null || true
run_pid=
if [ "$ok" != 1 ]; then
  tail -30 "$LOG/make-run.log"
  echo "fresh-debian: FAIL: make run did not answer /health/live" >&2
  exit 1
fi
stamp "make run answered /health/live after $run_s s: $(cat "$LOG/health")"

chroot "$ROOT" dpkg-query -W -f '${Package}\n' | sort >"$LOG/packages-after"
added=$(comm -13 "$LOG/packages-before" "$LOG/packages-after" | wc -l)
echo "fresh-debian: the commands installed $added packages (list: $LOG/packages-added)"
comm -13 "$LOG/packages-before" "$LOG/packages-after" >"$LOG/packages-added"
grep -h "deps: installing" "$LOG"/make-*.log | head -3 || true
stamp "PASS: a fresh minimal Debian 12 builds, tests and runs Stele (logs: $LOG)"
