#!/usr/bin/env bash
# bench/run_chain_rewrite_ab.sh [BUILD] [ROUNDS] - the chain records'
# rewrite run on to the group's end (STELE_CHAIN_REWRITE_MAX=auto) against the records alone
# (the default since the quiet run of 2026-12-07, 20:10 UTC) in one binary, and
# the store without a chain as the floor: bench_chain --only chain|plain
# at 1 x 100 and 64 x 1, short runs taking turns ROUNDS times, the order
# turning each round (a loaded machine's drift weighs on all three alike); prints the medians over the
# rounds of each one's events/s, append p10 and p50 (µs) and CPU µs per
# event (docs/benchmarks.md, "The chain's rewrite in one range with the
# next group"). Saved to bench/results/chain-rewrite-ab-<UTC>.txt.
set -euo pipefail
BUILD=${1:-build}
ROUNDS=${2:-10}
cmake --build "$BUILD" --target bench_chain -j2 >/dev/null
DIR=$(mktemp -d "${BENCH_DIR:-/tmp}/stele-chain-rewrite-ab-XXXXXX")
trap 'rm -rf "$DIR"' EXIT
OUT="$DIR/result.txt"
echo "# $(date -u +%FT%TZ) $(uname -srm), $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg); git $(git rev-parse --short HEAD 2>/dev/null || echo unknown)" | tee "$OUT"
for i in $(seq "$ROUNDS"); do
    for c in 1x100 64x1; do
        # the order turns each round, so that no side always runs first
        vs=(whole:chain:64k records:chain:off plain:plain:64k)
        for k in 0 1 2; do
            v=${vs[$(((i + k) % 3))]}
            IFS=: read -r label side setting <<<"$v"
            [ "$setting" = 64k ] && setting=auto
            rm -rf "$DIR/s"
            mkdir -p "$DIR/s"
            line=$(STELE_CHAIN_REWRITE_MAX=$setting "$BUILD/bench/bench_chain" --case $c --only $side \
                --secs 0.5 --rounds 1 --dir "$DIR/s" | tail -1)
            echo "$c $label $line" >>"$DIR/raw"
        done
    done
done
python3 - "$DIR/raw" <<'PY' | tee -a "$OUT"
import re, statistics, sys
rows = {}
for line in open(sys.argv[1]):
    case, label = line.split()[:2]
    kv = dict(re.findall(r'(\w+)=([0-9.]+)', line))
    rows.setdefault((case, label), []).append(kv)
for (case, label), rs in sorted(rows.items()):
    med = lambda k: statistics.median(float(r[k]) for r in rs)
    print(f"rewrite-ab case={case} side={label} runs={len(rs)} events_per_s={med('events_per_s'):.0f} "
          f"p10_us={med('p10_us'):.0f} p50_us={med('p50_us'):.0f} "
          f"cpu_us_per_event={med('cpu_us_per_event'):.2f} writer_us_per_event={med('writer_us_per_event'):.2f}")
PY
mkdir -p bench/results
cp "$OUT" "bench/results/chain-rewrite-ab-$(date -u +%Y%m%dT%H%M%SZ).txt"
