#!/usr/bin/env python3
"""
test_http_conventions.py - the seeds' conventions (issue 19 item 5) over
HTTP, against a real `stele serve` (docs/http-api.md):

- a retry of a written event id with different data is 409 ID_CONFLICT
  naming the part that differs, and writes nothing; an identical retry stays
  an idempotent 200; both also after a restart (the original is read from
  the log) and inside one group commit (concurrent copies);
- header values are trimmed of leading and trailing SP/HTAB (RFC 9110);
- ULID event ids are accepted, stored as the same 128 bits and returned in
  the form given (reads, $all, SSE, the append response), also after a
  restart; a ULID and the UUID of the same bits are the same id;
- append responses list every event's id, revision and position;
- stream reads bounded by time (after / before);
- correlation_id / causation_id / user_id (and causationId) in metadata are
  indexed: /correlations/{id}, /causations/{id}, /actors/{id}.
"""
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from urllib.parse import quote

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from stele_server import (STELE_BIN, Client, Server, Suite, check_servers,  # noqa: E402
                          raw_exchange, stop_servers)

T = Suite("test_http_conventions")
S = None
C = None


def sp(stream, suffix=""):
    return "/streams/" + quote(stream, safe="") + suffix


def ev(type_, data, id_=None, metadata=None, tags=None):
    e = {"type": type_, "data": data}
    if id_ is not None:
        e["id"] = id_
    if metadata is not None:
        e["metadata"] = metadata
    if tags is not None:
        e["tags"] = tags
    return e


def post(stream, events, headers=None):
    return C.post(sp(stream), json.dumps(events), headers)


def events_of(stream, query=""):
    return T.expect(C.get(sp(stream, query)), 200)["events"]


def setup():
    global S, C
    S = Server(name="conv").start()
    C = Client(S.port)


def teardown():
    stop_servers([S], client=C)


def after_case():
    def reconnect(srv):
        global C
        C.close()
        C = Client(S.port)
    check_servers(T, [S], reconnect)


def restart():
    global C
    C.close()
    S.stop()
    S.start()
    C = Client(S.port)


# ================================================================ id conflicts

@T.case
def retry_with_different_data_is_a_conflict():
    a, b = str(uuid.uuid4()), str(uuid.uuid4())
    first = [ev("Placed", {"n": 1}, a, metadata={"m": 1}, tags=["t1"]),
             ev("Paid", {"n": 2}, b)]
    T.expect(post("Conf-1", first), 201)
    # The identical retry: idempotent, the original result.
    body = T.expect(post("Conf-1", first), 200)
    T.check(body["idempotent"] is True and body["firstRevision"] == 0, "identical retry",
            None, "idempotent", body)
    # Each part that differs is a conflict naming it; nothing is written.
    for what, changed in (("data", [ev("Placed", {"n": 9}, a, metadata={"m": 1}, tags=["t1"]),
                                    ev("Paid", {"n": 2}, b)]),
                          ("type", [ev("Placed2", {"n": 1}, a, metadata={"m": 1}, tags=["t1"]),
                                    ev("Paid", {"n": 2}, b)]),
                          ("metadata", [ev("Placed", {"n": 1}, a, metadata={"m": 2},
                                           tags=["t1"]), ev("Paid", {"n": 2}, b)]),
                          ("tags", [ev("Placed", {"n": 1}, a, metadata={"m": 1}, tags=["t2"]),
                                    ev("Paid", {"n": 2}, b)]),
                          ("data", [ev("Placed", {"n": 1}, a, metadata={"m": 1}, tags=["t1"]),
                                    ev("Paid", {"n": 3}, b)])):
        r = post("Conf-1", changed)
        T.expect(r, 409, "ID_CONFLICT", what)
        msg = r.body["error"]["message"]
        T.check("different " + what in msg, "the message names the %s" % what, r.req,
                "different " + what, msg)
    T.check(len(events_of("Conf-1")) == 2, "nothing written by the conflicts", None, 2,
            events_of("Conf-1"))
    # With an exact expected revision too.
    r = post("Conf-1", [ev("Placed", {"n": 1}, a, metadata={"m": 1}, tags=["t1"]),
                        ev("Paid", {"n": 5}, b)], {"Stele-Expected-Revision": "no_stream"})
    T.expect(r, 409, "ID_CONFLICT", "no_stream retry with other data")
    # A multi-stream append (POST /streams) compares its retry too.
    x, y = str(uuid.uuid4()), str(uuid.uuid4())

    def multi(dy):
        return C.post("/streams", json.dumps({"streams": [
            {"stream": "ConfM-1", "events": [ev("X", {"v": 1}, x)]},
            {"stream": "ConfM-2", "events": [ev("Y", dy, y)]}]}))
    T.expect(multi({"v": 2}), (200, 201))
    T.expect(multi({"v": 2}), 200)
    r = multi({"v": 3})
    T.expect(r, 409, "ID_CONFLICT", "multi-stream retry with other data")
    T.check("different data" in r.body["error"]["message"], "multi: names the part", r.req,
            "different data", r.body)
    T.check(len(events_of("ConfM-2")) == 1, "multi: nothing written", None, 1,
            events_of("ConfM-2"))
    # After a restart the original is read back from the log.
    restart()
    T.expect(post("Conf-1", first), 200)
    T.expect(post("Conf-1", [ev("Placed", {"n": 1}, a, metadata={"m": 1}, tags=["t1"]),
                             ev("Paid", {"x": 2}, b)]), 409, "ID_CONFLICT")
    T.check(len(events_of("Conf-1")) == 2, "still two events", None, 2, events_of("Conf-1"))


@T.case
def concurrent_copies_in_one_group():
    """Many clients send the same id at once, half of them with other data:
    one write, the identical copies idempotent, the different ones 409
    (whether the original is on disk or accepted earlier in the same group
    commit)."""
    for round_ in range(5):
        stream = "Race-%d" % round_
        id_ = str(uuid.uuid4())
        results = [None] * 16

        def send(k):
            c = Client(S.port)
            try:
                data = {"v": 1} if k % 2 == 0 else {"v": 2}
                r = c.post(sp(stream), json.dumps([ev("E", data, id_)]))
                results[k] = (r.status, data["v"])
            finally:
                c.close()
        ths = [threading.Thread(target=send, args=(k,)) for k in range(16)]
        for t in ths:
            t.start()
        for t in ths:
            t.join()
        evs = events_of(stream)
        T.check(len(evs) == 1, "one event written", None, 1, evs)
        winner = evs[0]["data"]["v"]
        for status, v in results:
            want = (200, 201) if v == winner else (409,)
            T.check(status in want, "copy with v=%d (stored v=%d)" % (v, winner), None, want,
                    status)
        T.check(sum(1 for s, _ in results if s == 201) == 1, "exactly one 201", None, 1, results)


# ============================================================== header values

@T.case
def header_values_are_trimmed():
    T.expect(post("Trim-1", [ev("A", {})], {"Stele-Expected-Revision": "no_stream "}), 201)
    # raw requests: trailing space and tab, leading tab.
    for value in (b"0 ", b"\t1\t ", b" 2  "):
        body = json.dumps([ev("A", {})]).encode()
        req = (b"POST /streams/Trim-1 HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: "
               b"application/json \r\nStele-Expected-Revision: " + value +
               b"\r\nContent-Length: " + str(len(body)).encode() +
               b"\r\nConnection: close\r\n\r\n" + body)
        out, _ = raw_exchange(S.port, req)
        T.check(out.startswith(b"HTTP/1.1 201"), "Stele-Expected-Revision: %r" % value, None,
                201, out[:300])
    # A wrong revision with whitespace is still checked (not ignored).
    r = post("Trim-1", [ev("A", {})], {"Stele-Expected-Revision": " 0 "})
    T.expect(r, 409, "WRONG_EXPECTED_REVISION")
    # Whitespace only is not a value.
    body = json.dumps([ev("A", {})]).encode()
    req = (b"POST /streams/Trim-1 HTTP/1.1\r\nHost: 127.0.0.1\r\nStele-Expected-Revision:  \t"
           b"\r\nContent-Length: " + str(len(body)).encode() +
           b"\r\nConnection: close\r\n\r\n" + body)
    out, _ = raw_exchange(S.port, req)
    T.check(out.startswith(b"HTTP/1.1 400"), "blank Stele-Expected-Revision", None, 400,
            out[:300])
    T.check(len(events_of("Trim-1")) == 4, "four events", None, 4, events_of("Trim-1"))


# ================================================================== ULID ids

CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def ulid_of(u):
    """The ULID text of a uuid.UUID's 128 bits."""
    n = u.int
    return "".join(CROCKFORD[(n >> (5 * (25 - k))) & 31] for k in range(26))


def new_ulid():
    # 48-bit milliseconds, then 80 random bits (the ULID layout).
    ms = int(time.time() * 1000)
    return ulid_of(uuid.UUID(int=(ms << 80) | (uuid.uuid4().int & ((1 << 80) - 1))))


def uuid_of_ulid(text):
    n = 0
    for ch in text.upper():
        n = n * 32 + CROCKFORD.index(ch)
    return str(uuid.UUID(int=n))


@T.case
def ulid_event_ids():
    u1, u2 = new_ulid(), new_ulid()
    plain = str(uuid.uuid4())
    body = T.expect(post("Ulid-1", [ev("A", {"i": 1}, u1), ev("B", {"i": 2}, plain),
                                    ev("C", {"i": 3}, u2.lower()), ev("D", {"i": 4})]), 201)
    got = [e["id"] for e in events_of("Ulid-1")]
    T.check(got[:3] == [u1, plain, u2], "ids come back in the form given (ULIDs upper case)",
            None, [u1, plain, u2], got)
    T.check(len(got[3]) == 36, "a server-made id is a UUID", None, "36 chars", got[3])
    T.check([e["id"] for e in body["events"]] == got, "the append response's ids", None, got,
            body)
    # $all, backwards reads and the by-correlation view return the same forms.
    allv = T.expect(C.get("/all?direction=backwards&limit=4"), 200)["events"]
    T.check([e["id"] for e in reversed(allv)] == got, "$all shows the same ids", None, got,
            [e["id"] for e in allv])
    # The same bits as a UUID are the same id: an identical retry written
    # in the other form is idempotent, a different event is a conflict.
    u3 = new_ulid()
    T.expect(post("Ulid-2", [ev("A", {"i": 1}, u3)]), 201)
    r = T.expect(post("Ulid-2", [ev("A", {"i": 1}, uuid_of_ulid(u3))]), 200)
    T.check(r["idempotent"] is True and r["events"][0]["id"] == uuid_of_ulid(u3),
            "a retry in UUID form is idempotent and answered in its own form", None, True, r)
    T.check([e["id"] for e in events_of("Ulid-2")] == [u3], "stored form kept", None, [u3],
            events_of("Ulid-2"))
    T.expect(post("Ulid-1", [ev("A", {"i": 9}, uuid_of_ulid(u1))]), 409, "ID_CONFLICT")
    T.expect(post("Ulid-4", [ev("A", {"i": 1}, u1)]), 409, "ID_CONFLICT")
    # Bad ULIDs: a clear 400, nothing written.
    for bad in ("8" + u1[1:], u1[:25], u1 + "0", "I" * 26, u1[:10] + "U" + u1[11:],
                "0" * 26):
        T.expect(post("Ulid-3", [ev("A", {}, bad)]), 400, "INVALID_ARGUMENT", bad)
    T.expect(C.get(sp("Ulid-3")), 404)
    # Durable: the form survives a restart.
    restart()
    T.check([e["id"] for e in events_of("Ulid-1")] == got, "ids after a restart", None, got,
            events_of("Ulid-1"))


# ========================================================= append responses

@T.case
def append_response_lists_every_event():
    T.expect(post("Resp-0", [ev("X", {})]), 201)  # positions not starting at 0
    given = str(uuid.uuid4())
    body = T.expect(post("Resp-1", [ev("A", {}), ev("B", {}, given), ev("C", {}),
                                    ev("D", {}, new_ulid())]), 201)
    stored = events_of("Resp-1")
    want = [{"id": e["id"], "revision": e["revision"], "position": e["position"]}
            for e in stored]
    T.check(body["events"] == want, "every event's id, revision and position", None, want,
            body)
    T.check(body["events"][1]["id"] == given and len(set(e["id"] for e in want)) == 4,
            "given and server-made ids", None, given, body)
    T.check((body["firstRevision"], body["lastRevision"]) == (0, 3) and
            body["lastPosition"] - body["firstPosition"] == 3, "the summary fields stay", None,
            "0..3", body)
    # A second append: revisions go on; an idempotent retry lists the originals.
    ids = [str(uuid.uuid4()) for _ in range(3)]
    b2 = T.expect(post("Resp-1", [ev("E%d" % i, {"i": i}, ids[i]) for i in range(3)]), 201)
    b3 = T.expect(post("Resp-1", [ev("E%d" % i, {"i": i}, ids[i]) for i in range(3)]), 200)
    T.check(b2["events"] == b3["events"] and [e["revision"] for e in b2["events"]] == [4, 5, 6]
            and [e["id"] for e in b2["events"]] == ids, "retry answers the original events",
            None, b2, b3)
    # A large append lists them all.
    big = T.expect(post("Resp-2", [ev("T", {"i": i}) for i in range(2000)]), 201)
    T.check(len(big["events"]) == 2000 and big["events"][-1]["revision"] == 1999 and
            len(set(e["id"] for e in big["events"])) == 2000, "2000 events listed", None, 2000,
            len(big["events"]))


# ================================================== time-bounded stream reads

@T.case
def stream_reads_bounded_by_time():
    # Three batches with a pause between them: the bounds fall between the
    # batches' commit times, whatever the machine's speed.
    for b in range(3):
        T.expect(post("Time-1", [ev("T", {"b": b, "i": i}) for i in range(4)]), 201)
        T.expect(post("Time-other", [ev("T", {"b": b})]), 201)
        time.sleep(0.05)
    evs = events_of("Time-1")
    created = [e["created"] for e in evs]
    t1, t2 = created[4], created[8]  # first event of batches 1 and 2

    def revs(query):
        out, path = [], sp("Time-1", query)
        for _ in range(100):
            b = T.expect(C.get(path), 200)
            out += [e["revision"] for e in b["events"]]
            path = b.get("next")
            if not path:
                return out
        T.fail("pagination does not end", path)

    def q(**kw):
        return "?" + "&".join("%s=%s" % (k, quote(str(v), safe="")) for k, v in kw.items())
    T.check(revs(q(after=t1)) == list(range(4, 12)), "after", None, "4..11", revs(q(after=t1)))
    T.check(revs(q(before=t1)) == list(range(0, 4)), "before (exclusive)", None, "0..3",
            revs(q(before=t1)))
    T.check(revs(q(after=t1, before=t2)) == list(range(4, 8)), "between", None, "4..7",
            revs(q(after=t1, before=t2)))
    T.check(revs(q(after=t1, before=t2, limit=1)) == list(range(4, 8)), "between, pages of 1",
            None, "4..7", revs(q(after=t1, before=t2, limit=1)))
    T.check(revs(q(after=t1, direction="backwards")) == list(range(11, 3, -1)),
            "after, backwards", None, "11..4", revs(q(after=t1, direction="backwards")))
    T.check(revs(q(after=t1, before=t2, direction="backwards", limit=3)) == [7, 6, 5, 4],
            "between, backwards, pages of 3", None, "7..4",
            revs(q(after=t1, before=t2, direction="backwards", limit=3)))
    T.check(revs(q(after=t1, **{"from": 6})) == list(range(6, 12)), "after with from", None,
            "6..11", revs(q(after=t1, **{"from": 6})))
    T.check(revs(q(after=t1, direction="backwards", **{"from": 2})) == [],
            "backwards from below the range", None, [],
            revs(q(after=t1, direction="backwards", **{"from": 2})))
    T.check(revs(q(after="2999-01-01T00:00:00Z")) == [], "after the last event", None, [],
            revs(q(after="2999-01-01T00:00:00Z")))
    T.check(revs(q(before="2000-01-01T00:00:00Z")) == [], "before the first", None, [],
            revs(q(before="2000-01-01T00:00:00Z")))
    T.check(revs(q(after="2000-01-01T00:00:00Z")) == list(range(12)), "after everything", None,
            "0..11", revs(q(after="2000-01-01T00:00:00Z")))
    # Bad bounds: clear 400s.
    T.expect(C.get(sp("Time-1", q(after=t2, before=t1))), 400, "INVALID_ARGUMENT")
    T.expect(C.get(sp("Time-1", q(after="yesterday"))), 400, "INVALID_ARGUMENT")
    T.expect(C.get(sp("Time-1", q(after=t1, asOf=t2))), 400, "INVALID_ARGUMENT")
    T.expect(C.get(sp("Time-none", q(after=t1))), 404, "STREAM_NOT_FOUND")


# ========================================================= metadata names

@T.case
def seed_metadata_names_are_indexed():
    metas = [{"correlation_id": "corr-7", "causation_id": "cause-7", "user_id": "ana"},
             {"correlationId": "corr-7", "causationId": "cause-7", "userId": "ana"},
             {"$correlationId": "corr-7", "$causationId": "cause-8", "$actor": "bo"},
             {"causation_id": "cause-x", "causationId": "cause-7"},  # camelCase wins
             {"causation_id": 7, "correlation_id": ""}]               # not usable
    for i, m in enumerate(metas):
        T.expect(post("Seed-%d" % (i % 2), [ev("S", {"i": i}, metadata=m)]), 201)

    def ids(path):
        return [e["data"]["i"] for e in T.expect(C.get(path), 200)["events"]]
    for path, want in (("/causations/cause-7", [0, 1, 3]), ("/causations/cause-8", [2]),
                       ("/correlations/corr-7", [0, 1, 2]), ("/actors/ana", [0, 1]),
                       ("/causations/cause-7?direction=backwards", [3, 1, 0]),
                       ("/causations/cause-7?type=S&limit=1", [0])):
        T.check(ids(path) == want, path, None, want, ids(path))
    T.check(T.expect(C.get("/causations/cause-x"), 200)["events"] == [], "lower precedence",
            None, [], None)
    T.expect(C.get("/causations/" + "x" * 300), 400, "INVALID_ARGUMENT")
    T.expect(C.get("/causations/a%01b"), 400, "INVALID_ARGUMENT")
    # Across a restart (the index is on disk, or rebuilt from the log).
    restart()
    T.check(ids("/causations/cause-7") == [0, 1, 3], "after a restart", None, [0, 1, 3],
            ids("/causations/cause-7"))
    # The command line.
    out = subprocess.run([STELE_BIN, "query", "causation", "cause-7", "--json", "--server",
                          "http://127.0.0.1:%d" % S.port], capture_output=True, timeout=60)
    lines = [json.loads(x) for x in out.stdout.decode().splitlines() if x.strip()]
    T.check(out.returncode == 0 and [x["data"]["i"] for x in lines] == [0, 1, 3],
            "stele query causation", None, [0, 1, 3], (out.returncode, out.stdout, out.stderr))


if __name__ == "__main__":
    T.run(setup, teardown, after_case)
