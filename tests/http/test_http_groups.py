#!/usr/bin/env python3
"""
test_http_groups.py - consumer groups (persistent subscriptions) over HTTP
against a real `stele serve` (docs/consumer-groups.md, docs/http-api.md):

- create / update / info / list / delete and every bad input, with the
  error codes; nothing written by a refused request
- two and three pull consumers (long poll) share a group while writers
  append: every event is delivered and acked exactly once
- two push (SSE) consumers share a group, acking through the links the
  server gives; closing a push connection hands its in-flight events to
  another consumer at once (retryCount 1)
- nack retry until parked, the parked stream with its reasons, replay,
  truncate (also hidden from GET /streams/{parked stream}); the checkpoint
  stream reads as one event
- pinned: a stream held by one consumer is not given to another
- long poll: answered when an event arrives, or empty at the deadline
- kill -9 of the server and a restart: the group resumes from its saved
  checkpoint and nothing is missed
- the CLI: stele groups create/list/info/update/parked/replay-parked/
  truncate-parked/delete, output and exit codes

Python 3 standard library only. TEST_QUICK=1 runs smaller sizes.
"""
import json
import os
import pty
import select
import subprocess
import sys
import threading
import time
import urllib.parse

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from stele_server import (SSE, STELE_BIN, Client, Ev, Server, Suite, all_next,  # noqa: E402
                          body_of, check_servers, new_id, request, stop_servers)

QUICK = bool(os.environ.get("TEST_QUICK"))
T = Suite("test_http_groups")
S = None


def setup():
    global S
    S = Server([], name="main").start()


def teardown():
    stop_servers([S])


def after_case():
    check_servers(T, [S])


# --------------------------------------------------------------- helpers

def q(s):
    return urllib.parse.quote(s, safe="")


def gpath(stream, group, suffix=""):
    return "/subscriptions/%s/%s%s" % (q(stream), q(group), suffix)


def create(stream, group, settings=None, status=201):
    r = request(S.port, "PUT", gpath(stream, group), json.dumps(settings or {}))
    T.expect(r, status, what="create %s/%s" % (stream, group))
    return r.body


def info(stream, group):
    r = request(S.port, "GET", gpath(stream, group))
    T.expect(r, 200, what="info")
    return r.body


def append(client, stream, n, type_="Work"):
    r = client.post("/streams/" + q(stream), body_of([Ev(type_, json.dumps({"i": i})) for i in range(n)]))
    T.expect(r, 201, what="append to " + stream)
    return r.body


def head():
    """The next position of $all."""
    return all_next(S.port, T)


def pull(client, stream, group, consumer, count=10, timeout=0):
    r = client.get(gpath(stream, group, "/messages?count=%d&consumer=%s&timeout=%d"
                         % (count, q(consumer), timeout)))
    T.expect(r, 200, what="pull")
    return r.body["messages"]


def ack(client, stream, group, ids, consumer=None, status=204, code=None):
    suffix = "/ack" + ("?consumer=" + q(consumer) if consumer else "")
    r = client.post(gpath(stream, group, suffix), json.dumps(ids))
    T.expect(r, status, code, what="ack")
    return r


def nack(client, stream, group, ids, action, reason="", consumer=None, status=204):
    suffix = "/nack?action=%s&reason=%s" % (action, q(reason))
    if consumer:
        suffix += "&consumer=" + q(consumer)
    r = client.post(gpath(stream, group, suffix), json.dumps(ids))
    T.expect(r, status, what="nack")
    return r


def config_revision():
    r = request(S.port, "GET", "/streams/%24persistent-config/head")
    return r.body.get("lastRevision") if r.status == 200 else None


def wait_for(cond, what, timeout=20):
    until = time.monotonic() + timeout
    while time.monotonic() < until:
        v = cond()
        if v:
            return v
        time.sleep(0.05)
    T.fail("timed out waiting for " + what)


# --------------------------------------------------------------- cases

@T.case
def crud_and_bad_input():
    c = Client(S.port)
    append(c, "Crud-1", 3)
    body = create("Crud-1", "g", {"strategy": "Pinned", "maxInFlight": 5, "maxRetries": 0})
    T.check(body["settings"]["strategy"] == "Pinned" and body["settings"]["maxInFlight"] == 5
            and body["settings"]["maxRetries"] == 0 and body["settings"]["bufferSize"] == 500,
            "created with the given settings and defaults", None, None, body)
    T.check(body["checkpointSaved"] is None and body["checkpoint"] == 0, "fresh checkpoint",
            None, None, body)
    rev = config_revision()

    bad = [
        ("PUT", gpath("Crud-1", "g"), "{}", 409, "GROUP_EXISTS"),
        ("PUT", gpath("Crud-1", "h"), '{"maxInFlight": 0}', 400, "INVALID_ARGUMENT"),
        ("PUT", gpath("Crud-1", "h"), '{"maxInflight": 3}', 400, "INVALID_ARGUMENT"),
        ("PUT", gpath("Crud-1", "h"), '{"strategy": "Random"}', 400, "INVALID_ARGUMENT"),
        ("PUT", gpath("Crud-1", "h"), '{"startFrom": -1}', 400, "INVALID_ARGUMENT"),
        ("PUT", gpath("Crud-1", "h"), '{"bufferSize": 1000001}', 400, "INVALID_ARGUMENT"),
        ("PUT", gpath("Crud-1", "h"), '{"filter": {"categories": ["X"]}}', 400,
         "INVALID_ARGUMENT"),
        ("PUT", gpath("$all", "h"), '{"filter": {"streamRegex": "("}}', 400, "INVALID_ARGUMENT"),
        ("PUT", gpath("$all", "h"), '{"filter": {"colour": ["X"]}}', 400, "INVALID_ARGUMENT"),
        ("PUT", gpath("Crud-1", "h"), '{"maxInFlight": ', 400, "INVALID_JSON"),
        ("PUT", gpath("Crud-1", "h"), '[1]', 400, "INVALID_ARGUMENT"),
        ("PUT", gpath("Crud-1", "a:b"), '{}', 400, "INVALID_ARGUMENT"),
        ("PUT", gpath("$persistent-config", "h"), '{}', 400, "INVALID_ARGUMENT"),
        ("PUT", gpath("x" * 200, "y" * 100), '{}', 400, "INVALID_ARGUMENT"),
        ("GET", gpath("Crud-1", "nope"), None, 404, "GROUP_NOT_FOUND"),
        ("POST", gpath("Crud-1", "nope"), '{}', 404, "GROUP_NOT_FOUND"),
        ("DELETE", gpath("Crud-1", "nope"), None, 404, "GROUP_NOT_FOUND"),
        ("POST", gpath("Crud-1", "g"), '{"filter": {"types": ["A"]}}', 400, "INVALID_ARGUMENT"),
        ("PATCH", gpath("Crud-1", "g"), None, 405, "METHOD_NOT_ALLOWED"),
        ("DELETE", "/subscriptions", None, 405, "METHOD_NOT_ALLOWED"),
        ("GET", gpath("Crud-1", "g", "/nothing"), None, 404, "NOT_FOUND"),
        ("GET", gpath("Crud-1", "g", "/messages?count=0"), None, 400, "INVALID_ARGUMENT"),
        ("GET", gpath("Crud-1", "g", "/messages?count=5000"), None, 400, "INVALID_ARGUMENT"),
        ("GET", gpath("Crud-1", "g", "/messages?timeout=-1"), None, 400, "INVALID_ARGUMENT"),
        ("GET", gpath("Crud-1", "nope", "/messages"), None, 404, "GROUP_NOT_FOUND"),
        ("POST", gpath("Crud-1", "g", "/ack"), '["not-a-uuid"]', 400, "INVALID_ARGUMENT"),
        ("POST", gpath("Crud-1", "g", "/ack"), '[]', 400, "INVALID_ARGUMENT"),
        ("POST", gpath("Crud-1", "g", "/ack"), '[', 400, "INVALID_JSON"),
        ("POST", gpath("Crud-1", "g", "/ack/123"), None, 400, "INVALID_ARGUMENT"),
        ("POST", gpath("Crud-1", "g", "/ack"), json.dumps([new_id()]), 404, "NOT_IN_FLIGHT"),
        ("POST", gpath("Crud-1", "g", "/ack?consumer=ghost"), json.dumps([new_id()]), 404,
         "CONSUMER_NOT_FOUND"),
        ("POST", gpath("Crud-1", "g", "/nack?action=explode"), json.dumps([new_id()]), 400,
         "INVALID_ARGUMENT"),
        ("POST", gpath("Crud-1", "g", "/nack?reason=" + "r" * 1100), json.dumps([new_id()]),
         400, "INVALID_ARGUMENT"),
        ("GET", gpath("Crud-1", "g", "/parked?limit=0"), None, 400, "INVALID_ARGUMENT"),
        ("DELETE", gpath("Crud-1", "g", "/parked?before=x"), None, 400, "INVALID_ARGUMENT"),
        ("POST", gpath("Crud-1", "nope", "/parked/replay"), None, 404, "GROUP_NOT_FOUND"),
    ]
    for method, path, body, status, code in bad:
        r = c.request(method, path, body)
        T.expect(r, status, code, what="%s %s" % (method, path[:80]))
    T.check(config_revision() == rev, "refused requests wrote nothing", None, rev,
            config_revision())

    # Update: given fields change, the others stay.
    r = c.post(gpath("Crud-1", "g"), '{"maxRetries": 4}')
    body = T.expect(r, 200)
    T.check(body["settings"]["maxRetries"] == 4 and body["settings"]["maxInFlight"] == 5 and
            body["settings"]["strategy"] == "Pinned", "update keeps what it does not name",
            r.req, None, body)
    # Lists.
    names = [(g["stream"], g["group"]) for g in c.get("/subscriptions").body["groups"]]
    T.check(("Crud-1", "g") in names, "listed", None, None, names)
    names = [(g["stream"], g["group"]) for g in c.get("/subscriptions/Crud-1").body["groups"]]
    T.check(names == [("Crud-1", "g")], "listed by stream", None, None, names)
    # A pull consumer's events, acked by id in the path.
    msgs = pull(c, "Crud-1", "g", "solo", count=2)
    T.check([m["event"]["revision"] for m in msgs] == [0, 1] and
            all(m["retryCount"] == 0 for m in msgs), "pulled in order", None, None, msgs)
    r = c.post(msgs[0]["ackUri"], None)
    T.expect(r, 204, what="ack by link")
    r = c.post(msgs[0]["ackUri"], None)
    T.expect(r, 404, "NOT_IN_FLIGHT", what="second ack")
    r = c.post(msgs[1]["nackUri"] + "&action=skip", None)
    T.expect(r, 204, what="nack skip by link")
    g = info("Crud-1", "g")
    T.check(g["acked"] == 1 and g["nacked"] == 1 and g["checkpoint"] == 2 and
            g["consumers"][0]["name"] == "solo", "counts", None, None, g)
    # Delete; a new group of that name starts afresh.
    T.expect(c.delete(gpath("Crud-1", "g")), 204)
    T.expect(c.get(gpath("Crud-1", "g")), 404, "GROUP_NOT_FOUND")
    T.expect(c.get(gpath("Crud-1", "g", "/messages?consumer=solo")), 404, "GROUP_NOT_FOUND")
    body = create("Crud-1", "g")
    T.check(body["checkpoint"] == 0 and body["checkpointSaved"] is None and body["parked"] == 0,
            "a recreated group starts afresh", None, None, body)
    msgs = pull(c, "Crud-1", "g", "solo", count=10)
    T.check(len(msgs) == 3, "all three again", None, 3, len(msgs))
    # KurrentDB's form: ids in the query.
    T.expect(c.post(gpath("Crud-1", "g", "/ack?ids=%s,nope" % msgs[0]["event"]["id"]), None),
             400, "INVALID_ARGUMENT")
    T.expect(c.post(gpath("Crud-1", "g", "/ack?ids=%s," % msgs[0]["event"]["id"]), None),
             400, "INVALID_ARGUMENT")
    ids = ",".join(m["event"]["id"] for m in msgs)
    T.expect(c.post(gpath("Crud-1", "g", "/ack?consumer=solo&ids=" + ids), None), 204)
    T.check(info("Crud-1", "g")["acked"] == 3, "acked through ?ids=")
    c.close()


def pull_worker(stream, group, name, stop, seen, lock, errors):
    c = Client(S.port)
    try:
        while not stop.is_set():
            msgs = pull(c, stream, group, name, count=20, timeout=300)
            if not msgs:
                continue
            with lock:
                for m in msgs:
                    seen.setdefault(m["event"]["id"], []).append((name, m["retryCount"]))
            ack(c, stream, group, [m["event"]["id"] for m in msgs], consumer=name)
    except Exception as e:  # noqa: BLE001
        errors.append(repr(e))
    finally:
        c.close()


def share_pull(ncons):
    group = "pull%d" % ncons
    cat = "Share%d" % ncons
    create("$all", group, {"startFrom": "end", "filter": {"categories": [cat]},
                           "maxInFlight": 20, "bufferSize": 100})
    per = 200 if QUICK else 600
    stop = threading.Event()
    seen, lock, errors = {}, threading.Lock(), []
    ts = [threading.Thread(target=pull_worker, args=("$all", group, "c%d" % i, stop, seen,
                                                       lock, errors)) for i in range(ncons)]
    for t in ts:
        t.start()
    ids = []

    def writer(w):
        c = Client(S.port)
        for k in range(per // 5):
            evs = [Ev("Work", json.dumps({"w": w, "k": k, "j": j}), id_=new_id()) for j in range(5)]
            r = c.post("/streams/%s-%d" % (cat, (w + k) % 7), body_of(evs))
            T.expect(r, 201)
            with lock:
                ids.extend(e.id for e in evs)
        c.close()
    ws = [threading.Thread(target=writer, args=(w,)) for w in range(3)]
    for t in ws:
        t.start()
    for t in ws:
        t.join()
    total = 3 * per
    wait_for(lambda: info("$all", group)["acked"] >= total, "every event acked", 60)
    stop.set()
    for t in ts:
        t.join()
    T.check(not errors, "pull workers failed", None, None, errors)
    T.check(len(ids) == total, "appended", None, total, len(ids))
    wrong = [(i, seen.get(i)) for i in ids if len(seen.get(i, [])) != 1]
    T.check(not wrong, "every event delivered exactly once", None, None, wrong[:5])
    extra = set(seen) - set(ids)
    T.check(not extra, "nothing but the group's events", None, None, list(extra)[:5])
    by = {}
    for v in seen.values():
        by[v[0][0]] = by.get(v[0][0], 0) + 1
    T.check(len(by) == ncons, "every consumer took part", None, ncons, by)
    g = info("$all", group)
    T.check(g["acked"] == total and g["delivered"] == total and g["inFlight"] == 0,
            "group counts", None, total, g)
    T.expect(request(S.port, "DELETE", gpath("$all", group)), 204)


@T.case
def two_pull_consumers():
    share_pull(2)


@T.case
def three_pull_consumers():
    share_pull(3)


@T.case
def push_consumers_and_a_dying_one():
    c = Client(S.port)
    n = 40
    append(c, "Push-1", n)
    create("Push-1", "g", {"maxInFlight": 5, "messageTimeoutMs": 600000})
    a = SSE(S.port, gpath("Push-1", "g", "/subscribe?consumer=a"), timeout=20)
    T.check(a.status == 200 and a.headers.get("content-type") == "text/event-stream",
            "push accepted", None, 200, (a.status, a.body))
    # a takes its five and "dies" without acking.
    got_a = []
    while len(got_a) < 5:
        m = a.next()
        if m and m["event"] == "message":
            got_a.append(json.loads(m["data"]))
    T.check([m["event"]["revision"] for m in got_a] == [0, 1, 2, 3, 4], "a got 0..4",
            None, None, [m["event"]["revision"] for m in got_a])
    dup = SSE(S.port, gpath("Push-1", "g", "/subscribe?consumer=a"), timeout=20)
    T.check(dup.status == 409 and dup.body["error"]["code"] == "CONSUMER_EXISTS",
            "a second consumer 'a' is refused", None, 409, (dup.status, dup.body))
    dup.close()
    a.abort()
    wait_for(lambda: info("Push-1", "g")["consumers"] == [], "a is gone")
    g = info("Push-1", "g")
    T.check(g["inFlight"] == 0 and g["waiting"] >= 5,
            "a's events are back at once, not after the message timeout", None, None, g)
    # b and d share the rest; b sees a's five again first, retryCount 1.
    b = SSE(S.port, gpath("Push-1", "g", "/subscribe?consumer=b"), timeout=20)
    d = SSE(S.port, gpath("Push-1", "g", "/subscribe?consumer=d"), timeout=20)
    seen = {}
    lock = threading.Lock()

    def consume(sse, name):
        cl = Client(S.port)
        while True:
            with lock:
                if len(seen) >= n:
                    break
            try:
                m = sse.next()
            except OSError:
                continue
            if m is None:
                break
            if m["event"] != "message":
                continue
            msg = json.loads(m["data"])
            with lock:
                seen.setdefault(msg["event"]["revision"], []).append((name, msg["retryCount"]))
            T.check(m["id"] == msg["event"]["id"], "SSE id is the event id")
            r = cl.post(msg["ackUri"], None)
            T.expect(r, 204, what="ack via link")
        cl.close()
    b.settimeout(2)
    d.settimeout(2)
    tb = threading.Thread(target=consume, args=(b, "b"))
    td = threading.Thread(target=consume, args=(d, "d"))
    tb.start()
    td.start()
    tb.join(60)
    td.join(60)
    b.close()
    d.close()
    T.check(sorted(seen) == list(range(n)), "every event", None, n, sorted(seen))
    once = all(len(v) == 1 for v in seen.values())
    T.check(once, "delivered once after the dead consumer", None, None,
            {k: v for k, v in seen.items() if len(v) != 1})
    retried = sorted(r for r, v in seen.items() if v[0][1] == 1)
    T.check(retried == [0, 1, 2, 3, 4], "a's events came back with retryCount 1", None,
            [0, 1, 2, 3, 4], retried)
    wait_for(lambda: info("Push-1", "g")["acked"] == n, "all acked")
    c.close()


@T.case
def retry_park_replay_truncate():
    c = Client(S.port)
    append(c, "Park-1", 4)
    create("Park-1", "g", {"maxRetries": 2, "checkpointAfterMs": 0})
    # Revision 1 always fails; 3 is parked at once; 0 and 2 are acked.
    deliveries = {}
    for _ in range(20):
        msgs = pull(c, "Park-1", "g", "w", count=10, timeout=200)
        for m in msgs:
            rev = m["event"]["revision"]
            deliveries.setdefault(rev, []).append(m["retryCount"])
            if rev == 1:
                nack(c, "Park-1", "g", [m["event"]["id"]], "retry", "declined", consumer="w")
            elif rev == 3:
                nack(c, "Park-1", "g", [m["event"]["id"]], "park", "bad data", consumer="w")
            else:
                ack(c, "Park-1", "g", [m["event"]["id"]], consumer="w")
        g = info("Park-1", "g")
        if g["parked"] == 2 and g["inFlight"] == 0 and g["waiting"] == 0:
            break
    T.check(deliveries.get(1) == [0, 1, 2], "retried twice, then parked", None, [0, 1, 2],
            deliveries.get(1))
    T.check(deliveries.get(3) == [0], "parked at once", None, [0], deliveries.get(3))
    r = c.get(gpath("Park-1", "g", "/parked"))
    body = T.expect(r, 200)
    ms = body["messages"]
    T.check(len(ms) == 2, "two parked", r.req, 2, ms)
    by_rev = {m["event"]["revision"]: m for m in ms}
    T.check(by_rev[1]["parked"]["reason"] == "declined" and
            by_rev[1]["parked"]["retryCount"] == 3 and by_rev[1]["link"] == "1@Park-1" and
            by_rev[3]["parked"]["reason"] == "bad data", "parked reasons", r.req, None, ms)
    T.check(info("Park-1", "g")["checkpoint"] == 4, "parked counts as done")
    # Replay one: it comes again with a fresh retry count, then leaves.
    r = c.post(gpath("Park-1", "g", "/parked/replay?max=1"), None)
    T.check(T.expect(r, 200)["replaying"] == 1, "replaying one", r.req, 1, r.body)
    msgs = pull(c, "Park-1", "g", "w", count=10, timeout=2000)
    first = ms[0]["event"]["revision"]
    T.check(len(msgs) == 1 and msgs[0]["event"]["revision"] == first and
            msgs[0]["retryCount"] == 0, "the oldest parked event again", None, first, msgs)
    ack(c, "Park-1", "g", [msgs[0]["event"]["id"]], consumer="w")
    left = T.expect(c.get(gpath("Park-1", "g", "/parked")), 200)["messages"]
    T.check(len(left) == 1 and left[0]["event"]["revision"] != first, "one left", None, 1,
            left)
    # Truncate: nothing left to read or replay.
    T.expect(c.delete(gpath("Park-1", "g", "/parked")), 204)
    T.check(T.expect(c.get(gpath("Park-1", "g", "/parked")), 200)["messages"] == [],
            "truncated")
    # The parked stream itself hides them too (its truncateBefore metadata).
    plain = T.expect(c.get("/streams/" + q("$persistentsubscription-Park-1::g-parked")), 200)
    T.check(plain["events"] == [], "truncated in a plain read", None, [], plain)
    # Its checkpoint stream shows only the last checkpoint (maxCount 1).
    ck = T.expect(c.get("/streams/" + q("$persistentsubscription-Park-1::g-checkpoint")), 200)
    T.check(len(ck["events"]) == 1, "one checkpoint visible", None, 1, ck)
    r = c.post(gpath("Park-1", "g", "/parked/replay"), None)
    T.check(T.expect(r, 200)["replaying"] == 0, "nothing to replay", r.req, 0, r.body)
    c.close()


@T.case
def pinned_over_http():
    c = Client(S.port)
    append(c, "PinA-1", 3)
    append(c, "PinB-1", 3)
    create("$all", "pins", {"strategy": "Pinned", "filter": {"categories": ["PinA", "PinB"]},
                            "startFrom": 0})
    a = pull(c, "$all", "pins", "a", count=1)
    T.check(len(a) == 1 and a[0]["event"]["stream"] == "PinA-1", "a holds PinA-1", None, None, a)
    b = pull(c, "$all", "pins", "b", count=10)
    T.check(b and all(m["event"]["stream"] == "PinB-1" for m in b), "b gets only PinB-1",
            None, None, [m["event"]["stream"] for m in b])
    more = pull(c, "$all", "pins", "a", count=10)
    T.check([m["event"]["revision"] for m in more] == [1, 2] and
            all(m["event"]["stream"] == "PinA-1" for m in more), "a gets the rest of PinA-1",
            None, None, more)
    c.close()


@T.case
def long_poll():
    c = Client(S.port)
    create("Poll-1", "g")
    t0 = time.monotonic()
    msgs = pull(c, "Poll-1", "g", "w", count=5, timeout=600)
    dt = time.monotonic() - t0
    T.check(msgs == [] and dt >= 0.5, "empty at the deadline", None, ">= 0.6 s", dt)

    def later():
        time.sleep(0.5)
        append(Client(S.port), "Poll-1", 2)
    th = threading.Thread(target=later)
    th.start()
    msgs = pull(c, "Poll-1", "g", "w", count=5, timeout=30000)
    th.join()
    T.check(len(msgs) >= 1 and msgs[0]["event"]["revision"] == 0, "woken by the append",
            None, None, msgs)
    # A second pull of the same consumer while one waits is refused.
    c2 = Client(S.port)
    box = {}
    th = threading.Thread(target=lambda: box.setdefault("r", pull(c2, "Poll-1", "g", "z",
                                                                   count=1, timeout=1500)))
    th.start()
    time.sleep(0.3)
    r = c.get(gpath("Poll-1", "g", "/messages?consumer=z&timeout=10"))
    T.expect(r, 409, "CONSUMER_BUSY")
    th.join()
    c.close()
    c2.close()


@T.case
def kill9_resumes_from_checkpoint():
    c = Client(S.port)
    n = 120
    create("Crash-1", "g", {"checkpointMaxCount": 5, "checkpointMinCount": 1,
                            "checkpointAfterMs": 50})
    append(c, "Crash-1", n)
    acked = set()
    while len(acked) < 60:
        msgs = pull(c, "Crash-1", "g", "w", count=7)
        acked.update(m["event"]["revision"] for m in msgs)
        ack(c, "Crash-1", "g", [m["event"]["id"] for m in msgs], consumer="w")
    # Some are in flight, unacked, when the server dies.
    pull(c, "Crash-1", "g", "w", count=5)
    wait_for(lambda: (info("Crash-1", "g")["checkpointSaved"] or 0) >= 50, "a saved checkpoint")
    c.close()
    S.kill()
    S.start()
    c = Client(S.port)
    g = info("Crash-1", "g")
    ck = g["checkpointSaved"]
    T.check(ck is not None and 50 <= ck <= len(acked), "the checkpoint survived", None,
            "50..%d" % len(acked), ck)
    T.check(all(r in acked for r in range(ck)), "the checkpoint never passes an unacked event")
    got = []
    while True:
        msgs = pull(c, "Crash-1", "g", "w2", count=50)
        if not msgs:
            break
        got.extend(m["event"]["revision"] for m in msgs)
        ack(c, "Crash-1", "g", [m["event"]["id"] for m in msgs], consumer="w2")
    T.check(got == list(range(ck, n)), "resumed exactly at the checkpoint, nothing missed", None,
            "%d..%d" % (ck, n - 1), got[:10])
    c.close()


def stele(*args, tty=False):
    """Run `stele groups ARGS`: (rc, stdout, stderr); with tty, stdout is a
    pseudo-terminal (the human format)."""
    env = dict(os.environ, STELE_SERVER="http://127.0.0.1:%d" % S.port, COLUMNS="120")
    cmd = [STELE_BIN, "groups"] + list(args)
    if not tty:
        p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=60)
        return p.returncode, p.stdout, p.stderr
    master, slave = pty.openpty()
    p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=slave, stderr=subprocess.PIPE,
                         env=env)
    os.close(slave)
    out = b""
    while True:
        try:
            r, _, _ = select.select([master], [], [], 60)
            chunk = os.read(master, 65536) if r else b""
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        out += chunk
    os.close(master)
    err = p.stderr.read().decode()
    p.stderr.close()
    return p.wait(timeout=60), out.decode().replace("\r\n", "\n"), err


@T.case
def cli():
    c = Client(S.port)
    append(c, "Cli-1", 3)
    rc, out, err = stele("create", "Cli-1", "g", "--strategy", "pinned", "--max-retries", "0",
                         "--settings", '{"maxInFlight": 2, "maxRetries": 7}')
    T.check(rc == 0, "create", None, 0, (rc, out, err))
    body = json.loads(out)
    T.check(body["settings"]["strategy"] == "Pinned" and body["settings"]["maxInFlight"] == 2
            and body["settings"]["maxRetries"] == 0, "flags and --settings", None, None, body)
    rc, out, err = stele("create", "--all", "cli-all", "--category", "Cli", "--type", "Work",
                         "--start", "end")
    T.check(rc == 0 and json.loads(out)["settings"]["filter"] ==
            {"categories": ["Cli"], "types": ["Work"]}, "create on $all with a filter", None,
            0, (rc, out, err))
    rc, out, err = stele("create", "Cli-1", "g")
    T.check(rc == 1 and "GROUP_EXISTS" in err, "exists: exit 1", None, 1, (rc, err))
    rc, out, err = stele("create", "Cli-1")
    T.check(rc == 2 and "needs STREAM" in err, "usage: exit 2", None, 2, (rc, err))
    rc, out, err = stele("create", "Cli-1", "h", "--max-retries", "x")
    T.check(rc == 2, "bad number: exit 2", None, 2, (rc, err))
    rc, out, err = stele("frobnicate")
    T.check(rc == 2, "unknown subcommand: exit 2", None, 2, (rc, err))
    rc, out, err = stele("info", "Cli-1", "nope")
    T.check(rc == 1 and "GROUP_NOT_FOUND" in err, "unknown group: exit 1", None, 1, (rc, err))
    rc, out, err = stele("list")
    lines = [json.loads(x) for x in out.splitlines()]
    T.check(rc == 0 and ("Cli-1", "g") in [(x["stream"], x["group"]) for x in lines] and
            ("$all", "cli-all") in [(x["stream"], x["group"]) for x in lines],
            "list: one JSON object per line", None, None, out[:300])
    rc, out, err = stele("list", tty=True)
    T.check(rc == 0 and "STREAM" in out and "cli-all" in out, "list table", None, None, out)
    rc, out, err = stele("info", "Cli-1", "g", tty=True)
    T.check(rc == 0 and "strategy" in out and "Pinned" in out, "info fields", None, None, out)
    rc, out, err = stele("update", "Cli-1", "g", "--max-in-flight", "3")
    T.check(rc == 0 and json.loads(out)["settings"]["maxInFlight"] == 3 and
            json.loads(out)["settings"]["strategy"] == "Pinned", "update", None, None, out)
    # Park one, then look at it, replay it and truncate.
    msgs = pull(c, "Cli-1", "g", "w", count=1)
    nack(c, "Cli-1", "g", [msgs[0]["event"]["id"]], "park", "cli test", consumer="w")
    wait_for(lambda: info("Cli-1", "g")["parked"] == 1, "parked")
    rc, out, err = stele("parked", "Cli-1", "g")
    T.check(rc == 0 and json.loads(out.splitlines()[0])["parked"]["reason"] == "cli test",
            "parked as JSON lines", None, None, out)
    rc, out, err = stele("parked", "Cli-1", "g", tty=True)
    T.check(rc == 0 and "cli test" in out and "0@Cli-1" in out, "parked table", None, None, out)
    rc, out, err = stele("replay-parked", "Cli-1", "g", "--max", "5")
    T.check(rc == 0 and json.loads(out)["replaying"] == 1, "replay", None, None, (out, err))
    rc, out, err = stele("truncate-parked", "Cli-1", "g")
    T.check(rc == 0 and out == "", "truncate", None, None, (out, err))
    rc, out, err = stele("delete", "Cli-1", "g")
    T.check(rc == 0, "delete", None, 0, (rc, err))
    rc, out, err = stele("delete", "Cli-1", "g")
    T.check(rc == 1 and "GROUP_NOT_FOUND" in err, "delete again", None, 1, (rc, err))
    env = dict(os.environ, STELE_SERVER="http://127.0.0.1:1")
    p = subprocess.run([STELE_BIN, "groups", "list"], capture_output=True, text=True, env=env)
    T.check(p.returncode == 3, "unreachable: exit 3", None, 3, (p.returncode, p.stderr))
    c.close()


if __name__ == "__main__":
    T.run(setup, teardown, after_case)
