"""
test_http_rules_nats.py - the "nats" rule target (docs/rules.md) against a
real nats-server -js this test starts (nats_server.py).

  - bad definitions are refused with the member's path;
  - 4 writers append while nats-server is restarted and `stele serve` is
    killed with SIGKILL and restarted: every matching event is in the
    JetStream stream exactly once (Nats-Msg-Id = event id; the duplicate
    window drops retries), under the subject of the template, and nothing
    else; the rule's group rewound to the beginning (every event published
    again) leaves the stream unchanged;
  - a wrong token and a subject no stream takes: retried, then
    dead-lettered with the server's error text; the server stays up.

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
from nats_server import Client, NatsServer  # noqa: E402
import rules_common  # noqa: E402
from stele_server import Server, Suite, request  # noqa: E402

WRITERS = 4
APPENDS = 60  # per writer, paced so the restarts fall inside the run
T = Suite("http_rules_nats")
S = {}
TOKEN = "tok-" + uuid.uuid4().hex[:10]


def setup():
    S["nats"] = NatsServer(TOKEN).start()
    os.environ["STELE_NATS_TOKEN"] = TOKEN
    os.environ["STELE_NATS_BAD"] = "wrong-token"
    c = Client(S["nats"].port, TOKEN)
    r = c.request("$JS.API.STREAM.CREATE.ORDERS",
                  {"name": "ORDERS", "subjects": ["orders.>"], "storage": "file",
                   "duplicate_window": 600 * 10**9})
    c.close()
    T.check("error" not in r, "JetStream stream created", None, None, r)
    S["srv"] = Server().start()


def teardown():
    if "srv" in S:
        S["srv"].cleanup()
    if "nats" in S:
        S["nats"].cleanup()


def req(method, path, body=None, timeout=30):
    return request(S["srv"].port, method, path, body, timeout=timeout)


def wait_for(cond, what, timeout=180, dump=None):
    return rules_common.wait_for(T, cond, what, timeout, dump)


def target(**kw):
    t = {"type": "nats", "url": S["nats"].url, "subject": "orders.{{category}}.{{type}}",
         "tokenEnv": "STELE_NATS_TOKEN"}
    t.update(kw)
    return t


@T.case
def bad_definitions():
    cases = [
        (target(url="nats://u:p@127.0.0.1:1"), "target.url"),
        (target(url="http://x"), "target.url"),
        (target(subject="orders.*"), "target.subject"),
        (target(subject="orders.{{nope}}"), "target.subject: unknown placeholder"),
        (target(userEnv="U"), "target.userEnv"),
        (target(ackTimeoutMs=5), "target.ackTimeoutMs"),
        ({"type": "nats", "url": "nats://x"}, "target.subject: required"),
    ]
    for t, msg in cases:
        r = req("PUT", "/rules/bad", json.dumps({"pattern": {"type": ["X"]}, "target": t}))
        got = T.expect(r, 400, what=msg)["error"]["message"]
        T.check(msg in got, "error names the member", r.req, msg, got)


@T.case
def every_event_exactly_once():
    rnd = random.Random(int(os.environ.get("TEST_SEED", "0")) or None)
    rule = {"pattern": {"type": [{"prefix": "Order"}]}, "target": target(),
            "retry": {"maxAttempts": 185, "backoffMs": 20, "maxBackoffMs": 500},
            "start": "beginning"}
    body = T.expect(req("PUT", "/rules/tonats", json.dumps(rule)), 201)
    T.check(TOKEN not in json.dumps(body), "the token is never shown")
    acked = {}
    lock = threading.Lock()

    def writer(w):
        stream = "Order-w%d" % w
        for i in range(APPENDS):
            evs = [{"id": str(uuid.uuid4()), "type": "OrderChanged" if k % 3 else "Noise",
                    "data": {"w": w, "i": i, "k": k}} for k in range(1 + i % 3)]
            data = json.dumps(evs)
            deadline = time.monotonic() + 180
            while time.monotonic() < deadline:
                try:
                    r = request(S["srv"].port, "POST", "/streams/" + stream, data, timeout=10)
                    if r.status == 201:
                        with lock:
                            for e in evs:
                                acked[e["id"]] = (stream, e["type"])
                        break
                except OSError:
                    pass
                time.sleep(0.05)
            time.sleep(0.05)

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(WRITERS)]
    for t in threads:
        t.start()
    time.sleep(0.5 + rnd.random())
    S["nats"].stop()       # the target goes away mid-run ...
    time.sleep(1.0)
    S["nats"].start()      # ... and comes back with its stored stream
    time.sleep(0.3 + rnd.random())
    S["srv"].kill()
    time.sleep(0.2)
    S["srv"].start()
    for t in threads:
        t.join(300)
    # What the store holds: every acknowledged append, and maybe appends
    # whose answer was lost in the crash (committed, not acknowledged).
    stored = {}
    for w in range(WRITERS):
        r = req("GET", "/streams/Order-w%d?limit=10000" % w)
        for e in T.expect(r, 200)["events"]:
            stored[e["id"]] = (e["stream"], e["type"])
    T.check(set(acked) <= set(stored), "every acknowledged append is stored")
    matching = {i: v for i, v in stored.items() if v[1].startswith("Order")}
    T.check(len(matching) > WRITERS * APPENDS // 2, "writers' appends acknowledged", None,
            "> %d" % (WRITERS * APPENDS // 2), len(matching))

    def msgs():
        c = Client(S["nats"].port, TOKEN)
        try:
            return c.stream_messages("ORDERS")
        finally:
            c.close()

    def check_stream(what):
        ms = msgs()
        ids = [h.get("Nats-Msg-Id") for h, _ in ms]
        T.check(len(ids) == len(set(ids)) and set(ids) == set(matching),
                "every matching event exactly once (%s)" % what, None,
                "%d messages" % len(matching),
                "%d messages, %d distinct, %d missing, %d extra" % (
                    len(ids), len(set(ids)), len(set(matching) - set(ids)),
                    len(set(ids) - set(matching))))
        for h, d in ms[:50]:
            ev = json.loads(d)
            T.check(h.get("Stele-Event-Id") == ev["id"] and h.get("Stele-Rule") == "tonats"
                    and h.get("Stele-Stream") == ev["stream"], "headers", None, None, h)

    def settled():
        st = T.expect(req("GET", "/rules/tonats"), 200)["stats"]
        return st["pending"] == 0 and st["lagEvents"] == 0
    wait_for(settled, "delivery of every matching event",
             dump=lambda: req("GET", "/rules/tonats").body)
    wait_for(lambda: len(msgs()) >= len(matching), "the stream to hold every event")
    check_stream("after restarts and SIGKILL")
    c = Client(S["nats"].port, TOKEN)
    subj = c.request("$JS.API.STREAM.INFO.ORDERS", {"subjects_filter": ">"})
    c.close()
    subjects = set(subj.get("state", {}).get("subjects", {}) or {})
    T.check(subjects == {"orders.Order.OrderChanged"}, "subject from the template", None,
            "orders.Order.OrderChanged", subjects)

    st = T.expect(req("GET", "/rules/tonats"), 200)["stats"]
    before = st["delivered"]
    T.expect(req("POST", "/subscriptions/%24all/%24rule-tonats/rewind?to=0", ""), 200)

    def redelivered():
        s = T.expect(req("GET", "/rules/tonats"), 200)["stats"]
        return s["delivered"] + s["deadLetters"] >= before + len(matching) and s["pending"] == 0
    wait_for(redelivered, "every event published again")
    check_stream("after every event was published again")
    T.check(T.expect(req("GET", "/rules/tonats"), 200)["stats"]["deadLetters"] == 0,
            "no dead letters")
    T.expect(req("DELETE", "/rules/tonats"), 204)


@T.case
def errors_dead_lettered_with_server_text():
    rules = {
        "badtoken": (target(tokenEnv="STELE_NATS_BAD"), "uthorization"),
        "nostream": (target(subject="elsewhere.{{type}}"), "responders"),
        "noenv": (target(tokenEnv="STELE_NATS_UNSET"), "STELE_NATS_UNSET"),
    }
    rules_common.dead_letters_carry_text(T, req, S["srv"], rules, [TOKEN, "wrong-token"])


if __name__ == "__main__":
    T.run(setup, teardown)
