#!/usr/bin/env python3
"""
test_http_streams.py - stream metadata, snapshots and loads over HTTP
(docs/http-api.md, docs/streams.md), against a real `stele serve`:

- metadata round trips (custom fields byte for byte, KurrentDB aliases,
  null unsets, versions and expectedVersion), bad metadata gets a precise
  400/409/410/413 and changes nothing;
- retention is enforced on reads at once (maxCount, truncateBefore, maxAge,
  across pages and both directions), while $all and the head keep every
  event;
- snapshots (JSON state byte for byte, bytes as base64, latest, atOrBefore,
  retention), bad snapshots get precise errors, and load returns the latest
  snapshot plus the later events;
- all of it survives SIGKILL and a restart; the `stele metadata` and
  `stele snapshot` commands.
"""
import base64
import json
import os
import subprocess
import sys
from urllib.parse import quote

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from stele_server import (STELE_BIN, Client, Server, Suite, check_servers,  # noqa: E402
                          object_spans, stop_servers)

T = Suite("test_http_streams")
S = None      # the main server
C = None      # a keep-alive client on it
SMALL = None  # small limits


def sp(stream, suffix=""):
    return "/streams/" + quote(stream, safe="") + suffix


def append(stream, n, client=None):
    body = json.dumps([{"type": "T%d" % i, "data": {"i": i}} for i in range(n)])
    T.expect((client or C).post(sp(stream), body), 201)


def put(path, body, client=None):
    return (client or C).request("PUT", path, body)


def revs(r):
    return [e["revision"] for e in T.expect(r, 200)["events"]]


def read_all_pages(stream, direction, limit):
    """Follow `next` links; returns the revisions read."""
    path = sp(stream, "?direction=%s&limit=%d" % (direction, limit))
    out = []
    for _ in range(1000):
        r = C.get(path)
        b = T.expect(r, 200)
        out += [e["revision"] for e in b["events"]]
        path = b.get("next")
        if not path:
            return out
    T.fail("pagination does not end", path)


def setup():
    global S, C, SMALL
    S = Server(name="main").start()
    C = Client(S.port)
    SMALL = Server(["--max-event-size", "4096"], name="small").start()


def after_case():
    def reconnect(srv):
        global C
        if srv is S:
            C.close()
            C = Client(S.port)
    check_servers(T, [S, SMALL], reconnect)


def teardown():
    stop_servers([S, SMALL], client=C)


# ====================================================================== metadata

@T.case
def metadata_round_trip():
    s = "Meta-1"
    T.expect(C.get(sp(s, "/metadata")), 404, "STREAM_NOT_FOUND")
    # Allowed before the first event (KurrentDB allows it).
    custom = b'"owner" : "t\\u00e4m \xc3\xa4", "n":[1 , 2.5E-3,{}], "flag":true'
    body = b'{"maxCount": 3, ' + custom + b', "maxSnapshots": 2}'
    r = put(sp(s, "/metadata?expectedVersion=none"), body)
    b = T.expect(r, 200)
    T.check(b["version"] == 0 and b["metadata"]["maxCount"] == 3, "first version is 0", r.req,
            "version 0", b)
    g = C.get(sp(s, "/metadata"))
    T.check(T.expect(g, 200) == b, "GET equals the PUT answer", g.req, b, g.body)
    md = object_spans(object_spans(g.raw)["metadata"])
    for k, v in ((b"owner", b'"t\\u00e4m \xc3\xa4"'), (b"n", b"[1 , 2.5E-3,{}]"),
                 (b"flag", b"true")):
        T.check(md.get(k.decode()) == v, "custom field %s byte for byte" % k.decode(), g.req, v,
                md.get(k.decode()))
    T.check(g.body["metadata"]["maxSnapshots"] == 2, "maxSnapshots", g.req, 2, g.body)
    # The head of a stream with metadata only: no revision yet.
    h = T.expect(C.get(sp(s, "/head")), 200)
    T.check(h["lastRevision"] is None, "head of a metadata-only stream", None, None, h)
    T.expect(C.get(sp(s)), 404, "STREAM_NOT_FOUND")
    # Replace: KurrentDB names are aliases; null unsets; fractions of seconds.
    r = put(sp(s, "/metadata?expectedVersion=0"),
            '{"$maxAge": 0.25, "$maxCount": null, "$tb": 7}')
    b = T.expect(r, 200)
    T.check(b["version"] == 1 and b["metadata"] == {"maxAge": 0.25, "truncateBefore": 7},
            "aliases and null", r.req, {"maxAge": 0.25, "truncateBefore": 7}, b)
    r = put(sp(s, "/metadata?expectedVersion=exists"), '{"maxAge": 86400}')
    T.check(T.expect(r, 200)["metadata"] == {"maxAge": 86400}, "whole seconds", r.req, None, r)
    # Wrong expected versions: 409 with the current version.
    for ev, cur in (("none", 2), ("7", 2), ("0", 2)):
        r = put(sp(s, "/metadata?expectedVersion=" + ev), "{}")
        T.expect(r, 409, "WRONG_EXPECTED_VERSION")
        T.check(r.body["error"].get("currentVersion") == cur, "currentVersion", r.req, cur, r)
    r = put(sp("Meta-2", "/metadata?expectedVersion=exists"), "{}")
    T.expect(r, 409, "WRONG_EXPECTED_VERSION")
    T.check(r.body["error"].get("currentVersion", "x") is None, "currentVersion null", r.req,
            None, r)
    r = put(sp(s, "/metadata"), "{}")
    T.check(T.expect(r, 200) == {"stream": s, "version": 3, "metadata": {}}, "empty metadata",
            r.req, None, r)


@T.case
def metadata_errors_change_nothing():
    s = "Meta-err"
    append(s, 2)
    T.expect(put(sp(s, "/metadata"), '{"maxCount":5,"keep":"me"}'), 200)
    before = C.get(sp(s, "/metadata")).raw
    big = '{"x":"' + "a" * (64 * 1024) + '"}'
    cases = [
        ('{"maxCount":5,', 400, "INVALID_JSON", "byte"),
        ('[1]', 400, "INVALID_ARGUMENT", "JSON object"),
        ('{"maxAge":"x"}', 400, "INVALID_ARGUMENT", "maxAge"),
        ('{"maxAge":0}', 400, "INVALID_ARGUMENT", "maxAge"),
        ('{"maxAge":-1}', 400, "INVALID_ARGUMENT", "maxAge"),
        ('{"maxAge":1e3}', 400, "INVALID_ARGUMENT", "maxAge"),
        ('{"maxAge":0.0000001}', 400, "INVALID_ARGUMENT", "maxAge"),
        ('{"maxCount":0}', 400, "INVALID_ARGUMENT", "maxCount"),
        ('{"maxCount":1.5}', 400, "INVALID_ARGUMENT", "maxCount"),
        ('{"maxCount":9223372036854775808}', 400, "INVALID_ARGUMENT", "maxCount"),
        ('{"truncateBefore":-1}', 400, "INVALID_ARGUMENT", "truncateBefore"),
        ('{"maxSnapshots":1001}', 400, "INVALID_ARGUMENT", "maxSnapshots"),
        ('{"maxCount":1,"$maxCount":2}', 400, "INVALID_ARGUMENT", "twice"),
        ('{"$other":{}}', 400, "INVALID_ARGUMENT", "reserved"),
        ('{"$acl":{"$r":1}}', 400, "INVALID_ARGUMENT", "$acl"),
        ('{"$acl":{"$x":"u"}}', 400, "INVALID_ARGUMENT", "$acl"),
        ('{"$acl":[]}', 400, "INVALID_ARGUMENT", "$acl"),
        ('{"max\\u0041ge":1}', 400, "INVALID_ARGUMENT", "reserved"),
        ('{"a":1,"a":2}', 400, "INVALID_ARGUMENT", "twice"),
        (big, 413, "TOO_LARGE", "limit"),
    ]
    for body, status, code, text in cases:
        r = put(sp(s, "/metadata"), body)
        T.expect(r, status, code)
        T.check(text in r.body["error"]["message"], "message names the problem", r.req, text, r)
    r = put(sp(s, "/metadata?expectedVersion=latest"), "{}")
    T.expect(r, 400, "INVALID_ARGUMENT")
    T.check(C.get(sp(s, "/metadata")).raw == before, "bad metadata changed nothing")
    T.expect(C.request("DELETE", sp(s, "?tombstone=true")), 204)
    T.expect(put(sp(s, "/metadata"), "{}"), 410, "STREAM_DELETED")
    T.expect(C.get(sp(s, "/metadata")), 410, "STREAM_DELETED")


@T.case
def retention_is_enforced_at_once():
    s = "Ret-1"
    append(s, 10)
    T.check(revs(C.get(sp(s, "?limit=100"))) == list(range(10)), "all ten before")
    T.expect(put(sp(s, "/metadata"), '{"maxCount":3}'), 200)
    T.check(revs(C.get(sp(s, "?limit=100"))) == [7, 8, 9], "maxCount 3 forwards")
    T.check(revs(C.get(sp(s, "?direction=backwards&limit=100"))) == [9, 8, 7],
            "maxCount 3 backwards")
    T.check(revs(C.get(sp(s, "?from=2&limit=2"))) == [7, 8], "from below the start moves up")
    T.expect(put(sp(s, "/metadata"), '{"maxCount":7,"truncateBefore":4}'), 200)
    T.check(read_all_pages(s, "forwards", 2) == [4, 5, 6, 7, 8, 9], "pages forwards")
    T.check(read_all_pages(s, "backwards", 4) == [9, 8, 7, 6, 5, 4], "pages backwards")
    # New events move the maxCount window.
    append(s, 4)
    T.check(read_all_pages(s, "forwards", 3) == list(range(7, 14)), "window moved")
    # maxAge of a microsecond hides everything already written.
    T.expect(put(sp(s, "/metadata"), '{"maxAge":0.000001}'), 200)
    T.check(revs(C.get(sp(s, "?limit=100"))) == [], "maxAge hides all")
    T.check(revs(C.get(sp(s, "?direction=backwards"))) == [], "maxAge hides all backwards")
    h = T.expect(C.get(sp(s, "/head")), 200)
    T.check(h["lastRevision"] == 13 and h["truncateBefore"] == 0 and not h["deleted"],
            "the head still says where appends go on", None, 13, h)
    T.expect(C.post(sp(s), '[{"type":"Next"}]', {"Stele-Expected-Revision": "13"}), 201)
    # $all still shows every event until scavenged.
    evs = [e for e in T.expect(C.get("/all?limit=10000"), 200)["events"] if e["stream"] == s]
    T.check([e["revision"] for e in evs] == list(range(15)), "$all keeps them", None, 15,
            len(evs))
    T.expect(put(sp(s, "/metadata"), '{"maxAge":3600}'), 200)
    T.check(len(revs(C.get(sp(s, "?limit=100")))) == 15, "a long maxAge shows them again")


# ====================================================================== snapshots

@T.case
def snapshots_put_get_retention():
    s = "Snap-1"
    append(s, 12)
    state = b'{ "total" : 1.50 , "items":["a" ,"\\u00e4"] }'
    r = put(sp(s, "/snapshots"), b'{"revision":3,"schemaVersion":2,"state":' + state + b"}")
    T.check(T.expect(r, 201) == {"stream": s, "revision": 3, "schemaVersion": 2}, "put answer",
            r.req, None, r)
    g = C.get(sp(s, "/snapshots"))
    b = T.expect(g, 200)
    T.check(b["revision"] == 3 and b["schemaVersion"] == 2 and "created" in b, "get latest",
            g.req, None, b)
    T.check(object_spans(g.raw)["state"] == state, "JSON state byte for byte", g.req, state,
            object_spans(g.raw).get("state"))
    raw = bytes(range(256))
    r = put(sp(s, "/snapshots"),
            json.dumps({"revision": 5, "stateBase64": base64.b64encode(raw).decode()}))
    T.check(T.expect(r, 201)["schemaVersion"] == 0, "schemaVersion defaults to 0", r.req, 0, r)
    g = T.expect(C.get(sp(s, "/snapshots")), 200)
    T.check(base64.b64decode(g["stateBase64"]) == raw and "state" not in g, "bytes state")
    T.check(T.expect(C.get(sp(s, "/snapshots?atOrBefore=4")), 200)["revision"] == 3,
            "at or before 4")
    T.expect(C.get(sp(s, "/snapshots?atOrBefore=2")), 404, "SNAPSHOT_NOT_FOUND")
    # Default retention: the 5 highest revisions.
    for rev in (6, 7, 8, 9):
        T.expect(put(sp(s, "/snapshots"), '{"revision":%d,"state":{"r":%d}}' % (rev, rev)), 201)
    T.expect(C.get(sp(s, "/snapshots?atOrBefore=4")), 404, "SNAPSHOT_NOT_FOUND")
    T.check(T.expect(C.get(sp(s, "/snapshots?atOrBefore=5")), 200)["revision"] == 5, "5 kept")
    r = put(sp(s, "/snapshots"), '{"revision":1,"state":{}}')
    T.expect(r, 400, "INVALID_ARGUMENT")
    T.check("keeps its 5 latest" in r.body["error"]["message"], "retention message", r.req,
            None, r)
    # maxSnapshots from the metadata, applied at once.
    T.expect(put(sp(s, "/metadata"), '{"maxSnapshots":2}'), 200)
    T.expect(C.get(sp(s, "/snapshots?atOrBefore=7")), 404, "SNAPSHOT_NOT_FOUND")
    T.check(T.expect(C.get(sp(s, "/snapshots?atOrBefore=8")), 200)["revision"] == 8, "8 kept")
    # Same revision: replaced.
    T.expect(put(sp(s, "/snapshots"), '{"revision":9,"schemaVersion":4,"state":"v2"}'), 201)
    g = T.expect(C.get(sp(s, "/snapshots")), 200)
    T.check(g["revision"] == 9 and g["schemaVersion"] == 4 and g["state"] == "v2", "replaced",
            None, None, g)


@T.case
def bad_snapshots_get_precise_errors():
    s = "Snap-err"
    append(s, 3)
    T.expect(put(sp(s, "/snapshots"), '{"revision":1,"state":{"ok":1}}'), 201)
    before = C.get(sp(s, "/snapshots")).raw
    cases = [
        ('{"revision":3,"state":{}}', 400, "INVALID_ARGUMENT", "beyond the last revision 2"),
        ('{"state":{}}', 400, "INVALID_ARGUMENT", "revision is missing"),
        ('{"revision":1}', 400, "INVALID_ARGUMENT", "state"),
        ('{"revision":1,"state":1,"stateBase64":"AA=="}', 400, "INVALID_ARGUMENT", "not both"),
        ('{"revision":1,"stateBase64":"A"}', 400, "INVALID_ARGUMENT", "stateBase64"),
        ('{"revision":1,"stateBase64":5}', 400, "INVALID_ARGUMENT", "string"),
        ('{"revision":-1,"state":{}}', 400, "INVALID_ARGUMENT", "revision"),
        ('{"revision":"1","state":{}}', 400, "INVALID_ARGUMENT", "revision"),
        ('{"revision":1,"schemaVersion":1.5,"state":{}}', 400, "INVALID_ARGUMENT",
         "schemaVersion"),
        ('{"revision":1,"schemaVersion":4294967296,"state":{}}', 400, "INVALID_ARGUMENT",
         "schemaVersion"),
        ('{"revision":1,"state":{},"extra":1}', 400, "INVALID_ARGUMENT", "unknown field"),
        ('{"revision":1,"state":{}', 400, "INVALID_JSON", "byte"),
        ('{"revision":1,"revision":2,"state":{}}', 400, "INVALID_ARGUMENT", "twice"),
    ]
    for body, status, code, text in cases:
        r = put(sp(s, "/snapshots"), body)
        T.expect(r, status, code)
        T.check(text in r.body["error"]["message"], "message names the problem", r.req, text, r)
    T.expect(C.get(sp(s, "/snapshots?atOrBefore=x")), 400, "INVALID_ARGUMENT")
    T.check(C.get(sp(s, "/snapshots")).raw == before, "bad snapshots changed nothing")
    T.expect(put(sp("Snap-none", "/snapshots"), '{"revision":0,"state":{}}'), 404,
             "STREAM_NOT_FOUND")
    T.expect(C.get(sp("Snap-none", "/snapshots")), 404, "STREAM_NOT_FOUND")
    append("Snap-empty", 1)
    T.expect(C.get(sp("Snap-empty", "/snapshots")), 404, "SNAPSHOT_NOT_FOUND")
    # Oversized state on the small server (max event size 4096).
    small = Client(SMALL.port)
    try:
        append("Big-1", 1, small)
        r = put(sp("Big-1", "/snapshots"), '{"revision":0,"state":"%s"}' % ("x" * 5000), small)
        T.expect(r, 413, "TOO_LARGE")
        T.expect(put(sp("Big-1", "/snapshots"), '{"revision":0,"state":"%s"}' % ("x" * 3000),
                     small), 201)
    finally:
        small.close()
    # Soft delete: the snapshots go with the events; tombstone: 410.
    T.expect(C.request("DELETE", sp(s)), 204)
    T.expect(C.get(sp(s, "/snapshots")), 404, "STREAM_NOT_FOUND")
    T.expect(put(sp(s, "/snapshots"), '{"revision":2,"state":{}}'), 404, "STREAM_NOT_FOUND")
    append(s, 1)  # revision 3
    T.expect(C.get(sp(s, "/snapshots")), 404, "SNAPSHOT_NOT_FOUND")
    r = put(sp(s, "/snapshots"), '{"revision":2,"state":{}}')
    T.expect(r, 400, "INVALID_ARGUMENT")
    T.check("soft delete" in r.body["error"]["message"], "below the recreated start", r.req,
            None, r)
    T.expect(C.request("DELETE", sp(s, "?tombstone=true")), 204)
    T.expect(put(sp(s, "/snapshots"), '{"revision":3,"state":{}}'), 410, "STREAM_DELETED")
    T.expect(C.get(sp(s, "/snapshots")), 410, "STREAM_DELETED")
    T.expect(C.get(sp(s, "/load")), 410, "STREAM_DELETED")


@T.case
def load_is_snapshot_plus_later_events():
    s = "Load-1"
    append(s, 8)
    r = C.get(sp(s, "/load"))
    b = T.expect(r, 200)
    T.check(b["snapshot"] is None and [e["revision"] for e in b["events"]] == list(range(8)),
            "no snapshot: every event", r.req, None, b)
    T.expect(put(sp(s, "/snapshots"), '{"revision":4,"schemaVersion":1,"state":{"sum":10}}'), 201)
    b = T.expect(C.get(sp(s, "/load")), 200)
    T.check(b["snapshot"]["revision"] == 4 and b["snapshot"]["state"] == {"sum": 10} and
            [e["revision"] for e in b["events"]] == [5, 6, 7] and "next" not in b,
            "snapshot + later events", None, None, b)
    r = C.get(sp(s, "/load?limit=2"))
    b = T.expect(r, 200)
    T.check([e["revision"] for e in b["events"]] == [5, 6] and "next" in b, "limit + next",
            r.req, None, b)
    T.check(revs(C.get(b["next"])) == [7], "next continues the stream read")
    # Retention hides events right after the snapshot: the gap shows.
    T.expect(put(sp(s, "/metadata"), '{"truncateBefore":6}'), 200)
    b = T.expect(C.get(sp(s, "/load")), 200)
    T.check(b["snapshot"]["revision"] == 4 and [e["revision"] for e in b["events"]] == [6, 7],
            "load obeys retention", None, None, b)
    for q in ("?limit=0", "?limit=10001", "?limit=x"):
        T.expect(C.get(sp(s, "/load" + q)), 400, "INVALID_ARGUMENT")
    T.expect(C.get(sp("Load-none", "/load")), 404, "STREAM_NOT_FOUND")


@T.case
def routes_and_methods():
    append("Route-1", 1)
    for method, suffix in (("DELETE", "/metadata"), ("POST", "/metadata"),
                           ("POST", "/snapshots"), ("DELETE", "/snapshots"), ("PUT", "/load")):
        T.expect(C.request(method, sp("Route-1", suffix), "{}"), 405, "METHOD_NOT_ALLOWED")
    T.expect(C.get(sp("Route-1", "/snapshot")), 404, "NOT_FOUND")
    T.expect(C.get(sp("$all", "/metadata")), 400, "INVALID_ARGUMENT")


@T.case
def never_in_all_and_survives_sigkill():
    global C
    info = T.expect(C.get("/info"), 200)["store"]["events"]
    alle = T.expect(C.get("/all?limit=10000"), 200)["events"]
    T.check(len(alle) == info, "$all holds only events (no snapshot or metadata records)",
            None, info, len(alle))
    md = C.get(sp("Snap-1", "/metadata")).raw
    sn = C.get(sp("Snap-1", "/snapshots")).raw
    ld = C.get(sp("Load-1", "/load")).raw
    S.kill()
    S.start()
    C.close()
    C = Client(S.port)
    T.check(C.get(sp("Snap-1", "/metadata")).raw == md, "metadata after SIGKILL")
    T.check(C.get(sp("Snap-1", "/snapshots")).raw == sn, "snapshot after SIGKILL")
    T.check(C.get(sp("Load-1", "/load")).raw == ld, "load after SIGKILL")
    T.check(len(T.expect(C.get("/all?limit=10000"), 200)["events"]) == info, "$all after SIGKILL")


# ====================================================================== CLI

def cli(*args, stdin=None):
    p = subprocess.run([STELE_BIN] + list(args) + ["--server", "http://127.0.0.1:%d" % S.port],
                       input=stdin, capture_output=True, timeout=60)
    return p.returncode, p.stdout, p.stderr


@T.case
def cli_metadata_and_snapshots():
    append("Cli-1", 5)
    rc, out, err = cli("metadata", "Cli-1")
    T.check(rc == 0 and json.loads(out)["version"] is None, "metadata of a stream without any",
            None, 0, (rc, out, err))
    rc, out, err = cli("metadata", "Cli-1", "--set", '{"maxCount":2,"team":"ops"}',
                       "--expect-version", "none")
    T.check(rc == 0 and json.loads(out)["metadata"] == {"maxCount": 2, "team": "ops"},
            "metadata --set", None, None, (rc, out, err))
    rc, out, err = cli("metadata", "Cli-1", "--set", "{}", "--expect-version", "none")
    T.check(rc == 1 and b"WRONG_EXPECTED_VERSION" in err, "wrong version: exit 1", None, None,
            (rc, out, err))
    rc, out, err = cli("metadata", "Cli-1", "--set", "[1]")
    T.check(rc == 2, "not an object: usage error", None, 2, (rc, out, err))
    rc, out, err = cli("metadata", "Cli-1", "--set-file", "-", stdin=b'{"maxCount":4}')
    T.check(rc == 0 and json.loads(out)["version"] == 1, "--set-file -", None, None,
            (rc, out, err))
    rc, out, err = cli("snapshot", "put", "Cli-1", "--revision", "3", "--schema", "7",
                       "--state", '{"n": 3}')
    T.check(rc == 0 and json.loads(out) == {"stream": "Cli-1", "revision": 3, "schemaVersion": 7},
            "snapshot put", None, None, (rc, out, err))
    rc, out, err = cli("snapshot", "put", "Cli-1", "--revision", "2", "--bytes-file", "-",
                       stdin=b"\x00\x01\xfe")
    T.check(rc == 0, "snapshot put bytes", None, 0, (rc, out, err))
    rc, out, err = cli("snapshot", "get", "Cli-1", "--at-or-before", "2")
    T.check(rc == 0 and base64.b64decode(json.loads(out)["stateBase64"]) == b"\x00\x01\xfe",
            "snapshot get bytes", None, None, (rc, out, err))
    rc, out, err = cli("snapshot", "load", "Cli-1")
    b = json.loads(out) if rc == 0 else {}
    T.check(rc == 0 and b["snapshot"]["state"] == {"n": 3} and
            [e["revision"] for e in b["events"]] == [4], "snapshot load", None, None,
            (rc, out, err))
    rc, out, err = cli("snapshot", "put", "Cli-1", "--revision", "9", "--state", "{}")
    T.check(rc == 1 and b"INVALID_ARGUMENT" in err, "beyond the head: exit 1", None, None,
            (rc, out, err))
    rc, out, err = cli("snapshot", "get", "Cli-1", "--at-or-before", "1")
    T.check(rc == 1 and b"SNAPSHOT_NOT_FOUND" in err, "none: exit 1", None, None, (rc, out, err))
    for args in (("snapshot",), ("snapshot", "frob", "Cli-1"), ("snapshot", "put", "Cli-1"),
                 ("snapshot", "put", "Cli-1", "--revision", "x", "--state", "{}"),
                 ("snapshot", "put", "Cli-1", "--revision", "1", "--state", "{bad"),
                 ("snapshot", "get", "Cli-1", "--limit", "3")):
        rc, out, err = cli(*args)
        T.check(rc == 2, "usage error for %r" % (args,), None, 2, (rc, out, err))
    rc, out, err = cli("snapshot", "--help")
    T.check(rc == 0 and b"usage:" in out, "snapshot --help", None, 0, (rc, out, err))


if __name__ == "__main__":
    T.run(setup, teardown, after_case)
