#!/bin/sh
# Install the Debian packages Stele needs to build and test, if missing.
# Idempotent and quiet when everything is there. Needs root (or sudo) only
# when something is missing. The list and the reason for each package is in
# docs/dependencies.md.
#
# Two checks decide whether to install: every package of the list must be
# installed, and the tools must work: a C program must compile and link
# (a minimal Debian has gcc without libc6-dev, which gcc only recommends,
# so `cc` runs but cannot link), and each command the build and tests call
# must be on PATH. Checking only our own package names missed the first.
set -e
PKGS="build-essential libc6-dev gcc make cmake pkg-config liblmdb-dev lmdb-utils libhttp-parser-dev libjsmn-dev libcurl4-openssl-dev valgrind curl python3 libnghttp2-dev libprotobuf-c-dev protobuf-c-compiler nghttp2-client libjansson-dev libssl-dev libsodium-dev prometheus duktape-dev libpq-dev postgresql libnats-dev nats-server librabbitmq-dev rabbitmq-server openjdk-17-jre-headless clang libclang-rt-14-dev man-db systemd"
TOOLS="cc make cmake pkg-config protoc-c valgrind curl python3 nghttp promtool psql nats-server java clang man systemd-analyze"
missing=""
for p in $PKGS; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
for t in $TOOLS; do
  command -v "$t" >/dev/null 2>&1 || missing="$missing (no $t)"
done
# Can the C compiler build and link a program? (crt files, libc headers)
probe_dir=$(mktemp -d)
printf '#include <stdio.h>\nint main(void){puts("ok");return 0;}\n' >"$probe_dir/p.c"
if ! cc "$probe_dir/p.c" -o "$probe_dir/p" >/dev/null 2>&1 || [ "$("$probe_dir/p" 2>/dev/null)" != ok ]; then
  echo "deps: the C compiler cannot build a program yet" >&2
  missing="$missing libc6-dev build-essential"
fi
rm -rf "$probe_dir"
# Node.js and npm for the gRPC integration tests (tests/grpc): Debian 12's
# nodejs (18.19 or newer) is enough. A machine may already have a newer
# Node.js from elsewhere with npm bundled: then nothing is installed.
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  missing="$missing nodejs npm"
fi
# Debian's chromium for the web UI's browser tests (tests/ui, docs/ui.md).
command -v chromium >/dev/null 2>&1 || missing="$missing chromium"
[ -z "$missing" ] && exit 0
echo "deps: installing$missing" >&2
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null 2>&1 || {
    echo "deps: missing packages:$missing; run 'make' as root or install sudo" >&2
    exit 1
  }
  SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# Install the whole list: apt skips what is already there.
$SUDO apt-get install -y -qq --no-install-recommends $PKGS >/dev/null
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  $SUDO apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null
fi
if ! command -v chromium >/dev/null 2>&1; then
  $SUDO apt-get install -y -qq --no-install-recommends chromium >/dev/null
fi
command -v chromium >/dev/null 2>&1 || { echo "deps: chromium still missing after installing" >&2; exit 1; }
for t in $TOOLS; do
  command -v "$t" >/dev/null 2>&1 || { echo "deps: $t still missing after installing" >&2; exit 1; }
done
