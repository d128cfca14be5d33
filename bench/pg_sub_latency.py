"""
pg_sub_latency.py WRITE_PORT READ_PORT N - subscriber latency across two
Stele servers on one PostgreSQL (bench/run_pg.sh): an $all subscriber
(SSE, from the end) on READ_PORT, N single-event appends through
WRITE_PORT, one at a time, ~20 ms apart. For each event: the time from the
append's acknowledgment (its response received) to its delivery on the
other server, and from the request's send. Prints one result line:

  latency target=stele-pg n=N ack_to_delivery_p50_ms=... p99_ms=...
    send_to_delivery_p50_ms=... p99_ms=... missing=0

ack_to_delivery can be negative (the event reached the subscriber before
the acknowledgment reached the writer); it is reported as measured.
"""
import http.client
import json
import os
import socket
import sys
import threading
import time
import uuid

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "http"))
from stele_server import SSE  # noqa: E402


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p / 100.0 * len(xs)))]


def main():
    wport, rport, n = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    sub = SSE(rport, "/subscribe/all?from=end", timeout=30)
    seen = {}
    done = threading.Event()

    def reader():
        try:
            while not done.is_set():
                m = sub.next()
                if m is None:
                    return
                if m["event"] == "message":
                    seen[json.loads(m["data"])["id"]] = time.monotonic()
        except (socket.timeout, OSError):
            return

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    time.sleep(0.5)
    conn = http.client.HTTPConnection("127.0.0.1", wport, timeout=30)
    sent, acked = {}, {}
    for i in range(n):
        eid = str(uuid.uuid4())
        body = json.dumps([{"type": "Tick", "data": {"i": i}, "id": eid}])
        sent[eid] = time.monotonic()
        conn.request("POST", "/streams/latency-%d" % (i % 8), body,
                     {"Content-Type": "application/json"})
        r = conn.getresponse()
        r.read()
        acked[eid] = time.monotonic()
        if r.status not in (200, 201):
            print("append failed: %d" % r.status, file=sys.stderr)
        time.sleep(0.02)
    deadline = time.monotonic() + 10
    while len([e for e in sent if e in seen]) < n and time.monotonic() < deadline:
        time.sleep(0.05)
    done.set()
    got = [e for e in sent if e in seen]
    a = [(seen[e] - acked[e]) * 1000 for e in got]
    s = [(seen[e] - sent[e]) * 1000 for e in got]
    print("latency target=stele-pg n=%d ack_to_delivery_p50_ms=%.2f ack_to_delivery_p99_ms=%.2f "
          "send_to_delivery_p50_ms=%.2f send_to_delivery_p99_ms=%.2f missing=%d"
          % (n, pct(a, 50), pct(a, 99), pct(s, 50), pct(s, 99), n - len(got)))


if __name__ == "__main__":
    main()
