#!/usr/bin/env bash
# bench/run_chain_layout_ab.sh [BUILD] [ROUNDS] - the hash chain's two
# layouts in one binary: trailing chain records (each after its commit, the
# default since 2026-12-08) against leading ones (before their commits,
# STELE_CHAIN_LAYOUT=leading, the layout before), with the store without a
# chain as the floor: bench_chain --only chain|plain at 1 x 100 and 64 x 1,
# short runs (0.5 s) taking turns ROUNDS times, the order turning each round
# so that no side always runs first; prints the medians over the rounds of
# each side's events/s, append p10 and p50 (µs) and CPU and writer µs per
# event, and the ratios to no chain (docs/benchmarks.md, "chain21d").
# Saved to bench/results/chain-layout-ab-<UTC>.txt.
set -euo pipefail
BUILD=${1:-build}
ROUNDS=${2:-10}
cmake --build "$BUILD" --target bench_chain -j2 >/dev/null
DIR=$(mktemp -d "${BENCH_DIR:-/tmp}/stele-chain-layout-ab-XXXXXX")
trap 'rm -rf "$DIR"' EXIT
OUT="$DIR/result.txt"
echo "# $(date -u +%FT%TZ) $(uname -srm), $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg); git $(git rev-parse --short HEAD 2>/dev/null || echo unknown)" | tee "$OUT"
for i in $(seq "$ROUNDS"); do
    for c in 1x100 64x1; do
        vs=(trailing:chain:trailing leading:chain:leading plain:plain:trailing)
        for k in 0 1 2; do
            v=${vs[$(((i + k) % 3))]}
            IFS=: read -r label side layout <<<"$v"
            rm -rf "$DIR/s"
            mkdir -p "$DIR/s"
            line=$(STELE_CHAIN_LAYOUT=$layout "$BUILD/bench/bench_chain" --case $c --only $side \
                --secs 0.5 --rounds 1 --dir "$DIR/s" | tail -1)
            echo "$c $label $line" >>"$DIR/raw"
        done
    done
    echo "# round $i done, load $(cut -d' ' -f1-3 /proc/loadavg)" >>"$OUT"
done
python3 - "$DIR/raw" <<'PY' | tee -a "$OUT"
import re, statistics, sys
rows = {}
for line in open(sys.argv[1]):
    case, label = line.split()[:2]
    kv = dict(re.findall(r'(\w+)=([0-9.]+)', line))
    rows.setdefault((case, label), []).append(kv)
meds = {}
for (case, label), rs in sorted(rows.items()):
    med = lambda k: statistics.median(float(r[k]) for r in rs)
    meds[(case, label)] = med('events_per_s')
    print(f"layout-ab case={case} side={label} runs={len(rs)} events_per_s={med('events_per_s'):.0f} "
          f"p10_us={med('p10_us'):.0f} p50_us={med('p50_us'):.0f} "
          f"cpu_us_per_event={med('cpu_us_per_event'):.2f} writer_us_per_event={med('writer_us_per_event'):.2f}")
for case in sorted({c for c, _ in meds}):
    p = meds.get((case, 'plain'))
    if p:
        print(f"layout-ab case={case} trailing/plain={meds[(case, 'trailing')] / p:.3f} "
              f"leading/plain={meds[(case, 'leading')] / p:.3f}")
PY
mkdir -p bench/results
cp "$OUT" "bench/results/chain-layout-ab-$(date -u +%Y%m%dT%H%M%SZ).txt"
