"""
bench_aws.py - Stele's Kinesis and DynamoDB rule targets beside seed 000's
path (bench/aws_worker.js: a Node worker on Stele's SSE feed using the
official @aws-sdk clients), in the same run, against kinesalite and AWS's
DynamoDB Local on this machine. Run it with bench/run_aws.sh.

  kinesis     N events (~1 KiB JSON, batches of 50 over 16 streams from 8
              client threads) appended while only one side listens;
              events/s = N / (first append -> N-th record acknowledged by
              Kinesis). Stele: the rule's delivered counter; worker: its
              own count.
  latency     RATE appends/s of 1 event for DURATION s with both sides
              running, each into its own Kinesis stream; per record:
              Kinesis's ApproximateArrivalTimestamp - the event's commit
              time (`created`): p50 / p99 / max.
  dynamodb    N_D events, each an increment of one of 100 accounts' items;
              Stele: the exactly-once conditional UpdateItem per event;
              worker: a plain UpdateItem per event (no condition, so not
              safe to redeliver). events/s as above.
  dynamodb latency
              RATE_D appends/s of 1 event for DURATION_D s (below the rule's
              one-write-at-a-time rate on DynamoDB Local, else the figure
              is queueing), Stele's rule only,
              its endpoint a recording HTTP proxy (AckProxy, here) in front
              of DynamoDB Local: DynamoDB Local stores no write time, so
              the target time is when its 200 answer to the event's
              UpdateItem passes the proxy (the position is in the request:
              `{{position}}` in the update's values), minus the event's
              commit time (`created`, read back from Stele). The proxy hop
              (Python, loopback) is inside the figure.
Both emulators are single local processes: the figures compare the two
paths on the same emulator, not AWS's service limits.
"""
import datetime
import json
import os
import subprocess
import sys
import threading
import time
import uuid

sys.dont_write_bytecode = True
HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "tests", "http"))
sys.path.insert(0, os.path.join(ROOT, "tests", "aws"))
from stele_server import Server, request  # noqa: E402
import test_aws_rules as A  # noqa: E402  (emulators, test credentials)

QUICK = bool(os.environ.get("QUICK"))
N = int(os.environ.get("N", 4000 if QUICK else 20000))
N_D = int(os.environ.get("N_D", 1000 if QUICK else 5000))
RATE = int(os.environ.get("RATE", 200))
DURATION = float(os.environ.get("DURATION", 3 if QUICK else 8))
RATE_D = int(os.environ.get("RATE_D", 50))  # below the one-write-at-a-time rate
DURATION_D = float(os.environ.get("DURATION_D", 6 if QUICK else 12))
BUILD = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "build")
CLI = os.path.join(BUILD, "tests", "aws_cli")
PAD = "x" * 900


def aws(service, endpoint, op, body):
    tgt = ("Kinesis_20131202." if service == "kinesis" else "DynamoDB_20120810.") + op
    r = subprocess.run([CLI, service, endpoint, tgt, json.dumps(body)], capture_output=True, text=True)
    if r.returncode:
        raise RuntimeError(r.stderr)
    return json.loads(r.stdout) if r.stdout.strip() else {}


def put_rule(srv, name, rule):
    r = request(srv.port, "PUT", "/rules/" + name, json.dumps(rule))
    assert r.status in (200, 201), r


def delivered(srv, name):
    return request(srv.port, "GET", "/rules/" + name).body["stats"]["delivered"]


def append_bulk(srv, typ, n, make):
    """8 threads, batches of 50 over 16 streams; returns the start time."""
    per = n // 8

    def run(w):
        for b in range(0, per, 50):
            evs = [{"id": str(uuid.uuid4()), "type": typ, "data": make(w * per + b + k)}
                   for k in range(min(50, per - b))]
            r = request(srv.port, "POST", "/streams/bench-%d" % ((w * 2 + b // 50) % 16), json.dumps(evs))
            assert r.status == 201, r
    t0 = time.monotonic()
    ts = [threading.Thread(target=run, args=(w,)) for w in range(8)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return t0, per * 8


class Worker:
    def __init__(self, srv, mode, endpoint, name, typ):
        self.p = subprocess.Popen(["node", os.path.join(HERE, "aws_worker.js"), str(srv.port), mode, endpoint,
                                   name, typ], stdout=subprocess.PIPE, text=True)
        self.done = 0
        self.p.stdout.readline()  # ready
        threading.Thread(target=self._read, daemon=True).start()

    def count(self):
        if self.p.poll() is not None:
            raise RuntimeError("the worker exited with %s" % self.p.returncode)
        return self.done

    def _read(self):
        for line in self.p.stdout:
            self.done = json.loads(line).get("done", self.done)

    def stop(self):
        self.p.kill()
        self.p.wait()


def wait_until(fn, n, timeout=240):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if fn() >= n:
            return time.monotonic()
        time.sleep(0.02)
    raise RuntimeError("timed out waiting for %d" % n)


def stream(kin, name, shards=4):
    aws("kinesis", kin.endpoint, "CreateStream", {"StreamName": name, "ShardCount": shards})
    while aws("kinesis", kin.endpoint, "DescribeStream", {"StreamName": name})[
            "StreamDescription"]["StreamStatus"] != "ACTIVE":
        time.sleep(0.1)


def arrivals(kin, name):
    """(arrival - created) in ms for every record of the stream."""
    out = []
    d = aws("kinesis", kin.endpoint, "DescribeStream", {"StreamName": name})
    for sh in d["StreamDescription"]["Shards"]:
        it = aws("kinesis", kin.endpoint, "GetShardIterator", {"StreamName": name, "ShardId": sh["ShardId"],
                                                              "ShardIteratorType": "TRIM_HORIZON"})["ShardIterator"]
        while it:
            g = aws("kinesis", kin.endpoint, "GetRecords", {"ShardIterator": it, "Limit": 10000})
            import base64
            for rec in g["Records"]:
                ev = json.loads(base64.b64decode(rec["Data"]))
                created = datetime.datetime.fromisoformat(ev["created"].replace("Z", "+00:00")).timestamp()
                out.append((rec["ApproximateArrivalTimestamp"] - created) * 1000)
            if not g["Records"]:
                break
            it = g.get("NextShardIterator")
    return sorted(out)


def pct(xs, p):
    return xs[min(len(xs) - 1, int(len(xs) * p / 100))] if xs else float("nan")


class AckProxy:
    """A keep-alive HTTP/1.1 proxy to DynamoDB Local recording, for each
    UpdateItem answered 200, (value of :pos in the request, time.time())."""

    def __init__(self, upstream_port):
        import http.client
        import http.server
        acks = self.acks = []

        class H(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body are two writes

            def log_message(self, *a):
                pass

            def do_POST(self):
                if not hasattr(self, "up"):
                    self.up = http.client.HTTPConnection("127.0.0.1", upstream_port, timeout=30)
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                hdrs = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection", "expect")}
                self.up.request("POST", self.path, body, hdrs)
                r = self.up.getresponse()
                data = r.read()
                if r.status == 200 and "UpdateItem" in self.headers.get("X-Amz-Target", ""):
                    pos = json.loads(body).get("ExpressionAttributeValues", {}).get(":pos")
                    if pos:
                        acks.append((int(list(pos.values())[0]), time.time()))
                self.send_response(r.status)
                for k, v in r.getheaders():
                    if k.lower() not in ("content-length", "connection", "transfer-encoding"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.endpoint = "http://127.0.0.1:%d" % self.srv.server_address[1]
        threading.Thread(target=self.srv.serve_forever, daemon=True).start()

    def stop(self):
        self.srv.shutdown()


def table(ddb, name):
    aws("dynamodb", ddb.endpoint, "CreateTable", {
        "TableName": name, "BillingMode": "PAY_PER_REQUEST",
        "KeySchema": [{"AttributeName": "AccountId", "KeyType": "HASH"}],
        "AttributeDefinitions": [{"AttributeName": "AccountId", "AttributeType": "S"}]})


def main():
    A.npm_ci()
    import tempfile
    tmp = tempfile.mkdtemp(prefix="stele-bench-aws-")
    kin, ddb = A.Kinesalite(tmp), A.DynamoLocal(tmp)
    kin.start()
    ddb.start()
    srv = Server().start()
    res = {}
    try:
        print("commit %s, N=%d N_D=%d RATE=%d DURATION=%s RATE_D=%d DURATION_D=%s" % (
            subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True,
                           text=True).stdout.strip(), N, N_D, RATE, DURATION, RATE_D, DURATION_D), flush=True)
        # ---- Kinesis throughput
        stream(kin, "stele-k")
        stream(kin, "worker-k")
        put_rule(srv, "kb", {"pattern": {"type": ["BenchK"]},
                             "target": {"type": "kinesis", "streamName": "stele-k", "endpoint": kin.endpoint}})
        t0, n = append_bulk(srv, "BenchK", N, lambda i: {"n": i, "pad": PAD})
        t1 = wait_until(lambda: delivered(srv, "kb"), n)
        res["kinesis stele"] = n / (t1 - t0)
        request(srv.port, "DELETE", "/rules/kb")
        w = Worker(srv, "kinesis", kin.endpoint, "worker-k", "BenchK2")
        t0, n = append_bulk(srv, "BenchK2", N, lambda i: {"n": i, "pad": PAD})
        t1 = wait_until(w.count, n)
        res["kinesis worker"] = n / (t1 - t0)
        w.stop()
        print("kinesis events/s: stele rule %.0f, node worker %.0f" % (res["kinesis stele"], res["kinesis worker"]),
              flush=True)
        # ---- latency, both running
        stream(kin, "stele-l", 1)
        stream(kin, "worker-l", 1)
        put_rule(srv, "kl", {"pattern": {"type": ["BenchL"]},
                             "target": {"type": "kinesis", "streamName": "stele-l", "endpoint": kin.endpoint}})
        w = Worker(srv, "kinesis", kin.endpoint, "worker-l", "BenchL")
        total = int(RATE * DURATION)
        start = time.monotonic()
        for i in range(total):
            request(srv.port, "POST", "/streams/lat-%d" % (i % 8),
                    json.dumps([{"id": str(uuid.uuid4()), "type": "BenchL", "data": {"n": i}}]))
            lag = start + (i + 1) / RATE - time.monotonic()
            if lag > 0:
                time.sleep(lag)
        wait_until(lambda: delivered(srv, "kl"), total)
        wait_until(w.count, total)
        w.stop()
        for side in ("stele", "worker"):
            xs = arrivals(kin, side + "-l")
            print("kinesis latency (commit -> Kinesis arrival, ms) %s: n=%d p50 %.1f p99 %.1f max %.1f"
                  % (side, len(xs), pct(xs, 50), pct(xs, 99), xs[-1] if xs else float("nan")), flush=True)
        request(srv.port, "DELETE", "/rules/kl")
        # ---- DynamoDB throughput
        table(ddb, "BenchStele")
        table(ddb, "BenchWorker")
        put_rule(srv, "db", {"pattern": {"type": ["BenchD"]},
                             "target": {"type": "dynamodb", "table": "BenchStele", "endpoint": ddb.endpoint,
                                        "key": {"AccountId": "{{data.accountId}}"},
                                        "operations": {"BenchD": {
                                            "update": "ADD TransactionCount :one, Balance :amount",
                                            "values": {":one": 1, ":amount": "{{data.amount}}"}}}}})
        mk = lambda i: {"accountId": "a%d" % (i % 100), "amount": 1.25}  # noqa: E731
        t0, n = append_bulk(srv, "BenchD", N_D, mk)
        t1 = wait_until(lambda: delivered(srv, "db"), n)
        res["dynamodb stele"] = n / (t1 - t0)
        w = Worker(srv, "dynamodb", ddb.endpoint, "BenchWorker", "BenchD2")
        t0, n = append_bulk(srv, "BenchD2", N_D, mk)
        t1 = wait_until(w.count, n)
        res["dynamodb worker"] = n / (t1 - t0)
        w.stop()
        print("dynamodb events/s: stele rule (conditional, exactly once) %.0f, node worker (plain update) %.0f"
              % (res["dynamodb stele"], res["dynamodb worker"]), flush=True)
        # ---- DynamoDB latency (Stele's rule, through the recording proxy)
        table(ddb, "BenchLat")
        px = AckProxy(ddb.port)
        put_rule(srv, "dl", {"pattern": {"type": ["BenchDL"]},
                             "target": {"type": "dynamodb", "table": "BenchLat", "endpoint": px.endpoint,
                                        "key": {"AccountId": "{{data.accountId}}"},
                                        "operations": {"BenchDL": {
                                            "update": "ADD TransactionCount :one SET LastPosition = :pos",
                                            "values": {":one": 1, ":pos": "{{position}}"}}}}})
        total = int(RATE_D * DURATION_D)
        start = time.monotonic()
        for i in range(total):
            r = request(srv.port, "POST", "/streams/dlat",
                        json.dumps([{"id": str(uuid.uuid4()), "type": "BenchDL",
                                     "data": {"accountId": "a%d" % (i % 100)}}]))
            assert r.status == 201, r
            lag = start + (i + 1) / RATE_D - time.monotonic()
            if lag > 0:
                time.sleep(lag)
        wait_until(lambda: delivered(srv, "dl"), total)
        px.stop()
        created = {}
        nxt = "/streams/dlat?from=start&limit=10000"
        while nxt:
            b = request(srv.port, "GET", nxt).body
            for ev in b["events"]:
                created[ev["position"]] = datetime.datetime.fromisoformat(
                    ev["created"].replace("Z", "+00:00")).timestamp()
            nxt = b.get("next")
        first = {}
        for pos, t in px.acks:
            first.setdefault(pos, t)
        xs = sorted((t - created[p]) * 1000 for p, t in first.items() if p in created)
        assert len(xs) == total, (len(xs), total)
        print("dynamodb latency (commit -> UpdateItem answered, ms) stele: n=%d p50 %.1f p99 %.1f max %.1f"
              % (len(xs), pct(xs, 50), pct(xs, 99), xs[-1]), flush=True)
    finally:
        srv.cleanup()
        kin.stop()
        ddb.stop()
        subprocess.run(["rm", "-rf", tmp])


if __name__ == "__main__":
    main()
