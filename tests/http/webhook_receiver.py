"""
webhook_receiver.py - a webhook target for the rules tests (standard
library only): an HTTP server on a free port that records every POST it
gets (headers, parsed body, arrival order) and answers according to a
`behave(body_dict, headers) -> (status, extra_headers, delay_seconds)`
function the test sets and may change at any time. A delay longer than
the rule's timeoutMs makes Stele time out; `hang=True` never answers.

verify_signature() checks a Stele-Signature header the way docs/rules.md
tells receivers to.
"""
import hashlib
import hmac
import http.server
import json
import socketserver
import threading
import time


def verify_signature(secret, header, body):
    """True if `header` ("t=...,v1=...") is the HMAC-SHA256 of "t." + body."""
    try:
        parts = dict(p.split("=", 1) for p in header.split(","))
        mac = hmac.new(secret.encode(), parts["t"].encode() + b"." + body, hashlib.sha256)
        return hmac.compare_digest(mac.hexdigest(), parts["v1"])
    except (KeyError, ValueError, AttributeError):
        return False


class Receiver:
    def __init__(self):
        self.lock = threading.Lock()
        self.got = []          # (arrival index, headers dict, raw body bytes, parsed body)
        self.behave = lambda body, headers: (200, {}, 0)
        self.hang = False
        self.stopped = threading.Event()
        rec = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                n = int(self.headers.get("content-length", 0))
                raw = self.rfile.read(n)
                if rec.hang:
                    rec.stopped.wait(600)
                    return
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = None
                headers = {k.lower(): v for k, v in self.headers.items()}
                status, extra, delay = rec.behave(body, headers)
                if delay:
                    time.sleep(delay)
                with rec.lock:
                    # Recorded when answered: what the sender saw as delivered
                    # (a 2xx) arrives in this order.
                    rec.got.append((len(rec.got), headers, raw, body, status))
                try:
                    self.send_response(status)
                    for k, v in extra.items():
                        self.send_header(k, v)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                except OSError:
                    pass

            def log_message(self, *a):
                pass

        class Srv(socketserver.ThreadingMixIn, http.server.HTTPServer):
            daemon_threads = True
            allow_reuse_address = True

        self.srv = Srv(("127.0.0.1", 0), Handler)
        self.port = self.srv.server_address[1]
        self.url = "http://127.0.0.1:%d/hook" % self.port
        self.thread = threading.Thread(target=self.srv.serve_forever, daemon=True)
        self.thread.start()

    def delivered(self):
        """The bodies answered with 2xx, in order."""
        with self.lock:
            return [g for g in self.got if 200 <= g[4] < 300]

    def clear(self):
        with self.lock:
            self.got = []

    def close(self):
        self.stopped.set()
        self.srv.shutdown()
        self.srv.server_close()
