#!/usr/bin/env python3
"""test_serve_store.py - `stele serve` names its store by a URI.

  - --store file:DIR, --data DIR, STELE_STORE=DIR and --store DIR all serve
    the same local store (events written through one form are read through
    the next);
  - --store and --data naming different stores: exit 2 with a message;
  - an unknown scheme, a malformed file: URI, and a backend this build may
    lack: exit 1 with a message that says why, the password of a URI never
    printed;
  - `stele check` accepts file:DIR and refuses other URIs.

Python 3 standard library only.
"""
import json
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from stele_server import STELE_BIN, Client, Server, Suite  # noqa: E402

T = Suite("test_serve_store")
TMP = tempfile.mkdtemp(prefix="stele-store-")
DIR = os.path.join(TMP, "data")


def env(**kw):
    e = {k: v for k, v in os.environ.items() if not k.startswith("STELE_") or k == "STELE_BIN"}
    e.update(kw)
    return e


def run(*args, **kw):
    p = subprocess.run([STELE_BIN] + list(args), capture_output=True, text=True,
                       env=env(**kw), timeout=120)
    return p.returncode, p.stdout, p.stderr


def append_and_count(srv, expected):
    c = Client(srv.port)
    body = json.dumps({"expectedRevision": "no_stream" if expected < 0 else expected,
                       "events": [{"type": "T", "data": {"n": expected}}]})
    T.expect(c.post("/streams/s-1", body), 201)
    events = T.expect(c.get("/streams/s-1?limit=100"), 200)["events"]
    c.close()
    T.check(len(events) == expected + 2, "every earlier event is there", None,
            expected + 2, len(events))


@T.case
def every_local_form_serves_the_same_store():
    forms = [("store", "file:" + DIR), ("data", DIR), ("store", DIR),
             ("store", "file://" + DIR)]
    for i, (flag, value) in enumerate(forms):
        srv = Server(data_dir=DIR, store=value if flag == "store" else None)
        srv.start()
        try:
            append_and_count(srv, i - 1)
        finally:
            T.check(srv.stop() == 0, "clean stop")
    # STELE_STORE names it too.
    os.environ["STELE_STORE"] = DIR
    try:
        srv = Server(store=None, data_dir=DIR)
        srv.args = []
        # --data DIR plus STELE_STORE=DIR: the same store, accepted.
        srv.start()
        append_and_count(srv, len(forms) - 1)
        T.check(srv.stop() == 0, "clean stop")
    finally:
        del os.environ["STELE_STORE"]


@T.case
def conflicting_or_bad_stores_fail_clearly():
    rc, _, err = run("serve", "--port", "0", "--store", DIR, "--data", DIR + "2")
    T.check(rc == 2 and "both store" in err, "--store and --data differ", None, "exit 2",
            (rc, err))
    rc, _, err = run("serve", "--port", "0", "--data", DIR + "2", STELE_STORE=DIR)
    T.check(rc == 2 and "both store" in err, "STELE_STORE and --data differ", None, "exit 2",
            (rc, err))
    rc, _, err = run("serve", "--port", "0", "--store", "mysql://h/db")
    T.check(rc == 1 and "unknown scheme" in err, "unknown scheme", None, "exit 1", (rc, err))
    rc, _, err = run("serve", "--port", "0", "--store", "file://otherhost/x")
    T.check(rc == 1 and "file: URI" in err, "malformed file: URI", None, "exit 1", (rc, err))
    rc, _, err = run("serve", "--port", "0", "--store",
                     "postgres://u:s3cr3t@127.0.0.1:1/db?connect_timeout=2&password=p4ss")
    T.check(rc == 1 and "cannot open the store" in err and "s3cr3t" not in err
            and "p4ss" not in err, "PostgreSQL unreachable or absent, password hidden", None,
            "exit 1", (rc, err))


@T.case
def check_takes_local_uris_only():
    rc, out, err = run("check", "file:" + DIR)
    T.check(rc == 0, "stele check file:DIR", None, 0, (rc, out, err))
    rc, out, err = run("check", "postgres://h/db")
    T.check(rc == 2 and "local stores" in err, "stele check postgres://", None, 2, (rc, err))


if __name__ == "__main__":
    T.run(teardown=lambda: subprocess.run(["rm", "-rf", TMP]))
