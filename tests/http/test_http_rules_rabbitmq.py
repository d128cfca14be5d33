"""
test_http_rules_rabbitmq.py - the "rabbitmq" rule target (docs/rules.md)
against a real rabbitmq-server this test starts once (rabbitmq_server.py;
starting takes 10-20 s) and tests/rmq_tool (librabbitmq) to declare a queue
and read it back.

  - bad definitions are refused with the member's path;
  - 4 writers append while `stele serve` is killed with SIGKILL and
    restarted: every matching event reaches the bound queue (at least once:
    duplicates only of events redelivered after the crash), as a persistent
    message with message-id = event id and type = event type, routed by the
    routingKey template; nothing else arrives;
  - a wrong password, a missing exchange and an unroutable routing key:
    retried, then dead-lettered with the broker's text; the server stays up.

No timing assertions: waits are "until, or fail after a generous deadline".
"""
import json
import os
import random
import subprocess
import sys
import threading
import time
import uuid

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from rabbitmq_server import RabbitServer  # noqa: E402
import rules_common  # noqa: E402
from stele_server import Server, Suite, request  # noqa: E402

WRITERS = 4
APPENDS = 40
T = Suite("http_rules_rabbitmq")
S = {}
TOOL = os.environ.get("RMQ_TOOL", "")


def setup():
    S["mq"] = RabbitServer().start()
    os.environ["STELE_RMQ_PW"] = "guest"
    os.environ["STELE_RMQ_BAD"] = "wrong-password"
    tool("declare", "events", "orders", "Order.#")
    S["srv"] = Server().start()


def teardown():
    if "srv" in S:
        S["srv"].cleanup()
    if "mq" in S:
        S["mq"].cleanup()


def tool(*args):
    r = subprocess.run([TOOL, str(S["mq"].port)] + list(args), capture_output=True, text=True,
                       timeout=60)
    T.check(r.returncode == 0, "rmq_tool " + " ".join(args), None, 0, r.stderr)
    return r.stdout


def req(method, path, body=None, timeout=30):
    return request(S["srv"].port, method, path, body, timeout=timeout)


def wait_for(cond, what, timeout=180, dump=None):
    return rules_common.wait_for(T, cond, what, timeout, dump)


def target(**kw):
    t = {"type": "rabbitmq", "host": "127.0.0.1", "port": S["mq"].port, "user": "guest",
         "passwordEnv": "STELE_RMQ_PW", "exchange": "events",
         "routingKey": "{{category}}.{{type}}"}
    t.update(kw)
    return t


@T.case
def bad_definitions():
    cases = [
        (target(exchange=None), "target.exchange"),
        (target(routingKey="{{nope}}"), "target.routingKey: unknown placeholder"),
        (target(port=0), "target.port"),
        (target(passwordFile="/x"), "target.passwordEnv"),
        (target(password="x"), "target.password: unknown member"),
    ]
    for t, msg in cases:
        t = {k: v for k, v in t.items() if v is not None}
        r = req("PUT", "/rules/bad", json.dumps({"pattern": {"type": ["X"]}, "target": t}))
        got = T.expect(r, 400, what=msg)["error"]["message"]
        T.check(msg in got, "error names the member", r.req, msg, got)


@T.case
def every_event_arrives():
    rnd = random.Random(int(os.environ.get("TEST_SEED", "0")) or None)
    rule = {"pattern": {"type": [{"prefix": "Order"}]}, "target": target(),
            "retry": {"maxAttempts": 185, "backoffMs": 20, "maxBackoffMs": 500},
            "start": "beginning"}
    T.expect(req("PUT", "/rules/tomq", json.dumps(rule)), 201)
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
                                acked[e["id"]] = e["type"]
                        break
                except OSError:
                    pass
                time.sleep(0.05)
            time.sleep(0.05)

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(WRITERS)]
    for t in threads:
        t.start()
    time.sleep(0.5 + rnd.random())
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
            stored[e["id"]] = e["type"]
    T.check(set(acked) <= set(stored), "every acknowledged append is stored")
    matching = {i for i, ty in stored.items() if ty.startswith("Order")}
    T.check(len(matching) > WRITERS * APPENDS // 2, "writers' appends acknowledged")

    got = []

    def drained():
        for line in tool("drain", "orders").splitlines():
            got.append(line.split())
        st = T.expect(req("GET", "/rules/tomq"), 200)["stats"]
        return st["pending"] == 0 and st["lagEvents"] == 0 and {g[0] for g in got} >= matching
    wait_for(drained, "every matching event in the queue",
             dump=lambda: (len(got), len(matching), req("GET", "/rules/tomq").body))
    ids = [g[0] for g in got]
    T.check(set(ids) == matching, "every matching event arrived, nothing else", None,
            len(matching), "%d distinct, %d extra" % (len(set(ids)), len(set(ids) - matching)))
    T.check(all(g[1] == "OrderChanged" and g[2] == "2" for g in got),
            "persistent messages with the event's type", None, "OrderChanged 2", got[:3])
    T.check(len(ids) - len(set(ids)) < len(matching),
            "duplicates only of redelivered events", None, None, len(ids) - len(set(ids)))
    T.check(T.expect(req("GET", "/rules/tomq"), 200)["stats"]["deadLetters"] == 0,
            "no dead letters")
    T.expect(req("DELETE", "/rules/tomq"), 204)


@T.case
def errors_dead_lettered_with_broker_text():
    rules = {
        "badpw": (target(passwordEnv="STELE_RMQ_BAD"), "login"),
        "noexchange": (target(exchange="missing-{{type}}"), "NOT_FOUND"),
        "noroute": (target(routingKey="nobody.{{type}}"), "NO_ROUTE"),
    }
    rules_common.dead_letters_carry_text(T, req, S["srv"], rules, ["wrong-password"])


if __name__ == "__main__":
    T.run(setup, teardown)
