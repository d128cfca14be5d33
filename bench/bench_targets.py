"""
bench_targets.py - events/s delivered by rules to real systems, and the
append-to-target latency (p50/p99), for the postgres, nats and rabbitmq
targets (docs/rules.md). Run through bench/run_targets.sh (builds, then this).

For each target: a fresh `stele serve`, the target's server started here
(tests/http/pg_server.py, nats_server.py), one rule matching every event,
then EVENTS events appended over HTTP by 4 writers in batches of 100 to 64
streams. Throughput = events / (time from the first append of a burst to the
moment the target holds the last one). Then a steady phase at RATE events/s
for latency (a burst measures queueing, not latency). Latency per event = the time the target
stored it (PostgreSQL: clock_timestamp() in the INSERT; JetStream: the
message's stored time; RabbitMQ: the time a subscribed consumer reads it)
minus the event's commit time in Stele; same host,
same clock.
"""
import json
import os
import sys
import threading
import time
import uuid
from datetime import datetime

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "http"))
sys.dont_write_bytecode = True
from nats_server import Client, NatsServer  # noqa: E402
from pg_server import PgServer  # noqa: E402
from rabbitmq_server import RabbitServer  # noqa: E402
import subprocess  # noqa: E402
from stele_server import Server, request  # noqa: E402

EVENTS = int(os.environ.get("EVENTS", "20000"))
RATE = int(os.environ.get("RATE", "500"))        # steady phase: events/s
STEADY = int(os.environ.get("STEADY", "2500"))   # steady phase: events
WRITERS, BATCH, STREAMS = 4, 100, 64


def ts(s):
    """RFC 3339 with nanoseconds or microseconds -> seconds since the epoch."""
    s = s.rstrip("Z")
    frac = 0.0
    if "." in s:
        s, f = s.split(".")
        frac = float("0." + f)
    return datetime.strptime(s, "%Y-%m-%dT%H:%M:%S").replace(
        tzinfo=__import__("datetime").timezone.utc).timestamp() + frac


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * p))]


def append_all(port):
    per = EVENTS // WRITERS

    def writer(w):
        for b in range(0, per, BATCH):
            evs = [{"id": str(uuid.uuid4()), "type": "Tick",
                    "data": {"w": w, "n": b + k, "phase": "burst"}} for k in range(BATCH)]
            r = request(port, "POST", "/streams/bench-%d" % ((w * 1000 + b) % STREAMS),
                        json.dumps(evs), timeout=60)
            assert r.status == 201, r
    t = [threading.Thread(target=writer, args=(w,)) for w in range(WRITERS)]
    for x in t:
        x.start()
    for x in t:
        x.join()
    return per * WRITERS


def append_steady(port):
    """STEADY events at RATE/s, 10 per append, one writer: the latency phase."""
    t0 = time.monotonic()
    for i in range(0, STEADY, 10):
        due = t0 + i / RATE
        d = due - time.monotonic()
        if d > 0:
            time.sleep(d)
        evs = [{"type": "Tick", "data": {"n": i + k, "phase": "steady"}} for k in range(10)]
        r = request(port, "POST", "/streams/steady-%d" % (i % STREAMS), json.dumps(evs))
        assert r.status == 201, r
    return STEADY


def run_pg():
    pg = PgServer().start()
    srv = None
    try:
        pg.psql("CREATE TABLE ticks (id uuid PRIMARY KEY, phase text, created timestamptz "
                "NOT NULL, applied timestamptz NOT NULL)")
        srv = Server().start()
        rule = {"pattern": {"type": ["Tick"]},
                "target": {"type": "postgres",
                           "conninfo": "host=%s port=%d dbname=postgres user=postgres"
                                       % (pg.tmp, pg.port),
                           "sql": "INSERT INTO ticks VALUES (${id}, ${data.phase}, ${created}, "
                                  "clock_timestamp())",
                           "batchSize": 500},
                "maxBuffered": 10000}
        assert request(srv.port, "PUT", "/rules/pg", json.dumps(rule)).status == 201
        t0 = time.time()
        n = append_all(srv.port)
        t_app = time.time() - t0
        while int(pg.psql("SELECT count(*) FROM ticks")[0][0]) < n:
            time.sleep(0.05)
        last = float(pg.psql("SELECT extract(epoch FROM max(applied)) FROM ticks")[0][0])
        m = append_steady(srv.port)
        while int(pg.psql("SELECT count(*) FROM ticks")[0][0]) < n + m:
            time.sleep(0.05)
        lat = [float(r[0]) for r in pg.psql(
            "SELECT extract(epoch FROM applied - created) FROM ticks WHERE phase = 'steady'")]
        return n, t_app, last - t0, lat
    finally:
        if srv:
            srv.cleanup()
        pg.cleanup()


def run_nats():
    tok = "t" + uuid.uuid4().hex
    os.environ["BENCH_NATS_TOKEN"] = tok
    ns = NatsServer(tok).start()
    srv = None
    try:
        c = Client(ns.port, tok)
        c.request("$JS.API.STREAM.CREATE.TICKS", {"name": "TICKS", "subjects": ["ticks.>"],
                                                  "storage": "file"})
        srv = Server().start()
        rule = {"pattern": {"type": ["Tick"]},
                "target": {"type": "nats", "url": ns.url, "subject": "ticks.{{stream}}",
                           "tokenEnv": "BENCH_NATS_TOKEN"},
                "maxBuffered": 10000}
        assert request(srv.port, "PUT", "/rules/nats", json.dumps(rule)).status == 201
        t0 = time.time()
        n = append_all(srv.port)
        t_app = time.time() - t0
        while c.request("$JS.API.STREAM.INFO.TICKS", None)["state"]["messages"] < n:
            time.sleep(0.05)
        t_end = time.time()
        m = append_steady(srv.port)
        while c.request("$JS.API.STREAM.INFO.TICKS", None)["state"]["messages"] < n + m:
            time.sleep(0.05)
        lat = []
        for seq in range(n + 1, n + m + 1):
            m = c.request("$JS.API.STREAM.MSG.GET.TICKS", {"seq": seq})["message"]
            ev = json.loads(__import__("base64").b64decode(m["data"]))
            if ev["data"]["phase"] == "steady":
                lat.append(ts(m["time"]) - ts(ev["created"]))
        c.close()
        return n, t_app, t_end - t0, lat
    finally:
        if srv:
            srv.cleanup()
        ns.cleanup()


def run_rabbitmq():
    """AMQP's timestamp property has whole seconds, so the latency is taken
    by a consumer (rmq_tool consume: basic.consume, pushed deliveries): the
    time it reads each message minus the event's commit time (`created`
    inside the message body, the event's JSON)."""
    tool = os.environ["RMQ_TOOL"]
    mq = RabbitServer().start()
    srv = None
    try:
        def rt(*a):
            return subprocess.run([tool, str(mq.port)] + list(a), check=True,
                                  capture_output=True, text=True).stdout
        rt("declare", "bench", "ticks", "#")
        srv = Server().start()
        rule = {"pattern": {"type": ["Tick"]},
                "target": {"type": "rabbitmq", "host": "127.0.0.1", "port": mq.port,
                           "exchange": "bench", "routingKey": "{{stream}}"},
                "maxBuffered": 10000}
        assert request(srv.port, "PUT", "/rules/mq", json.dumps(rule)).status == 201
        t0 = time.time()
        n = append_all(srv.port)
        t_app = time.time() - t0
        while True:
            st = request(srv.port, "GET", "/rules/mq").body["stats"]
            if st["delivered"] >= n:
                break
            time.sleep(0.02)
        t_end = time.time()
        got = len(rt("drain", "ticks").splitlines())
        assert got >= n, (got, n)
        cons = subprocess.Popen([tool, str(mq.port), "consume", "ticks", str(STEADY)],
                                stdout=subprocess.PIPE, text=True)
        assert cons.stdout.readline().strip() == "ready"
        lines = []
        reader = threading.Thread(target=lambda: lines.extend(cons.stdout))
        reader.start()
        m = append_steady(srv.port)
        assert cons.wait(timeout=120) == 0
        reader.join()
        lat = []
        for line in lines:
            recv, body = line.split(" ", 1)
            ev = json.loads(body)
            if ev["data"]["phase"] == "steady":
                lat.append(int(recv) / 1e9 - ts(ev["created"]))
        assert len(lat) == m, (len(lat), m)
        return n, t_app, t_end - t0, lat
    finally:
        if srv:
            srv.cleanup()
        mq.cleanup()


def main():
    print("# bench_targets: burst of %d events (%d writers, batches of %d, %d streams) for "
          "events/s; then %d events at %d/s (10 per append) for latency; load %s"
          % (EVENTS, WRITERS, BATCH, STREAMS, STEADY, RATE,
             " ".join(open("/proc/loadavg").read().split()[:3])))
    for name, fn in (("postgres", run_pg), ("nats", run_nats), ("rabbitmq", run_rabbitmq)):
        n, t_app, t_all, lat = fn()
        print("%-9s events %d  appended in %.2fs  delivered in %.2fs  %.0f events/s  "
              % (name, n, t_app, t_all, n / t_all) +
              ("steady latency p50 %.1f ms  p99 %.1f ms" % (pct(lat, 0.5) * 1e3,
                                                            pct(lat, 0.99) * 1e3)
               if lat else ""), flush=True)


if __name__ == "__main__":
    main()
