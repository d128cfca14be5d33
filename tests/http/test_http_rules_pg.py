"""
test_http_rules_pg.py - the "postgres" rule target (docs/rules.md) against
a real PostgreSQL this test starts (pg_server.py), exactly once.

  - bad definitions are refused with the member's path (a password in the
    conninfo, an unknown placeholder, no sql);
  - seed 001's OrderSummary read model: 4 writers append OrderPlaced /
    ItemAdded (an increment: a double apply shows) / OrderShipped / noise
    while PostgreSQL is stopped and restarted and `stele serve` is killed
    with SIGKILL and restarted; the table then equals a fold of the
    acknowledged events, exactly, and the checkpoint row is at the last
    matching event's position; a replay from the beginning changes nothing;
  - wrong credentials and a missing table: retried, then dead-lettered
    with PostgreSQL's own error text; the server stays up.

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
from pg_server import PgServer  # noqa: E402
import rules_common  # noqa: E402
from stele_server import Server, Suite, request  # noqa: E402

WRITERS = 4
ORDERS = 12  # per writer
T = Suite("http_rules_pg")
S = {}
PASSWORD = "s3cret-" + uuid.uuid4().hex[:8]


def setup():
    pg = S["pg"] = PgServer().start()
    pg.psql("CREATE ROLE stele LOGIN PASSWORD '%s'" % PASSWORD)
    pg.psql("CREATE DATABASE shop OWNER stele")
    pg.psql("CREATE TABLE order_summaries (id text PRIMARY KEY, customer text NOT NULL, "
            "total bigint NOT NULL, items int NOT NULL DEFAULT 0, status text NOT NULL); "
            "ALTER TABLE order_summaries OWNER TO stele", db="shop")
    os.environ["STELE_PG_PW"] = PASSWORD
    os.environ["STELE_PG_BAD"] = "not-the-password"
    S["srv"] = Server().start()


def teardown():
    if "srv" in S:
        S["srv"].cleanup()
    if "pg" in S:
        S["pg"].cleanup()


def req(method, path, body=None, timeout=30):
    return request(S["srv"].port, method, path, body, timeout=timeout)


def conninfo():
    return "host=127.0.0.1 port=%d dbname=shop user=stele" % S["pg"].port


def wait_for(cond, what, timeout=180, dump=None):
    return rules_common.wait_for(T, cond, what, timeout, dump)


SQL = {
    "OrderPlaced": "INSERT INTO order_summaries (id, customer, total, status) "
                   "VALUES (${data.order_id}, ${data.customer_id}, ${data.total_cents}, 'placed')",
    "ItemAdded": "UPDATE order_summaries SET total = total + ${data.amount_cents}, "
                 "items = items + 1 WHERE id = ${data.order_id}",
    "OrderShipped": "UPDATE order_summaries SET status = 'shipped' WHERE id = ${data.order_id}",
}


@T.case
def bad_definitions():
    base = {"pattern": {"type": ["OrderPlaced"]}}
    cases = [
        ({"type": "postgres", "conninfo": conninfo() + " password=x", "sql": "SELECT 1"},
         "target.conninfo"),
        ({"type": "postgres", "conninfo": conninfo(), "sql": "SELECT ${data.a} ${nope}"},
         "target.sql: unknown placeholder '${nope}'"),
        ({"type": "postgres", "conninfo": conninfo(), "sql": {"OrderPlaced": 3}},
         "target.sql.OrderPlaced"),
        ({"type": "postgres", "conninfo": conninfo()}, "target.sql: required"),
        ({"type": "postgres", "conninfo": "host='x", "sql": "SELECT 1"}, "target.conninfo"),
        ({"type": "postgres", "conninfo": conninfo(), "sql": "SELECT 1",
          "checkpointTable": "x; DROP TABLE y"}, "target.checkpointTable"),
        ({"type": "postgres", "conninfo": conninfo(), "sql": "SELECT 1", "user": "x"},
         "target.user: unknown member"),
    ]
    for target, msg in cases:
        r = req("PUT", "/rules/bad", json.dumps(dict(base, target=target)))
        body = T.expect(r, 400, what=msg)
        got = body["error"]["message"]
        T.check(msg in got, "error names the member", r.req, msg, got)
    T.expect(req("GET", "/rules/bad"), 404)


@T.case
def read_model_exactly_once():
    pg, rnd = S["pg"], random.Random(int(os.environ.get("TEST_SEED", "0")) or None)
    rule = {"pattern": {"type": ["OrderPlaced", "ItemAdded", "OrderShipped"]},
            "target": {"type": "postgres", "conninfo": conninfo(), "passwordEnv": "STELE_PG_PW",
                       "sql": SQL, "batchSize": 20},
            "retry": {"maxAttempts": 185, "backoffMs": 20, "maxBackoffMs": 500},
            "start": "beginning"}
    r = req("PUT", "/rules/orders", json.dumps(rule))
    body = T.expect(r, 201)
    T.check("STELE_PG_PW" in json.dumps(body) and PASSWORD not in json.dumps(body),
            "the rule names the variable, never the password", r.req, None, body)

    acked = {}  # event id -> (stream, type, data)
    lock = threading.Lock()

    def post(stream, evs):
        data = json.dumps(evs)
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            try:
                r = request(S["srv"].port, "POST", "/streams/" + stream, data, timeout=10)
                if r.status == 201:
                    with lock:
                        for e in evs:
                            acked[e["id"]] = (stream, e["type"], e["data"])
                    time.sleep(0.03)  # paced so the restarts fall inside the run
                    return
            except OSError:
                pass
            time.sleep(0.05)

    def writer(w):
        for i in range(ORDERS):
            oid = "o-%d-%d" % (w, i)
            stream = "Order-" + oid
            ev = lambda t, d: {"id": str(uuid.uuid4()), "type": t, "data": dict(d, order_id=oid)}
            post(stream, [ev("OrderPlaced", {"customer_id": "c%d" % (i % 5),
                                             "total_cents": 1000 + i})])
            for k in range(1 + i % 4):
                post(stream, [ev("ItemAdded", {"amount_cents": 100 * (k + 1)}),
                              ev("OrderNote", {"text": "noise"})])
            if i % 3:
                post(stream, [ev("OrderShipped", {})])

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(WRITERS)]
    for t in threads:
        t.start()
    time.sleep(0.5 + rnd.random())
    pg.stop("fast")        # the target goes away mid-run ...
    time.sleep(1.0)
    pg.start()             # ... and comes back
    time.sleep(0.3 + rnd.random())
    S["srv"].kill()        # Stele dies mid-run
    time.sleep(0.2)
    S["srv"].start()
    time.sleep(0.3 + rnd.random())
    pg.stop("immediate")   # a crash of PostgreSQL: in-flight transactions are lost
    pg.start()
    for t in threads:
        t.join(300)
    T.check(len(acked) > WRITERS * ORDERS * 2, "writers' appends acknowledged", None,
            "> %d" % (WRITERS * ORDERS * 2), len(acked))

    # The fold of the acknowledged events, as seed 001's projection does it.
    # Fold what the store holds: every acknowledged append, and maybe
    # appends whose answer was lost in the crash (committed, not acknowledged).
    stored = {}
    for stream in ["Order-o-%d-%d" % (w, i) for w in range(WRITERS) for i in range(ORDERS)]:
        r = req("GET", "/streams/%s?limit=10000" % stream)
        for e in T.expect(r, 200)["events"]:
            stored[e["id"]] = (stream, e["type"], e["data"])
    T.check(set(acked) <= set(stored), "every acknowledged append is stored")
    acked = stored
    model = {}
    events = list(acked.values())
    # Order within an order's stream matters only between Placed and the
    # others; placed first per stream is guaranteed by the writer.
    for stream, typ, d in sorted(events, key=lambda v: v[1] != "OrderPlaced"):
        o = d["order_id"]
        if typ == "OrderPlaced":
            model[o] = [d["customer_id"], d["total_cents"], 0, "placed"]
        elif typ == "ItemAdded":
            model[o][1] += d["amount_cents"]
            model[o][2] += 1
        elif typ == "OrderShipped":
            model[o][3] = "shipped"

    def table():
        try:
            rows = pg.psql("SELECT id, customer, total, items, status FROM order_summaries",
                           db="shop")
        except RuntimeError:
            return None
        return {r[0]: [r[1], int(r[2]), int(r[3]), r[4]] for r in rows}

    def settled():
        info = T.expect(req("GET", "/rules/orders"), 200)
        return info["stats"].get("pending", 1) == 0 and table() == model
    wait_for(settled, "the read model to equal the fold of the events")
    got = table()
    T.check(got == model, "read model == fold (no lost or double-applied event)", None,
            "%d orders" % len(model), {k: (got.get(k), v) for k, v in model.items()
                                       if got.get(k) != v})
    cp = pg.psql("SELECT position FROM stele_checkpoints WHERE rule = 'orders'", db="shop")
    T.check(len(cp) == 1 and int(cp[0][0]) >= 0, "the checkpoint row is kept", None, "a row", cp)
    info = T.expect(req("GET", "/rules/orders"), 200)
    T.check(info["stats"]["deadLetters"] == 0, "no dead letters", None, 0, info["stats"])

    # The rule's group rewound to the beginning: every event comes again to
    # live delivery, as after a crash that lost every ack.
    matching = sum(1 for v in acked.values() if v[1] != "OrderNote")
    before = info["stats"]["delivered"]
    T.expect(req("POST", "/subscriptions/%24all/%24rule-orders/rewind?to=0", ""), 200)
    def redelivered():
        st = T.expect(req("GET", "/rules/orders"), 200)["stats"]
        return st["delivered"] + st["deadLetters"] >= before + matching and st["pending"] == 0
    wait_for(redelivered, "the redelivery of every event")
    T.check(table() == model, "a redelivery of everything applies nothing twice", None,
            "unchanged", table())
    info = T.expect(req("GET", "/rules/orders"), 200)
    T.check(info["stats"]["deadLetters"] == 0, "no dead letters", None, 0, info["stats"])

    # A replay of everything: each event is at or below the checkpoint row.
    r = T.expect(req("POST", "/rules/orders/replays", json.dumps({"from": 0})), 202)
    rid = r["id"]
    wait_for(lambda: T.expect(req("GET", "/rules/orders/replays/%d" % rid), 200)["state"]
             in ("done", "failed", "cancelled"), "the replay to finish")
    rep = T.expect(req("GET", "/rules/orders/replays/%d" % rid), 200)
    T.check(rep["state"] == "done" and rep["failed"] == 0, "replay done", None, "done", rep)
    T.check(table() == model, "a replay applies nothing twice", None, "unchanged", table())
    T.expect(req("DELETE", "/rules/orders"), 204)


@T.case
def errors_dead_lettered_with_postgres_text():
    rules = {
        "badpw": ({"type": "postgres", "conninfo": conninfo(), "passwordEnv": "STELE_PG_BAD",
                   "sql": SQL}, "password authentication failed"),
        "notable": ({"type": "postgres", "conninfo": conninfo(), "passwordEnv": "STELE_PG_PW",
                     "sql": "INSERT INTO missing_table VALUES (${data.n})"},
                    'relation "missing_table" does not exist'),
        "nofile": ({"type": "postgres", "conninfo": conninfo(),
                    "passwordFile": "/nonexistent/pw", "sql": SQL}, "passwordFile"),
    }
    rules_common.dead_letters_carry_text(T, req, S["srv"], rules, [PASSWORD, "not-the-password"],
                                         data={"n": 1})


if __name__ == "__main__":
    T.run(setup, teardown)
