#!/bin/sh
# bench_query_smoke.sh BENCH_QUERY - keeps bench/bench_query from rotting:
# runs its Stele workloads once with tiny sizes and checks that each result
# line appears with a positive rate (PostgreSQL is left to run_query.sh).
# It judges no timing.
set -eu
BQ=$1
D=$(mktemp -d "${TMPDIR:-/tmp}/stele-bq-smoke.XXXXXX")
trap 'rm -rf "$D"' EXIT
out="$D/out.txt"
"$BQ" append --dir "$D" --threads 2 --batch 10 --events 200 --rounds 1 >>"$out"
"$BQ" append --dir "$D" --threads 1 --batch 50 --events 200 --rounds 1 --shape full >>"$out"
"$BQ" build --dir "$D" --events 20000 --streams 200 --categories 10 --types 20 --batch 100 \
    --threads 2 >>"$out" 2>/dev/null
"$BQ" open --dir "$D" >>"$out"
"$BQ" open --dir "$D" --no-indexes >>"$out"
"$BQ" params --dir "$D" --params "$D/params.txt" --reps 3 --count 100 2>/dev/null
"$BQ" query --dir "$D" --params "$D/params.txt" --reps 1 >>"$out"
cat "$out"
for want in append_2x10_engine_summary append_1x50_full_summary build_query_store \
    "open_store mode=clean" "open_store mode=rebuild" "query_category target=stele" \
    "query_type_time target=stele"; do
    line=$(grep "^$want" "$out" | head -1)
    [ -n "$line" ] || { echo "missing: $want" >&2; exit 1; }
    case "$line" in
    *events_per_s=0\ * | *events=0\ *) echo "zero rate: $line" >&2; exit 1 ;;
    esac
done
grep -q "median_on=[1-9]" "$out" || { echo "no on-rate" >&2; exit 1; }
echo "bench_query_smoke: ok"
