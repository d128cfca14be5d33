"""
run_on_pg.py SUITE - run one HTTP suite (tests/http/test_http_SUITE.py),
written against the local engine, on the PostgreSQL backend: a private
PostgreSQL is started (pg_server.py) and every `stele serve --data DIR` the
suite starts gets a database of its own instead (stele_on_pg.sh). This is
the HTTP half of the contract suite for PostgreSQL: the same cases, the
same expectations, another backend. Exit status: the suite's.
"""
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from pg_server import PgServer  # noqa: E402
from stele_server import STELE_BIN  # noqa: E402


def main():
    suite = sys.argv[1]
    pg = PgServer()
    with open(os.path.join(pg.data, "postgresql.conf"), "a") as f:
        f.write("max_connections = 100\n")
    pg.start()
    try:
        env = dict(os.environ, STELE_BIN=os.path.join(HERE, "stele_on_pg.sh"),
                   STELE_REAL_BIN=STELE_BIN, PGW_HOST=pg.tmp, PGW_PORT=str(pg.port))
        return subprocess.run([sys.executable, os.path.join(HERE, "test_http_%s.py" % suite)],
                              env=env).returncode
    finally:
        pg.cleanup()


if __name__ == "__main__":
    sys.exit(main())
