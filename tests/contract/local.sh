#!/bin/sh
# local.sh TEST [ARGS...] - run a contract test on the local engine through
# a store URI template (STELE_TEST_STORE=file:BASE/{}), the way the
# PostgreSQL and DynamoDB setups run it on theirs: a fresh store per case,
# dropped by STELE_TEST_STORE_DROP. The template's base is removed at the end.
set -eu
base=$(mktemp -d "${TMPDIR:-/tmp}/stele-contract-XXXXXX")
trap 'rm -rf "$base"' EXIT INT TERM
export STELE_TEST_STORE="file:$base/{}"
export STELE_TEST_STORE_DROP='rm -rf "${1#file:}"'
"$@"
# Every case dropped its store: nothing may be left in the base.
left=$(ls -A "$base")
if [ -n "$left" ]; then
    echo "local.sh: stores left behind in $base: $left" >&2
    exit 1
fi
