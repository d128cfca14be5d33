#!/usr/bin/env python3
"""
test_http_state.py - aggregate state with the append over HTTP (seed 004;
docs/streams.md, docs/http-api.md) against a real `stele serve`:

- race: 8 writer threads fold one stream: GET /streams/{s}/state, fold
  their event into it, POST the event with "state" at the revision they
  read; on 409 they read again. A reader thread keeps reading the state:
  it is always "current" (no event after it) with n = revision + 1. At the
  end the stream holds exactly the 201-acknowledged events, the state
  equals their fold, and so after a SIGKILL and restart.
- a conflict (409) writes neither event nor state; "stateBase64" and
  "stateSchemaVersion" round-trip; a plain append leaves the state behind
  ("current": false).
- bad input: both state forms, a schema version without state or out of
  range, bad base64, a state over the event size limit (413), GET /state
  of a stream without state (404 STATE_NOT_FOUND) or without events (404),
  other methods (405).
"""
import json
import os
import sys
import threading
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from stele_server import Client, Server, Suite, stop_servers  # noqa: E402

T = Suite("test_http_state")
S = None
C = None


def setup():
    global S, C
    S = Server(args=["--max-event-size", "65536"])
    S.start()
    C = Client(S.port)


def teardown():
    stop_servers([S], client=C, check_exit=False)


def fold_stream(stream):
    n, total, path = 0, 0, "/streams/%s?limit=1000" % stream
    while path:
        r = C.get(path)
        T.expect(r, 200, what=path)
        for e in r.body["events"]:
            n += 1
            total += e["data"]["v"]
        path = r.body.get("next")
    return n, total


def post(client, stream, expected, v, state, extra=None):
    body = {"expectedRevision": expected, "events": [{"type": "Deposited", "data": {"v": v}}],
            "state": state, "stateSchemaVersion": 2}
    body.update(extra or {})
    return client.post("/streams/%s" % stream, json.dumps(body))


@T.case
def racing_writers_keep_state_and_events_together():
    stream = "Account-race"
    acked = []
    lock = threading.Lock()
    stop = threading.Event()
    problems = []

    def writer(w):
        cl = Client(S.port)
        for k in range(25):
            v = w * 1000 + k
            for _ in range(10000):
                r = cl.get("/streams/%s/state" % stream)
                if r.status == 404:
                    expected, st = "no_stream", {"n": 0, "sum": 0}
                else:
                    if r.status != 200 or not r.body.get("current"):
                        problems.append(("writer read", r.status, r.body))
                        break
                    expected, st = r.body["revision"], r.body["state"]
                new = {"n": st["n"] + 1, "sum": st["sum"] + v}
                r = post(cl, stream, expected, v, new)
                if r.status == 201:
                    with lock:
                        acked.append(v)
                    break
                if r.status != 409:
                    problems.append(("append", r.status, r.body))
                    break
        cl.close()

    def reader():
        cl = Client(S.port)
        while not stop.is_set():
            r = cl.get("/streams/%s/state" % stream)
            if r.status == 404:
                continue
            b = r.body
            if r.status != 200 or not b.get("current") or b["state"]["n"] != b["revision"] + 1 \
                    or b["schemaVersion"] != 2:
                problems.append(("reader", r.status, b))
        cl.close()

    rd = threading.Thread(target=reader)
    rd.start()
    ws = [threading.Thread(target=writer, args=(w,)) for w in range(8)]
    for t in ws:
        t.start()
    for t in ws:
        t.join()
    stop.set()
    rd.join()
    T.check(not problems, "no writer or reader saw a state behind its stream", stream, [],
            problems[:3])
    T.check(len(acked) == 200, "every writer got its 25 appends in", stream, 200, len(acked))

    def final(what):
        n, total = fold_stream(stream)
        r = C.get("/streams/%s/state" % stream)
        T.expect(r, 200, what=what)
        T.check(n == len(acked) and total == sum(acked),
                "%s: the stream holds exactly the acknowledged events" % what, stream,
                (len(acked), sum(acked)), (n, total))
        T.check(r.body["state"] == {"n": n, "sum": total} and r.body["current"] and
                r.body["revision"] == n - 1 and r.body["lastRevision"] == n - 1,
                "%s: the state is the fold, at the last revision" % what, stream,
                {"n": n, "sum": total}, r.body)

    final("after the race")
    S.kill()
    S.start()
    C.close()
    globals()["C"] = Client(S.port)
    final("after a SIGKILL")


@T.case
def conflicts_write_nothing_and_forms_round_trip():
    s = "Account-forms"
    r = post(C, s, "no_stream", 1, {"n": 1, "sum": 1})
    T.expect(r, 201)
    r = post(C, s, 7, 2, {"n": 99, "sum": 99})
    T.expect(r, 409, "WRONG_EXPECTED_REVISION")
    T.check(r.body["error"].get("currentRevision") == 0, "409 names the current revision",
            r.req, 0, r.body)
    T.check("nothing was written" in r.body["error"]["message"], "409 says nothing was written",
            r.req, "nothing was written", r.body)
    r = post(C, s, "no_stream", 2, {"n": 99, "sum": 99})
    T.expect(r, 409, "WRONG_EXPECTED_REVISION")
    st = C.get("/streams/%s/state" % s)
    T.check(st.body["state"] == {"n": 1, "sum": 1} and st.body["revision"] == 0,
            "a conflict stored no state", st.req, {"n": 1, "sum": 1}, st.body)
    T.check(fold_stream(s) == (1, 1), "a conflict stored no event", s)
    # Bytes.
    r = C.post("/streams/%s" % s, json.dumps({"events": [{"type": "D", "data": {"v": 0}}],
                                               "stateBase64": "AAEC/w==",
                                               "stateSchemaVersion": 7}))
    T.expect(r, 201)
    st = C.get("/streams/%s/state" % s)
    T.check(st.body.get("stateBase64") == "AAEC/w==" and st.body["schemaVersion"] == 7 and
            st.body["revision"] == 1 and st.body["current"], "stateBase64 round-trips", st.req,
            "AAEC/w==", st.body)
    # Exact bytes of a JSON state.
    raw = '{"events":[{"type":"D","data":{"v":0}}],"state": {"b" :[1, 2.50,"\\u00e9"]} }'
    r = C.post("/streams/%s" % s, raw)
    T.expect(r, 201)
    st = C.get("/streams/%s/state" % s)
    T.check(b'"state":{"b" :[1, 2.50,"\\u00e9"]}' in st.raw, "the state keeps its bytes",
            st.req, '{"b" :[1, 2.50,"\\u00e9"]}', st.raw[:300])
    # A plain append: the state stays where it was, not current.
    r = C.post("/streams/%s" % s, json.dumps([{"type": "D", "data": {"v": 0}}]))
    T.expect(r, 201)
    st = C.get("/streams/%s/state" % s)
    T.check(st.body["revision"] == 2 and st.body["current"] is False and
            st.body["lastRevision"] == 3, "a plain append leaves the state behind", st.req,
            {"revision": 2, "current": False, "lastRevision": 3}, st.body)
    # An idempotent retry of an append with state: the original result.
    body = json.dumps({"events": [{"id": "0190f1a2-7c3e-7b21-9a4e-2f1c0d9e8b7a", "type": "D",
                                   "data": {"v": 0}}], "state": {"x": 1}})
    r1 = C.post("/streams/%s" % s, body)
    r2 = C.post("/streams/%s" % s, body)
    T.expect(r1, 201)
    T.expect(r2, 200)
    T.check(r2.body.get("idempotent") is True and r2.body["lastRevision"] == r1.body["lastRevision"],
            "a retry is idempotent", r2.req, r1.body, r2.body)


@T.case
def bad_input():
    s = "Account-bad"
    T.expect(post(C, s, "no_stream", 1, {"n": 1}), 201)
    cases = [
        ('{"events":[{"type":"D"}],"state":1,"stateBase64":"AA=="}', 400, "INVALID_ARGUMENT",
         "both \"state\" and \"stateBase64\""),
        ('{"events":[{"type":"D"}],"stateSchemaVersion":1}', 400, "INVALID_ARGUMENT",
         "without \"state\""),
        ('{"events":[{"type":"D"}],"state":{},"stateSchemaVersion":-1}', 400, "INVALID_ARGUMENT",
         "stateSchemaVersion"),
        ('{"events":[{"type":"D"}],"state":{},"stateSchemaVersion":4294967296}', 400,
         "INVALID_ARGUMENT", "stateSchemaVersion"),
        ('{"events":[{"type":"D"}],"state":{},"stateSchemaVersion":"1"}', 400,
         "INVALID_ARGUMENT", "stateSchemaVersion"),
        ('{"events":[{"type":"D"}],"stateBase64":"@@"}', 400, "INVALID_ARGUMENT", "base64"),
        ('{"events":[{"type":"D"}],"stateBase64":5}', 400, "INVALID_ARGUMENT", "must be a string"),
        ('{"events":[],"state":{}}', 400, "INVALID_ARGUMENT", "no events"),
        ('{"events":[{"type":"D"}],"state":{},"stat":1}', 400, "INVALID_ARGUMENT", "unknown field"),
        ('{"events":[{"type":"D"}],"state":{"a":1}', 400, "INVALID_JSON", "invalid JSON"),
        ('{"events":[{"type":"D"}],"state":"%s"}' % ("x" * 70000), 413, "TOO_LARGE", "state"),
    ]
    for body, status, code, text in cases:
        r = C.post("/streams/%s" % s, body)
        T.expect(r, status, code, what=body[:80])
        msg = r.body["error"]["message"] if isinstance(r.body, dict) else ""
        T.check(text in msg, "the message says why: %s" % text, r.req, text, msg)
    st = C.get("/streams/%s/state" % s)
    T.check(st.body["revision"] == 0 and st.body["state"] == {"n": 1} and st.body["current"],
            "bad appends changed nothing", st.req, 0, st.body)
    r = C.post("/streams/%24ce-Account", '{"events":[{"type":"D"}],"state":{}}')
    T.expect(r, 400, "INVALID_ARGUMENT", what="state on a system stream")
    C.post("/streams/Account-nostate", '[{"type":"D"}]')
    T.expect(C.get("/streams/Account-nostate/state"), 404, "STATE_NOT_FOUND")
    T.expect(C.get("/streams/Account-never/state"), 404, "STREAM_NOT_FOUND")
    T.expect(C.request("PUT", "/streams/%s/state" % s, "{}"), 405, "METHOD_NOT_ALLOWED")


if __name__ == "__main__":
    T.run(setup, teardown)
