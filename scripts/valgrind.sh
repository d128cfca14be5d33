#!/bin/bash
# Run the library's unit tests under valgrind's leak checker: any leak or
# memory error fails. Tests that honour TEST_QUICK run a reduced workload
# (valgrind is ~30x slower). Usage: scripts/valgrind.sh BUILD_DIR
set -e
BUILD=${1:-build}
command -v valgrind >/dev/null || { echo "valgrind missing (scripts/deps.sh installs it)" >&2; exit 1; }
SUPP="$(dirname "$0")/valgrind.supp"
# One test per line, so branches that add tests merge without conflict.
TESTS="
  test_util
  test_os_fault
  test_json
  test_json_text
  test_errors
  test_async
  test_limits
  test_property
  test_property_multi
  test_backend
  test_visibility
  test_streams_meta
  test_groups
  test_group_share
  test_pattern
  test_pattern_prop
  test_diskfull
  test_multi
  test_views
  test_state
  test_snap_trim
  test_rules
  test_proj
  test_proj_gaps
  test_proj_json
  test_proj_inline
  test_backup
  test_auth_header
  test_conventions
  test_chain
  test_chain_rewrite
  test_deletes
  test_idx_ckpt
  test_record
  test_record_compat
  test_overlap
  test_wake
"
# Two tests at a time (valgrind runs one thread at a time, so each takes
# one core; VALGRIND_JOBS overrides). Each test's log is kept; a failing
# test's is printed whole.
export BUILD SUPP
run_one() {
  t=$1
  bin="$BUILD/tests/$t"
  [ -x "$bin" ] || exit 0
  if ! TEST_QUICK=1 STELE_INDEX_MAP_MB=256 valgrind -q --leak-check=full \
        --show-leak-kinds=definite,indirect --errors-for-leak-kinds=definite,indirect \
        --error-exitcode=3 --suppressions="$SUPP" "$bin" >"$BUILD/valgrind-$t.log" 2>&1; then
    cat "$BUILD/valgrind-$t.log"
    echo "valgrind: $t FAILED" >&2
    exit 1
  fi
  echo "valgrind: $t: $(tail -1 "$BUILD/valgrind-$t.log")"
}
export -f run_one
# xargs exits non-zero if any test failed.
printf '%s\n' $TESTS | xargs -P "${VALGRIND_JOBS:-2}" -I{} bash -c 'run_one "$1"' _ {}
