"""
hostile_mem.py - clients that try to make a `stele serve` hold memory, for
test_http_limits.py and bench/run_limits.sh (standard library only):

  pipeline_unread   one connection, N pipelined GETs, replies never read
  sse_unread        K SSE subscribers that never read
  grpc_subs_unread  one HTTP/2 connection with K gRPC $all subscriptions
                    (Streams/Read with `subscription`) that never reads,
                    with flow-control windows wide open
  seed_events       append events of a given size
  Rss               the server's resident memory (VmRSS), sampled

Each opener returns the sockets; closing them is the client leaving.
"""
import json
import os
import socket
import struct
import threading
import time

HOST = "127.0.0.1"


def vm_rss_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


class Rss:
    """Samples a process's VmRSS every `every` seconds in a thread; .peak_kb
    is the highest seen since start() or reset()."""

    def __init__(self, pid, every=0.05):
        self.pid = pid
        self.every = every
        self.peak_kb = 0
        self._stop = threading.Event()
        self._t = None

    def start(self):
        self.peak_kb = vm_rss_kb(self.pid)
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()
        return self

    def _run(self):
        while not self._stop.wait(self.every):
            try:
                self.peak_kb = max(self.peak_kb, vm_rss_kb(self.pid))
            except OSError:
                return

    def reset(self):
        self.peak_kb = vm_rss_kb(self.pid)

    def stop(self):
        self._stop.set()
        if self._t:
            self._t.join()
        return self.peak_kb


def _post(port, path, body, timeout=120):
    s = socket.create_connection((HOST, port), timeout=timeout)
    try:
        head = ("POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                "Content-Length: %d\r\nConnection: close\r\n\r\n" % (path, len(body))).encode()
        s.sendall(head + body)
        out = b""
        while True:
            b = s.recv(65536)
            if not b:
                break
            out += b
        return int(out.split(b" ", 2)[1])
    finally:
        s.close()


def seed_events(port, stream, n, data_bytes, per_append=None):
    """Append n events of about data_bytes of JSON data each to `stream`."""
    per = per_append or max(1, min(500, (4 << 20) // max(data_bytes, 1)))
    pad = "x" * max(0, data_bytes - 40)
    k = 0
    while k < n:
        m = min(per, n - k)
        evs = [{"type": "Seeded", "data": {"k": k + i, "pad": pad}} for i in range(m)]
        status = _post(port, "/streams/%s" % stream, json.dumps(evs).encode())
        if status != 201:
            raise RuntimeError("seeding %s: HTTP %d" % (stream, status))
        k += m


def _small_rcvbuf_socket(port, rcvbuf=4096):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.connect((HOST, port))
    return s


def pipeline_unread(port, n=800, path="/streams/big?limit=10000"):
    """One connection sending n pipelined GETs and never reading."""
    s = _small_rcvbuf_socket(port)
    req = ("GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % path).encode()
    s.setblocking(False)
    data = req * n
    sent = 0
    deadline = time.monotonic() + 10
    while sent < len(data) and time.monotonic() < deadline:
        try:
            sent += s.send(data[sent:])
        except BlockingIOError:
            time.sleep(0.01)  # the server stopped reading: back-pressure
    return [s]


def sse_unread(port, k=20, path="/subscribe/all?from=start"):
    """k SSE subscribers that never read."""
    socks = []
    for _ in range(k):
        s = _small_rcvbuf_socket(port)
        s.sendall(("GET %s HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n"
                   % path).encode())
        socks.append(s)
    return socks


# ------------------------------------------------------------ HTTP/2

def _frame(ftype, flags, stream_id, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([ftype, flags]) + \
        struct.pack(">I", stream_id) + payload


def _hpack_literal(name, value):
    # Literal header field without indexing, new name, no Huffman.
    name, value = name.encode(), value.encode()
    assert len(name) < 127 and len(value) < 127
    return b"\x00" + bytes([len(name)]) + name + bytes([len(value)]) + value


def _subscribe_all_msg():
    # ReadReq{options{all{start{}}, subscription{}, no_filter{}, uuid_option{structured{}}}}
    options = b"\x12\x02\x12\x00" + b"\x32\x00" + b"\x42\x00" + b"\x4a\x02\x0a\x00"
    msg = b"\x0a" + bytes([len(options)]) + options
    return b"\x00" + struct.pack(">I", len(msg)) + msg


def grpc_subs_unread(port, k=1024):
    """One HTTP/2 connection opening k $all subscriptions from the start,
    advertising the largest flow-control windows, and never reading."""
    s = _small_rcvbuf_socket(port)
    out = bytearray(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
    # SETTINGS: INITIAL_WINDOW_SIZE (4) = 2^31 - 1; then the connection window.
    out += _frame(4, 0, 0, struct.pack(">HI", 4, 0x7FFFFFFF))
    out += _frame(8, 0, 0, struct.pack(">I", 0x7FFFFFFF - 65535))
    headers = b"".join(_hpack_literal(n, v) for n, v in (
        (":method", "POST"), (":scheme", "http"),
        (":path", "/event_store.client.streams.Streams/Read"), (":authority", "x"),
        ("content-type", "application/grpc"), ("te", "trailers")))
    body = _subscribe_all_msg()
    for i in range(k):
        sid = 1 + 2 * i
        out += _frame(1, 0x4, sid, headers)           # HEADERS, END_HEADERS
        out += _frame(0, 0x1, sid, body)              # DATA, END_STREAM
    s.setblocking(False)
    sent = 0
    deadline = time.monotonic() + 20
    while sent < len(out) and time.monotonic() < deadline:
        try:
            sent += s.send(out[sent:])
        except BlockingIOError:
            time.sleep(0.01)
    return [s]


def close_all(socks):
    for s in socks:
        try:
            s.close()
        except OSError:
            pass
