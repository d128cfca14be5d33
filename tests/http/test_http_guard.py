#!/usr/bin/env python3
"""
test_http_guard.py - the server's guards against hostile clients and web
pages (docs/limits.md, docs/http-api.md "Browsers"), against a real
`stele serve`:

- out of file descriptors: a server under `ulimit -n 256` flooded with 400
  connections stays mostly idle (CPU time), logs little (bytes), keeps
  serving a connection it already had, and accepts again once clients leave;
- browsers: a cross-site "simple" POST (text/plain, a foreign Origin and
  Host) is refused and writes nothing; a body that is not JSON is 415; a
  DNS-rebinding Host is refused; an allowed origin gets CORS headers and a
  preflight answer, a foreign one does not;
- operations that stop or reconfigure the server (POST/DELETE
  /admin/scavenge here; gRPC Operations in tests/grpc/test_grpc_h2.c) are
  refused from a non-loopback address of this machine.

Resource bounds (CPU seconds, log bytes) are what is asserted, never
latencies.
"""
import json
import os
import resource
import socket
import subprocess
import sys
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from stele_server import (HOST, Client, Ev, Server, Suite, body_of,  # noqa: E402
                          check_servers, parse_responses, raw_exchange, request, stop_servers)

T = Suite("test_http_guard")
S = None    # default settings
O = None    # --allowed-origins http://app.example:8080


def setup():
    global S, O
    S = Server(name="default").start()
    O = Server(["--allowed-origins", "http://app.example:8080, https://ui.example",
                "--allowed-hosts", "Stele.Corp.Example"], name="allowed-origins").start()


def teardown():
    stop_servers([S, O])


def events_in(srv, stream):
    r = request(srv.port, "GET", "/streams/%s" % stream)
    if r.status == 404:
        return 0
    T.expect(r, 200)
    return len(r.body["events"])


# ------------------------------------------------------------ descriptors

@T.case
def emfile_flood_keeps_cpu_and_log_small():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 2048:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 4096), hard))
    srv = Server(nofile=256, name="nofile-256").start()
    socks = []
    try:
        keep = Client(srv.port, timeout=30)
        T.expect(keep.get("/health/live"), 200)
        log0 = srv.log_size()
        for _ in range(400):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.settimeout(30)
            s.connect((HOST, srv.port))
            socks.append(s)
        cpu0 = srv.cpu_seconds()
        # ~10 s with the server at its descriptor limit; the connection it
        # already had keeps being served meanwhile.
        served = 0
        for _ in range(10):
            time.sleep(1)
            r = keep.get("/health/live")
            T.expect(r, 200, what="a connection open before the flood")
            served += 1
        cpu = srv.cpu_seconds() - cpu0
        grew = srv.log_size() - log0
        print("  out of descriptors for 10 s: server CPU %.2f s, log +%d bytes, %d requests "
              "served on the old connection" % (cpu, grew, served))
        T.check(srv.alive(), "server alive after the flood")
        # 20% of one core over 10 s: spinning on a readable listener used 92%.
        T.check(cpu < 2.0, "server CPU time while out of descriptors (10 s)", None,
                "< 2.0 s", "%.2f s" % cpu)
        T.check(grew < 16384, "server log growth while out of descriptors", None,
                "< 16 KiB", "%d bytes" % grew)
        with open(srv.log_path, "rb") as f:
            text = f.read().decode("utf-8", "replace")
        T.check("accept failed" in text, "the condition is logged", None,
                "a line with 'accept failed'", srv.log_tail(5))
        # Clients leave: new connections are accepted again.
        for s in socks[:300]:
            s.close()
        del socks[:300]
        r = request(srv.port, "GET", "/health/live", timeout=30)
        T.expect(r, 200, what="a new connection after others closed")
        keep.close()
    finally:
        for s in socks:
            s.close()
        code = srv.stop()
        srv.cleanup()
    T.check(code == 0, "the flooded server exits 0 on SIGTERM", None, 0, code)


# ------------------------------------------------------------ browsers

def raw(srv, text, body=b""):
    data = text.replace("\n", "\r\n").encode() + b"\r\n" + body
    out, _ = raw_exchange(srv.port, data, shut_wr=True)
    rs = parse_responses(out)
    T.check(len(rs) == 1, "one response", data, "1 response", out)
    r = rs[0]
    r.req = data.decode("latin-1")
    if "json" in r.headers.get("content-type", "") and r.raw:
        r.body = json.loads(r.raw)
    return r


@T.case
def cross_site_simple_post_is_refused():
    body = b'[{"type":"Evil","data":{"x":1}}]'
    for srv in (S, O):
        r = raw(srv, "POST /streams/victim HTTP/1.1\nHost: evil.example:2113\n"
                     "Origin: http://evil.example\nContent-Type: text/plain\n"
                     "Content-Length: %d\nConnection: close\n" % len(body), body)
        T.expect(r, 403)
        T.check("access-control-allow-origin" not in r.headers, "no CORS header", r.req,
                "none", r.headers)
        # The same page on a rebinding name that resolves to us: Host refused.
        r = raw(srv, "POST /streams/victim HTTP/1.1\nHost: evil.example:2113\n"
                     "Content-Type: application/json\nContent-Length: %d\n"
                     "Connection: close\n" % len(body), body)
        T.expect(r, 403, "HOST_NOT_ALLOWED")
        # A foreign Origin with our own Host: refused, whatever the type.
        r = raw(srv, "POST /streams/victim HTTP/1.1\nHost: 127.0.0.1:%d\n"
                     "Origin: http://evil.example\nContent-Type: application/json\n"
                     "Content-Length: %d\nConnection: close\n" % (srv.port, len(body)), body)
        T.expect(r, 403, "ORIGIN_NOT_ALLOWED")
        # A sandboxed page (Origin: null).
        r = raw(srv, "DELETE /streams/victim HTTP/1.1\nHost: localhost:%d\nOrigin: null\n"
                     "Connection: close\n" % srv.port)
        T.expect(r, 403, "ORIGIN_NOT_ALLOWED")
        # A no-cors request from another site (an <img>, no Origin header).
        r = raw(srv, "GET /subscriptions/%%24all/g/messages?consumer=c HTTP/1.1\n"
                     "Host: localhost:%d\nSec-Fetch-Site: cross-site\nSec-Fetch-Mode: no-cors\n"
                     "Connection: close\n" % srv.port)
        T.expect(r, 403, "CROSS_SITE")
        T.check(events_in(srv, "victim") == 0, "nothing was written", None, 0,
                events_in(srv, "victim"))


@T.case
def rebinding_host_is_refused_for_reads():
    r = raw(S, "GET /streams/victim HTTP/1.1\nHost: attacker.example:%d\n"
               "Connection: close\n" % S.port)
    T.expect(r, 403, "HOST_NOT_ALLOWED")
    T.check("--allowed-hosts" in r.body["error"]["message"], "message names the setting",
            r.req, "--allowed-hosts", r.body)
    # Our own names and any IP literal are fine.
    for host in ("localhost", "127.0.0.1", "[::1]", "LOCALHOST", socket.gethostname(),
                 "10.1.2.3", "app.localhost", "myserver", "localhost."):
        r = raw(S, "GET /health/live HTTP/1.1\nHost: %s:%d\nConnection: close\n"
                   % (host, S.port))
        T.expect(r, 200, what="Host " + host)
    # A dotted name is ours only when configured.
    r = raw(S, "GET /health/live HTTP/1.1\nHost: stele.corp.example:%d\nConnection: close\n"
               % S.port)
    T.expect(r, 403, "HOST_NOT_ALLOWED")
    r = raw(O, "GET /health/live HTTP/1.1\nHost: stele.corp.example:%d\nConnection: close\n"
               % O.port)
    T.expect(r, 200, what="a name in --allowed-hosts")
    # Two Host headers, or a malformed one: refused.
    for hdrs in ("Host: localhost\nHost: evil.example\n", "Host: localhost\nHost: x\n",
                 "Host: [::1\n", "Host: a:b:c\n", "Host: localhost:80x\n", "Host: a b\n"):
        r = raw(S, "GET /health/live HTTP/1.1\n%sConnection: close\n" % hdrs)
        T.expect(r, (400, 403), what=hdrs)


@T.case
def json_bodies_need_a_json_content_type():
    body = b'[{"type":"T","data":{}}]'
    for ctype in ("text/plain", "application/x-www-form-urlencoded",
                  "multipart/form-data; boundary=x", "application/xml"):
        r = raw(S, "POST /streams/ct-1 HTTP/1.1\nHost: localhost\nContent-Type: %s\n"
                   "Content-Length: %d\nConnection: close\n" % (ctype, len(body)), body)
        T.expect(r, 415, "UNSUPPORTED_MEDIA_TYPE", what=ctype)
    T.check(events_in(S, "ct-1") == 0, "nothing written by the refused bodies", None, 0,
            events_in(S, "ct-1"))
    ok = 0
    for ctype in ("application/json", "application/json; charset=utf-8",
                  "Application/JSON", "application/vnd.stele+json", None):
        hdr = "Content-Type: %s\n" % ctype if ctype else ""
        r = raw(S, "POST /streams/ct-1 HTTP/1.1\nHost: localhost\n%sContent-Length: %d\n"
                   "Connection: close\n" % (hdr, len(body)), body)
        T.expect(r, 201, what=str(ctype))
        ok += 1
    T.check(events_in(S, "ct-1") == ok, "the JSON bodies were written", None, ok,
            events_in(S, "ct-1"))
    # A POST without a body has no type to check.
    r = raw(S, "POST /admin/scavenge HTTP/1.1\nHost: localhost\n"
               "Content-Type: application/x-www-form-urlencoded\nContent-Length: 0\n"
               "Connection: close\n")
    T.expect(r, (200, 202))


@T.case
def same_origin_and_allowed_origins():
    body = b'[{"type":"T","data":{}}]'
    # Same origin (the page was served by this server under the Host used).
    r = raw(S, "POST /streams/so-1 HTTP/1.1\nHost: localhost:%d\nOrigin: http://localhost:%d\n"
               "Content-Type: application/json\nContent-Length: %d\nConnection: close\n"
               % (S.port, S.port, len(body)), body)
    T.expect(r, 201)
    # Same host, another port: another origin.
    r = raw(S, "POST /streams/so-1 HTTP/1.1\nHost: localhost:%d\nOrigin: http://localhost:1\n"
               "Content-Type: application/json\nContent-Length: %d\nConnection: close\n"
               % (S.port, len(body)), body)
    T.expect(r, 403, "ORIGIN_NOT_ALLOWED")
    # A configured origin: served, with CORS headers naming it.
    r = raw(O, "POST /streams/so-2 HTTP/1.1\nHost: localhost:%d\n"
               "Origin: http://app.example:8080\nContent-Type: application/json\n"
               "Content-Length: %d\nConnection: close\n" % (O.port, len(body)), body)
    T.expect(r, 201)
    T.check(r.headers.get("access-control-allow-origin") == "http://app.example:8080",
            "Access-Control-Allow-Origin", r.req, "http://app.example:8080", r.headers)
    T.check("origin" in r.headers.get("vary", "").lower(), "Vary: Origin", r.req, "Origin",
            r.headers)
    r = raw(O, "GET /streams/so-2 HTTP/1.1\nHost: localhost:%d\nOrigin: https://ui.example\n"
               "Connection: close\n" % O.port)
    T.expect(r, 200)
    T.check(r.headers.get("access-control-allow-origin") == "https://ui.example",
            "Access-Control-Allow-Origin on a read", r.req, "https://ui.example", r.headers)
    # Preflight from an allowed origin, then from a foreign one.
    r = raw(O, "OPTIONS /streams/so-2 HTTP/1.1\nHost: localhost:%d\n"
               "Origin: http://app.example:8080\nAccess-Control-Request-Method: POST\n"
               "Access-Control-Request-Headers: content-type, stele-expected-revision\n"
               "Connection: close\n" % O.port)
    T.expect(r, 204)
    T.check(r.headers.get("access-control-allow-origin") == "http://app.example:8080",
            "preflight Allow-Origin", r.req, "http://app.example:8080", r.headers)
    T.check("POST" in r.headers.get("access-control-allow-methods", ""),
            "preflight Allow-Methods", r.req, "POST", r.headers)
    T.check("stele-expected-revision" in r.headers.get("access-control-allow-headers", "").lower(),
            "preflight Allow-Headers", r.req, "Stele-Expected-Revision", r.headers)
    r = raw(O, "OPTIONS /streams/so-2 HTTP/1.1\nHost: localhost:%d\n"
               "Origin: http://evil.example\nAccess-Control-Request-Method: POST\n"
               "Connection: close\n" % O.port)
    T.expect(r, 403, "ORIGIN_NOT_ALLOWED")
    T.check("access-control-allow-origin" not in r.headers, "no CORS for a foreign origin",
            r.req, "none", r.headers)
    # The default server allows no other origin than its own.
    r = raw(S, "GET /streams/so-1 HTTP/1.1\nHost: localhost:%d\n"
               "Origin: http://app.example:8080\nConnection: close\n" % S.port)
    T.expect(r, 403, "ORIGIN_NOT_ALLOWED")
    T.check(events_in(O, "so-2") == 1 and events_in(S, "so-1") == 1, "writes", None,
            "1 and 1", (events_in(O, "so-2"), events_in(S, "so-1")))


# ------------------------------------------------------------ admin

def non_loopback_ipv4():
    """A non-loopback IPv4 address of this machine, or None."""
    try:
        out = subprocess.run(["ip", "-4", "-o", "addr", "show", "scope", "global"],
                             capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        out = ""
    for line in out.splitlines():
        parts = line.split()
        if "inet" in parts:
            addr = parts[parts.index("inet") + 1].split("/")[0]
            if not addr.startswith("127."):
                return addr
    return None


EXTRA_ADDR = "198.51.100.77"  # TEST-NET-2: never a real peer


def add_extra_address():
    """Give this machine a non-loopback address (on lo: still local, but not
    in 127.0.0.0/8, which is what the rule looks at); needs CAP_NET_ADMIN.
    The address, or None."""
    try:
        r = subprocess.run(["ip", "addr", "add", EXTRA_ADDR + "/32", "dev", "lo"],
                           capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return EXTRA_ADDR if r.returncode == 0 else None


def del_extra_address():
    subprocess.run(["ip", "addr", "del", EXTRA_ADDR + "/32", "dev", "lo"], capture_output=True)


def non_loopback_source():
    """(addr, added): one of this machine's own non-loopback addresses, to
    connect to so that the server sees a non-loopback peer (the kernel uses
    it as the source); without one (STELE_TEST_EXTRA_ADDR=1 forces it), one
    added to lo (added: del_extra_address() when done); (None, False) if
    neither."""
    addr = None if os.environ.get("STELE_TEST_EXTRA_ADDR") else non_loopback_ipv4()
    if addr is not None:
        return addr, False
    addr = add_extra_address()
    return addr, addr is not None


@T.case
def admin_refused_from_non_loopback():
    addr, extra = non_loopback_source()
    if addr is None:
        print("  SKIP admin_refused_from_non_loopback: this machine has no non-loopback "
              "IPv4 address and cannot add one (no CAP_NET_ADMIN)")
        return
    srv = Server(["--host", "0.0.0.0", "--insecure"], name="all-addresses").start()
    try:
        for method in ("POST", "DELETE"):
            out, _ = raw_exchange(srv.port, ("%s /admin/scavenge HTTP/1.1\r\nHost: %s:%d\r\n"
                                             "Connection: close\r\n\r\n"
                                             % (method, addr, srv.port)).encode(), host=addr)
            rs = parse_responses(out)
            T.check(len(rs) == 1 and rs[0].status == 403, "%s /admin/scavenge from %s"
                    % (method, addr), None, 403, out)
            body = json.loads(rs[0].raw)
            T.check(body["error"]["code"] == "PERMISSION_DENIED" and
                    "loopback" in body["error"]["message"], "error body", None,
                    "PERMISSION_DENIED naming loopback", body)
        r = request(srv.port, "GET", "/admin/scavenge")
        T.expect(r, 404, what="no scavenge was started")
        # Reads from that address are served; the same request from
        # loopback is accepted.
        out, _ = raw_exchange(srv.port, ("GET /health/live HTTP/1.1\r\nHost: %s:%d\r\n"
                                         "Connection: close\r\n\r\n" % (addr, srv.port)).encode(),
                              host=addr)
        T.check(parse_responses(out)[0].status == 200, "a read from " + addr, None, 200, out)
        r = request(srv.port, "POST", "/admin/scavenge")
        T.expect(r, 202, what="from loopback")
        T.check(srv.stop() == 0, "the server exits 0 on SIGTERM")
    finally:
        srv.stop()
        srv.cleanup()
        if extra:
            del_extra_address()


if __name__ == "__main__":
    T.run(setup, teardown, after=lambda: check_servers(T, [S, O]))
