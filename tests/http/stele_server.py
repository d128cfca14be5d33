"""
stele_server.py - helpers for the HTTP integration tests (standard library
only): start and stop a real `stele serve`, make HTTP requests, send raw
bytes, parse raw HTTP responses, find the exact byte spans of JSON values
(to check that event data round-trips byte for byte), keep a ledger of the
acknowledged appends, and a tiny test runner.

The server binary is $STELE_BIN, else build/stele in the repository.
"""
import base64
import http.client
import json
import os
import re
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import uuid

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
STELE_BIN = os.environ.get("STELE_BIN") or os.path.join(REPO, "build", "stele")
HOST = "127.0.0.1"


# --------------------------------------------------------------- the server

def _die_with_parent():
    """In the child: SIGKILL when the test process dies (a test killed by
    CTest's timeout must not leave servers behind)."""
    try:
        import ctypes
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:  # noqa: BLE001
        pass


def stop_servers(servers, client=None, check_exit=True):
    """For a suite's teardown: close `client`, stop each server (None is
    skipped) with SIGTERM and remove its data; with check_exit, fail if any
    did not exit 0."""
    if client:
        client.close()
    codes = []
    for srv in servers:
        if srv:
            try:
                codes.append(srv.stop())
            finally:
                srv.cleanup()
    if check_exit and any(c != 0 for c in codes):
        raise RuntimeError("servers did not exit 0 on SIGTERM: %r" % codes)


def check_servers(suite, servers, on_restart=None):
    """For Suite.run(after=...): a server that died during a case fails the
    case (with its exit code and log) and is restarted on its data so the
    next cases can run."""
    dead = []
    for srv in servers:
        if srv is None or srv.proc is None:
            continue
        ok = False
        if srv.alive():
            try:
                ok = request(srv.port, "GET", "/health/live", timeout=10).status == 200
            except OSError:
                ok = False
        if not ok:
            try:
                srv.proc.wait(10)  # a crashing process may still be dumping
            except subprocess.TimeoutExpired:
                srv.proc.kill()
                srv.proc.wait()
            dead.append(srv)
    for srv in dead:
        code = srv.proc.returncode
        log = srv.log_tail(25)
        srv.start()
        if on_restart:
            on_restart(srv)
        suite.fail("the server %s died during this case (exit code %r; restarted); log tail:\n%s"
                   % (srv.name, code, log))


class Server:
    """A `stele serve` on a free port in a temporary data directory.

    Server(args=["--max-body", "4096"]).start(); .port, .pid; .stop() sends
    SIGTERM and returns the exit code; .kill() sends SIGKILL. start() again
    reuses the same data directory. .cleanup() removes the directory.
    """

    def __init__(self, args=(), data_dir=None, name="stele", nofile=None, store=None):
        self.args = list(args)
        self.store = store  # a store URI for --store instead of --data data_dir
        # STELE_TEST_STORE (a URI template with {}, docs/architecture.md):
        # a server given no store of its own gets a fresh one of that
        # backend, dropped by cleanup() with STELE_TEST_STORE_DROP.
        template = os.environ.get("STELE_TEST_STORE")
        self.dropped_by_template = False
        if store is None and data_dir is None and template and "{}" in template:
            self.store = template.replace("{}", "http_%d_%s" % (os.getpid(), uuid.uuid4().hex[:8]))
            self.dropped_by_template = True
        self.nofile = nofile  # RLIMIT_NOFILE (soft and hard) of the server process
        self.name = name
        self.tmp = tempfile.mkdtemp(prefix="stele-http-")
        self.data_dir = data_dir or os.path.join(self.tmp, "data")
        self.proc = None
        self.port = None
        self.log_path = os.path.join(self.tmp, "server.log")
        self.starts = 0

    @property
    def pid(self):
        return self.proc.pid

    def start(self, timeout=60):
        if not os.path.exists(STELE_BIN):
            raise RuntimeError("stele binary not found: %s (set STELE_BIN)" % STELE_BIN)
        r, w = os.pipe()
        env = dict(os.environ, STELE_READY_FD=str(w))
        log = open(self.log_path, "ab")
        self.starts += 1
        log.write(("---- start %d: %s\n" % (self.starts, " ".join(self.args))).encode())
        log.flush()
        where = ["--store", self.store] if self.store else ["--data", self.data_dir]
        cmd = [STELE_BIN, "serve", "--port", "0"] + where + self.args
        self.proc = subprocess.Popen(cmd, pass_fds=(w,), stdin=subprocess.DEVNULL,
                                     stdout=log, stderr=log, env=env,
                                     preexec_fn=self._preexec)
        os.close(w)
        log.close()
        got = b""
        deadline = time.monotonic() + timeout
        try:
            while not got.endswith(b"\n"):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise RuntimeError("server did not report ready in %ds; log:\n%s"
                                       % (timeout, self.log_tail()))
                rd, _, _ = select.select([r], [], [], min(left, 0.5))
                if rd:
                    chunk = os.read(r, 64)
                    if not chunk:
                        break
                    got += chunk
                elif self.proc.poll() is not None:
                    break
        finally:
            os.close(r)
        parts = got.split()
        if len(parts) != 2 or parts[0] != b"ready":
            code = self.proc.poll()
            raise RuntimeError("server did not start (ready line %r, exit %r); log:\n%s"
                               % (got, code, self.log_tail()))
        self.port = int(parts[1])
        return self

    def _preexec(self):
        _die_with_parent()
        if self.nofile:
            import resource
            resource.setrlimit(resource.RLIMIT_NOFILE, (self.nofile, self.nofile))

    def cpu_seconds(self):
        """User + system CPU time the server has used so far (/proc/PID/stat)."""
        with open("/proc/%d/stat" % self.proc.pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def log_size(self):
        try:
            return os.path.getsize(self.log_path)
        except OSError:
            return 0

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self, sig=signal.SIGTERM, timeout=60):
        """Send `sig`, wait for the exit, return the exit code (negative: the
        signal that killed it). SIGKILL after `timeout` seconds."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise RuntimeError("server did not exit within %ds of signal %d" % (timeout, sig))
        return self.proc.returncode

    def kill(self):
        return self.stop(signal.SIGKILL)

    def rss_kb(self):
        with open("/proc/%d/status" % self.proc.pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0

    def log_tail(self, n=40):
        try:
            with open(self.log_path, "rb") as f:
                return b"".join(f.readlines()[-n:]).decode("utf-8", "replace")
        except OSError:
            return "(no log)"

    def cleanup(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        shutil.rmtree(self.tmp, ignore_errors=True)
        drop = os.environ.get("STELE_TEST_STORE_DROP")
        if self.dropped_by_template and drop:
            subprocess.run(["sh", "-c", drop, "drop", self.store], check=False)


# --------------------------------------------------------------- HTTP

class Response:
    """status, headers (lower-case names), body (parsed JSON when the
    response is JSON, else the raw bytes), raw (bytes), req (a description
    of the request, for failure messages). Unpacks as (status, headers,
    body)."""

    def __init__(self, status, headers, raw, req):
        self.status = status
        self.headers = headers
        self.raw = raw
        self.req = req
        self.body = raw
        ctype = headers.get("content-type", "")
        if "json" in ctype and "ndjson" not in ctype and raw:
            try:
                self.body = json.loads(raw)
            except ValueError:
                self.body = raw

    def __iter__(self):
        return iter((self.status, self.headers, self.body))

    def code(self):
        """The error code of an error body, else None."""
        if isinstance(self.body, dict) and isinstance(self.body.get("error"), dict):
            return self.body["error"].get("code")
        return None

    def __repr__(self):
        raw = self.raw if len(self.raw) <= 600 else self.raw[:600] + b"..."
        return "%d %r" % (self.status, raw)


def describe(method, path, body=None, headers=None):
    s = "%s %s" % (method, path if len(path) <= 200 else path[:200] + "...")
    if headers:
        s += " headers=%r" % (headers,)
    if body is not None:
        b = body if isinstance(body, bytes) else str(body).encode()
        s += " body=%r" % (b if len(b) <= 400 else b[:400] + b"...",)
    return s


class Client:
    """A keep-alive HTTP/1.1 client (http.client); reconnects when the server
    closed the connection after a response."""

    def __init__(self, port, timeout=60):
        self.port = port
        self.timeout = timeout
        self.conn = http.client.HTTPConnection(HOST, port, timeout=timeout)

    def request(self, method, path, body=None, headers=None):
        hdrs = dict(headers or {})
        if isinstance(body, str):
            body = body.encode()
        self.conn.request(method, path, body=body, headers=hdrs)
        r = self.conn.getresponse()
        raw = r.read()
        h = {k.lower(): v for k, v in r.getheaders()}
        if r.will_close:
            self.conn.close()
        return Response(r.status, h, raw, describe(method, path, body, headers))

    def get(self, path, headers=None):
        return self.request("GET", path, None, headers)

    def post(self, path, body, headers=None):
        return self.request("POST", path, body, headers)

    def delete(self, path, headers=None):
        return self.request("DELETE", path, None, headers)

    def close(self):
        self.conn.close()


def request(port, method, path, body=None, headers=None, timeout=60):
    """One request on a fresh connection."""
    c = Client(port, timeout)
    try:
        return c.request(method, path, body, headers)
    finally:
        c.close()


# --------------------------------------------------------------- raw sockets

def connect(port, timeout=30, host=HOST):
    s = socket.create_connection((host, port), timeout=timeout)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def recv_all(sock, timeout=30):
    """Read until EOF (or a reset, or `timeout` seconds without data).
    Returns (bytes, how) with how in 'eof', 'reset', 'timeout'."""
    sock.settimeout(timeout)
    out = b""
    while True:
        try:
            b = sock.recv(65536)
        except socket.timeout:
            return out, "timeout"
        except (ConnectionResetError, BrokenPipeError):
            return out, "reset"
        if not b:
            return out, "eof"
        out += b


def raw_exchange(port, data, timeout=30, shut_wr=False, host=HOST):
    """Send raw bytes on a new connection (to `host`, which the kernel
    also makes the source address when it is one of this machine's) and
    read until the server closes (or `timeout` seconds of silence). Returns
    (bytes, how)."""
    s = connect(port, timeout, host)
    try:
        try:
            s.sendall(data)
            if shut_wr:
                s.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            pass
        return recv_all(s, timeout)
    finally:
        s.close()


class ParseError(Exception):
    pass


def parse_responses(data, allow_partial=False):
    """Parse concatenated HTTP/1.1 responses (Content-Length or chunked).
    Returns a list of Response (req=''); with allow_partial, an incomplete
    last response is dropped instead of raising."""
    out = []
    i = 0
    while i < len(data):
        end = data.find(b"\r\n\r\n", i)
        if end < 0:
            if allow_partial:
                break
            raise ParseError("incomplete head at byte %d: %r" % (i, data[i:i + 200]))
        head = data[i:end].decode("latin-1").split("\r\n")
        status_line = head[0].split(" ", 2)
        if len(status_line) < 2 or not status_line[0].startswith("HTTP/1."):
            raise ParseError("bad status line %r" % head[0])
        status = int(status_line[1])
        headers = {}
        for line in head[1:]:
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
        j = end + 4
        if headers.get("transfer-encoding", "").lower() == "chunked":
            body = b""
            while True:
                le = data.find(b"\r\n", j)
                if le < 0:
                    if allow_partial:
                        return out
                    raise ParseError("incomplete chunk size")
                size = int(data[j:le].split(b";")[0], 16)
                j = le + 2
                if len(data) < j + size + 2:
                    if allow_partial:
                        return out
                    raise ParseError("incomplete chunk")
                body += data[j:j + size]
                if data[j + size:j + size + 2] != b"\r\n":
                    raise ParseError("chunk not followed by CRLF")
                j += size + 2
                if size == 0:
                    break
        else:
            n = int(headers.get("content-length", "0"))
            if len(data) < j + n:
                if allow_partial:
                    break
                raise ParseError("incomplete body: want %d have %d" % (n, len(data) - j))
            body = data[j:j + n]
            j += n
        out.append(Response(status, headers, body, ""))
        i = j
    return out


# --------------------------------------------------------------- SSE

class SSE:
    """A Server-Sent Events client on a raw socket (so tests control the
    receive buffer and can vanish abruptly): GET `path`, then next() returns
    each message as a dict {"event", "id", "data"} ("event" is "message"
    for plain events; comments come as {"event": ":", "data": text}), or
    None once the server ended the response or closed the connection.

    SSE(port, "/subscribe/all?from=0", headers={"Last-Event-ID": "41"},
        rcvbuf=4096). A response that is not 200 leaves .status and .body
    (parsed JSON) and no messages.
    """

    def __init__(self, port, path, headers=None, rcvbuf=None, timeout=30):
        self.path = path
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(timeout)
        self.sock.connect((HOST, port))
        hdrs = "".join("%s: %s\r\n" % kv for kv in (headers or {}).items())
        self.sock.sendall(("GET %s HTTP/1.1\r\nHost: %s\r\nAccept: text/event-stream\r\n%s\r\n"
                           % (path, HOST, hdrs)).encode())
        self.raw = bytearray()   # received, not yet de-chunked
        self.text = bytearray()  # de-chunked body, not yet parsed
        self.chunk_left = 0      # bytes left in the current chunk (+2 for its CRLF)
        self.ended = False       # the last chunk arrived
        self.eof = False
        self.status = None
        self.headers = {}
        self.body = None
        self.bytes = 0
        self._head()

    def _recv(self, n=65536):
        try:
            b = self.sock.recv(n)
        except (ConnectionResetError, BrokenPipeError):
            b = b""
        if not b:
            self.eof = True
        self.bytes += len(b)
        self.raw += b
        return bool(b)

    def _head(self):
        while b"\r\n\r\n" not in self.raw:
            if not self._recv():
                raise ParseError("connection closed before the response head: %r" % bytes(self.raw))
        end = self.raw.index(b"\r\n\r\n")
        lines = self.raw[:end].decode("latin-1").split("\r\n")
        del self.raw[:end + 4]
        self.status = int(lines[0].split(" ")[1])
        for line in lines[1:]:
            k, _, v = line.partition(":")
            self.headers[k.strip().lower()] = v.strip()
        if self.headers.get("transfer-encoding", "").lower() != "chunked":
            n = int(self.headers.get("content-length", "0"))
            while len(self.raw) < n and self._recv():
                pass
            body = bytes(self.raw[:n])
            try:
                self.body = json.loads(body)
            except ValueError:
                self.body = body
            self.ended = True
        else:
            self._dechunk()

    def _fill(self):
        """Receive more and de-chunk it. False at the end of the response."""
        if self.ended or self.eof:
            return False
        if not self._recv():
            return False
        self._dechunk()
        return True

    def _dechunk(self):
        raw = self.raw
        i = 0
        n = len(raw)
        while not self.ended and i < n:
            if self.chunk_left > 2:
                take = min(self.chunk_left - 2, n - i)
                self.text += raw[i:i + take]
                self.chunk_left -= take
                i += take
                continue
            if self.chunk_left:
                take = min(self.chunk_left, n - i)
                self.chunk_left -= take
                i += take
                continue
            le = raw.find(b"\r\n", i)
            if le < 0:
                break
            size = int(bytes(raw[i:le]).split(b";")[0], 16)
            i = le + 2
            if size == 0:
                self.ended = True
                break
            self.chunk_left = size + 2
        del raw[:i]

    def next(self):
        """The next message, or None at the end. socket.timeout if none
        arrives within the timeout."""
        while True:
            end = self.text.find(b"\n\n")
            if end >= 0:
                block = bytes(self.text[:end])
                del self.text[:end + 2]
                msg = {"event": "message", "id": None, "data": None}
                data = []
                for line in block.split(b"\n"):
                    if line.startswith(b":"):
                        msg = {"event": ":", "id": None, "data": line[1:].strip().decode()}
                        break
                    k, _, v = line.partition(b":")
                    v = v[1:] if v.startswith(b" ") else v
                    if k == b"data":
                        data.append(v)
                    elif k == b"event":
                        msg["event"] = v.decode()
                    elif k == b"id":
                        msg["id"] = v.decode()
                if msg["event"] != ":":
                    msg["data"] = b"\n".join(data)
                return msg
            if not self._fill():
                return None

    def settimeout(self, t):
        self.sock.settimeout(t)

    def close(self):
        self.sock.close()

    def abort(self):
        """Vanish with a reset (SO_LINGER 0), as a killed client would."""
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        self.sock.close()


# --------------------------------------------------------------- JSON spans

_WS = b" \t\r\n"


def _ws(s, i):
    while i < len(s) and s[i] in _WS:
        i += 1
    return i


_SPECIAL = re.compile(rb'["{}\[\]]')


def _string_end(s, i):
    """End offset of the JSON string starting at s[i] == '"'."""
    j = i + 1
    while True:
        j = s.index(b'"', j)
        k = j - 1
        while s[k] == 0x5C:  # count the backslashes before the quote
            k -= 1
        if (j - 1 - k) % 2 == 0:
            return j + 1
        j += 1


def value_end(s, i):
    """End offset of the JSON value starting exactly at s[i] (bytes)."""
    c = s[i]
    if c == 0x22:  # "
        return _string_end(s, i)
    if c in (0x7B, 0x5B):  # { [
        depth = 0
        j = i
        while True:
            m = _SPECIAL.search(s, j)
            j = m.start()
            c = s[j]
            if c == 0x22:
                j = _string_end(s, j)
                continue
            if c in (0x7B, 0x5B):
                depth += 1
            else:
                depth -= 1
                if depth == 0:
                    return j + 1
            j += 1
    j = i
    while j < len(s) and s[j] not in b",]} \t\r\n":
        j += 1
    return j


def object_spans(s, i=None):
    """{key: raw bytes of the value} for the object at s[i] (after
    whitespace)."""
    i = _ws(s, 0 if i is None else i)
    if s[i] != 0x7B:
        raise ValueError("not an object at %d" % i)
    out = {}
    j = _ws(s, i + 1)
    if s[j] == 0x7D:
        return out
    while True:
        ke = value_end(s, j)
        key = json.loads(s[j:ke])
        j = _ws(s, ke)
        assert s[j] == 0x3A
        j = _ws(s, j + 1)
        e = value_end(s, j)
        out[key] = s[j:e]
        j = _ws(s, e)
        if s[j] == 0x2C:
            j = _ws(s, j + 1)
            continue
        assert s[j] == 0x7D
        return out


def array_spans(s):
    """Raw bytes of each element of the array `s`."""
    i = _ws(s, 0)
    assert s[i] == 0x5B
    out = []
    j = _ws(s, i + 1)
    if s[j] == 0x5D:
        return out
    while True:
        e = value_end(s, j)
        out.append(s[j:e])
        j = _ws(s, e)
        if s[j] == 0x2C:
            j = _ws(s, j + 1)
            continue
        assert s[j] == 0x5D
        return out


def page_events_raw(raw):
    """The raw bytes of each event of a JSON read page."""
    top = object_spans(raw)
    return array_spans(top["events"])


def ndjson_lines(raw):
    """The lines of an NDJSON body (each must end with \\n)."""
    if not raw:
        return []
    if not raw.endswith(b"\n"):
        raise ValueError("NDJSON body does not end with a newline")
    return raw[:-1].split(b"\n")


def all_next(port, suite):
    """The next position of $all (0 on an empty store)."""
    r = request(port, "GET", "/all?direction=backwards&limit=1")
    suite.expect(r, 200)
    ev = r.body["events"]
    return ev[0]["position"] + 1 if ev else 0


def all_lines_from(port, suite, frm):
    """{position: raw JSON line} of $all from `frm`, in one NDJSON read;
    positions are gapless, so the ends are checked and the rest numbered."""
    r = request(port, "GET", "/all?from=%d" % frm, headers={"Accept": "application/x-ndjson"},
                timeout=300)
    suite.expect(r, 200)
    lines = ndjson_lines(r.raw)
    if lines:
        suite.check(json.loads(lines[0])["position"] == frm and
                    json.loads(lines[-1])["position"] == frm + len(lines) - 1,
                    "$all positions are gapless", None, frm, lines[0][:100])
    return {frm + k: line for k, line in enumerate(lines)}


# --------------------------------------------------------------- events

def new_id():
    return str(uuid.uuid4())


def event_json(type_, data=None, data_b64=None, metadata=None, meta_b64=None, id_=None,
               tags=None, content_type=None):
    """An event object of a request body, as text. `data` and `metadata` are
    raw JSON text inserted verbatim."""
    parts = []
    if id_ is not None:
        parts.append('"id":%s' % json.dumps(id_))
    parts.append('"type":%s' % json.dumps(type_))
    if data is not None:
        parts.append('"data":%s' % data)
    if data_b64 is not None:
        parts.append('"dataBase64":%s' % json.dumps(data_b64))
    if content_type is not None:
        parts.append('"contentType":%s' % json.dumps(content_type))
    if metadata is not None:
        parts.append('"metadata":%s' % metadata)
    if meta_b64 is not None:
        parts.append('"metadataBase64":%s' % json.dumps(meta_b64))
    if tags is not None:
        parts.append('"tags":%s' % json.dumps(tags))
    return "{" + ",".join(parts) + "}"


class Ev:
    """An event we send, and what we expect back."""

    def __init__(self, type_, data=None, data_bytes=None, metadata=None, meta_bytes=None,
                 id_=None, tags=None):
        self.type = type_
        self.data = data            # raw JSON text (str) or None
        self.data_bytes = data_bytes  # bytes sent as dataBase64, or None
        self.metadata = metadata
        self.meta_bytes = meta_bytes
        self.id = id_
        self.tags = tags

    def json(self):
        return event_json(
            self.type, data=self.data,
            data_b64=None if self.data_bytes is None else base64.b64encode(self.data_bytes).decode(),
            metadata=self.metadata,
            meta_b64=None if self.meta_bytes is None else base64.b64encode(self.meta_bytes).decode(),
            id_=self.id, tags=self.tags)


def body_of(events, expected=None):
    arr = "[" + ",".join(e.json() for e in events) + "]"
    if expected is None:
        return arr
    return '{"expectedRevision":%s,"events":%s}' % (json.dumps(expected), arr)


def compare_event(raw, stream, revision, position, ev):
    """Compare the raw JSON of a returned event with what was sent. Returns
    a list of differences (empty when equal)."""
    diffs = []
    try:
        obj = json.loads(raw)
        spans = object_spans(raw)
    except Exception as e:  # noqa: BLE001
        return ["event is not valid JSON (%s): %r" % (e, raw[:300])]
    def want(name, exp, got):
        if exp != got:
            diffs.append("%s: expected %r, got %r" % (name, exp, got))
    want("stream", stream, obj.get("stream"))
    if revision is not None:
        want("revision", revision, obj.get("revision"))
    want("position", position, obj.get("position"))
    want("type", ev.type, obj.get("type"))
    if ev.id is not None:
        want("id", ev.id.lower(), obj.get("id"))
    elif not isinstance(obj.get("id"), str):
        diffs.append("id missing")
    if ev.data is not None:
        want("data (raw bytes)", ev.data.encode(), spans.get("data"))
    elif ev.data_bytes is not None:
        got = obj.get("dataBase64")
        want("dataBase64", base64.b64encode(ev.data_bytes).decode() if ev.data_bytes else None, got)
    else:
        want("data", None, spans.get("data"))
    if ev.metadata is not None:
        want("metadata (raw bytes)", ev.metadata.encode(), spans.get("metadata"))
    elif ev.meta_bytes is not None:
        want("metadataBase64", base64.b64encode(ev.meta_bytes).decode() if ev.meta_bytes else None,
             obj.get("metadataBase64"))
    want("tags", ev.tags if ev.tags else None, obj.get("tags"))
    return diffs


class Ledger:
    """The events the server acknowledged, by position."""

    def __init__(self):
        self.by_pos = {}     # position -> (stream, revision, Ev)
        self.by_ack = []     # (stream, events, result)
        self.attempted = {}  # id -> (stream, Ev) of appends that may have been written
        # stream -> acknowledged deletes/tombstones: each is an event of
        # $deletes (docs/projections.md "$deleted")
        self.deletes = {}
        self.lock = threading.Lock()

    def attempt(self, stream, events):
        """Note an append whose outcome is unknown (sent, no answer): with
        verify(exact=True) its events may be in the store, or not."""
        with self.lock:
            for ev in events:
                if ev.id is not None:
                    self.attempted[ev.id.lower()] = (stream, ev)

    def deleted(self, stream):
        """Note an acknowledged delete or tombstone of `stream`: verify()
        expects its `$streamDeleted` event in $all."""
        with self.lock:
            self.deletes[stream] = self.deletes.get(stream, 0) + 1

    def events(self):
        """How many events $all must hold: appended ones and deletes."""
        return len(self.by_pos) + sum(self.deletes.values())

    def record(self, stream, events, res):
        """Record an acknowledged append (a 201 or 200 body). Returns a list
        of problems (an idempotent retry must match what was recorded)."""
        with self.lock:
            return self._record(stream, events, res)

    def _record(self, stream, events, res):
        probs = []
        fp, lp = res["firstPosition"], res["lastPosition"]
        fr = res["firstRevision"]
        if lp - fp + 1 != len(events):
            probs.append("positions %d..%d for %d events" % (fp, lp, len(events)))
        for k, ev in enumerate(events):
            pos = fp + k
            have = self.by_pos.get(pos)
            if have is not None:
                if not res.get("idempotent"):
                    probs.append("position %d acknowledged twice" % pos)
                elif have[0] != stream or have[2].id != ev.id:
                    probs.append("idempotent retry returned position %d of another event" % pos)
                continue
            self.by_pos[pos] = (stream, fr + k, ev)
        self.by_ack.append((stream, events, res))
        return probs

    def verify(self, port, exact=True, ndjson=False):
        """Read $all (JSON pages following `next`, or one NDJSON read) and
        check every acknowledged event is there, byte for byte; with
        `exact`, also that nothing else is and positions are gapless from 0.
        Returns a list of problems."""
        if ndjson:
            r = request(port, "GET", "/all", headers={"Accept": "application/x-ndjson"},
                        timeout=300)
            if r.status != 200:
                return ["GET /all (NDJSON): status %d %r" % (r.status, r.raw[:300])]
            lines = ndjson_lines(r.raw)
        else:
            lines = []
            c = Client(port, 300)
            try:
                path = "/all?limit=10000"
                while path:
                    r = c.get(path)
                    if r.status != 200:
                        return ["%s: status %d %r" % (r.req, r.status, r.raw[:300])]
                    page = page_events_raw(r.raw)
                    lines.extend(page)
                    path = r.body.get("next")
                    if path and not page:
                        return ["%s: an empty page with a next link" % r.req]
            finally:
                c.close()
        probs = []
        seen = set()
        pending = dict(self.deletes)
        for n, line in enumerate(lines):
            try:
                pos = json.loads(line)["position"]
            except Exception as e:  # noqa: BLE001
                probs.append("line %d of /all is not an event: %s %r" % (n, e, line[:200]))
                continue
            if exact and pos != n:
                probs.append("position gap: line %d has position %d" % (n, pos))
                if len(probs) > 20:
                    break
            seen.add(pos)
            want = self.by_pos.get(pos)
            if want is None and b'"stream":"$deletes"' in line:
                sid = json.loads(line).get("data", {}).get("streamId")
                if exact and not pending.get(sid):
                    probs.append("position %d: a delete of %r that was never acknowledged"
                                 % (pos, sid))
                elif sid in pending:
                    pending[sid] -= 1
                continue
            if want is None:
                try:
                    obj = json.loads(line)
                    maybe = self.attempted.get(obj.get("id"))
                except ValueError:
                    maybe = None
                if maybe is not None:
                    d = compare_event(line, maybe[0], None, pos, maybe[1])
                    if d:
                        probs.append("position %d (unacknowledged append): %s"
                                     % (pos, "; ".join(d)))
                    seen.add(pos)
                    continue
                if exact:
                    probs.append("position %d is in /all but was never acknowledged: %r"
                                 % (pos, line[:200]))
                continue
            d = compare_event(line, want[0], want[1], pos, want[2])
            if d:
                probs.append("position %d: %s" % (pos, "; ".join(d)))
            if len(probs) > 20:
                break
        for sid, k in pending.items():
            if k > 0:
                probs.append("%d acknowledged deletes of %r missing from /all" % (k, sid))
        missing = sorted(set(self.by_pos) - seen)
        if missing:
            probs.append("%d acknowledged events missing from /all, first positions %r"
                         % (len(missing), missing[:10]))
        return probs


# --------------------------------------------------------------- runner

class Failure(Exception):
    pass


class Suite:
    """Cases run in order; a case fails on its first failed check (Failure)
    or on an unexpected exception. Prints '<name>: N passed, M failed'."""

    def __init__(self, name):
        self.name = name
        self.cases = []
        self.passed = 0
        self.failed = 0
        self.failures = []

    def case(self, fn):
        self.cases.append(fn)
        return fn

    def fail(self, what, req=None, expected=None, got=None):
        msg = what
        if req is not None:
            msg += "\n    request:  %s" % req
        if expected is not None:
            msg += "\n    expected: %s" % (expected,)
        if got is not None:
            g = repr(got)
            msg += "\n    got:      %s" % (g if len(g) <= 1500 else g[:1500] + "...")
        raise Failure(msg)

    def check(self, cond, what, req=None, expected=None, got=None):
        if not cond:
            self.fail(what, req, expected, got)

    def expect(self, r, status, code=None, what=""):
        """Check a Response's status (an int or a tuple of ints) and error
        code; returns the body."""
        ok_status = r.status in status if isinstance(status, tuple) else r.status == status
        exp = "%s%s" % (status, " " + code if code else "")
        if not ok_status:
            self.fail("unexpected status" + (" (%s)" % what if what else ""), r.req, exp, r)
        if code is not None:
            if r.code() != code:
                self.fail("unexpected error code" + (" (%s)" % what if what else ""), r.req, exp, r)
            msg = r.body["error"].get("message")
            if not isinstance(msg, str) or not msg:
                self.fail("error without a message", r.req, "a message", r)
        return r.body

    def problems(self, probs, what):
        if probs:
            self.fail(what + ":\n      " + "\n      ".join(probs[:20]))

    def run(self, setup=None, teardown=None, after=None):
        """`after` runs after each case (e.g. to check that the servers are
        still alive); a Failure from it fails the case."""
        try:
            if setup:
                setup()
            for fn in self.cases:
                t0 = time.monotonic()
                try:
                    try:
                        fn()
                    finally:
                        if after:
                            after()
                    self.passed += 1
                    print("ok   %s (%.1fs)" % (fn.__name__, time.monotonic() - t0), flush=True)
                except Failure as e:
                    self.failed += 1
                    self.failures.append(fn.__name__)
                    print("FAIL %s: %s" % (fn.__name__, e), flush=True)
                except Exception:  # noqa: BLE001
                    self.failed += 1
                    self.failures.append(fn.__name__)
                    print("FAIL %s: exception\n%s" % (fn.__name__, traceback.format_exc()),
                          flush=True)
        except Exception:  # noqa: BLE001
            self.failed += 1
            print("FAIL setup: exception\n%s" % traceback.format_exc(), flush=True)
        finally:
            if teardown:
                try:
                    teardown()
                except Exception:  # noqa: BLE001
                    self.failed += 1
                    print("FAIL teardown: exception\n%s" % traceback.format_exc(), flush=True)
        if self.failures:
            print("failed cases: %s" % ", ".join(self.failures))
        print("%s: %d passed, %d failed" % (self.name, self.passed, self.failed), flush=True)
        sys.exit(1 if self.failed else 0)
