#!/bin/sh
# Run gRPC integration test files (node --test) after installing the pinned
# npm packages (package-lock.json) when node_modules is missing or older
# than the lock. Usage: run.sh test_file.js ...
set -e
cd "$(dirname "$0")"
command -v node >/dev/null || { echo "node missing (scripts/deps.sh installs it)" >&2; exit 1; }
if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund --loglevel=error
fi
exec node --test --test-concurrency=1 "$@"
