#!/usr/bin/env bash
# bench/run_overlap.sh [BUILD_DIR] - the writer's overlap (issue 21 item 2;
# docs/benchmarks.md, "Overlapping the fdatasync"): the same binary with the
# syncer off (STELE_OVERLAP_MIN=off: every fdatasync on the writer, as
# before) and at its default, in alternating runs of one sitting (off, on,
# on, off, ...), so background load hits both about equally.
#
#   1. bench_engine append 1x1, 1x100, 1x1000 and 64x1: events/s, p50 latency
#      and the process's CPU time (user + system) per event;
#   2. bench_chain --case 1x100 and 64x1 (chain / without, each side on the
#      same store kind) under both settings.
#
# Prints a table of medians and saves everything to
# bench/results/overlap-<UTC>.txt. About 4 minutes with ROUNDS=4 (default).
#   ROUNDS=N           alternations (each runs both settings)
#   BENCH_DIR=/mnt/x   where the stores go (default /tmp)
set -euo pipefail
BUILD=${1:-build}
ROUNDS=${ROUNDS:-4}
cmake --build "$BUILD" --target bench_engine bench_chain -j2 >/dev/null
DIR=$(mktemp -d "${BENCH_DIR:-/tmp}/stele-bench-overlap-XXXXXX")
trap 'rm -rf "$DIR"' EXIT
OUT="$DIR/result.txt"
echo "# $(date -u +%FT%TZ) $(uname -srm), $(nproc) CPUs; git $(git rev-parse --short HEAD 2>/dev/null || echo unknown); load $(cut -d' ' -f1-3 /proc/loadavg)" >"$OUT"
ENGINE_CASES=("1x1 3000" "1x100 100000" "1x1000 1000000" "64x1 100000")
CHAIN_CASES=(1x100 64x1)
for ((r = 0; r < ROUNDS; r++)); do
    if ((r % 2)); then order=(default off); else order=(off default); fi
    for c in "${ENGINE_CASES[@]}"; do
        set -- $c
        t=${1%x*} b=${1#*x}
        for s in "${order[@]}"; do
            val=$s; [ "$s" = default ] && val=
            line=$( { /usr/bin/time -f "cpu_s=%U+%S" env STELE_OVERLAP_MIN=$val TMPDIR="$DIR" \
                "$BUILD/bench/bench_engine" append --threads "$t" --batch "$b" --events "$2"; } 2>&1 |
                grep -E "^append_|^cpu_s=" | tr '\n' ' ')
            echo "engine overlap=$s case=$1 $line" >>"$OUT"
        done
    done
    for c in "${CHAIN_CASES[@]}"; do
        for s in "${order[@]}"; do
            val=$s; [ "$s" = default ] && val=
            line=$(env STELE_OVERLAP_MIN=$val "$BUILD/bench/bench_chain" --case "$c" --secs 0.5 \
                --rounds 4 --dir "$DIR" 2>/dev/null | grep "^chain threads")
            echo "chainbench overlap=$s case=$c $line" >>"$OUT"
        done
    done
done
python3 - "$OUT" <<'EOF' | tee -a "$OUT"
import re, statistics, sys
rows = [l for l in open(sys.argv[1]) if not l.startswith('#')]
def kv(l):
    d = dict(re.findall(r'(\w+)=(\S+)', l))
    if 'cpu_s' in d:
        u, s = d['cpu_s'].split('+'); d['cpu'] = float(u) + float(s)
    return d
eng, ch = {}, {}
for l in rows:
    d = kv(l)
    (eng if l.startswith('engine') else ch).setdefault((d['case'], d['overlap']), []).append(d)
med = lambda v: statistics.median(v) if v else float('nan')
print('\nbench_engine append, medians of %d runs per setting (off = every fdatasync on the writer)' % max(len(v) for v in eng.values()))
print('%-7s %12s %12s %6s %9s %9s %14s %14s' % ('case', 'off ev/s', 'on ev/s', 'on/off', 'p50 off', 'p50 on', 'cpu us/ev off', 'cpu us/ev on'))
for case in ['1x1', '1x100', '1x1000', '64x1']:
    a, b = eng.get((case, 'off'), []), eng.get((case, 'default'), [])
    if not a or not b: continue
    ea, eb = med([float(d['events_per_s']) for d in a]), med([float(d['events_per_s']) for d in b])
    pa, pb = med([float(d['p50_us']) for d in a]), med([float(d['p50_us']) for d in b])
    ca = med([d['cpu'] / int(d['events']) * 1e6 for d in a]); cb = med([d['cpu'] / int(d['events']) * 1e6 for d in b])
    print('%-7s %12.0f %12.0f %6.3f %9.1f %9.1f %14.2f %14.2f' % (case, ea, eb, eb / ea, pa, pb, ca, cb))
print('\nbench_chain, chain / without, medians of runs per setting')
print('%-7s %10s %10s %14s %14s' % ('case', 'ratio off', 'ratio on', 'p10 off c/p', 'p10 on c/p'))
for case in ['1x100', '64x1']:
    a, b = ch.get((case, 'off'), []), ch.get((case, 'default'), [])
    if not a or not b: continue
    ra, rb = med([float(d['ratio']) for d in a]), med([float(d['ratio']) for d in b])
    def p10(v):
        c = med([float(d['p10_us'].split('/')[0]) for d in v]); p = med([float(d['p10_us'].split('/')[1]) for d in v])
        return '%.0f/%.0f' % (c, p)
    print('%-7s %10.3f %10.3f %14s %14s' % (case, ra, rb, p10(a), p10(b)))
EOF
mkdir -p bench/results
cp "$OUT" "bench/results/overlap-$(date -u +%Y%m%dT%H%M%SZ).txt"
