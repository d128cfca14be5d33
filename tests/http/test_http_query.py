#!/usr/bin/env python3
"""
test_http_query.py - the query endpoints (docs/queries.md, docs/http-api.md)
against a real `stele serve`: /categories, /types, /tags, /correlations,
/actors (with ?type=, ?after=, ?before=), /all?after=&before=, and
/streams/{s}?to= / ?asOf=, as JSON pages followed through `next` and as
NDJSON, compared with a model of the acknowledged appends; every bad
parameter gets a 400 naming it; the `stele query` and `stele read --to /
--as-of` commands; the indexes after a SIGKILL and restart.
"""
import datetime
import json
import os
import random
import subprocess
import sys
import time
from urllib.parse import quote

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from stele_server import STELE_BIN, Client, Server, Suite, ndjson_lines, stop_servers  # noqa: E402

T = Suite("test_http_query")
S = None
C = None
SEED = int(os.environ.get("TEST_SEED") or time.time())
R = random.Random(SEED)

STREAMS = ["Order-1", "Order-2", "Order-3-x", "Order", "Orderly-1", "Cart-1", "Cart-2",
           "Plain", "Ship-a", "Gone-1"]
TYPES = ["Placed", "Paid", "Shipped", "Caf\u00e9 Ordered"]
TAGS = ["t1", "tenant:acme", "x/y", "Order"]
CORRS = ["c-1", "c-2", "req 3"]
ACTORS = ["alice", "bob", "\u00e9mile"]

EVENTS = []      # model: dicts with stream, type, tags, corr, actor, rev, pos, created
HEADS = {}       # stream -> next revision
DELETED = {}     # stream -> truncate-before revision


def category(stream):
    i = stream.find("-")
    return stream[:i] if i > 0 else stream


def q(s):
    return quote(s, safe="")


def fmt(us, frac_digits=6, offset_min=0):
    """RFC 3339 text of a microsecond time, optionally with an offset."""
    dt = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc) + \
        datetime.timedelta(microseconds=us)
    tz = datetime.timezone(datetime.timedelta(minutes=offset_min))
    loc = dt.astimezone(tz)
    base = loc.strftime("%Y-%m-%dT%H:%M:%S")
    frac = "%06d" % loc.microsecond
    if frac_digits > 6:
        frac += "0" * (frac_digits - 6)
    if offset_min == 0:
        off = "Z"
    else:
        sign = "+" if offset_min > 0 else "-"
        off = "%s%02d:%02d" % (sign, abs(offset_min) // 60, abs(offset_min) % 60)
    return base + ("." + frac[:frac_digits] if frac_digits else "") + off


def parse_created(text):
    dt = datetime.datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(
        tzinfo=datetime.timezone.utc)
    delta = dt - datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)
    return (delta.days * 86400 + delta.seconds) * 1000000 + delta.microseconds


def visible(e):
    return e["rev"] >= DELETED.get(e["stream"], 0)


def append_random():
    s = R.choice(STREAMS)
    evs = []
    for _ in range(R.randint(1, 3)):
        e = {"stream": s, "type": R.choice(TYPES), "tags": R.sample(TAGS, R.randint(0, 2)),
             "corr": None, "actor": None}
        meta = {}
        v = R.randint(0, 4)
        if v == 1:
            e["corr"], e["actor"] = R.choice(CORRS), R.choice(ACTORS)
            meta = {"$correlationId": e["corr"], "$actor": e["actor"]}
        elif v == 2:
            e["corr"], e["actor"] = R.choice(CORRS), R.choice(ACTORS)
            meta = {"correlationId": e["corr"], "userId": e["actor"], "actorId": "nobody"}
        elif v == 3:
            e["actor"] = R.choice(ACTORS)
            meta = {"actorId": e["actor"], "$correlationId": 7}
        body = {"type": e["type"], "data": {"n": len(EVENTS) + len(evs)}, "tags": e["tags"]}
        if meta:
            body["metadata"] = meta
        elif v == 4:
            body["metadataBase64"] = "eyIkYWN0b3IiOiJhbGljZSJ9"  # bytes, not JSON: not read
        evs.append((e, body))
    r = C.post("/streams/" + q(s), json.dumps([b for _, b in evs]))
    T.expect(r, 201)
    for i, (e, _) in enumerate(evs):
        e["rev"] = r.body["firstRevision"] + i
        e["pos"] = r.body["firstPosition"] + i
        EVENTS.append(e)
    HEADS[s] = r.body["lastRevision"] + 1
    # Read your writes: the newest event of its category is this append's.
    r2 = C.get("/categories/%s?direction=backwards&limit=1" % q(category(s)))
    T.expect(r2, 200)
    T.check(r2.body["events"] and r2.body["events"][0]["position"] == evs[-1][0]["pos"],
            "the category query sees the append at once", r2.req, evs[-1][0]["pos"], r2.body)


def sync_created():
    pos = 0
    while True:
        r = C.get("/all?from=%d&limit=10000" % pos)
        T.expect(r, 200)
        for ev in r.body["events"]:
            EVENTS[ev["position"]]["created"] = parse_created(ev["created"])
        if "next" not in r.body:
            break
        pos = r.body["events"][-1]["position"] + 1


def setup():
    global S, C
    print("TEST_SEED=%d" % SEED, flush=True)
    S = Server()
    S.start()
    C = Client(S.port)
    for i in range(120):
        append_random()
        if i == 60:
            r = C.delete("/streams/Gone-1")
            T.expect(r, (204, 404))
            if HEADS.get("Gone-1"):
                DELETED["Gone-1"] = HEADS["Gone-1"]
            if r.status == 204:
                # a delete is an event of $deletes at the next position
                # (docs/projections.md "$deleted")
                EVENTS.append({"stream": "$deletes", "type": "$streamDeleted", "tags": [],
                               "corr": None, "actor": None, "rev": 0, "pos": len(EVENTS),
                               "data": {"streamId": "Gone-1", "revision": HEADS["Gone-1"] - 1,
                                        "truncateBefore": HEADS["Gone-1"],
                                        "tombstone": False}})
        if i % 40 == 0:
            time.sleep(0.002)  # spread the created times a little
    sync_created()


def teardown():
    stop_servers([S], client=C, check_exit=False)


# ------------------------------------------------------------ helpers

def read_all_pages(path, max_pages=10000):
    out, pages = [], 0
    while path:
        r = C.get(path)
        T.expect(r, 200, what="page %d" % pages)
        out.extend(r.body["events"])
        path = r.body.get("next")
        pages += 1
        T.check(pages <= max_pages, "pagination ends", r.req)
    return out


def read_ndjson(path):
    r = C.get(path, {"Accept": "application/x-ndjson"})
    T.expect(r, 200)
    T.check(r.headers.get("content-type", "").startswith("application/x-ndjson"),
            "NDJSON content type", r.req, "application/x-ndjson", r.headers)
    return [json.loads(ln) for ln in ndjson_lines(r.raw)]


def expected(pred, backwards=False, hide=True):
    out = [e for e in EVENTS if pred(e) and (not hide or visible(e))]
    return out[::-1] if backwards else out


def same(got, want, what, req):
    gp = [g["position"] for g in got]
    wp = [w["pos"] for w in want]
    T.check(gp == wp, what + ": positions", req, wp, gp)
    for g, w in zip(got, want):
        T.check(g["stream"] == w["stream"] and g["type"] == w["type"] and
                g["revision"] == w["rev"] and g["data"] == w.get("data", {"n": w["pos"]}),
                what + ": event contents", req, w, g)


# ------------------------------------------------------------ cases

KINDS = [
    ("categories", lambda k: (lambda e: category(e["stream"]) == k),
     ["Order", "Orderly", "Cart", "Plain", "Gone", "Nope", "Ship"]),
    ("types", lambda k: (lambda e: e["type"] == k), TYPES + ["Never"]),
    ("tags", lambda k: (lambda e: k in e["tags"]), TAGS + ["never"]),
    ("correlations", lambda k: (lambda e: e["corr"] == k), CORRS + ["c-9"]),
    ("actors", lambda k: (lambda e: e["actor"] == k), ACTORS + ["nobody"]),
]


@T.case
def every_query_matches_the_model():
    for route, mk, keys in KINDS:
        for key in keys:
            pred = mk(key)
            for back in (False, True):
                lim = R.choice([1, 2, 5, 100])
                path = "/%s/%s?limit=%d%s" % (route, q(key), lim,
                                              "&direction=backwards" if back else "")
                same(read_all_pages(path), expected(pred, back), "JSON pages", path)
                same(read_ndjson(path.replace("limit=%d" % lim, "limit=100000")),
                     expected(pred, back), "NDJSON", path)


@T.case
def type_inside_category_and_other_kinds():
    for route, mk, keys in KINDS:
        if route == "types":
            continue
        for key in keys[:3]:
            for t in TYPES:
                pred = mk(key)
                path = "/%s/%s?type=%s&limit=3" % (route, q(key), q(t))
                got = read_all_pages(path)
                same(got, expected(lambda e: pred(e) and e["type"] == t), "type restriction", path)


@T.case
def time_ranges():
    times = sorted({e["created"] for e in EVENTS})
    for _ in range(40):
        a, b = sorted(R.sample(times, 2))
        off = R.choice([0, 120, -330])
        digits = R.choice([0, 3, 6, 9]) if off else R.choice([6, 9])
        # Whole seconds lose precision: compare with the rounded bounds.
        def bound(us):
            if digits >= 6:
                return us
            unit = 10 ** (6 - digits)
            return us // unit * unit
        ta, tb = fmt(bound(a), digits, off), fmt(bound(b), digits, off)
        lo, hi = bound(a), bound(b)
        for route, mk, keys in KINDS[:2]:
            key = R.choice(keys)
            pred = mk(key)
            path = "/%s/%s?after=%s&before=%s&limit=4" % (route, q(key), q(ta), q(tb))
            want = expected(lambda e: pred(e) and lo <= e["created"] < hi)
            same(read_all_pages(path), want, "time range", path)
        path = "/all?after=%s&before=%s&limit=7" % (q(ta), q(tb))
        same(read_all_pages(path),
             expected(lambda e: lo <= e["created"] < hi, hide=False), "$all by time", path)
        path = "/all?after=%s&direction=backwards&limit=5" % q(ta)
        same(read_all_pages(path),
             expected(lambda e: lo <= e["created"], True, hide=False), "$all after, backwards",
             path)
    # Nanoseconds: after = T + 1 ns excludes T (rounded up), before = T + 1 ns
    # includes it.
    t = R.choice(times)
    ns = fmt(t, 6)[:-1] + "001Z"
    got = read_all_pages("/all?after=%s&limit=1000" % q(ns))
    T.check(all(e["position"] not in [x["pos"] for x in EVENTS if x["created"] == t]
                for e in got), "after T+1ns excludes events at T", ns)
    got = read_all_pages("/all?before=%s&limit=1000" % q(ns))
    T.check(got and got[-1]["position"] == max(x["pos"] for x in EVENTS if x["created"] == t),
            "before T+1ns includes events at T", ns)
    # An unencoded '+' in the offset arrives as a space: still read as '+'.
    ta = fmt(times[len(times) // 2], 6, 60)
    raw = ta  # sent as is: its "+" decodes to a space
    got = read_all_pages("/all?after=%s&limit=1000" % raw)
    same(got, expected(lambda e: e["created"] >= times[len(times) // 2], hide=False),
         "offset with a raw '+'", raw)
    # Equal bounds: empty, not an error.
    r = C.get("/types/%s?after=%s&before=%s" % (q(TYPES[0]), q(ta), q(ta)))
    T.check(T.expect(r, 200)["events"] == [], "after == before is empty", r.req)


@T.case
def next_links_keep_the_query():
    key = "Order"
    r = C.get("/categories/Order?type=%s&after=%s&limit=1" % (q(TYPES[0]), q(fmt(0))))
    b = T.expect(r, 200)
    want = expected(lambda e: category(e["stream"]) == key and e["type"] == TYPES[0])
    if len(want) > 1:
        link = b.get("next", "")
        T.check(link.startswith("/categories/Order?type=") and "after=1970-01-01T00:00:00.000000Z"
                in link and "from=%d" % want[1]["pos"] in link and "limit=1" in link,
                "next link carries type, after, from, limit", r.req, None, link)


@T.case
def temporal_stream_reads():
    for s in STREAMS:
        evs = [e for e in EVENTS if e["stream"] == s]
        if not evs:
            continue
        gone = s in DELETED and DELETED[s] >= HEADS[s]
        for _ in range(4):
            to = R.randint(0, HEADS[s])
            for back in (False, True):
                path = "/streams/%s?to=%d&limit=2%s" % (q(s), to, "&direction=backwards" if back
                                                         else "")
                if gone:
                    T.expect(C.get(path), 404, "STREAM_NOT_FOUND")
                    continue
                want = [e for e in evs if e["rev"] <= to and visible(e)]
                same(read_all_pages(path), want[::-1] if back else want, "to=", path)
            t = R.choice(evs)["created"] + R.choice([-1, 0, 1])
            path = "/streams/%s?asOf=%s&limit=3" % (q(s), q(fmt(t)))
            if gone:
                T.expect(C.get(path), 404, "STREAM_NOT_FOUND")
                continue
            want = [e for e in evs if e["created"] <= t and visible(e)]
            same(read_all_pages(path), want, "asOf=", path)
            same(read_ndjson(path.replace("limit=3", "limit=1000")), want, "asOf= NDJSON", path)
    # Before the stream existed: an empty page.
    r = C.get("/streams/Order-1?asOf=1970-01-01T00:00:00Z")
    T.check(T.expect(r, 200)["events"] == [], "asOf before the first event", r.req)


@T.case
def bad_parameters():
    cases = [
        ("/types/Paid?after=2026-13-01T00:00:00Z", "after: '2026-13-01T00:00:00Z' is not an RFC "
                                                   "3339 time: month 13 is out of range"),
        ("/types/Paid?after=2026-02-30T00:00:00Z", "day 30 is out of range for 2026-02"),
        ("/types/Paid?before=2026-01-01T24:00:00Z", "hour 24 is out of range"),
        ("/types/Paid?before=2026-01-01T23:59:60Z", "leap seconds are not supported"),
        ("/types/Paid?after=2026-01-01", "expected YYYY-MM-DDTHH:MM:SS"),
        ("/types/Paid?after=2026-01-01T00:00:00", "expected 'Z' or a UTC offset"),
        ("/types/Paid?after=2026-01-01T00:00:00.Z", "a '.' must be followed by digits"),
        ("/types/Paid?after=2026-01-01T00:00:00.1234567890Z", "more than 9 fractional digits"),
        ("/types/Paid?after=2026-01-01T00:00:00%2B25:00", "UTC offset '+25:00' is out of range"),
        ("/types/Paid?after=", "after is empty"),
        ("/types/Paid?after=2026-01-02T00:00:00Z&before=2026-01-01T00:00:00Z",
         "after (2026-01-02T00:00:00Z) is later than before (2026-01-01T00:00:00Z)"),
        ("/types/Paid?type=Placed", "this is a type query"),
        ("/categories/Order?type=", "type is empty"),
        ("/categories/Order-1", "category 'Order-1' contains '-'"),
        ("/categories/", "the key is missing"),
        ("/tags/a/b", "malformed key in the path"),
        ("/actors/" + "a" * 300, "longer than 255 bytes"),
        ("/actors/a%01b", "control character"),
        ("/streams/Order-1?to=x", "to must be a revision"),
        ("/streams/Order-1?to=1&asOf=2026-01-01T00:00:00Z", "give to or asOf, not both"),
        ("/streams/Order-1?asOf=yesterday", "asOf: 'yesterday' is not an RFC 3339 time"),
        ("/streams/Order-1?after=2026-01-01T00:00:00Z&to=3", "give after/before (a time range) or to/asOf"),
        ("/all?to=3", "to and asOf apply to stream reads"),
        ("/types/Paid?direction=sideways", "direction must be"),
        ("/types/Paid?limit=0", "limit must be a number"),
    ]
    for path, msg in cases:
        r = C.get(path)
        T.expect(r, 400, "INVALID_ARGUMENT", path)
        T.check(msg in r.body["error"]["message"], "precise message", r.req, msg,
                r.body["error"]["message"])
    r = C.post("/types/Paid", "[]")
    T.expect(r, 405, "METHOD_NOT_ALLOWED")
    T.expect(C.get("/streams/Nope-1?to=3"), 404, "STREAM_NOT_FOUND")


def cli(*args):
    env = dict(os.environ, STELE_SERVER="http://127.0.0.1:%d" % S.port)
    for k in list(env):
        if k.lower() in ("http_proxy", "https_proxy", "all_proxy", "no_proxy"):
            del env[k]
    p = subprocess.run([STELE_BIN] + list(args), capture_output=True, text=True, env=env,
                       timeout=60)
    return p.returncode, p.stdout, p.stderr


@T.case
def command_line():
    rc, out, err = cli("query", "category", "Order", "--follow-next", "--limit", "3")
    T.check(rc == 0, "stele query category exits 0", None, 0, (rc, err))
    got = [json.loads(ln) for ln in out.splitlines()]
    same(got, expected(lambda e: category(e["stream"]) == "Order"), "stele query category",
         "query category Order")
    rc, out, err = cli("query", "actor", ACTORS[0], "--type", TYPES[1], "--backwards")
    T.check(rc == 0, "stele query actor exits 0", None, 0, (rc, err))
    same([json.loads(ln) for ln in out.splitlines()],
         expected(lambda e: e["actor"] == ACTORS[0] and e["type"] == TYPES[1], True)[:100],
         "stele query actor --type --backwards", "")
    times = sorted({e["created"] for e in EVENTS})
    a, b = times[len(times) // 3], times[2 * len(times) // 3]
    rc, out, err = cli("query", "all", "--after", fmt(a, 6, 60), "--before", fmt(b), "--limit",
                       "1000")
    T.check(rc == 0, "stele query all exits 0", None, 0, (rc, err))
    same([json.loads(ln) for ln in out.splitlines()],
         expected(lambda e: a <= e["created"] < b, hide=False), "stele query all", "")
    rc, out, err = cli("read", "Order-1", "--to", "1")
    if "Order-1" in HEADS:
        T.check(rc == 0, "stele read --to exits 0", None, 0, (rc, err))
        same([json.loads(ln) for ln in out.splitlines()],
             [e for e in EVENTS if e["stream"] == "Order-1" and e["rev"] <= 1], "read --to", "")
        t = times[len(times) // 2]
        rc, out, err = cli("read", "Order-1", "--as-of", fmt(t))
        T.check(rc == 0, "stele read --as-of exits 0", None, 0, (rc, err))
        same([json.loads(ln) for ln in out.splitlines()],
             [e for e in EVENTS if e["stream"] == "Order-1" and e["created"] <= t][:100],
             "read --as-of", "")
    for args, code, msg in [
            (("query", "color", "red"), 2, "unknown kind 'color'"),
            (("query", "type"), 2, "missing KEY"),
            (("query", "all"), 2, "needs --after"),
            (("query", "type", "Paid", "--type", "X"), 2, "--type does not apply"),
            (("query", "type", "Paid", "--after", "2026-99-01T00:00:00Z"), 2, "month 99"),
            (("read", "Order-1", "--to", "1", "--as-of", "2026-01-01T00:00:00Z"), 2, "not both"),
            (("read", "Order-1", "--as-of", "noon"), 2, "not an RFC 3339 time"),
            (("read", "--all", "--to", "1"), 2, "not --all"),
            (("query", "category", "Order-1"), 1, "contains '-'")]:
        rc, out, err = cli(*args)
        T.check(rc == code and msg in err, "stele %s" % " ".join(args), None, (code, msg),
                (rc, err))


@T.case
def indexes_survive_a_kill():
    S.kill()
    S.start()
    C.close()
    globals()["C"] = Client(S.port)
    for _ in range(10):
        append_random()
    sync_created()
    for route, mk, keys in KINDS:
        for key in keys:
            path = "/%s/%s?limit=10000" % (route, q(key))
            same(read_all_pages(path), expected(mk(key)), "after a restart", path)


if __name__ == "__main__":
    T.run(setup, teardown)
