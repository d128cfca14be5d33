#!/usr/bin/env bash
# bench/run_chain_extent.sh OLD_BUILD NEW_BUILD [ROUNDS] - the hash chain's
# disk cost at 1 x 100 before and after rewriting a group's chain records
# in one range with the next group (docs/benchmarks.md, "The chain's
# rewrite in one range with the next group"), three ways, the builds
# alternating:
#
#   1. bench_chain_extent: the write patterns alone on this disk (no
#      engine), taking turns every 50 groups: no chain, records rewritten
#      in place, carried, trailing, whole (fdatasync and write + fdatasync
#      p10/p50, µs);
#   2. strace -f -T of `bench_chain --case 1x100 --only chain|plain --secs 0.3`
#      for OLD, NEW and NEW with STELE_CHAIN_REWRITE_MAX=off (the records
#      alone in the same binary), ROUNDS alternations: fdatasync
#      p10/p25/p50 over all samples, writes per fdatasync;
#   3. bench_chain --case 1x100 and --case 64x1 (chain / without ratio,
#      p10, p50, CPU µs per event), OLD, NEW and NEW-off alternating
#      ROUNDS times.
#
#   git worktree add -f /tmp/old-chain main && cmake -S /tmp/old-chain -B /tmp/old-chain/build \
#       -DCMAKE_BUILD_TYPE=RelWithDebInfo && cmake --build /tmp/old-chain/build --target bench_chain
#   bench/run_chain_extent.sh /tmp/old-chain/build build 3     # about 5 minutes
#
# Saved to bench/results/chain-extent-<UTC>.txt. BENCH_DIR: where the
# stores go (default /tmp, the disk).
set -euo pipefail
OLD=${1:?usage: run_chain_extent.sh OLD_BUILD NEW_BUILD [ROUNDS]}
NEW=${2:?usage: run_chain_extent.sh OLD_BUILD NEW_BUILD [ROUNDS]}
ROUNDS=${3:-3}
cmake --build "$NEW" --target bench_chain bench_chain_extent -j2 >/dev/null
command -v strace >/dev/null || { echo "strace is needed (apt-get install strace)" >&2; exit 1; }
DIR=$(mktemp -d "${BENCH_DIR:-/tmp}/stele-chain-extent-XXXXXX")
trap 'rm -rf "$DIR"' EXIT
OUT="$DIR/result.txt"
say() { echo "$@" | tee -a "$OUT"; }
say "# $(date -u +%FT%TZ) $(uname -srm), $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg); git $(git rev-parse --short HEAD 2>/dev/null || echo unknown); OLD=$OLD NEW=$NEW"

say "## 1. write patterns alone (bench_chain_extent, 30,000-byte groups)"
"$NEW/bench/bench_chain_extent" --dir "$DIR" --groups 3000 --reps 5 | grep '^extent' | tee -a "$OUT"

say "## 2. strace of bench_chain --case 1x100 --secs 0.3, ROUNDS alternations; fdatasync µs over all of a side's samples; writes = pwrite64 + pwritev on the log per fdatasync"
say "##    (new-off: the new build with STELE_CHAIN_REWRITE_MAX=off, the records rewritten alone)"
strace_one() { # label build side [env...]
    local label=$1 bin=$2 side=$3
    shift 3
    rm -rf "$DIR/s"
    mkdir -p "$DIR/s"
    env "$@" strace -f -T -e trace=fdatasync,pwrite64,pwritev -o "$DIR/st.txt" \
        "$bin/bench/bench_chain" --case 1x100 --only "$side" --secs 0.3 --rounds 1 --dir "$DIR/s" >/dev/null
    python3 - "$DIR/st.txt" >>"$DIR/samples-$label-$side" <<'PY'
import re, sys
w = 0
for line in open(sys.argv[1]):
    if 'resumed' in line or 'unfinished' in line:
        continue
    m = re.search(r'<([0-9.]+)>\s*$', line)
    if 'fdatasync(' in line and m:
        print(f"s {float(m.group(1)) * 1e6:.1f}")
    elif 'pwritev(' in line or 'pwrite64(' in line:
        print("w")
PY
}
for i in $(seq "$ROUNDS"); do
    for side in chain plain; do
        strace_one old "$OLD" $side
        strace_one new "$NEW" $side STELE_CHAIN_REWRITE_MAX=auto
        strace_one new-off "$NEW" $side STELE_CHAIN_REWRITE_MAX=off
    done
done
for label in old new new-off; do
    for side in chain plain; do
        python3 - "$DIR/samples-$label-$side" "$label" "$side" <<'PY' | tee -a "$OUT"
import sys
s, w = [], 0
for line in open(sys.argv[1]):
    if line.startswith('s '):
        s.append(float(line[2:]))
    elif line.startswith('w'):
        w += 1
s.sort()
n = len(s)
p = lambda q: s[int(q * (n - 1))] if n else 0
print(f"strace build={sys.argv[2]} side={sys.argv[3]} fdatasyncs={n} fdatasync_p10_us={p(0.1):.0f} "
      f"fdatasync_p25_us={p(0.25):.0f} fdatasync_p50_us={p(0.5):.0f} writes_per_sync={w / max(n, 1):.2f}")
PY
    done
done

say "## 3. bench_chain, OLD, NEW and NEW with STELE_CHAIN_REWRITE_MAX=off alternating (chain / without; p10/p50 µs chain/without; CPU µs per event)"
for i in $(seq "$ROUNDS"); do
    for b in old new new-off; do
        bin=$OLD setting=
        [ $b != old ] && bin=$NEW
        [ $b = new ] && setting=auto
        [ $b = new-off ] && setting=off
        for c in 1x100 64x1; do
            rm -rf "$DIR/s"
            mkdir -p "$DIR/s"
            line=$(STELE_CHAIN_REWRITE_MAX=$setting "$bin/bench/bench_chain" --case $c --secs 0.5 \
                --rounds 8 --dir "$DIR/s" | tail -1)
            say "$b $line"
        done
    done
done
mkdir -p bench/results
cp "$OUT" "bench/results/chain-extent-$(date -u +%Y%m%dT%H%M%SZ).txt"
