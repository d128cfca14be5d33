"""
run_on_ddb.py SUITE - run one HTTP suite (tests/http/test_http_SUITE.py),
written against the local engine, on the DynamoDB backend: under
tests/ddb/run.sh (a DynamoDB Local, $STELE_DDB_ENDPOINT), every `stele
serve --data DIR` the suite starts gets a table prefix of its own instead
(stele_on_ddb.sh). The HTTP half of the contract suite for DynamoDB, as
run_on_pg.py is for PostgreSQL. Exit status: the suite's.
"""
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from stele_server import STELE_BIN  # noqa: E402


def main():
    if not os.environ.get("STELE_DDB_ENDPOINT"):
        sys.exit("run_on_ddb.py: STELE_DDB_ENDPOINT not set (run it under tests/ddb/run.sh)")
    env = dict(os.environ, STELE_BIN=os.path.join(HERE, "stele_on_ddb.sh"), STELE_REAL_BIN=STELE_BIN)
    return subprocess.run([sys.executable, os.path.join(HERE, "test_http_%s.py" % sys.argv[1])],
                          env=env).returncode


if __name__ == "__main__":
    sys.exit(main())
