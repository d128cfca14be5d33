#!/usr/bin/env python3
"""
test_http_early.py - appends answered from the store's writer thread (the
early reply, server/http_early.c), against a real `stele serve`:

- the same requests get byte-identical answers from a server that answers
  from the writer (E) and one that answers from the loop only
  (STELE_EARLY_REPLY=0, L): new appends, idempotent retries (200), ULID
  ids, `Connection: close`, CORS headers, wrong expected revisions (409);
  and E's /metrics shows the writer answered (the path was taken), L's
  that it did not;
- pipelined appends get their answers in order, one per request;
- a client that half-closes after its append gets the whole answer, then
  EOF (as from the loop, requests pipelined behind an append in flight
  are dropped after a half-close: the connection ends with that answer); clients that reset right after sending an append leave the server
  alive, serving, with no descriptor left open (the held descriptors are
  closed once the appends complete);
- every acknowledged append is readable afterwards (the ledger).
"""
import os
import re
import socket
import struct
import sys
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from stele_server import (Client, Ev, Ledger, Server, Suite, body_of, check_servers,  # noqa: E402
                          connect, new_id, parse_responses, raw_exchange, recv_all, request,
                          stop_servers)

T = Suite("test_http_early")
L = Ledger()
E = None  # answers from the writer thread (the default)
LO = None  # STELE_EARLY_REPLY=0: answers from the loop only


ORIGIN = "http://app.example"


def setup():
    global E, LO
    args = ["--allowed-origins", ORIGIN]
    E = Server(args, name="early").start()
    old = os.environ.get("STELE_EARLY_REPLY")
    os.environ["STELE_EARLY_REPLY"] = "0"
    try:
        LO = Server(args, name="loop-only").start()
    finally:
        if old is None:
            del os.environ["STELE_EARLY_REPLY"]
        else:
            os.environ["STELE_EARLY_REPLY"] = old


def teardown():
    stop_servers([E, LO])


def after_case():
    check_servers(T, [E, LO])


def metric(srv, name):
    r = request(srv.port, "GET", "/metrics")
    for line in r.raw.decode().splitlines():
        if line.startswith(name + " "):
            return int(float(line.split()[1]))
    T.fail("metric %s missing" % name)


def post_raw(stream, body, headers=""):
    return ("POST /streams/%s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            "%sContent-Length: %d\r\n\r\n" % (stream, headers, len(body))).encode() + body.encode()


def exchange(srv, reqs, to_eof=False):
    """Send each request on one connection, waiting for its answer before
    the next; the raw bytes received (with to_eof, read on to EOF)."""
    s = connect(srv.port)
    try:
        got = b""
        for rq in reqs:
            s.sendall(rq)
            want = len(parse_responses(got, allow_partial=True)) + 1
            while len(parse_responses(got, allow_partial=True)) < want:
                b = s.recv(65536)
                if not b:
                    break
                got += b
        if to_eof:
            rest, _ = recv_all(s, 10)
            got += rest
        return got
    finally:
        s.close()


def split_answers(raw):
    """The raw bytes of each answer (heads included)."""
    return [b"HTTP/1.1 " + part for part in raw.split(b"HTTP/1.1 ")[1:]]


@T.case
def same_bytes_from_writer_and_loop():
    ids = [new_id() for _ in range(3)]
    ulid = "01ARZ3NDEKTSV4RRFFQ69G5FAV"
    reqs = [
        post_raw("same-a", '[{"type":"A","data":{"k":1},"id":"%s"}]' % ids[0]),
        # an idempotent retry of the same append: 200
        post_raw("same-a", '[{"type":"A","data":{"k":1},"id":"%s"}]' % ids[0]),
        # three events: a UUID, a server-made id, a ULID
        post_raw("same-a", '[{"type":"B","data":{"k":2},"id":"%s"},{"type":"C","data":{}},'
                 '{"type":"D","data":[1],"id":"%s"}]' % (ids[1], ulid),
                 "Stele-Expected-Revision: 0\r\n"),
        # a wrong expected revision: 409, answered by the loop on both
        post_raw("same-a", '[{"type":"E","data":{},"id":"%s"}]' % ids[2],
                 "Stele-Expected-Revision: 0\r\n"),
        # a page of an allowed origin: CORS headers in the answer
        post_raw("same-b", '[{"type":"F","data":{"k":3},"id":"%s"}]' % new_id(),
                 "Origin: %s\r\n" % ORIGIN),
    ]
    e0 = metric(E, "stele_http_early_replies_total")
    l0 = metric(LO, "stele_http_early_replies_total")
    got_e, got_l = exchange(E, reqs), exchange(LO, reqs)
    statuses = [r.status for r in parse_responses(got_e)]
    T.check(statuses == [201, 200, 201, 409, 201], "statuses", expected=[201, 200, 201, 409, 201],
            got=statuses)
    ae, al = split_answers(got_e), split_answers(got_l)
    T.check(len(ae) == len(al) == 5, "five answers each", expected=5, got=(len(ae), len(al)))
    for i, (a, b) in enumerate(zip(ae, al)):
        if i == 2:
            # the second event's id was made by each server: the same
            # bytes with it cut out
            a, b = re.sub(rb'"id":"[0-9a-f-]{36}",', b"", a), re.sub(rb'"id":"[0-9a-f-]{36}",', b"", b)
        T.check(a == b, "answer %d: byte-identical from the writer and the loop" % i,
                expected=b, got=a)
    T.check(b"Access-Control-Allow-Origin: " + ORIGIN.encode() in ae[4], "CORS headers", got=ae[4])
    T.check(metric(E, "stele_http_early_replies_total") - e0 == 4,
            "the writer answered the four successful appends", expected=4,
            got=metric(E, "stele_http_early_replies_total") - e0)
    T.check(metric(LO, "stele_http_early_replies_total") == l0, "STELE_EARLY_REPLY=0: none",
            expected=l0, got=metric(LO, "stele_http_early_replies_total"))


@T.case
def connection_close_answer():
    body = '[{"type":"A","data":{"k":1},"id":"%s"}]' % new_id()
    rq = post_raw("close-a", body, "Connection: close\r\n")
    ge = exchange(E, [rq], to_eof=True)
    gl = exchange(LO, [rq], to_eof=True)
    T.check(ge == gl, "Connection: close: same bytes, then EOF", expected=gl, got=ge)
    T.check(b"Connection: close\r\n" in ge, "the answer says Connection: close", got=ge)


@T.case
def pipelined_appends_in_order():
    n = 50
    evs = [[Ev("P", data='{"i":%d}' % i, id_=new_id())] for i in range(n)]
    data = b"".join(post_raw("pipe-a", body_of(e, expected=(i - 1) if i else "no_stream"))
                    for i, e in enumerate(evs))
    s = connect(E.port)
    try:
        s.sendall(data)  # all at once: the server reads them in one go
        got = b""
        while len(parse_responses(got, allow_partial=True)) < n:
            b = s.recv(65536)
            if not b:
                break
            got += b
    finally:
        s.close()
    rs = parse_responses(got)
    T.check(len(rs) == n, "one answer per pipelined append", expected=n, got=len(rs))
    for i, r in enumerate(rs):
        T.check(r.status == 201 and r.body["firstRevision"] == i, "answer %d in order" % i,
                expected="201 firstRevision %d" % i, got=r)
        T.problems(L.record("pipe-a", evs[i], r.body), "ledger")


@T.case
def half_close_gets_answer():
    evs = [Ev("H", data='{"h":1}', id_=new_id())]
    got, how = raw_exchange(E.port, post_raw("half-a", body_of(evs)), shut_wr=True)
    rs = parse_responses(got)
    T.check(len(rs) == 1 and rs[0].status == 201, "the answer arrives after a half-close", got=got)
    T.problems(L.record("half-a", evs, rs[0].body), "ledger")
    T.check(how == "eof", "then EOF", expected="eof", got=how)


@T.case
def lone_client_quiet_completions():
    """A lone client on one keep-alive connection, each append sent as soon
    as the previous answer arrives (the 1x1 path, whose completions are
    posted without waking the loop, server/http_early.c), then pairs sent
    back to back and a last one with Connection: close: every answer
    arrives, in order, one per request (a completion the loop never took
    would leave the connection busy and the next answer missing), and the
    server counts them all."""
    n_seq, n_pairs = 200, 20
    before = metric(E, "stele_appends_total")
    stream = "quiet-a"
    s = connect(E.port)
    s.settimeout(30)
    rev = -1
    got = b""

    def read_answers(k):
        nonlocal got
        have = len(parse_responses(got, allow_partial=True))
        while len(parse_responses(got, allow_partial=True)) < have + k:
            b = s.recv(65536)
            if not b:
                break
            got += b
        rs = parse_responses(got, allow_partial=True)[have:have + k]
        return rs

    try:
        for i in range(n_seq):
            evs = [Ev("Q", data='{"i":%d}' % i, id_=new_id())]
            s.sendall(post_raw(stream, body_of(evs, expected=rev if rev >= 0 else "no_stream")))
            rs = read_answers(1)
            ok = len(rs) == 1 and rs[0].status == 201 and rs[0].body["firstRevision"] == rev + 1
            T.check(ok, "sequential append %d answered" % i, expected=rev + 1, got=rs)
            if not ok:
                return
            T.problems(L.record(stream, evs, rs[0].body), "ledger")
            rev += 1
        for i in range(n_pairs):
            e1 = [Ev("Q2", data='{"p":%d}' % i, id_=new_id())]
            e2 = [Ev("Q2", data='{"p":%d}' % i, id_=new_id())]
            s.sendall(post_raw(stream, body_of(e1, expected=rev)) +
                      post_raw(stream, body_of(e2, expected=rev + 1)))
            rs = read_answers(2)
            ok = (len(rs) == 2 and all(r.status == 201 for r in rs) and
                  [r.body["firstRevision"] for r in rs] == [rev + 1, rev + 2])
            T.check(ok, "pair %d answered in order" % i, expected=[rev + 1, rev + 2], got=rs)
            if not ok:
                return
            T.problems(L.record(stream, e1, rs[0].body), "ledger")
            T.problems(L.record(stream, e2, rs[1].body), "ledger")
            rev += 2
        evs = [Ev("Q", data='{"last":1}', id_=new_id())]
        s.sendall(post_raw(stream, body_of(evs, expected=rev), "Connection: close\r\n"))
        rest, how = recv_all(s, 30)
        got += rest
        rs = parse_responses(got)
        T.check(rs[-1].status == 201 and rs[-1].body["firstRevision"] == rev + 1,
                "the last answer, then EOF", got=rs[-1])
        T.check(how == "eof", "the connection ends after Connection: close", expected="eof",
                got=how)
        T.problems(L.record(stream, evs, rs[-1].body), "ledger")
    finally:
        s.close()
    want = n_seq + 2 * n_pairs + 1
    # The last completions may be taken on the loop's next turn: poll.
    seen = 0
    for _ in range(200):
        seen = metric(E, "stele_appends_total") - before
        if seen >= want:
            break
        time.sleep(0.05)
    T.check(seen == want, "every append counted", expected=want, got=seen)


def open_fds(srv):
    return len(os.listdir("/proc/%d/fd" % srv.pid))


@T.case
def reset_while_in_flight():
    base = open_fds(E)
    for round_ in range(5):
        socks = []
        for i in range(40):
            s = connect(E.port)
            body = '[{"type":"R","data":{"i":%d}}]' % i
            s.sendall(post_raw("reset-%d-%d" % (round_, i), body))
            socks.append(s)
        for s in socks:  # RST, with the append most likely in flight
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            s.close()
    # The server goes on serving, and closes every descriptor it held.
    c = Client(E.port)
    try:
        evs = [Ev("After", data='{"a":1}', id_=new_id())]
        r = c.post("/streams/reset-after", body_of(evs))
        T.expect(r, 201)
        T.problems(L.record("reset-after", evs, r.body), "ledger")
    finally:
        c.close()
    deadline = time.monotonic() + 20
    while open_fds(E) > base and time.monotonic() < deadline:
        time.sleep(0.1)
    T.check(open_fds(E) <= base, "no descriptor left open", expected="<= %d" % base,
            got=open_fds(E))


@T.case
def acknowledged_appends_readable():
    T.problems(L.verify(E.port, exact=False), "acknowledged appends on the early-reply server")


if __name__ == "__main__":
    T.run(setup=setup, teardown=teardown, after=after_case)
