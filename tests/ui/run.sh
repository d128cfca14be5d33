#!/bin/sh
# Run the web UI's browser tests (node --test) after installing the pinned
# npm packages (package-lock.json) when node_modules is missing or older
# than the lock. Needs Debian's chromium (scripts/deps.sh installs it).
# Usage: run.sh test_file.mjs ...
set -e
cd "$(dirname "$0")"
command -v node >/dev/null || { echo "node missing (scripts/deps.sh installs it)" >&2; exit 1; }
[ -x "${CHROMIUM:-/usr/bin/chromium}" ] || { echo "chromium missing (scripts/deps.sh installs it)" >&2; exit 1; }
if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund --loglevel=error
fi
exec node --test --test-concurrency=1 "$@"
