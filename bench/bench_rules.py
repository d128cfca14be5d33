"""
bench_rules.py - delivery to a local webhook: a Stele rule beside a
hand-written worker (bench_rules_worker: SSE feed -> one POST per event),
in the same run, against the same sink (bench/rules_sink.py). Run it with
bench/run_rules.sh.

  throughput  N events (1 KiB-ish JSON, batches of 50 over 16 streams from 8
              client threads) appended while only one side runs; events/s =
              N / (time from the first append to the N-th delivery). Rounds
              alternate rule, worker, rule, worker ... (ROUNDS each; the
              machine is shared, so the median round is reported with all).
  slow target the same with a sink that answers each POST SLOW_MS (5) later:
              N_SLOW (2,000) events, one round each.
  latency     R appends/s of 1 event each for D seconds with both sides
              running; per event: sink arrival time - the event's commit time
              (`created`), p50 / p99 / max.
"""
import datetime
import http.client
import json
import os
import subprocess
import sys
import threading
import time

sys.dont_write_bytecode = True
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests", "http"))
from stele_server import Server, request  # noqa: E402

QUICK = bool(os.environ.get("QUICK"))
N = int(os.environ.get("N", 5000 if QUICK else 20000))
RATE = int(os.environ.get("RATE", 300))
DURATION = float(os.environ.get("DURATION", 3 if QUICK else 8))
ROUNDS = int(os.environ.get("ROUNDS", 1 if QUICK else 3))
N_SLOW = int(os.environ.get("N_SLOW", 500 if QUICK else 2000))
SLOW_MS = int(os.environ.get("SLOW_MS", 5))
BUILD = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(HERE), "build")
PAD = "x" * 900


def start_sink(delay_ms=0):
    p = subprocess.Popen([sys.executable, os.path.join(HERE, "rules_sink.py"), str(delay_ms)],
                         stdout=subprocess.PIPE, text=True)
    port = int(p.stdout.readline().split()[1])
    return p, port


def sink_get(port, path):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    c.request("GET", path)
    body = c.getresponse().read()
    c.close()
    return json.loads(body)


def wait_count(port, n, timeout=300):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if sink_get(port, "/count") >= n:
            return time.monotonic()
        time.sleep(0.01)
    raise RuntimeError("only %d of %d events arrived" % (sink_get(port, "/count"), n))


def append_bulk(srv_port, n, tag, etype="BenchEvent"):
    """n events in batches of 50 over 16 streams from 8 threads."""
    per = n // 8

    def writer(w):
        c = http.client.HTTPConnection("127.0.0.1", srv_port, timeout=60)
        for b in range(0, per, 50):
            evs = [{"type": etype, "data": {"w": w, "i": b + k, "pad": PAD}}
                   for k in range(min(50, per - b))]
            c.request("POST", "/streams/Bench%s-%d" % (tag, (w * 2 + b // 50) % 16),
                      json.dumps(evs), {"Content-Type": "application/json"})
            r = c.getresponse()
            r.read()
            if r.status != 201:
                raise RuntimeError("append failed: %d" % r.status)
        c.close()
    ts = [threading.Thread(target=writer, args=(w,)) for w in range(8)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return per * 8


def append_paced(srv_port, rate, seconds):
    c = http.client.HTTPConnection("127.0.0.1", srv_port, timeout=60)
    n = int(rate * seconds)
    t0 = time.monotonic()
    for i in range(n):
        due = t0 + i / rate
        d = due - time.monotonic()
        if d > 0:
            time.sleep(d)
        c.request("POST", "/streams/BenchLat-%d" % (i % 8),
                  json.dumps([{"type": "BenchEvent", "data": {"i": i, "pad": PAD}}]),
                  {"Content-Type": "application/json"})
        r = c.getresponse()
        r.read()
    c.close()
    return n


def parse_created(s):
    return datetime.datetime.strptime(s, "%Y-%m-%dT%H:%M:%S.%fZ").replace(
        tzinfo=datetime.timezone.utc).timestamp()


def latencies(records):
    v = sorted((arr - parse_created(cr)) * 1000 for arr, cr in records if cr)
    if not v:
        return None

    def q(p):
        return v[min(len(v) - 1, int(p * len(v)))]
    return q(0.5), q(0.99), v[-1], len(v)


def main():
    out = []

    def say(s):
        print(s, flush=True)
        out.append(s)
    srv = Server().start()
    sink_a, port_a = start_sink()
    sink_b, port_b = start_sink()
    worker = None
    try:
        say("bench_rules: N=%d throughput events, latency %d appends/s for %.0fs; %s; load %s" % (
            N, RATE, DURATION, time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
            open("/proc/loadavg").read().split()[0]))
        rule = {"pattern": {"type": ["BenchEvent"]},
                "target": {"type": "webhook", "url": "http://127.0.0.1:%d/hook" % port_a,
                           "secret": "bench"},
                "maxInFlight": 16, "maxBuffered": 2000}
        worker = subprocess.Popen([os.path.join(BUILD, "bench", "bench_rules_worker"),
                                   "http://127.0.0.1:%d" % srv.port, "WorkerEvent",
                                   "http://127.0.0.1:%d/hook" % port_b],
                                  stdout=subprocess.PIPE, text=True)
        worker.stdout.readline()
        time.sleep(1.0)  # its subscription is live (from=end)
        res = {"rule": [], "worker": []}
        for rnd in range(ROUNDS):
            # The rule: a fresh one from the end of the log; the worker's
            # events go to a type it does not follow.
            r = request(srv.port, "PUT", "/rules/bench%d" % rnd, json.dumps(rule))
            assert r.status == 201, r
            base = sink_get(port_a, "/count")
            t0 = time.monotonic()
            n = append_bulk(srv.port, N, "R%d" % rnd)
            t_end = wait_count(port_a, base + n)
            res["rule"].append(n / (t_end - t0))
            request(srv.port, "DELETE", "/rules/bench%d" % rnd)
            sink_get(port_a, "/dump")
            base = sink_get(port_b, "/count")
            t0 = time.monotonic()
            n = append_bulk(srv.port, N, "W%d" % rnd, "WorkerEvent")
            t_end = wait_count(port_b, base + n)
            res["worker"].append(n / (t_end - t0))
            sink_get(port_b, "/dump")
        for side in ("rule", "worker"):
            v = sorted(res[side])
            say("throughput  %-6s  %7.0f events/s  median of %d rounds (%s)" % (
                side, v[len(v) // 2], len(v), ", ".join("%.0f" % x for x in res[side])))
        # A slow target: the same sink, answering each POST 5 ms later.
        slow_a, sport_a = start_sink(SLOW_MS)
        slow_b, sport_b = start_sink(SLOW_MS)
        try:
            srule = dict(rule, target=dict(rule["target"], url="http://127.0.0.1:%d/hook" % sport_a))
            r = request(srv.port, "PUT", "/rules/slow", json.dumps(srule))
            assert r.status == 201, r
            t0 = time.monotonic()
            n = append_bulk(srv.port, N_SLOW, "SR")
            t_end = wait_count(sport_a, n)
            say("slow target rule    %7.0f events/s  (%d events, %d ms per response)" % (
                n / (t_end - t0), n, SLOW_MS))
            request(srv.port, "DELETE", "/rules/slow")
            sw = subprocess.Popen([os.path.join(BUILD, "bench", "bench_rules_worker"),
                                   "http://127.0.0.1:%d" % srv.port, "SlowEvent",
                                   "http://127.0.0.1:%d/hook" % sport_b],
                                  stdout=subprocess.PIPE, text=True)
            sw.stdout.readline()
            time.sleep(1.0)
            t0 = time.monotonic()
            n = append_bulk(srv.port, N_SLOW, "SW", "SlowEvent")
            t_end = wait_count(sport_b, n, timeout=600)
            say("slow target worker  %7.0f events/s  (%d events, %d ms per response)" % (
                n / (t_end - t0), n, SLOW_MS))
            sw.terminate()
            sw.wait()
        finally:
            for p in (slow_a, slow_b):
                p.terminate()
                p.wait()
        # Latency: both at once on the same paced appends (the worker now
        # follows BenchEvent, like the rule).
        worker.terminate()
        worker.wait()
        worker = subprocess.Popen([os.path.join(BUILD, "bench", "bench_rules_worker"),
                                   "http://127.0.0.1:%d" % srv.port, "BenchEvent",
                                   "http://127.0.0.1:%d/hook" % port_b],
                                  stdout=subprocess.PIPE, text=True)
        worker.stdout.readline()
        r = request(srv.port, "PUT", "/rules/bench2", json.dumps(rule))
        assert r.status == 201, r
        time.sleep(0.5)
        n = append_paced(srv.port, RATE, DURATION)
        wait_count(port_a, n)
        wait_count(port_b, n)
        for name, port in (("rule", port_a), ("worker", port_b)):
            p50, p99, mx, cnt = latencies(sink_get(port, "/dump"))
            say("latency     %-6s  p50 %6.2f ms  p99 %6.2f ms  max %7.2f ms  (%d events at %d/s)" % (
                name, p50, p99, mx, cnt, RATE))
        info = request(srv.port, "GET", "/rules/bench2").body
        say("rule counters: %s" % json.dumps(info["stats"]))
        say("load average at the end: %s" % open("/proc/loadavg").read().split()[0])
    finally:
        if worker:
            worker.terminate()
            worker.wait()
        for p in (sink_a, sink_b):
            p.terminate()
            p.wait()
        srv.cleanup()
    if not QUICK:
        res = os.path.join(HERE, "results", "rules-%s.txt" % time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()))
        with open(res, "w") as f:
            f.write("\n".join(out) + "\n")
        print("saved " + res)


if __name__ == "__main__":
    main()
