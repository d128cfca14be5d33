#!/usr/bin/env python3
"""
test_http_tls_early.py - appends over TLS answered by the store's writer
thread, which encrypts and sends the answer through the connection's SSL
object lent to it for the flight (server/http_early.c, server/tls.c),
against a real `stele serve --tls-cert --tls-key --allow-cleartext`:

- the same requests over TLS get byte-identical answers from a server whose
  writer answers (E) and one whose loop answers (STELE_EARLY_REPLY=0, L),
  and E's /metrics shows its writer answered them;
- a lone client on one TLS connection, each append sent when the previous
  answer arrived, then pairs sent back to back (the second arrives while
  the writer holds the SSL object: the loop must read it once the object
  is back), then one with `Connection: close`: every answer, in order,
  then close_notify and EOF;
- 200 appends pipelined in one write over TLS: 200 answers in order;
- a client whose receive buffer is tiny and who reads nothing until a
  second after sending its appends (answers of 240 KB each, 5.8 MB in
  all): the writer's SSL_write meets a full socket and the loop finishes
  the record; every byte arrives and parses;
- TLS clients that reset right after sending an append (the SSL object is
  freed only once the writer gave it back): the server goes on serving,
  with no descriptor left open;
- every acknowledged append is readable afterwards (the ledger, read in
  clear from the same server).
"""
import os
import shutil
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from stele_server import (HOST, Ev, Ledger, Server, Suite, body_of, check_servers,  # noqa: E402
                          new_id, parse_responses, request, stop_servers)

T = Suite("test_http_tls_early")
L = Ledger()
PKI = None
E = None   # the writer encrypts and sends answers (the default)
LO = None  # STELE_EARLY_REPLY=0: the loop answers


def openssl(*args):
    subprocess.run(["openssl"] + list(args), check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)


def setup():
    global PKI, E, LO
    PKI = tempfile.mkdtemp(prefix="stele-tls-early-")
    k = lambda n: os.path.join(PKI, n)  # noqa: E731
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", k("ca.key"), "-out", k("ca.pem"), "-days", "2", "-subj", "/CN=ca")
    openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", k("srv.key"), "-out", k("srv.csr"), "-subj", "/CN=localhost")
    with open(k("ext"), "w") as f:
        f.write("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    openssl("x509", "-req", "-in", k("srv.csr"), "-CA", k("ca.pem"), "-CAkey", k("ca.key"),
            "-CAcreateserial", "-out", k("srv.pem"), "-days", "2", "-extfile", k("ext"))
    args = ["--tls-cert", k("srv.pem"), "--tls-key", k("srv.key"), "--allow-cleartext"]
    E = Server(args, name="tls-early").start()
    old = os.environ.get("STELE_EARLY_REPLY")
    os.environ["STELE_EARLY_REPLY"] = "0"
    try:
        LO = Server(args, name="tls-loop-only").start()
    finally:
        if old is None:
            del os.environ["STELE_EARLY_REPLY"]
        else:
            os.environ["STELE_EARLY_REPLY"] = old


def teardown():
    stop_servers([E, LO])
    if PKI:
        shutil.rmtree(PKI, ignore_errors=True)


def after_case():
    check_servers(T, [E, LO])


def tls_connect(port, rcvbuf=None, timeout=30):
    raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf:
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    raw.settimeout(timeout)
    raw.connect((HOST, port))
    c = ssl.create_default_context(cafile=os.path.join(PKI, "ca.pem"))
    c.set_alpn_protocols(["http/1.1"])
    return c.wrap_socket(raw, server_hostname="localhost")


def metric(srv, name):
    r = request(srv.port, "GET", "/metrics")  # in clear (--allow-cleartext)
    for line in r.raw.decode().splitlines():
        if line.startswith(name + " "):
            return int(float(line.split()[1]))
    T.fail("metric %s missing" % name)


def post_raw(stream, body, headers=""):
    return ("POST /streams/%s HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
            "%sContent-Length: %d\r\n\r\n" % (stream, headers, len(body))).encode() + body.encode()


class Reader:
    """The answers arriving on one TLS connection, parsed as they come."""

    def __init__(self, s):
        self.s, self.got, self.eof = s, b"", False

    def recv(self):
        try:
            b = self.s.recv(1 << 16)
        except (ssl.SSLZeroReturnError, ConnectionResetError):
            b = b""
        if not b:
            self.eof = True
        self.got += b

    def answers(self, k):
        """The next k answers (fewer at EOF)."""
        have = len(parse_responses(self.got, allow_partial=True))
        while not self.eof and len(parse_responses(self.got, allow_partial=True)) < have + k:
            self.recv()
        return parse_responses(self.got, allow_partial=True)[have:have + k]

    def to_eof(self):
        """Everything until the server closes, parsed by the caller once:
        parsing after every recv made reading megabytes of answers
        quadratic (15-20 s of JSON decoding for full_socket_under_the_writer,
        enough to outlast CTest's timeout on a loaded machine)."""
        while not self.eof:
            self.recv()


@T.case
def same_bytes_from_writer_and_loop():
    reqs = [
        post_raw("same-a", '[{"type":"A","data":{"k":1},"id":"%s"}]' % new_id()),
        post_raw("same-a", '[{"type":"B","data":{"k":2},"id":"%s"},{"type":"C","data":[1],'
                 '"id":"01ARZ3NDEKTSV4RRFFQ69G5FAV"}]' % new_id(),
                 "Stele-Expected-Revision: 0\r\n"),
        # a wrong expected revision: 409, the loop's answer on both
        post_raw("same-a", '[{"type":"D","data":{}}]', "Stele-Expected-Revision: 0\r\n"),
        post_raw("same-b", '[{"type":"E","data":{"k":3},"id":"%s"}]' % new_id(),
                 "Connection: close\r\n"),
    ]
    e0, l0 = (metric(E, "stele_http_early_replies_total"),
              metric(LO, "stele_http_early_replies_total"))
    raws = []
    for srv in (E, LO):
        s = tls_connect(srv.port)
        try:
            rd = Reader(s)
            for rq in reqs:
                s.sendall(rq)
                rd.answers(1)
            rd.to_eof()
            raws.append(rd.got)
        finally:
            s.close()
    statuses = [r.status for r in parse_responses(raws[0])]
    T.check(statuses == [201, 201, 409, 201], "statuses", expected=[201, 201, 409, 201],
            got=statuses)
    # Positions differ between the two stores only if their histories
    # differ; both start empty and get the same appends in this order.
    T.check(raws[0] == raws[1], "the writer's answers over TLS are the loop's, byte for byte",
            expected=raws[1][:300], got=raws[0][:300])
    de = metric(E, "stele_http_early_replies_total") - e0
    dl = metric(LO, "stele_http_early_replies_total") - l0
    T.check(de == 3 and dl == 0, "the writer answered E's three appends over TLS, none of L's",
            expected=(3, 0), got=(de, dl))


@T.case
def lone_client_then_pairs_then_close():
    n_seq, n_pairs = 150, 30
    stream = "lone"
    s = tls_connect(E.port)
    rd = Reader(s)
    rev = -1
    try:
        for i in range(n_seq):
            evs = [Ev("Q", data='{"i":%d}' % i, id_=new_id())]
            s.sendall(post_raw(stream, body_of(evs, expected=rev if rev >= 0 else "no_stream")))
            rs = rd.answers(1)
            ok = len(rs) == 1 and rs[0].status == 201 and rs[0].body["firstRevision"] == rev + 1
            T.check(ok, "sequential append %d answered" % i, expected=rev + 1, got=rs)
            if not ok:
                return
            T.problems(L.record(stream, evs, rs[0].body), "ledger")
            rev += 1
        for i in range(n_pairs):
            e1 = [Ev("P", data='{"p":%d}' % i, id_=new_id())]
            e2 = [Ev("P", data='{"q":%d}' % i, id_=new_id())]
            # Two records, so the second may arrive while the first's
            # answer is in the writer's hands.
            s.sendall(post_raw(stream, body_of(e1, expected=rev)))
            s.sendall(post_raw(stream, body_of(e2, expected=rev + 1)))
            rs = rd.answers(2)
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
        rs = rd.answers(1)
        T.check(len(rs) == 1 and rs[0].status == 201 and rs[0].body["firstRevision"] == rev + 1,
                "the last answer", got=rs)
        if rs and rs[0].status == 201:
            T.problems(L.record(stream, evs, rs[0].body), "ledger")
        rd.to_eof()
        T.check(rd.eof, "the connection ends after Connection: close", expected=True, got=rd.eof)
    finally:
        s.close()


@T.case
def pipelined_appends_in_one_write():
    n = 200
    stream = "pipe"
    evs = [[Ev("R", data='{"i":%d}' % i, id_=new_id())] for i in range(n)]
    data = b"".join(post_raw(stream, body_of(evs[i], expected=i - 1 if i else "no_stream"),
                             "Connection: close\r\n" if i == n - 1 else "")
                    for i in range(n))
    s = tls_connect(E.port)
    try:
        s.sendall(data)
        rd = Reader(s)
        rd.to_eof()
    finally:
        s.close()
    rs = parse_responses(rd.got)
    revs = [r.body["firstRevision"] if r.status == 201 else r.status for r in rs]
    T.check(revs == list(range(n)), "%d answers in order" % n, expected="0..%d" % (n - 1),
            got=revs[:10])
    for i, r in enumerate(rs[:n]):
        if r.status == 201:
            T.problems(L.record(stream, evs[i], r.body), "ledger")


@T.case
def full_socket_under_the_writer():
    """Appends of 3,000 small events without ids (70 KB each, 1.7 MB in
    all, which the server reads while it answers) whose answers list the
    3,000 ids the server made (240 KB each, 5.8 MB in all: more than the
    kernel's buffers between the two ends hold), to a client whose receive
    buffer is 4 KiB and who reads nothing until a second after it sent
    them all: the socket fills under the writer's SSL_write, the loop
    finishes what it left; every answer arrives whole, in order. (One
    thread: an SSL socket must not be used by two at once.)"""
    n, k = 24, 3000
    stream = "full"
    body = "[" + ",".join(['{"type":"F","data":{}}'] * k) + "]"
    s = tls_connect(E.port, rcvbuf=4096, timeout=60)
    try:
        for i in range(n):
            s.sendall(post_raw(stream, body, "Stele-Expected-Revision: %s\r\n"
                               % (i * k - 1 if i else "no_stream") +
                               ("Connection: close\r\n" if i == n - 1 else "")))
        time.sleep(1)  # the answers pile up against the full window
        # Then read with a normal buffer: 4 KiB against loopback's 64 KiB
        # segments can leave every window update to the sender's persist
        # timer (a few KB/s: the 5.8 MB then outlast CTest's timeout, seen
        # in one run of six on a loaded machine). The socket is full
        # until the first read either way.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        rd = Reader(s)
        rd.to_eof()
    finally:
        s.close()
    rs = parse_responses(rd.got)
    ok = len(rs) == n and all(r.status == 201 for r in rs)
    T.check(ok, "%d answers, all 201" % n, expected=n, got=[r.status for r in rs])
    ids = set()
    for i, r in enumerate(rs[:n]):
        if r.status != 201:
            continue
        evs = r.body["events"]
        revs = [e["revision"] for e in evs]
        T.check(revs == list(range(i * k, (i + 1) * k)),
                "answer %d lists revisions %d.. of its %d events" % (i, i * k, k),
                got=(len(revs), revs[:2]))
        ids.update(e["id"] for e in evs)
    T.check(len(ids) == n * k, "every answer whole: %d distinct ids" % (n * k), got=len(ids))


def open_fds(srv):
    return len(os.listdir("/proc/%d/fd" % srv.pid))


@T.case
def reset_while_in_flight():
    base = open_fds(E)
    for round_ in range(4):
        socks = []
        for i in range(30):
            s = tls_connect(E.port)
            s.sendall(post_raw("reset-%d-%d" % (round_, i), '[{"type":"R","data":{"i":%d}}]' % i))
            socks.append(s)
        for s in socks:  # RST, with the append most likely in flight
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            s.close()
    s = tls_connect(E.port)
    try:
        evs = [Ev("After", data='{"a":1}', id_=new_id())]
        s.sendall(post_raw("reset-after", body_of(evs), "Connection: close\r\n"))
        rd = Reader(s)
        rd.to_eof()
        rs = parse_responses(rd.got)
        T.check(len(rs) == 1 and rs[0].status == 201, "served after the resets", got=rs)
        if rs and rs[0].status == 201:
            T.problems(L.record("reset-after", evs, rs[0].body), "ledger")
    finally:
        s.close()
    deadline = time.monotonic() + 20
    while open_fds(E) > base and time.monotonic() < deadline:
        time.sleep(0.1)
    T.check(open_fds(E) <= base, "no descriptor left open", expected="<= %d" % base,
            got=open_fds(E))


@T.case
def acknowledged_appends_readable():
    T.problems(L.verify(E.port, exact=False), "acknowledged appends on the TLS server")


if __name__ == "__main__":
    T.run(setup=setup, teardown=teardown, after=after_case)
