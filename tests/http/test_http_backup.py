#!/usr/bin/env python3
"""test_http_backup.py - backups, the archive and restores through the server
and the CLI (docs/operations.md).

Starts `stele serve` with 64 KiB segments and an archive (--archive-dir,
--archive-interval 1), and checks:
  - /admin/backup before any backup: GET and DELETE 404, PUT 405; POST with
    a bad body (not JSON, no dest, a relative dest, an unknown member) 400
    naming the problem; GET /admin/archive shows a successful first run;
  - 8 writer threads append over HTTP while `stele backup DEST` runs against
    the server: exit 0, verified; the backup restored with `stele restore`
    into a new directory passes `stele check`, and a server on it returns
    every event acknowledged before the backup started, byte for byte (id,
    type, data, metadata, position, created); $all is gapless to the end;
  - a second backup (POST /admin/backup, progress in GET) keeps every
    sealed segment of the first and copies the rest;
  - after a clean stop the archive holds everything: restored to a position
    in the middle, a server on it returns exactly the events up to that
    commit; restored whole, exactly the original $all; `stele check` on the
    archive passes;
  - a flipped byte in a copy: `stele check DEST` and `stele restore` exit 1
    naming the file, and the target directory is not left behind.

Python 3 standard library only.
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from stele_server import STELE_BIN, Client, Server, Suite, stop_servers  # noqa: E402

T = Suite("test_http_backup")
S = None
C = None
TMP = tempfile.mkdtemp(prefix="stele-backup-")
ARCH = os.path.join(TMP, "archive")
DEST = os.path.join(TMP, "backup")
PAD = "y" * 300
ACKED = {}          # stream -> list of (revision, position) acknowledged
ACK_LOCK = threading.Lock()


def env():
    e = dict(os.environ)
    for k in list(e):
        if k.lower() in ("http_proxy", "https_proxy", "all_proxy", "no_proxy"):
            del e[k]
    if S is not None and S.port:
        e["STELE_SERVER"] = "http://127.0.0.1:%d" % S.port
    return e


def stele(*args):
    p = subprocess.run([STELE_BIN] + list(args), capture_output=True, text=True, env=env(),
                       timeout=300)
    return p.returncode, p.stdout, p.stderr


def read_all(client):
    evs, frm = [], 0
    while True:
        b = T.expect(client.get("/all?from=%d&limit=1000" % frm), 200)
        evs += b["events"]
        if "next" not in b:
            return evs
        frm = b["events"][-1]["position"] + 1


def strip(e):
    """What must survive a restore unchanged."""
    return {k: e.get(k) for k in ("id", "stream", "type", "revision", "position", "created",
                                  "data", "metadata")}


def setup():
    global S, C
    S = Server(args=["--segment-size", "65536", "--archive-dir", ARCH,
                     "--archive-interval", "1"]).start()
    C = Client(S.port)


def teardown():
    stop_servers([S], client=C, check_exit=False)
    shutil.rmtree(TMP, ignore_errors=True)


@T.case
def admin_errors_and_archive_status():
    T.expect(C.get("/admin/backup"), 404, "NOT_FOUND")
    T.expect(C.delete("/admin/backup"), 404, "NOT_FOUND")
    T.expect(C.request("PUT", "/admin/backup", b""), 405, "METHOD_NOT_ALLOWED")
    T.expect(C.post("/admin/backup", b"{nope"), 400, "INVALID_JSON")
    for body, word in (("{}", "missing"), ('{"dest":"rel/dir"}', "absolute"),
                       ('{"dest":"/tmp/x","other":1}', "unknown member"),
                       ('{"dest":5}', "string"), ("[]", "object")):
        r = C.post("/admin/backup", body)
        b = T.expect(r, 400, "INVALID_ARGUMENT")
        T.check(word in b["error"]["message"], "the message says what is wrong", r.req, word, b)
    # The first archive run is the archive thread's, right after the start.
    for _ in range(600):
        a = T.expect(C.get("/admin/archive"), 200)["archive"]
        if a["runs"] >= 1:
            break
        threading.Event().wait(0.1)
    T.check(a["dir"] == ARCH and a["runs"] >= 1 and a["failures"] == 0 and "lastSuccessAt" in a,
            "the archive ran at start", None, "runs >= 1, no failure", a)
    T.expect(C.post("/admin/archive", b""), 405, "METHOD_NOT_ALLOWED")


def writer(k, stop, errors):
    cl = Client(S.port)
    stream = "bw-%d" % k
    rev = 0
    try:
        while not stop.is_set() or rev < 20:
            body = json.dumps([{"type": "W", "data": {"k": k, "r": rev + i, "pad": PAD},
                                "metadata": {"r": rev + i}} for i in range(2)])
            r = cl.post("/streams/" + stream, body, {"Stele-Expected-Revision": str(rev - 1)
                                                     if rev else "no_stream"})
            if r.status != 201:
                errors.append((r.status, r.raw[:200]))
                return
            b = json.loads(r.raw)
            with ACK_LOCK:
                ACKED.setdefault(stream, []).append((b["lastRevision"], b["lastPosition"]))
            rev += 2
    finally:
        cl.close()


@T.case
def backup_while_eight_writers_append_then_restore():
    stop = threading.Event()
    errors = []
    threads = [threading.Thread(target=writer, args=(k, stop, errors)) for k in range(8)]
    for t in threads:
        t.start()
    # Wait for some segments' worth of acknowledged appends (a count, not a time).
    while True:
        with ACK_LOCK:
            n = sum(len(v) for v in ACKED.values())
        if n >= 600 or errors:
            break
        threading.Event().wait(0.02)
    with ACK_LOCK:
        before = {s: v[-1][0] for s, v in ACKED.items()}
    rc, out, err = stele("backup", DEST)
    stop.set()
    for t in threads:
        t.join()
    T.check(not errors, "every append succeeded", None, "none failed", errors)
    T.check(rc == 0, "stele backup exit code", None, 0, (rc, out, err))
    bk = json.loads(out)["backup"]
    T.check(bk["status"] == "done" and bk["segmentsCopied"] == bk["segments"] > 3,
            "a first backup copies every segment", None, "done, > 3 segments", bk)
    rc, out, err = stele("check", DEST)
    T.check(rc == 0 and "every checksum matches" in out, "stele check DEST", None, 0,
            (rc, out, err))
    new = os.path.join(TMP, "restored")
    rc, out, err = stele("restore", DEST, "--data", new, "--json")
    T.check(rc == 0, "stele restore", None, 0, (rc, out, err))
    rs = json.loads(out)["restore"]
    T.check(rs["endPosition"] == bk["endPosition"] and rs["check"] == "passed",
            "restored to the backup's end", None, bk["endPosition"], rs)
    rc, out, err = stele("check", new)
    T.check(rc == 0, "stele check on the restored store", None, 0, (rc, out, err))
    orig = {e["position"]: strip(e) for e in read_all(C)}
    R = Server(data_dir=new).start()
    RC = Client(R.port)
    try:
        got = read_all(RC)
        T.check([e["position"] for e in got] == list(range(bk["endPosition"])),
                "$all of the restored store is gapless up to the backup's end", None,
                bk["endPosition"], len(got))
        for e in got:
            if strip(e) != orig.get(e["position"]):
                T.fail("an event differs from the original", None, orig.get(e["position"]),
                       strip(e))
        have = {}
        for e in got:
            have[e["stream"]] = e["revision"]
        for s, last in before.items():
            T.check(have.get(s, -1) >= last, "acknowledged before the backup: " + s, None,
                    ">= %d" % last, have.get(s))
    finally:
        stop_servers([R], client=RC)
        R.cleanup()
    shutil.rmtree(new, ignore_errors=True)
    # A second backup through the HTTP endpoint: only what changed.
    r = C.post("/admin/backup", json.dumps({"dest": DEST}))
    b = T.expect(r, 202)["backup"]
    T.check(b["dest"] == DEST and b["id"] == 2, "the second backup", r.req, "id 2", b)
    for _ in range(600):
        b = T.expect(C.get("/admin/backup"), 200)["backup"]
        if b["status"] != "running":
            break
        threading.Event().wait(0.1)
    T.check(b["status"] == "done" and b["segmentsKept"] == bk["segments"] - 1 and
            b["segmentsCopied"] == b["segments"] - b["segmentsKept"] and
            b["bytesCopied"] < b["bytesTotal"],
            "the second backup keeps the first's sealed segments", None,
            "kept %d" % (bk["segments"] - 1), b)


@T.case
def archive_restores_to_a_point_and_whole():
    global C
    everything = [strip(e) for e in read_all(C)]
    C.close()
    T.check(S.stop() == 0, "clean stop")
    rc, out, err = stele("check", ARCH)
    T.check(rc == 0, "stele check on the archive", None, 0, (rc, out, err))
    mid = everything[len(everything) // 2]["position"]
    for point, name in ((["--to-position", str(mid)], "mid"), ([], "whole")):
        new = os.path.join(TMP, "arch-" + name)
        rc, out, err = stele("restore", ARCH, "--data", new, *point)
        T.check(rc == 0, "stele restore " + name, None, 0, (rc, out, err))
        R = Server(data_dir=new).start()
        RC = Client(R.port)
        try:
            got = [strip(e) for e in read_all(RC)]
        finally:
            stop_servers([R], client=RC)
            R.cleanup()
        if name == "whole":
            want = everything
        else:
            # The commit holding `mid` is whole: writers append 2 events at once.
            want = [e for e in everything if e["position"] <= mid]
            if got and len(got) == len(want) + 1:
                want = everything[:len(got)]
        T.check(got == want, "the archive restored " + name, None, "%d events" % len(want),
                "%d events" % len(got))
        shutil.rmtree(new, ignore_errors=True)
    S.start()
    C = Client(S.port)


@T.case
def damage_is_named():
    seg = os.path.join(DEST, "segments", "00000001.seg")
    with open(seg, "r+b") as f:
        f.seek(3000)
        c = f.read(1)
        f.seek(3000)
        f.write(bytes([c[0] ^ 0x10]))
    rc, out, err = stele("check", DEST)
    T.check(rc == 1 and "segments/00000001.seg" in err, "stele check names the file", None,
            "exit 1 naming segments/00000001.seg", (rc, out, err))
    new = os.path.join(TMP, "damaged")
    rc, out, err = stele("restore", DEST, "--data", new)
    T.check(rc == 1 and "segments/00000001.seg" in err, "stele restore names the file", None,
            "exit 1 naming segments/00000001.seg", (rc, out, err))
    T.check(not os.path.exists(new), "nothing left behind")
    rc, out, err = stele("restore", DEST)
    T.check(rc == 2, "restore without --data", None, 2, (rc, out, err))
    rc, out, err = stele("restore", DEST, "--data", new, "--to-position", "x")
    T.check(rc == 2, "restore with a bad position", None, 2, (rc, out, err))


if __name__ == "__main__":
    T.run(setup, teardown)
