#!/bin/sh
# make test-tsan: the threaded tests under ThreadSanitizer (docs/testing.md).
#
# Builds BUILD (default build-tsan) with -fsanitize=thread (STELE_TSAN), only
# the targets the run needs, then runs the tests labelled "tsan" in
# tests/CMakeLists.txt (the library's concurrency, subscription, consumer
# group, async, multi-stream and projection tests, and http_load and
# http_subscribe against a real `stele serve`) at a reduced size: TEST_QUICK=1 for the C tests,
# STELE_TEST_SCALE=0.1 for http_load. TSan stops a process at its first
# report (halt_on_error=1) and writes it under BUILD/tsan-reports; the run
# fails if any report was written, whichever process (a test, a server, a
# CLI call) it came from, even one a test killed on purpose afterwards.
# tests/tsan/suppressions.txt names third-party code only.
set -eu
cd "$(dirname "$0")/.."
BUILD=${1:-build-tsan}
JOBS=${JOBS:-$(nproc)}
start=$(date +%s)
cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSTELE_TSAN=ON -DSTELE_WERROR=ON >/dev/null
cmake --build "$BUILD" -j "$JOBS" --target stele tsan_race_canary test_concurrency test_sub \
    test_groups test_async test_multi test_proj
cmake --build "$BUILD" -j "$JOBS" --target test_proj_inline
cmake --build "$BUILD" -j "$JOBS" --target test_chain
cmake --build "$BUILD" -j "$JOBS" --target test_overlap
cmake --build "$BUILD" -j "$JOBS" --target test_wake test_chain_rewrite
built=$(date +%s)
reports="$PWD/$BUILD/tsan-reports"
rm -rf "$reports"
mkdir -p "$reports"
TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1 suppressions=$PWD/tests/tsan/suppressions.txt log_path=$reports/report"
export TSAN_OPTIONS
export TEST_QUICK=1 STELE_TEST_SCALE=0.1 STELE_TEST_SANITIZER=thread
rc=0
(cd "$BUILD" && ctest --output-on-failure -j 2 -L tsan) || rc=$?
for f in "$reports"/report.*; do
    [ -e "$f" ] || continue
    echo "---- ThreadSanitizer report $f" >&2
    cat "$f" >&2
    rc=1
done
end=$(date +%s)
echo "test-tsan: build $((built - start)) s, tests $((end - built)) s"
if [ "$rc" -ne 0 ]; then
    echo "test-tsan: FAILED (reports above, or a failing test)" >&2
    exit 1
fi
echo "test-tsan: no race reported"
