#!/usr/bin/env python3
"""
test_http_groups_cluster.py - one consumer group shared by three `stele
serve` on one shared store (issues 15 and 16; docs/consumer-groups.md,
"Several servers"). Usage: test_http_groups_cluster.py pg|ddb. With `pg`
the test starts its own PostgreSQL (pg_server.py); with `ddb` it runs under
tests/ddb/run.sh, which starts DynamoDB Local and sets STELE_DDB_ENDPOINT.

- every event acked exactly once: a group on $all (one category), HTTP
  pull consumers on all three servers, 8 writers appending through all
  three; every event is delivered once and acked once, and each server
  delivers a share of them;
- one server SIGKILLed mid-run, with events of the group in flight to its
  consumers and others it claimed not yet delivered: after its claims
  expire (a 5 s lease here) the other servers deliver them; every event
  is acked at least once, none is lost, and only events that server had
  claimed are delivered twice (counted, not asserted: a live server late
  by a whole lease on its renewals may cause more, which at-least-once
  allows);
- events parked through one server are replayed through another that knew
  the group before they were parked.

Bad --node and --group-lease-ms values are refused (exit 2, a message).

Python 3 standard library only.
"""
import json
import os
import sys
import threading
import time
import urllib.parse
import uuid

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from stele_server import Client, Server, Suite, request  # noqa: E402

BACKEND = sys.argv[1] if len(sys.argv) > 1 else "pg"
T = Suite("http_groups_cluster_" + BACKEND)
S = {}
# Long enough that a loaded machine never lets a live server's claims
# lapse (that would only cause duplicates, but the first case counts them).
LEASE_MS = 5000
WRITERS = 8


def store_uri():
    if BACKEND == "pg":
        pg = S["pg"]
        return "postgresql:///stele?host=%s&port=%d&user=postgres" % (pg.tmp, pg.port)
    return "dynamodb://gc%d?endpoint=%s&region=us-east-1" % (os.getpid(),
                                                             os.environ["STELE_DDB_ENDPOINT"])


def setup():
    if BACKEND == "pg":
        from pg_server import PgServer
        pg = S["pg"] = PgServer()
        with open(os.path.join(pg.data, "postgresql.conf"), "a") as f:
            f.write("max_connections = 60\n")
        pg.start()
        pg.psql("CREATE DATABASE stele")
    else:
        os.environ.setdefault("AWS_ACCESS_KEY_ID", "AKIDSTELETEST")
        os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "stele-test-secret")
    uri = store_uri()
    S["srv"] = []
    for i in range(3):
        S["srv"].append(Server(["--node", "n%d" % i, "--group-lease-ms", str(LEASE_MS)],
                               store=uri, name="gc%d" % i).start())
    # The store's first write is an ordinary append: on a fresh DynamoDB
    # store a group create as the very first write fails today with "the
    # append lost 200 races for the sequencer" (on main too; reported).
    r = request(S["srv"][0].port, "POST", "/streams/setup-1",
                json.dumps([{"type": "Setup", "data": {}}]),
                headers={"Content-Type": "application/json"})
    T.expect(r, 201, what="the first append")


def teardown():
    for s in S.get("srv", []):
        s.cleanup()
    if "pg" in S:
        S["pg"].cleanup()


def q(s):
    return urllib.parse.quote(s, safe="")


def gpath(group, suffix=""):
    return "/subscriptions/%s/%s%s" % (q("$all"), q(group), suffix)


def create_group(port, group, category):
    r = request(port, "PUT", gpath(group),
                json.dumps({"filter": {"categories": [category]}, "maxInFlight": 20,
                            "messageTimeoutMs": 60000, "checkpointAfterMs": 200}))
    T.expect(r, 201, what="create " + group)


class Writers:
    """8 writers appending 1..3 events per append to streams of one
    category, round robin over the servers still up; a failed append is
    retried elsewhere with the same event ids (idempotent)."""

    def __init__(self, category, appends):
        self.category, self.appends = category, appends
        self.ids = set()
        self.lock = threading.Lock()
        self.done = 0
        self.errors = []

    def run(self, k, up):
        for j in range(self.appends):
            evs = [{"type": "Job", "data": {"w": k, "j": j}, "id": str(uuid.uuid4())}
                   for _ in range(1 + (j % 3))]
            stream = "%s-w%d-%d" % (self.category, k, j % 4)
            tries = 0
            while True:
                srv = S["srv"][(k + j + tries) % 3]
                tries += 1
                if not up[(k + j + tries - 1) % 3]:
                    continue
                try:
                    r = request(srv.port, "POST", "/streams/" + q(stream), json.dumps(evs),
                                headers={"Content-Type": "application/json"}, timeout=30)
                    if r.status in (200, 201):
                        break
                except OSError:
                    pass
                if tries > 300:
                    self.errors.append("append to %s kept failing" % stream)
                    return
                time.sleep(0.05)
            with self.lock:
                self.ids.update(e["id"] for e in evs)
                self.done += 1

    def start(self, up):
        self.threads = [threading.Thread(target=self.run, args=(k, up), daemon=True)
                        for k in range(WRITERS)]
        for t in self.threads:
            t.start()

    def join(self):
        for t in self.threads:
            t.join(600)


class Consumers:
    """Two pull consumers per server: pull (long poll), ack each event
    once, record what each consumer was given and acked."""

    def __init__(self, group):
        self.group = group
        self.lock = threading.Lock()
        self.delivered = {}   # id -> list of server indexes it was given through
        self.acked = {}       # id -> acks that succeeded
        self.stop = threading.Event()
        self.dead = set()     # servers whose consumers stopped
        self.errors = []

    def run(self, i, name):
        c = Client(S["srv"][i].port)
        while not self.stop.is_set() and i not in self.dead:
            try:
                r = c.get(gpath(self.group, "/messages?count=10&consumer=%s&timeout=500" % name))
            except OSError:
                return  # its server died
            if i in self.dead:
                return
            if r.status != 200:
                self.errors.append("pull on server %d: %d %s" % (i, r.status, r.raw[:200]))
                time.sleep(0.2)
                continue
            msgs = r.body["messages"]
            if not msgs:
                continue
            ids = [m["event"]["id"] for m in msgs]
            with self.lock:
                for e in ids:
                    self.delivered.setdefault(e, []).append(i)
            try:
                r = c.post(gpath(self.group, "/ack?consumer=" + q(name)), json.dumps(ids))
            except OSError:
                return
            if r.status == 204:
                with self.lock:
                    for e in ids:
                        self.acked[e] = self.acked.get(e, 0) + 1
            elif i not in self.dead:
                self.errors.append("ack on server %d: %d %s" % (i, r.status, r.raw[:200]))

    def start(self):
        self.threads = [threading.Thread(target=self.run, args=(i, "c%d-%d" % (i, k)), daemon=True)
                        for i in range(3) for k in range(2)]
        for t in self.threads:
            t.start()

    def wait_all(self, ids, timeout):
        until = time.monotonic() + timeout
        while time.monotonic() < until:
            with self.lock:
                if all(e in self.acked for e in ids):
                    return True
            time.sleep(0.1)
        return False

    def finish(self):
        time.sleep(1.0)  # anything delivered twice late shows up now
        self.stop.set()
        for t in self.threads:
            t.join(30)


@T.case
def bad_node_and_lease():
    import subprocess
    from stele_server import STELE_BIN
    for args, msg in ((["--node", "a b"], "node must be"), (["--node", ""], "node must be"),
                      (["--node", "x" * 64], "node must be"),
                      (["--group-lease-ms", "10"], "group-lease-ms must be")):
        p = subprocess.run([STELE_BIN, "serve", "--port", "0", "--store", store_uri()] + args,
                           capture_output=True, text=True, timeout=60)
        T.check(p.returncode == 2 and msg in p.stderr, "refused: %r" % args, None,
                "exit 2, " + msg, (p.returncode, p.stderr[-200:]))


@T.case
def every_event_acked_once():
    create_group(S["srv"][0].port, "shared", "GcOnce")
    cons = Consumers("shared")
    # Servers 1 and 2 learn of the group made on server 0 at the first
    # call that names it.
    cons.start()
    w = Writers("GcOnce", 40)
    w.start([True, True, True])
    w.join()
    T.check(not w.errors, "every append succeeded", None, [], w.errors[:3])
    ids = set(w.ids)
    ok = cons.wait_all(ids, 120)
    cons.finish()
    missing = [e for e in ids if e not in cons.acked]
    T.check(ok and not missing, "every event acked", None, 0, len(missing))
    twice = {e: v for e, v in cons.delivered.items() if len(v) != 1}
    T.check(not twice, "every event delivered exactly once", None, {},
            dict(list(twice.items())[:5]))
    many = [e for e, n in cons.acked.items() if n != 1]
    T.check(not many, "every event acked exactly once", None, [], many[:5])
    extra = [e for e in cons.delivered if e not in ids]
    T.check(not extra, "only the group's events", None, [], extra[:5])
    per = [sum(1 for v in cons.delivered.values() if v[0] == i) for i in range(3)]
    print("  %d events; delivered per server %s" % (len(ids), per))
    T.check(all(n > 0 for n in per), "each server delivered a share", None, "> 0 each", per)
    T.check(not cons.errors, "no consumer errors", None, [], cons.errors[:3])
    r = request(S["srv"][1].port, "GET", gpath("shared"))
    T.expect(r, 200, what="info on another server")


@T.case
def parked_on_one_replayed_through_another():
    srv = S["srv"]
    path = "/subscriptions/GcPark-1/p"
    r = request(srv[0].port, "PUT", path, json.dumps({"maxRetries": 0}))
    T.expect(r, 201, what="create")
    # Server 2 knows the group (and its parked stream's end) before anything
    # is parked.
    T.expect(request(srv[2].port, "GET", path), 200, what="info on server 2")
    r = request(srv[0].port, "POST", "/streams/GcPark-1",
                json.dumps([{"type": "Job", "data": {"i": i}} for i in range(5)]),
                headers={"Content-Type": "application/json"})
    T.expect(r, 201, what="append")
    c0 = Client(srv[0].port)
    parked = set()
    for _ in range(20):
        r = c0.get(path + "/messages?count=10&consumer=w&timeout=500")
        T.expect(r, 200, what="pull on server 0")
        ids = [m["event"]["id"] for m in r.body["messages"]]
        if ids:
            T.expect(c0.post(path + "/nack?action=park&reason=bad&consumer=w", json.dumps(ids)),
                     204, what="park")
            parked.update(ids)
        if len(parked) == 5:
            break
    T.check(len(parked) == 5, "five events parked through server 0", None, 5, len(parked))
    until = time.monotonic() + 30
    while time.monotonic() < until:
        r = request(srv[0].port, "GET", "/streams/" + q("$persistentsubscription-GcPark-1::p-parked"))
        if r.status == 200 and len(r.body["events"]) >= 5:
            break
        time.sleep(0.1)
    r = request(srv[2].port, "POST", path + "/parked/replay", "")
    T.expect(r, 200, what="replay through server 2")
    c2 = Client(srv[2].port)
    got = set()
    until = time.monotonic() + 30
    while len(got) < 5 and time.monotonic() < until:
        r = c2.get(path + "/messages?count=10&consumer=r&timeout=500")
        T.expect(r, 200, what="pull on server 2")
        ids = [m["event"]["id"] for m in r.body["messages"]]
        got.update(ids)
        if ids:
            T.expect(c2.post(path + "/ack?consumer=r", json.dumps(ids)), 204, what="ack")
    T.check(got == parked, "server 2 replays what server 0 parked", None, sorted(parked),
            sorted(got))


@T.case
def a_server_killed():
    create_group(S["srv"][1].port, "survive", "GcKill")
    cons = Consumers("survive")
    cons.start()
    up = [True, True, True]
    w = Writers("GcKill", 60)
    w.start(up)
    # Kill server 2 once it has delivered something, with appends going on.
    until = time.monotonic() + 60
    while time.monotonic() < until:
        with cons.lock:
            mine = sum(1 for v in cons.delivered.values() if 2 in v)
        if mine >= 20 and w.done >= WRITERS * 10:
            break
        time.sleep(0.02)
    # A consumer on server 2 that takes events and never acks them: when
    # the server dies they are in flight there, and must reach the others.
    r = request(S["srv"][2].port, "GET",
                gpath("survive", "/messages?count=10&consumer=holder&timeout=5000"))
    T.expect(r, 200, what="the holder's pull")
    held = [m["event"]["id"] for m in r.body["messages"]]
    T.check(held, "server 2 has events in flight when it dies")
    up[2] = False
    cons.dead.add(2)
    S["srv"][2].kill()
    killed_at = time.monotonic()
    w.join()
    T.check(not w.errors, "every append succeeded", None, [], w.errors[:3])
    ids = set(w.ids)
    ok = cons.wait_all(ids, 120)
    took = time.monotonic() - killed_at
    cons.finish()
    missing = [e for e in ids if e not in cons.acked]
    T.check(ok and not missing, "every event acked at least once, none lost", None, 0,
            len(missing))
    T.check(all(e in cons.acked for e in held), "the events in flight on the dead server "
            "were delivered and acked through the others")
    twice = [e for e, v in cons.delivered.items() if len(v) > 1]
    # Delivered twice: only what server 2 had given its consumers (acked
    # there after its last checkpoint, or not acked); what it had claimed
    # and not handed out goes out once, through the others.
    wrong = [e for e in twice if 2 not in cons.delivered[e] and e not in held]
    print("  %d events; %d in flight on the killed server; %d delivered twice; all acked "
          "%.1fs after the kill (lease %.1fs)" % (len(ids), len(held), len(twice), took,
                                                   LEASE_MS / 1000))
    # Allowed (at least once), but only a live server late by a whole lease
    # on its renewals could cause it: shown, not asserted.
    if wrong:
        print("  note: %d events delivered twice by live servers" % len(wrong))
    T.check(not [e for e in cons.delivered if e not in ids], "only the group's events")
    errs = [e for e in cons.errors if not e.startswith("pull on server 2") and
            not e.startswith("ack on server 2")]
    T.check(not errs, "no consumer errors on the live servers", None, [], errs[:3])
    S["srv"][2].start()


if __name__ == "__main__":
    sys.exit(T.run(setup=setup, teardown=teardown))
