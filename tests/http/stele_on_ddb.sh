#!/bin/sh
# stele_on_ddb.sh - stands in for the stele binary (as STELE_BIN) so that an
# HTTP suite written for the local engine runs on the DynamoDB backend:
# every "--data DIR" becomes a dynamodb:// URI whose table prefix is named
# after DIR (so a restart on the same DIR finds the same tables) on the
# DynamoDB Local of $STELE_DDB_ENDPOINT. run_on_ddb.py sets STELE_REAL_BIN.
# Other commands and arguments pass through unchanged.
set -e
n=$#
i=0
while [ $i -lt $n ]; do
  a=$1
  shift
  i=$((i + 1))
  if [ "$a" = "--data" ] && [ $i -lt $n ] && [ "${1#/}" != "$1" ]; then
    p="d$(printf '%s' "$1" | md5sum | cut -c1-16)"
    set -- "$@" --data "dynamodb://$p?endpoint=$STELE_DDB_ENDPOINT&region=us-east-1"
    shift
    i=$((i + 1))
  else
    set -- "$@" "$a"
  fi
done
exec "$STELE_REAL_BIN" "$@"
