#!/usr/bin/env python3
"""
test_http_multi.py - multi-stream appends and DCB queries over HTTP
(POST /streams, POST /query; docs/http-api.md, docs/consistency.md), against
a real `stele serve`:

- a transfer between two streams is one commit: gapless positions, per-stream
  revisions, a state snapshot saved with it; idempotent retry by event ids;
- every failure names what failed: WRONG_EXPECTED_REVISION with the stream
  and its current revision, STREAM_DELETED, CONDITION_FAILED with the
  matching position; nothing is written;
- bad input (empty requests, duplicate streams, conditions without items or
  with empty items, too many streams, oversized bodies, bad JSON): 400/413,
  nothing written;
- POST /query both directions, paged, and its "after" used as a condition;
- concurrent transfers over HTTP keep the total balance; all survives SIGKILL.
"""
import json
import os
import sys
import threading
import uuid

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from stele_server import Client, Server, Suite, check_servers, stop_servers  # noqa: E402

T = Suite("test_http_multi")
S = None
C = None


def setup():
    global S, C
    S = Server(["--max-append-size", "1048576"], name="main").start()
    C = Client(S.port)


def after_case():
    def reconnect(srv):
        global C
        C.close()
        C = Client(S.port)
    check_servers(T, [S], reconnect)


def teardown():
    stop_servers([S], client=C)


def post(path, body):
    return C.post(path, body if isinstance(body, str) else json.dumps(body))


def count_all():
    b = T.expect(C.get("/all?limit=10000"), 200)
    return len(b["events"])


def transfer(a, b, amt, ra="any", rb="any", ids=None):
    ev_a = {"type": "Debited", "data": {"amount": amt}, "tags": ["account:" + a]}
    ev_b = {"type": "Credited", "data": {"amount": amt}, "tags": ["account:" + b]}
    if ids:
        ev_a["id"], ev_b["id"] = ids
    return {"streams": [{"stream": a, "expectedRevision": ra, "events": [ev_a]},
                        {"stream": b, "expectedRevision": rb, "events": [ev_b]}]}


@T.case
def transfer_is_one_commit():
    T.expect(post("/streams/Acct-A", [{"type": "Opened", "data": {"amount": 100}}]), 201)
    T.expect(post("/streams/Acct-B", [{"type": "Opened", "data": {"amount": 100}}]), 201)
    body = transfer("Acct-A", "Acct-B", 30, 0, 0)
    body["streams"][0]["state"] = {"balance": 70}
    body["streams"][0]["stateSchemaVersion"] = 4
    b = T.expect(post("/streams", body), 201)
    T.check(b["lastPosition"] == b["firstPosition"] + 1 and not b["idempotent"], "positions",
            None, None, b)
    s = b["streams"]
    T.check(s[0]["firstRevision"] == 1 and s[1]["firstRevision"] == 1 and
            s[1]["firstPosition"] == s[0]["firstPosition"] + 1, "per-stream results", None, None,
            b)
    snap = T.expect(C.get("/streams/Acct-A/snapshots"), 200)
    T.check(snap["revision"] == 1 and snap["state"] == {"balance": 70} and
            snap["schemaVersion"] == 4, "state saved in the commit", None, None, snap)
    # idempotent retry
    ids = [str(uuid.uuid4()), str(uuid.uuid4())]
    first = T.expect(post("/streams", transfer("Acct-A", "Acct-B", 1, ids=ids)), 201)
    again = T.expect(post("/streams", transfer("Acct-A", "Acct-B", 1, ids=ids)), 200)
    T.check(again["idempotent"] and again["firstPosition"] == first["firstPosition"],
            "retry returns the original", None, None, again)
    # check-only stream
    b = T.expect(post("/streams", {"streams": [
        {"stream": "Acct-A", "expectedRevision": 2},
        {"stream": "Audit", "events": [{"type": "Checked"}]}]}), 201)
    T.check(b["streams"][0]["firstRevision"] is None, "check-only stream has no revisions",
            None, None, b)


@T.case
def failures_name_the_stream():
    T.expect(post("/streams/F-1", [{"type": "E"}, {"type": "E"}]), 201)
    n = count_all()
    r = post("/streams", transfer("F-0", "F-1", 1, "any", 5))
    b = T.expect(r, 409, "WRONG_EXPECTED_REVISION")
    e = b["error"]
    T.check(e["stream"] == "F-1" and e["streamIndex"] == 1 and e["currentRevision"] == 1,
            "names stream and revision", r.req, None, b)
    # every failing stream is listed
    r = post("/streams", {"streams": [
        {"stream": "F-1", "expectedRevision": "no_stream"},
        {"stream": "F-0", "expectedRevision": "any", "events": [{"type": "E"}]},
        {"stream": "F-9", "expectedRevision": "stream_exists"}]})
    b = T.expect(r, 409, "WRONG_EXPECTED_REVISION")
    T.check([(f["streamIndex"], f["code"], f["currentRevision"]) for f in b["error"]["failures"]]
            == [(0, "WRONG_EXPECTED_REVISION", 1), (2, "WRONG_EXPECTED_REVISION", None)],
            "all failures", r.req, None, b)
    T.expect(C.request("DELETE", "/streams/F-1"), (200, 204))
    r = post("/streams", transfer("F-0", "F-1", 1, "any", "stream_exists"))
    b = T.expect(r, 410, "STREAM_DELETED")
    T.check(b["error"]["stream"] == "F-1", "deleted stream named", r.req, None, b)
    T.expect(post("/streams", transfer("F-0", "F-1", 1, "any", "deleted")), 201)
    # a condition that matches
    r = post("/streams", {"streams": [{"stream": "F-2", "events": [{"type": "E"}]}],
                          "condition": {"failIfEventsMatch": [{"types": ["Credited"],
                                                               "tags": ["account:F-1"]}]}})
    b = T.expect(r, 409, "CONDITION_FAILED")
    T.check(isinstance(b["error"]["position"], int), "position given", r.req, None, b)
    # (and the delete of F-1, an event of $deletes: docs/projections.md)
    T.check(count_all() == n + 3, "only the good append was written", None, n + 3, count_all())


@T.case
def bad_input_writes_nothing():
    n = count_all()
    ev = [{"type": "E"}]
    cases = [
        ({}, 400), ({"streams": []}, 400), ({"streams": [{"stream": "x"}]}, 400),
        ({"streams": [{"stream": "x", "events": ev}, {"stream": "x", "events": ev}]}, 400),
        ({"streams": [{"stream": "x", "events": ev}], "condition": {"failIfEventsMatch": []}},
         400),
        ({"streams": [{"stream": "x", "events": ev}], "condition": {"failIfEventsMatch": [{}]}},
         400),
        ({"streams": [{"stream": "x", "events": ev}], "condition": {}}, 400),
        ({"streams": [{"stream": "x", "events": ev}], "condition": {"failIfEventsMatch":
                                                                    [{"tags": [""]}]}}, 400),
        ({"streams": [{"stream": "x", "events": ev, "expectedRevision": "sometimes"}]}, 400),
        ({"streams": [{"stream": "x", "events": ev, "bogus": 1}]}, 400),
        ({"streams": [{"stream": "$sys", "events": ev}]}, 400),
        ({"streams": [{"stream": "s%d" % i, "events": ev} for i in range(1001)]}, 413),
        ({"streams": [{"stream": "x", "events": [{"type": "E", "data": "x" * 1100000}]}]}, 413),
        ("{not json", 400),
    ]
    for body, status in cases:
        r = post("/streams", body)
        T.expect(r, status)
        T.check(isinstance(r.body, dict) and r.body.get("error", {}).get("message"),
                "a message", r.req, None, r.body)
    T.expect(post("/query", {"query": []}), 400)
    T.expect(post("/query", {"query": [{}]}), 400)
    T.expect(post("/query", {"query": [{"tags": ["a"]}], "limit": 0}), 400)
    # GET /streams lists streams (docs/http-api.md): it appends nothing
    r = C.get("/streams")
    T.expect(r, 200)
    T.check(isinstance(r.body, dict) and isinstance(r.body.get("streams"), list), "a listing",
            r.req, None, r.body)
    T.check(count_all() == n, "nothing written", None, n, count_all())


@T.case
def query_reads_and_decides():
    for i in range(12):
        T.expect(post("/streams/Course-%d" % (i % 3), [
            {"type": "StudentSubscribed", "tags": ["course:q%d" % (i % 3), "student:%d" % i]}]),
            201)
    q = [{"types": ["StudentSubscribed"], "tags": ["course:q1"]}]
    got, frm = [], 0
    for _ in range(10):
        b = T.expect(post("/query", {"query": q, "from": frm, "limit": 2}), 200)
        got += [e["position"] for e in b["events"]]
        if b["next"] is None:
            break
        frm = b["next"]
    T.check(len(got) == 4 and got == sorted(got), "forwards, paged", None, 4, got)
    b = T.expect(post("/query", {"query": q, "direction": "backwards", "limit": 100}), 200)
    T.check([e["position"] for e in b["events"]] == got[::-1], "backwards", None, got[::-1], b)
    after = b["after"]
    cond = {"failIfEventsMatch": q, "after": after}
    ok = {"streams": [{"stream": "Course-1", "events": [
        {"type": "StudentSubscribed", "tags": ["course:q1", "student:99"]}]}], "condition": cond}
    T.expect(post("/streams", ok), 201)
    T.expect(post("/streams", ok), 409, "CONDITION_FAILED")  # the first one now matches


@T.case
def concurrent_transfers_keep_the_total():
    accts = ["Bank-%d" % i for i in range(10)]
    for a in accts:
        T.expect(post("/streams/" + a, [{"type": "Opened", "data": {"amount": 100}}]), 201)

    def fold(cl, a):
        b = json.loads(cl.get("/streams/%s?limit=10000" % a).raw)
        bal = 0
        for e in b["events"]:
            bal += e["data"]["amount"] * (-1 if e["type"] == "Debited" else 1)
        return bal, b["events"][-1]["revision"]

    errors = []

    def worker(k):
        cl = Client(S.port)
        import random
        rnd = random.Random(k)
        for _ in range(40):
            a, b = rnd.sample(accts, 2)
            ba, ra = fold(cl, a)
            _, rb = fold(cl, b)
            amt = rnd.randint(1, 10)
            if amt > ba:
                continue
            r = cl.post("/streams", json.dumps(transfer(a, b, amt, ra, rb)))
            if r.status not in (201, 409):
                errors.append(r.status)
        cl.close()

    th = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
    for t in th:
        t.start()
    for t in th:
        t.join()
    T.check(not errors, "only 201/409", None, [], errors)
    total = sum(fold(C, a)[0] for a in accts)
    T.check(total == 1000, "total balance", None, 1000, total)
    S.kill()
    S.start()
    global C
    C.close()
    C = Client(S.port)
    total = sum(fold(C, a)[0] for a in accts)
    T.check(total == 1000, "total balance after SIGKILL", None, 1000, total)


@T.case
def cli_append_multi():
    import subprocess
    from stele_server import STELE_BIN
    body = json.dumps({"streams": [{"stream": "Cli-M1", "expectedRevision": "no_stream",
                                    "events": [{"type": "X"}]},
                                   {"stream": "Cli-M2", "events": [{"type": "Y"}]}]})
    srv = "http://127.0.0.1:%d" % S.port

    def run(*args, stdin=b""):
        p = subprocess.run([STELE_BIN, "append", *args, "--server", srv], input=stdin,
                           capture_output=True, timeout=60)
        return p.returncode, p.stdout, p.stderr
    rc, out, err = run("--multi", "-", stdin=body.encode())
    T.check(rc == 0 and json.loads(out)["lastPosition"] == json.loads(out)["firstPosition"] + 1,
            "--multi appends", None, 0, (rc, out, err))
    rc, out, err = run("--multi", "-", stdin=body.encode())
    T.check(rc == 1 and b"WRONG_EXPECTED_REVISION" in err, "refused: exit 1", None, 1,
            (rc, out, err))
    rc, out, err = run("--multi", "-", stdin=b'{"events": []}')
    T.check(rc == 2, "not a multi body: exit 2", None, 2, (rc, out, err))
    rc, out, err = run("Cli-M1", "--multi", "-", stdin=body.encode())
    T.check(rc == 2, "--multi with a STREAM: exit 2", None, 2, (rc, out, err))


if __name__ == "__main__":
    T.run(setup, teardown, after_case)
