#!/bin/sh
# Install the Debian packages Stele needs to build and test, if missing.
# Idempotent and quiet when everything is there. Needs root (or sudo) only
# when something is missing. The list and the reason for each package is in
# docs/dependencies.md.
set -e
PKGS="gcc make cmake pkg-config liblmdb-dev lmdb-utils libhttp-parser-dev libjsmn-dev libcurl4-openssl-dev valgrind curl python3 libnghttp2-dev libprotobuf-c-dev protobuf-c-compiler nghttp2-client duktape-dev"
missing=""
for p in $PKGS; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
# Node.js >= 20 and npm for the gRPC integration tests (tests/grpc). A
# machine may already have a newer Node.js from elsewhere with npm bundled:
# then nothing is installed.
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  missing="$missing nodejs npm"
fi
[ -z "$missing" ] && exit 0
echo "deps: installing$missing" >&2
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
