"""
bench_acl_filter.py - the cost of filtering reads across streams per user
(docs/security.md, "Filtered reads across streams"): the same read as an
admin (no check) and as a user without $ops who may read half of the
streams (one $acl read check per event whose stream differs from the
previous one's), in the same run against the same server.

  data   NS (2,000) streams B-0.. of PER (10) events of type t, written one
         event per stream per commit (the stream changes at every event of
         a query: the worst case for the check's one-stream memo); every
         odd stream has {"$acl":{"$r":"$admins"}}.
  reads  GET /types/t, /categories/B and the view /streams/$et-t, paged with
         limit=10000 and `next` to the end; best of ROUNDS (7) per reader.
         Printed: events returned, seconds, scanned events/s, and the extra
         microseconds per scanned event of the filtered read.

Run: STELE_BIN=build/stele python3 bench/bench_acl_filter.py (about 30 s).
"""
import base64
import http.client
import json
import os
import sys
import time

sys.dont_write_bytecode = True
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests", "http"))
from stele_server import Server, stop_servers  # noqa: E402

NS, PER, ROUNDS = 2000, 10, 7


def auth(user, pw):
    tok = base64.b64encode(("%s:%s" % (user, pw)).encode()).decode()
    return {"Authorization": "Basic " + tok, "Content-Type": "application/json"}


def main():
    os.environ["STELE_ADMIN_PASSWORD"] = "bench-admin-pw"
    srv = Server(["--auth-fail-limit", "100000"], name="bench-acl").start()
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=120)
    admin, reader = auth("admin", "bench-admin-pw"), auth("reader", "reader-pw")

    def req(method, path, body=None, h=admin):
        conn.request(method, path, body=None if body is None else json.dumps(body), headers=h)
        r = conn.getresponse()
        return r.status, r.read()

    try:
        st, d = req("PUT", "/users/reader", {"password": "reader-pw"})
        assert st == 201, d
        for j in range(PER):
            for b in range(0, NS, 100):
                st, d = req("POST", "/streams", {"streams": [
                    {"stream": "B-%d" % i, "events": [{"type": "t", "data": {"i": j}}]}
                    for i in range(b, b + 100)]})
                assert st == 201, d
        for i in range(1, NS, 2):
            st, d = req("PUT", "/streams/B-%d/metadata" % i, {"$acl": {"$r": "$admins"}})
            assert st in (200, 201), d

        def scan(path, h):
            t = time.perf_counter()
            n, nxt = 0, path
            while nxt:
                st, d = req("GET", nxt, h=h)
                assert st == 200, d
                o = json.loads(d)
                n += len(o["events"])
                nxt = o.get("next")
            return time.perf_counter() - t, n

        print("# bench_acl_filter: %d streams x %d events, interleaved; half readable by "
              "`reader`; best of %d; load %s" % (NS, PER, ROUNDS,
                                                 " ".join("%.2f" % x for x in os.getloadavg())))
        for path in ("/types/t?limit=10000", "/categories/B?limit=10000",
                     "/streams/%24et-t?limit=10000"):
            res = {}
            for who, h in (("admin", admin), ("reader", reader)):
                res[who] = min(scan(path, h) for _ in range(ROUNDS))
                secs, n = res[who]
                print("%-30s %-6s %6d events %7.3f s %9.0f scanned events/s"
                      % (path, who, n, secs, NS * PER / secs))
            assert res["admin"][1] == NS * PER and res["reader"][1] == NS * PER // 2
            print("%-30s filter: %+.2f us per scanned event" % (
                path, (res["reader"][0] - res["admin"][0]) * 1e6 / (NS * PER)))
    finally:
        conn.close()
        stop_servers([srv])
        srv.cleanup()


if __name__ == "__main__":
    main()
