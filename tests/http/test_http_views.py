#!/usr/bin/env python3
"""
test_http_views.py - the system view streams over HTTP against a real
`stele serve` (docs/kurrentdb-compatibility.md, docs/http-api.md):

- GET /streams/$ce-{c}, $et-{t}, $bc-{id} (JSON pages through `next`,
  forwards and backwards, NDJSON) hold exactly the events of
  /categories/{c}, /types/{t}, /correlations/{id}, each with
  "link":{"stream": the view, "revision": 0, 1, 2 ...}; a soft delete
  leaves gaps, never renumbers.
- $streams: each stream's first event, in creation order.
- SSE /subscribe/streams/$ce-{c}: history with ids = view revisions,
  caught-up, live events from 4 concurrent writers (each once, in order),
  resume with Last-Event-ID.
- The revisions are the same after a clean restart and after a SIGKILL.
- Bad input: "$ce-" (400 naming the category), unknown views (404),
  appends and deletes on a view (400).
"""
import json
import os
import random
import sys
import threading
import time
from urllib.parse import quote

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from stele_server import SSE, Client, Server, Suite, ndjson_lines, stop_servers  # noqa: E402

T = Suite("test_http_views")
S = None
C = None
SEED = int(os.environ.get("TEST_SEED") or time.time())
R = random.Random(SEED)

CATS = ["Order", "Invoice", "Cart"]
TYPES = ["Placed", "Paid", "Shipped"]
CORRS = ["c-1", "c-2"]
SEEN = {}  # view -> {position: revision} as first read: never renumbered


def q(s):
    return quote(s, safe="")


def append(client, stream, n):
    evs = []
    for _ in range(n):
        ev = {"type": R.choice(TYPES), "data": {"r": R.random()}}
        if R.random() < 0.6:
            ev["metadata"] = {"$correlationId": R.choice(CORRS)}
        evs.append(ev)
    r = client.post("/streams/%s" % q(stream), json.dumps(evs))
    T.expect(r, 201)


def append_random(client=None):
    c = client or C
    append(c, "%s-%d" % (R.choice(CATS), R.randrange(8)), 1 + R.randrange(3))


def setup():
    global S, C
    print("TEST_SEED=%d" % SEED, flush=True)
    S = Server()
    S.start()
    C = Client(S.port)
    for _ in range(150):
        append_random()


def teardown():
    stop_servers([S], client=C, check_exit=False)


def pages(path):
    out = []
    while path:
        r = C.get(path)
        T.expect(r, 200, what=path)
        if r.status != 200:
            return out
        out.extend(r.body["events"])
        path = r.body.get("next")
    return out


def views():
    return ([("$ce-" + c, "/categories/" + c) for c in CATS] +
            [("$et-" + t, "/types/" + t) for t in TYPES] +
            [("$bc-" + c, "/correlations/" + c) for c in CORRS])


def check_view(view, query, gapless, what):
    got = pages("/streams/%s?limit=%d" % (q(view), 1 + R.randrange(20)))
    want = pages("%s?limit=50" % query)
    T.check([e["position"] for e in got] == [e["position"] for e in want],
            "%s: %s holds the query's events" % (what, view), view,
            [e["position"] for e in want], [e["position"] for e in got])
    revs = [e.get("link", {}).get("revision") for e in got]
    T.check(all(e.get("link", {}).get("stream") == view for e in got),
            "%s: every event of %s has its link" % (what, view), view)
    if gapless:
        T.check(revs == list(range(len(got))), "%s: %s revisions 0..n-1" % (what, view), view,
                list(range(len(got))), revs)
    T.check(all(a < b for a, b in zip(revs, revs[1:])), "%s: ascending" % what, view)
    seen = SEEN.setdefault(view, {})
    for e in got:
        p, rv = e["position"], e["link"]["revision"]
        if p in seen:
            T.check(seen[p] == rv, "%s: %s keeps revision %d of position %d" % (what, view, seen[p], p),
                    view, seen[p], rv)
        else:
            seen[p] = rv
    # Backwards: the same in reverse.
    back = pages("/streams/%s?direction=backwards&limit=%d" % (q(view), 1 + R.randrange(20)))
    T.check([(e["position"], e["link"]["revision"]) for e in back] ==
            [(e["position"], e["link"]["revision"]) for e in reversed(got)],
            "%s: %s backwards" % (what, view), view)
    # From a revision in the middle.
    if got:
        k = R.randrange(len(got))
        part = pages("/streams/%s?from=%d&limit=5" % (q(view), revs[k]))
        T.check([e["position"] for e in part] == [e["position"] for e in got[k:]],
                "%s: %s from revision %d" % (what, view, revs[k]), view)
    return got


def check_all(gapless, what):
    for view, query in views():
        check_view(view, query, gapless, what)


@T.case
def views_equal_their_queries():
    check_all(True, "fresh")


@T.case
def ndjson_and_head():
    view = "$ce-Order"
    got = pages("/streams/%s?limit=10000" % q(view))
    r = C.get("/streams/%s?limit=10000" % q(view), {"Accept": "application/x-ndjson"})
    T.expect(r, 200)
    lines = [json.loads(ln) for ln in ndjson_lines(r.raw)]
    T.check([(e["position"], e["link"]["revision"]) for e in lines] ==
            [(e["position"], e["link"]["revision"]) for e in got], "NDJSON = JSON pages", r.req)
    h = C.get("/streams/%s/head" % q(view))
    T.expect(h, 200)
    T.check(h.body["lastRevision"] == got[-1]["link"]["revision"] and
            h.body["lastPosition"] == got[-1]["position"], "head of a view", h.req,
            got[-1]["link"], h.body)


@T.case
def streams_view():
    got = pages("/streams/%24streams?limit=3")
    firsts = {}
    for c in CATS:
        for i in range(8):
            s = "%s-%d" % (c, i)
            r = C.get("/streams/%s?limit=1" % q(s))
            if r.status == 200:
                firsts[s] = r.body["events"][0]["position"]
    T.check(sorted((e["stream"], e["position"]) for e in got) == sorted(firsts.items()),
            "$streams: one first event per stream", "/streams/$streams", sorted(firsts.items()),
            sorted((e["stream"], e["position"]) for e in got))
    pos = [e["position"] for e in got]
    T.check(pos == sorted(pos), "$streams in creation order", "/streams/$streams")


@T.case
def a_delete_leaves_gaps():
    r = C.delete("/streams/Invoice-3")
    T.expect(r, (204, 404))
    check_all(False, "after a delete")


@T.case
def sse_catch_up_then_live():
    view = "$ce-Cart"
    hist = pages("/streams/%s?limit=100" % q(view))
    sub = SSE(S.port, "/subscribe/streams/%s" % q(view))
    T.expect(sub, 200)
    got, caught = [], False
    while not caught:
        m = sub.next()
        if m is None:
            break
        if m["event"] == "caught-up":
            caught = True
        elif m["event"] == "message":
            e = json.loads(m["data"])
            T.check(m["id"] == str(e["link"]["revision"]), "SSE id = view revision", view,
                    e["link"]["revision"], m["id"])
            got.append((e["position"], e["link"]["revision"]))
    T.check(got == [(e["position"], e["link"]["revision"]) for e in hist], "SSE history", view)

    # Live: 4 writers at once.
    def writer(k):
        cl = Client(S.port)
        for _ in range(15):
            append(cl, "Cart-%d" % k, 1 + R.randrange(2))
        cl.close()
    ths = [threading.Thread(target=writer, args=(k,)) for k in range(4)]
    for t in ths:
        t.start()
    for t in ths:
        t.join()
    want = [(e["position"], e["link"]["revision"]) for e in pages("/streams/%s?limit=500" % q(view))]
    while len(got) < len(want):
        m = sub.next()
        if m is None:
            break
        if m["event"] == "message":
            e = json.loads(m["data"])
            got.append((e["position"], e["link"]["revision"]))
    sub.close()
    T.check(got == want, "SSE: history then live, each once, in order", view, len(want), len(got))

    # Resume after a revision with Last-Event-ID.
    k = len(want) // 2
    sub = SSE(S.port, "/subscribe/streams/%s" % q(view), {"Last-Event-ID": str(want[k][1])})
    rest = []
    while len(rest) < len(want) - k - 1:
        m = sub.next()
        if m is None:
            break
        if m["event"] == "message":
            e = json.loads(m["data"])
            rest.append((e["position"], e["link"]["revision"]))
    sub.close()
    T.check(rest == want[k + 1:], "SSE resume after Last-Event-ID", view)


@T.case
def revisions_survive_restarts():
    global C
    S.stop()
    S.start()
    C.close()
    C = Client(S.port)
    check_all(False, "after a restart")
    for _ in range(20):
        append_random()
    S.kill()
    S.start()
    C.close()
    C = Client(S.port)
    check_all(False, "after a SIGKILL")


@T.case
def bad_input():
    for path, status, code, text in [
        ("/streams/%24ce-", 400, "INVALID_ARGUMENT", "needs a category"),
        ("/streams/%24et-", 400, "INVALID_ARGUMENT", "needs an event type"),
        ("/streams/%24bc-", 400, "INVALID_ARGUMENT", "correlation id"),
        ("/streams/%24ce-Nothing", 404, "STREAM_NOT_FOUND", "$ce-Nothing"),
        ("/streams/%24ce-Order?from=x", 400, "INVALID_ARGUMENT", "from"),
        ("/streams/%24ce-Order?to=3", 400, "INVALID_ARGUMENT", "is a view stream"),
        ("/subscribe/streams/%24ce-", 400, "INVALID_ARGUMENT", "needs a category"),
    ]:
        r = C.get(path)
        T.expect(r, status, code, what=path)
        msg = (r.body or {}).get("error", {}).get("message", "") if isinstance(r.body, dict) else ""
        T.check(text in msg, "%s: the message says why" % path, path, text, msg)
    r = C.post("/streams/%24ce-Order", json.dumps([{"type": "X"}]))
    T.expect(r, 400, "INVALID_ARGUMENT", what="append to a view")
    r = C.delete("/streams/%24ce-Order")
    T.expect(r, 400, "INVALID_ARGUMENT", what="delete a view")
    # Nothing was written.
    check_all(False, "after bad input")


if __name__ == "__main__":
    T.run(setup, teardown)
