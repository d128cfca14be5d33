#!/usr/bin/env python3
"""
test_http_tls.py - TLS on the server's port (server/tls.c, docs/security.md)
against a real `stele serve`, with a test CA made here by the openssl tool:

- HTTP/1.1 over TLS with Python's ssl module and with curl: append, read,
  an NDJSON read far larger than the socket buffers (back-pressure through
  TLS), an SSE subscription, a 2 MiB append body in many records, 300
  pipelined requests in one write (their responses gathered into few
  records) over TLS and in clear;
- an idle connection gives back its record buffers (counted in /metrics)
  and goes on serving;
- ALPN: http/1.1 when the client offers it (curl, browsers), h2 when it
  offers h2 alone (gRPC clients); TLS 1.1 and older are refused;
- a cleartext request to a TLS-only port gets a plain 400 TLS_REQUIRED and
  the connection closes; with --allow-cleartext both are served;
- client certificates (--tls-client-ca): none or one from another CA is
  refused, one from the CA is served;
- SIGHUP reloads the certificate; a broken key on reload keeps the old one;
- garbage, truncated and aborted handshakes are counted and the server
  goes on serving; 160 mutated ClientHellos (a small repeatable fuzz) each
  end without a hang, on the TLS-only and the TLS+cleartext server;
- bad settings (a certificate without a key, a missing file) stop the
  server at start with a message.
"""
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import warnings

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from stele_server import (HOST, STELE_BIN, Server, Suite, parse_responses,  # noqa: E402
                          raw_exchange, stop_servers)

T = Suite("test_http_tls")
PKI = None   # directory of the test CA and certificates
S = None     # TLS only
C = None     # TLS + --allow-cleartext
M = None     # TLS + --tls-client-ca


def openssl(*args):
    subprocess.run(["openssl"] + list(args), check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)


def make_ca(d, name):
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", os.path.join(d, name + ".key"), "-out", os.path.join(d, name + ".pem"),
            "-days", "2", "-subj", "/CN=" + name)


def make_cert(d, ca, name, cn, server=True):
    key, csr, pem = (os.path.join(d, name + x) for x in (".key", ".csr", ".pem"))
    openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", key, "-out", csr, "-subj", "/CN=" + cn)
    ext = os.path.join(d, name + ".ext")
    with open(ext, "w") as f:
        f.write("subjectAltName=DNS:localhost,IP:127.0.0.1\n" if server
                else "extendedKeyUsage=clientAuth\n")
    openssl("x509", "-req", "-in", csr, "-CA", os.path.join(d, ca + ".pem"),
            "-CAkey", os.path.join(d, ca + ".key"), "-CAcreateserial", "-out", pem,
            "-days", "2", "-extfile", ext)
    return pem, key


def p(name):
    return os.path.join(PKI, name)


def setup():
    global PKI, S, C, M
    PKI = tempfile.mkdtemp(prefix="stele-tls-")
    make_ca(PKI, "ca")
    make_ca(PKI, "other-ca")
    make_cert(PKI, "ca", "server", "localhost")
    make_cert(PKI, "ca", "client", "reader", server=False)
    make_cert(PKI, "other-ca", "stranger", "stranger", server=False)
    # The server reads its own copy, which the reload case replaces.
    shutil.copy(p("server.pem"), p("live.pem"))
    shutil.copy(p("server.key"), p("live.key"))
    tls = ["--tls-cert", p("live.pem"), "--tls-key", p("live.key")]
    S = Server(tls, name="tls").start()
    C = Server(tls + ["--allow-cleartext"], name="tls+cleartext").start()
    M = Server(tls + ["--tls-client-ca", p("ca.pem")], name="mtls").start()


def teardown():
    stop_servers([S, C, M])
    if PKI:
        shutil.rmtree(PKI, ignore_errors=True)


def ctx(alpn=("http/1.1",), cert=None):
    c = ssl.create_default_context(cafile=p("ca.pem"))
    if alpn:
        c.set_alpn_protocols(list(alpn))
    if cert:
        c.load_cert_chain(p(cert + ".pem"), p(cert + ".key"))
    return c


def tls_connect(port, alpn=("http/1.1",), cert=None, timeout=30):
    raw = socket.create_connection((HOST, port), timeout=timeout)
    return ctx(alpn, cert).wrap_socket(raw, server_hostname="localhost")


def recv_until_closed(s, timeout=30):
    s.settimeout(timeout)
    out = b""
    while True:
        try:
            b = s.recv(65536)
        except (ssl.SSLZeroReturnError, ConnectionResetError):
            break
        if not b:
            break
        out += b
    return out


def https(port, method, path, body=None, headers=None, cert=None):
    """One request over a new TLS connection; (status, headers, body bytes)."""
    s = tls_connect(port, cert=cert)
    try:
        data = body.encode() if isinstance(body, str) else (body or b"")
        h = {"Host": "localhost:%d" % port, "Connection": "close",
             "Content-Length": str(len(data))}
        if body is not None:
            h["Content-Type"] = "application/json"
        h.update(headers or {})
        s.sendall(("%s %s HTTP/1.1\r\n" % (method, path)).encode() +
                  "".join("%s: %s\r\n" % kv for kv in h.items()).encode() + b"\r\n" + data)
        r = parse_responses(recv_until_closed(s))[0]
        return r
    finally:
        s.close()


def metric(srv, name):
    r = https(srv.port, "GET", "/metrics")
    for line in r.raw.decode().splitlines():
        if line.startswith(name + " "):
            return int(float(line.split()[1]))
    raise AssertionError("metric %s not found" % name)


def append(port, stream, n=1, size=10):
    evs = [{"type": "t", "data": {"i": i, "pad": "x" * size}} for i in range(n)]
    return https(port, "POST", "/streams/" + stream, json.dumps(evs))


# ------------------------------------------------------------ HTTP over TLS

@T.case
def python_ssl_append_and_read():
    r = append(S.port, "tls-1", 3)
    T.check(r.status == 201, "append over TLS", None, 201, r)
    r = https(S.port, "GET", "/streams/tls-1")
    T.check(r.status == 200, "read over TLS", None, 200, r)
    T.check(len(r.body["events"]) == 3, "3 events read back", None, 3, r)


@T.case
def curl_over_tls():
    out = subprocess.run(["curl", "-sS", "--cacert", p("ca.pem"), "-o", "/dev/null", "-w",
                          "%{http_code} %{http_version}",
                          "https://localhost:%d/health/live" % S.port],
                         capture_output=True, text=True, timeout=60)
    T.check(out.stdout == "200 1.1", "curl (offers h2 and http/1.1) gets HTTP/1.1", None,
            "200 1.1", (out.stdout, out.stderr))
    # curl without the CA refuses the certificate: the server is not trusted by accident.
    out = subprocess.run(["curl", "-sS", "https://localhost:%d/health/live" % S.port],
                         capture_output=True, text=True, timeout=60)
    T.check(out.returncode != 0, "curl without the test CA fails", None, "non-zero", out.returncode)


@T.case
def large_ndjson_read_through_tls():
    # 2,000 events of ~2 KiB: ~4 MiB, far more than the socket buffers, read
    # slowly at first so the server's writes meet a full socket (SSL_write
    # retries from the same offset).
    for k in range(4):
        r = append(S.port, "tls-big", 500, 2000)
        T.check(r.status == 201, "append batch %d" % k, None, 201, r)
    s = tls_connect(S.port)
    try:
        s.sendall(("GET /streams/tls-big?limit=100000 HTTP/1.1\r\nHost: localhost\r\n"
                   "Accept: application/x-ndjson\r\nConnection: close\r\n\r\n").encode())
        time.sleep(1.0)  # let the server fill the socket
        raw = recv_until_closed(s, timeout=60)
    finally:
        s.close()
    r = parse_responses(raw)[0]
    lines = [ln for ln in r.body.split(b"\n") if ln.strip()]
    T.check(r.status == 200 and len(lines) == 2000, "2000 NDJSON lines through TLS", None, 2000,
            (r.status, len(lines)))
    ids = [json.loads(ln)["revision"] for ln in lines]
    T.check(ids == list(range(2000)), "revisions 0..1999 in order", None, "0..1999", ids[:5])


def pipelined(sock, n, stream):
    """n pipelined requests in one write: reads, pings, appends (answered
    later by the writer thread), 404s; the last closes. Returns the
    statuses of the responses and what was expected."""
    reqs, want = [], []
    for i in range(n):
        last = "Connection: close\r\n" if i == n - 1 else ""
        k = i % 4
        if k == 0:
            body = json.dumps([{"type": "p", "data": {"i": i}}])
            reqs.append("POST /streams/%s HTTP/1.1\r\nHost: localhost\r\nContent-Type: "
                        "application/json\r\nContent-Length: %d\r\n%s\r\n%s"
                        % (stream, len(body), last, body))
            want.append(201)
        elif k == 1:
            reqs.append("GET /health/live HTTP/1.1\r\nHost: localhost\r\n%s\r\n" % last)
            want.append(200)
        elif k == 2:
            reqs.append("GET /streams/%s?limit=1 HTTP/1.1\r\nHost: localhost\r\n%s\r\n"
                        % (stream, last))
            want.append(200)
        else:
            reqs.append("GET /no-such-route-%d HTTP/1.1\r\nHost: localhost\r\n%s\r\n"
                        % (i, last))
            want.append(404)
    sock.sendall("".join(reqs).encode())
    return [r.status for r in parse_responses(recv_until_closed(sock, timeout=60))], want


@T.case
def pipelined_requests_over_tls_and_clear():
    s = tls_connect(S.port)
    try:
        got, want = pipelined(s, 300, "tls-pipe")
    finally:
        s.close()
    T.check(got == want, "300 pipelined responses over TLS, in order", None, want[:8], got[:8])
    raw = socket.create_connection((HOST, C.port), timeout=30)
    try:
        got, want = pipelined(raw, 300, "clear-pipe")
    finally:
        raw.close()
    T.check(got == want, "300 pipelined responses in clear, in order", None, want[:8], got[:8])
    r = https(S.port, "GET", "/streams/tls-pipe?limit=1000")
    n = len(r.body["events"])
    T.check(n == 75, "75 pipelined appends stored", None, 75, n)


@T.case
def large_append_body_through_tls():
    # 2 MiB of JSON: many TLS records, arriving in pieces; every byte read
    # (the read loop stops only once the socket and the library are empty).
    evs = [{"type": "big", "data": {"i": i, "pad": "y" * 2000}} for i in range(1000)]
    r = https(S.port, "POST", "/streams/tls-bigbody", json.dumps(evs))
    T.check(r.status == 201, "2 MiB append over TLS", None, 201, r)
    r = https(S.port, "GET", "/streams/tls-bigbody?limit=2000")
    n = len(r.body["events"])
    T.check(n == 1000, "1000 events stored", None, 1000, n)


@T.case
def idle_connection_releases_buffers():
    def ask(sock, path):
        sock.sendall(("GET %s HTTP/1.1\r\nHost: localhost\r\n\r\n" % path).encode())
        data = b""
        while True:
            data += sock.recv(65536)
            rs = parse_responses(data, allow_partial=True)
            if rs:
                return rs[0]
    before = metric(S, "stele_tls_buffers_released_total")
    s = tls_connect(S.port)
    try:
        r = ask(s, "/health/live")
        T.check(r.status == 200, "first request", None, 200, r)
        # The server frees an idle connection's buffers after about a
        # second; wait (without a deadline that a loaded machine could
        # miss) until the counter says it did, up to a minute.
        now = before
        for _ in range(600):
            now = metric(S, "stele_tls_buffers_released_total")
            if now > before:
                break
            time.sleep(0.1)
        T.check(now > before, "an idle connection released its buffers", None, "> %d" % before,
                now)
        r = ask(s, "/streams/tls-1?limit=10")
        T.check(r.status == 200, "the same connection serves after the release", None, 200, r)
    finally:
        s.close()


@T.case
def sse_over_tls():
    append(S.port, "tls-sse", 2)
    s = tls_connect(S.port)
    try:
        s.sendall(b"GET /subscribe/streams/tls-sse HTTP/1.1\r\nHost: localhost\r\n"
                  b"Accept: text/event-stream\r\n\r\n")
        s.settimeout(30)
        got = b""
        ev = b'data: {"id"'
        appended = False
        deadline = time.monotonic() + 30
        while got.count(ev) < 3 and time.monotonic() < deadline:
            b = s.recv(65536)
            if not b:
                break
            got += b
            if got.count(ev) == 2 and b"caught-up" in got and not appended:
                append(S.port, "tls-sse", 1)
                appended = True
    finally:
        s.close()
    T.check(got.count(ev) == 3, "2 historical + 1 live event over TLS SSE", None,
            3, got[-400:])


# ------------------------------------------------------------ ALPN, versions

@T.case
def alpn_choice():
    for offer, want in ((["h2", "http/1.1"], "http/1.1"), (["http/1.1"], "http/1.1"),
                        (["h2"], "h2"), (None, None)):
        s = tls_connect(S.port, alpn=offer)
        got = s.selected_alpn_protocol()
        s.close()
        T.check(got == want, "ALPN for offer %r" % (offer,), None, want, got)
    # A client without ALPN still speaks HTTP/1.1.
    s = tls_connect(S.port, alpn=None)
    s.sendall(b"GET /health/live HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
    r = parse_responses(recv_until_closed(s))[0]
    s.close()
    T.check(r.status == 200, "HTTP/1.1 without ALPN", None, 200, r)


@T.case
def old_tls_versions_refused():
    before = metric(S, "stele_tls_handshake_failures_total")
    c = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    c.check_hostname = False
    c.verify_mode = ssl.CERT_NONE
    try:
        c.set_ciphers("ALL:@SECLEVEL=0")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            c.minimum_version = ssl.TLSVersion.TLSv1
            c.maximum_version = ssl.TLSVersion.TLSv1_1
    except (ValueError, ssl.SSLError):
        T.fail("this Python cannot make a TLS 1.1 client")
        return
    raw = socket.create_connection((HOST, S.port), timeout=30)
    ok = False
    try:
        c.wrap_socket(raw).close()
        ok = True
    except (ssl.SSLError, OSError):
        pass
    T.check(not ok, "a TLS 1.1 handshake fails", None, "failure", "success")
    after = metric(S, "stele_tls_handshake_failures_total")
    T.check(after == before + 1, "the server counted the refused handshake", None, before + 1,
            after)


# ------------------------------------------------------------ cleartext

@T.case
def cleartext_to_tls_only_port():
    out, _ = raw_exchange(S.port, b"GET /health/live HTTP/1.1\r\nHost: localhost\r\n\r\n")
    rs = parse_responses(out)
    T.check(len(rs) == 1 and rs[0].status == 400, "a plain 400", None, 400, out[:300])
    T.check(b"TLS_REQUIRED" in out, "error code TLS_REQUIRED", None, "TLS_REQUIRED", out[:300])
    # An HTTP/2 (gRPC) cleartext preface: the same answer, then closed.
    out, _ = raw_exchange(S.port, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
    T.check(b"TLS_REQUIRED" in out, "h2c preface refused", None, "TLS_REQUIRED", out[:300])
    before = metric(S, "stele_tls_cleartext_refused_total")
    T.check(before >= 2, "counted", None, ">= 2", before)
    # The port still speaks TLS.
    r = https(S.port, "GET", "/health/live")
    T.check(r.status == 200, "TLS after cleartext refusals", None, 200, r)


@T.case
def allow_cleartext_serves_both():
    out, _ = raw_exchange(C.port, b"GET /health/live HTTP/1.1\r\nHost: localhost\r\n"
                                  b"Connection: close\r\n\r\n")
    T.check(parse_responses(out)[0].status == 200, "cleartext served", None, 200, out[:200])
    r = https(C.port, "GET", "/health/live")
    T.check(r.status == 200, "TLS served", None, 200, r)


# ------------------------------------------------------------ client certificates

@T.case
def client_certificates():
    r = https(M.port, "GET", "/health/live", cert="client")
    T.check(r.status == 200, "a client certificate from the CA", None, 200, r)
    for cert in (None, "stranger"):
        ok = False
        try:
            r = https(M.port, "GET", "/health/live", cert=cert)
            ok = r.status == 200
        except (ssl.SSLError, OSError, IndexError, Exception):  # noqa: BLE001
            ok = False
        T.check(not ok, "refused with client certificate %r" % cert, None, "refused", "served")


# ------------------------------------------------------------ reload

def peer_serial(port):
    s = tls_connect(port)
    der = s.getpeercert(binary_form=True)
    s.close()
    out = subprocess.run(["openssl", "x509", "-inform", "DER", "-noout", "-serial"], input=der,
                         capture_output=True, timeout=30)
    return out.stdout.strip()


@T.case
def sighup_reload():
    srv = Server(["--tls-cert", p("reload.pem"), "--tls-key", p("reload.key")], name="reload")
    shutil.copy(p("server.pem"), p("reload.pem"))
    shutil.copy(p("server.key"), p("reload.key"))
    srv.start()
    try:
        first = peer_serial(srv.port)
        keep = tls_connect(srv.port)  # an open connection survives reloads
        pem, key = make_cert(PKI, "ca", "server2", "localhost")
        shutil.copy(pem, p("reload.pem"))
        shutil.copy(key, p("reload.key"))
        os.kill(srv.pid, signal.SIGHUP)
        second = first
        deadline = time.monotonic() + 30
        while second == first and time.monotonic() < deadline:
            time.sleep(0.1)
            second = peer_serial(srv.port)
        T.check(second != first, "new connections get the new certificate", None, "new serial",
                second)
        # A key that does not match: the reload fails, the old one stays.
        shutil.copy(p("client.key"), p("reload.key"))
        os.kill(srv.pid, signal.SIGHUP)
        deadline = time.monotonic() + 30
        while b"tls reload failed" not in open(srv.log_path, "rb").read():
            T.check(time.monotonic() < deadline, "the failed reload is logged")
            time.sleep(0.1)
        T.check(peer_serial(srv.port) == second, "still the last good certificate", None, second)
        T.check(metric(srv, 'stele_tls_reloads_total{result="failed"}') == 1, "failure counted")
        keep.sendall(b"GET /health/live HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        r = parse_responses(recv_until_closed(keep))[0]
        keep.close()
        T.check(r.status == 200, "a connection opened before the reloads still works", None,
                200, r)
    finally:
        T.check(srv.stop() == 0, "exits 0")
        srv.cleanup()


# ------------------------------------------------------------ hostile handshakes

@T.case
def garbage_and_truncated_handshakes():
    before = metric(S, "stele_tls_handshake_failures_total")
    # A real ClientHello, captured from Python's ssl through a memory BIO.
    inc, outb = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx().wrap_bio(inc, outb, server_hostname="localhost")
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    hello = outb.read()
    T.check(hello[:1] == b"\x16" and len(hello) > 100, "a ClientHello", None, "record", hello[:8])
    payloads = [
        b"\x16" + os.urandom(2000),                      # a handshake byte then noise
        b"\x16\x03\x01\x00\x05\x01\x00\x00\x01\x00",    # a ClientHello too short for itself
        b"\x16\x03\x01\xff\xff" + b"\x01" * 100,         # announces 64 KiB, sends 100 bytes
        hello[: len(hello) // 2],                        # cut in the middle, then closed
        hello + os.urandom(500),                         # a hello, then garbage records
    ]
    for data in payloads:
        s = socket.create_connection((HOST, S.port), timeout=30)
        try:
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
            s.settimeout(30)
            while s.recv(65536):
                pass
        except OSError:
            pass
        finally:
            s.close()
    after = metric(S, "stele_tls_handshake_failures_total")
    T.check(after >= before + 3, "malformed handshakes counted as failures", None,
            ">= %d" % (before + 3), after)
    r = https(S.port, "GET", "/health/live")
    T.check(r.status == 200, "still serving", None, 200, r)
    T.check(S.alive(), "the server is alive")


@T.case
def mutated_client_hellos():
    # A small fuzz of the handshake path, repeatable (fixed seed): a real
    # ClientHello cut at random lengths, with random bytes flipped, inserted
    # or its record and handshake lengths changed, each on a new connection
    # then half-closed, against the TLS-only server and the one that also
    # serves cleartext (a flipped first byte takes the HTTP path there).
    # Every connection must end (the server answers or closes, never
    # hangs), and both servers go on serving.
    import random
    rnd = random.Random(17)
    inc, outb = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx().wrap_bio(inc, outb, server_hostname="localhost")
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    hello = outb.read()

    def mutate(h):
        b = bytearray(h)
        k = rnd.randrange(5)
        if k == 0:
            return bytes(b[:rnd.randrange(len(b))])
        if k == 1:
            for _ in range(rnd.randint(1, 8)):
                b[rnd.randrange(len(b))] = rnd.randrange(256)
        elif k == 2:
            at = rnd.randrange(len(b))
            b[at:at] = bytes(rnd.randrange(256) for _ in range(rnd.randint(1, 64)))
        elif k == 3:
            at = rnd.choice([3, 4, 6, 7, 8])  # record length, handshake length bytes
            b[at] = rnd.randrange(256)
        else:
            b[0] = rnd.randrange(256)
        return bytes(b)

    hung = []
    for i in range(160):
        srv = S if i % 2 == 0 else C
        data = mutate(hello)
        s = socket.create_connection((HOST, srv.port), timeout=30)
        try:
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
            while s.recv(65536):
                pass
        except socket.timeout:
            hung.append((i, data[:16]))
        except OSError:
            pass
        finally:
            s.close()
    T.check(not hung, "every mutated handshake ends", None, "none hung", hung[:3])
    for srv in (S, C):
        r = https(srv.port, "GET", "/health/live")
        T.check(r.status == 200, "%s still serving" % srv.name, None, 200, r)
        T.check(srv.alive(), "%s alive" % srv.name)


# ------------------------------------------------------------ settings

@T.case
def bad_settings_refuse_to_start():
    cases = [
        (["--tls-cert", p("server.pem")], "both --tls-cert and --tls-key"),
        (["--tls-cert", p("nope.pem"), "--tls-key", p("server.key")], "nope.pem"),
        (["--tls-cert", p("server.pem"), "--tls-key", p("client.key")], "mismatch"),
        (["--tls-client-ca", p("ca.pem")], "--tls-client-ca needs"),
    ]
    d = tempfile.mkdtemp(prefix="stele-tls-bad-")
    try:
        for args, want in cases:
            out = subprocess.run([STELE_BIN, "serve", "--port", "0", "--data",
                                  os.path.join(d, "data")] + args,
                                 capture_output=True, text=True, timeout=60)
            T.check(out.returncode != 0 and want in out.stderr, "refused: %s" % want, None,
                    want, (out.returncode, out.stderr[-300:]))
    finally:
        shutil.rmtree(d, ignore_errors=True)


def check_alive():
    for srv in (S, C, M):
        if srv and not srv.alive():
            T.fail("server %s died (exit %r); log:\n%s" % (srv.name, srv.proc.poll(),
                                                           srv.log_tail()))


if __name__ == "__main__":
    T.run(setup, teardown, after=check_alive)
