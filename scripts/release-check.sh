#!/bin/sh
# Release builds with gcc and clang at -O2 and -O3, warnings as errors
# (STELE_WERROR=ON): what a user's `make install` compiles must compile
# without a warning on both compilers (issue 19). Every target is built,
# tests and benchmarks included (RELEASE_CHECK_TARGETS="t1 t2" builds only
# those: CI builds what `make install` compiles, to keep its time in check).
# Takes a few minutes per build.
# Usage: scripts/release-check.sh [OUT_DIR]   (default build-release-check)
set -eu
OUT=${1:-build-release-check}
JOBS=${JOBS:-$(nproc)}
status=0
mkdir -p "$OUT"
for cc in gcc clang; do
  command -v "$cc" >/dev/null 2>&1 || { echo "release-check: $cc missing (scripts/deps.sh)" >&2; exit 1; }
  for opt in -O2 -O3; do
    dir="$OUT/$cc$opt"
    echo "release-check: $cc $opt" >&2
    if ! CC=$cc cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=Release \
           -DCMAKE_C_FLAGS_RELEASE="$opt -DNDEBUG" -DSTELE_WERROR=ON >"$dir.log" 2>&1 ||
       ! cmake --build "$dir" -j "$JOBS" ${RELEASE_CHECK_TARGETS:+--target $RELEASE_CHECK_TARGETS} \
           >>"$dir.log" 2>&1; then
      grep -E "warning|error" "$dir.log" | head -40 >&2
      echo "release-check: $cc $opt FAILED (full log: $dir.log)" >&2
      status=1
    fi
  done
done
[ $status -eq 0 ] && echo "release-check: gcc and clang, -O2 and -O3: no warnings" >&2
exit $status
