#!/bin/sh
# contract.sh TEST [ARGS...] - run a contract test (docs/architecture.md,
# "The contract test suite") on the DynamoDB backend: a fresh DynamoDB
# Local (tests/ddb/run.sh), STELE_TEST_STORE a dynamodb:// template (one
# table prefix per case) and STELE_TEST_STORE_DROP deleting the case's five
# tables (through tests/aws/aws_cli, $AWS_CLI).
set -eu
if [ -z "${STELE_DDB_ENDPOINT:-}" ]; then
  exec sh "$(dirname "$0")/run.sh" sh "$0" "$@"
fi
: "${AWS_CLI:?set by CTest}"
export STELE_TEST_STORE="dynamodb://{}?endpoint=$STELE_DDB_ENDPOINT&region=us-east-1"
export STELE_TEST_STORE_DROP='p=${1#dynamodb://}; p=${p%%\?*}; for t in events streams ids feed snapshots; do "$AWS_CLI" dynamodb "$STELE_DDB_ENDPOINT" DynamoDB_20120810.DeleteTable "{\"TableName\":\"$p-$t\"}" >/dev/null || exit 1; done'
exec "$@"
