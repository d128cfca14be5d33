"""
test_http_rules_crash.py - at-least-once, ordered delivery through crashes.

A webhook receiver that fails (500), times out (answers after the rule's
timeoutMs) and answers 429 with Retry-After at random, and refuses
"poison" events with 422; 8 writers append to their own streams while
`stele serve` is killed with SIGKILL several times (each writer retries an
append that got no answer with the same event ids, so retries are
idempotent and every acknowledged event is in the log once). Then:

  - every matching event (acknowledged to a writer) was delivered at least
    once, none lost; non-matching events never;
  - per stream, the first delivery of each event came in revision order
    (a later event is never delivered before an earlier one was);
  - poison events are in the rule's dead-letter stream after the
    configured attempts (one: 422 is final), and the others are not;
  - redrive with the receiver fixed delivers them.

No timing assertions: waits are "until, or fail after a generous deadline".
"""
import json
import os
import random
import sys
import threading
import time
import uuid

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from stele_server import Server, Suite, request  # noqa: E402
from webhook_receiver import Receiver  # noqa: E402

QUICK = bool(os.environ.get("TEST_QUICK"))
WRITERS = 8
APPENDS = 25 if QUICK else 60   # per writer; 1..3 events each
KILLS = 3
T = Suite("http_rules_crash")
S = {}


def setup():
    S["srv"] = Server().start()
    S["rcv"] = Receiver()


def teardown():
    S["srv"].cleanup()
    S["rcv"].close()


def req(method, path, body=None, timeout=30):
    return request(S["srv"].port, method, path, body, timeout=timeout)


@T.case
def crash_delivery():
    rnd = random.Random(int(os.environ.get("TEST_SEED", "0")) or None)
    rcv = S["rcv"]
    fixed = {"on": False}

    def behave(body, headers):
        if body is None:
            return (400, {}, 0)
        if body.get("data", {}).get("poison") and not fixed["on"]:
            return (422, {}, 0)
        x = rnd.random()
        if x < 0.15:
            return (500, {}, 0)
        if x < 0.25:
            return (429, {"Retry-After": "1"}, 0)
        if x < 0.30:
            return (504, {}, 0.8)  # answered after the rule's 300 ms timeout
        return (200, {}, 0)
    rcv.behave = behave
    rule = {"pattern": {"type": [{"prefix": "Order"}]},
            "target": {"type": "webhook", "url": rcv.url, "timeoutMs": 300, "secret": "k"},
            "retry": {"maxAttempts": 100, "backoffMs": 20, "maxBackoffMs": 300},
            "maxInFlight": 8, "start": "beginning"}
    r = req("PUT", "/rules/crash", json.dumps(rule))
    T.check(r.status == 201, "rule created", r.req, 201, r)

    acked = {}          # event id -> (stream, revision, type, poison)
    lock = threading.Lock()
    stop = threading.Event()

    def writer(w):
        stream = "Order-w%d" % w
        for i in range(APPENDS):
            n = 1 + (i % 3)
            evs = []
            for k in range(n):
                poison = (i * 3 + k) % 37 == 5
                typ = "Noise" if (i + k) % 5 == 4 else "OrderChanged"
                evs.append({"id": str(uuid.uuid4()), "type": typ,
                            "data": {"w": w, "i": i, "k": k, "poison": poison}})
            body = json.dumps(evs)
            deadline = time.monotonic() + 120
            while True:
                try:
                    r = request(S["srv"].port, "POST", "/streams/" + stream, body, timeout=10)
                    if r.status == 201:
                        break
                except OSError:
                    pass
                if time.monotonic() > deadline:
                    return
                time.sleep(0.05)
            # Revisions of an idempotent retry are the original ones.
            first_rev = r.body.get("firstRevision")
            with lock:
                for k, e in enumerate(evs):
                    acked[e["id"]] = (stream, first_rev + k, e["type"], e["data"]["poison"])

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(WRITERS)]
    for t in threads:
        t.start()
    for _ in range(KILLS):
        time.sleep(0.8 + rnd.random())
        S["srv"].kill()
        time.sleep(0.2)
        S["srv"].start()
    for t in threads:
        t.join(300)
    stop.set()
    T.check(len(acked) > WRITERS * APPENDS, "writers got their appends acknowledged", None,
            "> %d" % (WRITERS * APPENDS), len(acked))

    matching = {i: v for i, v in acked.items() if v[2].startswith("Order")}
    good = {i for i, v in matching.items() if not v[3]}
    poison = {i for i, v in matching.items() if v[3]}
    T.check(poison, "the workload has poison events")

    def delivered_ids():
        return {g[3]["id"] for g in rcv.delivered()}
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and not good <= delivered_ids():
        time.sleep(0.2)
    missing = good - delivered_ids()
    T.check(not missing, "every matching event delivered at least once", None, 0,
            "%d missing of %d" % (len(missing), len(good)))
    noise = {i for i, v in acked.items() if not v[2].startswith("Order")}
    T.check(not (noise & delivered_ids()), "non-matching events never delivered")

    # Order per stream: first deliveries in revision order.
    seen = set()
    last = {}
    problems = []
    for g in rcv.delivered():
        e = g[3]
        if e["id"] in seen or e["id"] not in good:
            continue
        seen.add(e["id"])
        s, rev = e["stream"], e["revision"]
        if rev < last.get(s, -1):
            problems.append("%s: revision %d first delivered after %d" % (s, rev, last[s]))
        last[s] = max(rev, last.get(s, -1))
    T.problems(problems, "per-stream order")
    # And no gap: when revision r of a stream arrived first, every earlier
    # good matching revision of that stream had arrived.
    by_stream = {}
    for i in good:
        by_stream.setdefault(acked[i][0], []).append(acked[i][1])
    first_pos = {}
    for idx, g in enumerate(rcv.delivered()):
        first_pos.setdefault(g[3]["id"], idx)
    rev_pos = {(acked[i][0], acked[i][1]): first_pos[i] for i in good}
    for s, revs in by_stream.items():
        revs.sort()
        for a, b in zip(revs, revs[1:]):
            if rev_pos[(s, a)] > rev_pos[(s, b)]:
                problems.append("%s: %d after %d" % (s, a, b))
    T.problems(problems, "no event delivered before an earlier one of its stream")

    # Poison events: in the dead-letter stream after one attempt (422).
    def dead_ids():
        r = req("GET", "/rules/crash/dead-letters?limit=10000")
        if r.status != 200:
            return set()
        return {d["deadLettered"]["eventId"] for d in r.body["deadLetters"]}
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not poison <= dead_ids():
        time.sleep(0.2)
    T.check(poison <= dead_ids(), "every poison event dead-lettered", None, len(poison),
            len(poison & dead_ids()))
    T.check(not (dead_ids() & good), "no good event dead-lettered")
    r = req("GET", "/rules/crash/dead-letters?limit=10000")
    reasons = {d["deadLettered"]["reason"] for d in r.body["deadLetters"]}
    T.check(all("HTTP status 422" in x for x in reasons), "dead letters keep the last error", None,
            "HTTP status 422", reasons)

    # Redrive with the receiver fixed.
    fixed["on"] = True
    r = req("POST", "/rules/crash/dead-letters/redrive", "")
    T.check(r.status == 200 and r.body["redriving"] >= len(poison), "redrive", r.req, len(poison), r)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not poison <= delivered_ids():
        time.sleep(0.2)
    T.check(poison <= delivered_ids(), "redriven poison events delivered", None, len(poison),
            len(poison & delivered_ids()))


if __name__ == "__main__":
    T.run(setup, teardown)
