#!/usr/bin/env bash
# bench/run_chain.sh [BUILD_DIR] - the hash chain's cost on durable appends
# (docs/benchmarks.md, "Hash chain"): bench/bench_chain runs each workload
# (1x1, 16x1, 64x1 threads x events per append, and 1x100) on a store with
# the chain and one without (STELE_OPEN_NO_CHAIN) in alternating rounds of
# the same run, then times an export and a proof; then all of it again on a
# tmpfs (fsync free: the chain's CPU cost at its most visible). `make
# bench-chain` runs it.
#
#   bench/run_chain.sh build            20 rounds of 0.5 s per side (~1.5 min),
#                                       saved to bench/results/chain-<UTC>.txt
#   QUICK=1 bench/run_chain.sh build    2 rounds of 0.3 s (a smoke run, not saved)
#   BENCH_DIR=/mnt/disk ...             where the stores go (default /tmp)
set -euo pipefail
BUILD=${1:-build}
cmake --build "$BUILD" --target bench_chain -j2 >/dev/null
if [ "${QUICK:-0}" = 1 ]; then ARGS=(--secs 0.3 --rounds 2); else ARGS=(--secs 0.5 --rounds 20); fi
DIR=$(mktemp -d "${BENCH_DIR:-/tmp}/stele-bench-chain-XXXXXX")
trap 'rm -rf "$DIR"' EXIT
CMD=("$BUILD/bench/bench_chain" "${ARGS[@]}" --dir "$DIR")
OUT="$DIR/result.txt"
echo "# $(date -u +%FT%TZ) $(uname -srm), $(nproc) CPUs; git $(git rev-parse --short HEAD 2>/dev/null || echo unknown)" >"$OUT"
echo "\$ ${CMD[*]}" >>"$OUT"
"${CMD[@]}" >>"$OUT"
# The same on a tmpfs, where fdatasync is free: the CPU-bound upper bound of
# the chain's cost (skipped when there is no /dev/shm).
if [ -d /dev/shm ] && [ -w /dev/shm ]; then
    SHM=$(mktemp -d /dev/shm/stele-bench-chain-XXXXXX)
    CMD2=("$BUILD/bench/bench_chain" "${ARGS[@]}" --dir "$SHM")
    echo "\$ ${CMD2[*]}   # tmpfs: no fsync cost" >>"$OUT"
    "${CMD2[@]}" >>"$OUT" || { rm -rf "$SHM"; exit 1; }
    rm -rf "$SHM"
fi
cat "$OUT"
if [ "${QUICK:-0}" != 1 ]; then
    mkdir -p bench/results
    cp "$OUT" "bench/results/chain-$(date -u +%Y%m%dT%H%M%SZ).txt"
fi
