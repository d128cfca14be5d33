"""
nats_server.py - a throwaway nats-server with JetStream for tests (Debian's
nats-server), on its own port with its own store directory, and a minimal
client of the NATS text protocol for JetStream's JSON API (create a
stream, read its state and its messages). A service the package may have
started on 4222 is never touched.
"""
import base64
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time


def _free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


class NatsServer:
    def __init__(self, token):
        if not shutil.which("nats-server"):
            raise RuntimeError("nats-server is not installed (apt-get install nats-server)")
        self.tmp = tempfile.mkdtemp(prefix="stele-nats-")
        self.port = _free_port()
        self.token = token
        self.proc = None

    @property
    def url(self):
        return "nats://127.0.0.1:%d" % self.port

    def start(self, timeout=60):
        log = open(os.path.join(self.tmp, "nats.log"), "ab")
        self.proc = subprocess.Popen(
            ["nats-server", "-js", "-a", "127.0.0.1", "-p", str(self.port), "-sd",
             os.path.join(self.tmp, "js"), "--auth", self.token],
            stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                c = Client(self.port, self.token)
                c.close()
                return self
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("nats-server did not start")

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(60)

    def cleanup(self):
        self.stop()
        shutil.rmtree(self.tmp, ignore_errors=True)


class Client:
    """Just enough NATS: CONNECT, one inbox, request/reply."""

    def __init__(self, port, token, timeout=10):
        self.s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buf = b""
        self._line()  # INFO
        opts = {"verbose": False, "pedantic": False, "headers": True, "no_responders": True,
                "auth_token": token, "lang": "python-test", "version": "0"}
        self.s.sendall(b"CONNECT " + json.dumps(opts).encode() + b"\r\nSUB _INBOX.t 1\r\nPING\r\n")
        while True:
            line = self._line()
            if line == b"PONG":
                break
            if line.startswith(b"-ERR"):
                raise OSError(line.decode())

    def _fill(self):
        chunk = self.s.recv(65536)
        if not chunk:
            raise OSError("nats: connection closed")
        self.buf += chunk

    def _line(self):
        while b"\r\n" not in self.buf:
            self._fill()
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _n(self, n):
        while len(self.buf) < n + 2:
            self._fill()
        d, self.buf = self.buf[:n], self.buf[n + 2:]
        return d

    def request(self, subject, obj):
        p = json.dumps(obj).encode() if obj is not None else b""
        self.s.sendall(b"PUB %s _INBOX.t %d\r\n%s\r\n" % (subject.encode(), len(p), p))
        while True:
            line = self._line()
            if line == b"PING":
                self.s.sendall(b"PONG\r\n")
                continue
            if line.startswith(b"MSG "):
                return json.loads(self._n(int(line.split()[-1])))
            if line.startswith(b"HMSG "):
                parts = line.split()
                body = self._n(int(parts[-1]))
                hl = int(parts[-2])
                return json.loads(body[hl:] or b"{}")
            if line.startswith(b"-ERR"):
                raise OSError(line.decode())

    def stream_messages(self, stream):
        """[(headers dict, data bytes)] of every message of the stream."""
        info = self.request("$JS.API.STREAM.INFO." + stream, None)
        st = info["state"]
        out = []
        for seq in range(st["first_seq"], st["last_seq"] + 1):
            r = self.request("$JS.API.STREAM.MSG.GET." + stream, {"seq": seq})
            m = r.get("message")
            if not m:
                continue
            hdrs = {}
            raw = base64.b64decode(m.get("hdrs", "")).decode(errors="replace")
            for line in raw.split("\r\n")[1:]:
                if ":" in line:
                    k, v = line.split(":", 1)
                    hdrs[k.strip()] = v.strip()
            out.append((hdrs, base64.b64decode(m.get("data", ""))))
        return out

    def close(self):
        self.s.close()
