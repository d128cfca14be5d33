#!/bin/bash
# fuzz.sh BUILD SECONDS [DRIVER...] - run each libFuzzer driver of BUILD
# (configured with -DSTELE_FUZZ=ON; `make fuzz` does it) for SECONDS, one at
# a time under nice -n 10, on its checked-in corpus fuzz/corpus/NAME. New
# inputs go to BUILD/fuzz-out/NAME (the checked-in corpus is only read);
# crashes to BUILD/fuzz-out/crash-NAME-*. Prints one line per driver:
# executions, edges (libFuzzer's cov:), corpus size, and the exit status;
# exits non-zero if any driver found a crash. Minimise a crash input, fix
# the code, and add the input to fuzz/corpus/NAME/ (docs/testing.md).
set -u
build=${1:?usage: fuzz.sh BUILD SECONDS [DRIVER...]}
secs=${2:?usage: fuzz.sh BUILD SECONDS [DRIVER...]}
shift 2
root=$(cd "$(dirname "$0")/.." && pwd)
if [ $# -eq 0 ]; then
    set -- $(cd "$root/fuzz" && ls fuzz_*.c | sed 's/^fuzz_//; s/\.c$//')
fi
out="$build/fuzz-out"
mkdir -p "$out"
# The drivers' scratch stores: memory-backed when possible (fsync is cheap).
if [ -z "${TMPDIR:-}" ] && [ -d /dev/shm ] && [ -w /dev/shm ]; then
    export TMPDIR=/dev/shm
fi
failed=0
summary=""
for name in "$@"; do
    bin="$build/fuzz/fuzz_$name"
    if [ ! -x "$bin" ]; then
        echo "fuzz.sh: no driver $bin" >&2
        failed=1
        continue
    fi
    mkdir -p "$out/$name"
    log="$out/$name.log"
    echo "== fuzz_$name for ${secs}s (log $log)"
    nice -n 10 "$bin" -max_total_time="$secs" -timeout=30 -rss_limit_mb=4096 \
        -print_final_stats=1 -artifact_prefix="$out/crash-$name-" \
        "$out/$name" "$root/fuzz/corpus/$name" >"$log" 2>&1
    rc=$?
    execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | tail -1 | grep -o '[0-9]*$')
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | grep -o '[0-9]*$')
    corp=$(ls "$out/$name" | wc -l)
    line="$name: ${execs:-?} executions, ${cov:-?} edges, $corp new corpus files, exit $rc"
    echo "$line"
    summary="$summary$line"$'\n'
    if [ $rc -ne 0 ]; then
        failed=1
        grep -m3 -E 'ERROR|SUMMARY|runtime error|abort' "$log" | sed 's/^/    /'
    fi
done
echo "== fuzz summary ($secs s each)"
printf '%s' "$summary"
exit $failed
