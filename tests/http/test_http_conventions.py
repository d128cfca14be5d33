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
import sys
import threading
import time
import uuid
from urllib.parse import quote

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from stele_server import (Client, Server, Suite, check_servers, raw_exchange,  # noqa: E402
                          stop_servers)

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


if __name__ == "__main__":
    T.run(setup, teardown, after_case)
