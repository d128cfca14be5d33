#!/usr/bin/env python3
"""test_http_admin.py - scavenging over HTTP and from the CLI.

Starts `stele serve` with 64 KiB segments, writes streams in many appends,
deletes and tombstones some, and checks:
  - GET/DELETE /admin/scavenge before any scavenge: 404; other methods 405;
  - POST /admin/scavenge answers 202 with a running (or finished) scavenge,
    GET shows it until it is done, with eventsRemoved and bytesReclaimed
    matching what the deletes hid; reads are unchanged for live streams and
    $all lost exactly the removed events, positions unchanged;
  - `stele scavenge` (JSON on a pipe, a table on a terminal) and
    `stele scavenge --no-wait` against the server, exit code 0;
  - `stele scavenge --dir` refuses a store a server has open (exit 1) and
    works on it once the server is stopped; `stele check` passes after.

Python 3 standard library only.
"""
import json
import os
import pty
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from stele_server import STELE_BIN, Client, Server, Suite, stop_servers  # noqa: E402

T = Suite("test_http_admin")
S = None
C = None
PAD = "x" * 400


def env():
    e = dict(os.environ)
    for k in list(e):
        if k.lower() in ("http_proxy", "https_proxy", "all_proxy", "no_proxy"):
            del e[k]
    e["STELE_SERVER"] = "http://127.0.0.1:%d" % S.port
    return e


def stele(*args):
    p = subprocess.run([STELE_BIN] + list(args), capture_output=True, text=True, env=env(),
                       timeout=120)
    return p.returncode, p.stdout, p.stderr


def stele_tty(*args):
    master, slave = pty.openpty()
    p = subprocess.Popen([STELE_BIN] + list(args), stdout=slave, stderr=subprocess.PIPE,
                         env=env())
    os.close(slave)
    out = b""
    while True:
        try:
            chunk = os.read(master, 4096)
        except OSError:
            break
        if not chunk:
            break
        out += chunk
    p.wait(120)
    os.close(master)
    return p.returncode, out.decode(), p.stderr.read().decode()


def append(stream, n):
    body = json.dumps([{"type": "T", "data": {"i": i, "pad": PAD}} for i in range(n)])
    r = C.post("/streams/" + stream, body)
    return T.expect(r, 201)


def read_all():
    evs, frm = [], 0
    while True:
        b = T.expect(C.get("/all?from=%d&limit=1000" % frm), 200)
        evs += b["events"]
        if "next" not in b:
            return evs
        frm = evs[-1]["position"] + 1


def wait_done():
    for _ in range(600):
        b = T.expect(C.get("/admin/scavenge"), 200)
        if b["scavenge"]["status"] != "running":
            return b["scavenge"]
        time.sleep(0.1)
    T.fail("the scavenge did not finish in 60 s")


def setup():
    global S, C
    S = Server(args=["--segment-size", "65536"]).start()
    C = Client(S.port)


def teardown():
    stop_servers([S], client=C, check_exit=False)


@T.case
def nothing_before_a_scavenge():
    T.expect(C.get("/admin/scavenge"), 404, "NOT_FOUND")
    T.expect(C.delete("/admin/scavenge"), 404, "NOT_FOUND")
    T.expect(C.request("PUT", "/admin/scavenge", b""), 405, "METHOD_NOT_ALLOWED")
    T.expect(C.get("/admin/other"), 404, "NOT_FOUND")


STATE = {}


@T.case
def scavenge_removes_exactly_the_deleted_events():
    # 30 appends of 4 events to each of three streams, then filler so all of
    # them are in sealed segments.
    for _ in range(30):
        for s in ("gone", "dead", "kept"):
            append("adm-" + s, 4)
    T.expect(C.delete("/streams/adm-gone"), 204)
    T.expect(C.delete("/streams/adm-dead?tombstone=true"), 204)
    for _ in range(120):
        append("adm-filler", 4)
    before = read_all()
    kept_before = T.expect(C.get("/streams/adm-kept?limit=1000"), 200)["events"]
    r = C.post("/admin/scavenge", b"")
    b = T.expect(r, 202)["scavenge"]
    T.check(b["status"] in ("running", "done") and b["id"] == 1, "a started scavenge", r.req,
            "running or done, id 1", b)
    sc = wait_done()
    # Everything of the two deleted streams but each one's last append.
    T.check(sc["status"] == "done", "status", None, "done", sc)
    T.check(sc["eventsRemoved"] == 2 * 29 * 4, "eventsRemoved", None, 2 * 29 * 4, sc)
    T.check(sc["bytesReclaimed"] > 0 and sc["segmentsRewritten"] > 0, "space reclaimed", None,
            "> 0", sc)
    for k in ("startedAt", "finishedAt", "bytesRemoved", "bytesScanned", "durationMs"):
        T.check(k in sc, "field " + k, None, k, sc)
    after = read_all()
    want = [e for e in before
            if not (e["stream"] in ("adm-gone", "adm-dead") and e["revision"] < 29 * 4)]
    T.check(after == want, "$all lost exactly the removed events",
            None, "%d events" % len(want), "%d events" % len(after))
    kept = T.expect(C.get("/streams/adm-kept?limit=1000"), 200)["events"]
    T.check(kept == kept_before, "a live stream reads the same")
    T.expect(C.get("/streams/adm-gone"), 404, "STREAM_NOT_FOUND")
    T.expect(C.get("/streams/adm-dead"), 410, "STREAM_DELETED")
    STATE["events"] = len(after)


@T.case
def cli_against_the_server():
    rc, out, err = stele("scavenge")
    T.check(rc == 0, "stele scavenge exit code", None, 0, (rc, out, err))
    sc = json.loads(out)["scavenge"]
    T.check(sc["status"] == "done" and sc["eventsRemoved"] == 0 and sc["id"] == 2,
            "a second scavenge removes nothing", None, "done, 0 removed", sc)
    rc, out, err = stele("scavenge", "--no-wait")
    T.check(rc == 0 and json.loads(out)["scavenge"]["status"] in ("running", "done"),
            "--no-wait", None, "0 and running/done", (rc, out, err))
    wait_done()
    rc, out, err = stele_tty("scavenge")
    T.check(rc == 0 and "events removed" in out and "segments rewritten" in out,
            "a table on a terminal", None, "a table", (rc, out, err))
    rc, out, err = stele("scavenge", "--bogus")
    T.check(rc == 2, "unknown option", None, 2, (rc, out, err))
    rc, out, err = stele("scavenge", "--dir", S.data_dir)
    T.check(rc == 1 and "open in another process" in err, "--dir on a store in use", None,
            "exit 1, ELOCKED", (rc, out, err))


@T.case
def offline_scavenge_and_check():
    global C
    # More deletes, then the server stops and the CLI scavenges the store.
    for _ in range(30):
        append("adm-later", 4)
    T.expect(C.delete("/streams/adm-later"), 204)
    for _ in range(60):
        append("adm-filler", 4)
    C.close()
    T.check(S.stop() == 0, "clean stop")
    rc, out, err = stele("scavenge", "--dir", S.data_dir)
    T.check(rc == 0, "stele scavenge --dir", None, 0, (rc, out, err))
    sc = json.loads(out)["scavenge"]
    T.check(sc["eventsRemoved"] == 29 * 4, "offline removal", None, 29 * 4, sc)
    rc, out, err = stele("check", S.data_dir)
    T.check(rc == 0 and "removed by scavenging" in out, "stele check", None, "ok", (rc, out, err))
    S.start()
    C = Client(S.port)
    T.expect(C.get("/streams/adm-later"), 404, "STREAM_NOT_FOUND")


if __name__ == "__main__":
    T.run(setup, teardown)
